package org.cmr;

/** The JNI shim's entry points (bindings/java/src/main/c/cmr_jni.c). */
final class Native {
    private Native() {}

    static native byte[] version();

    static native long newRouter(byte[] options);

    static native void free(long router);

    static native boolean register(
            long router, byte[] fullJid, long token, int priority, byte[] show, boolean available);

    static native void unregister(long router, byte[] jid, long token);

    static native void sessionGone(long router, byte[] jid, long token);

    static native void touch(long router, byte[] fullJid, long token);

    static native void setHibernating(long router, byte[] fullJid, long token, boolean hibernating);

    static native void setLoad(long router, byte[] fullJid, long token, int load);

    static native int pick(
            long router,
            byte[] recipient,
            byte[] type,
            byte[] sender,
            byte[] hint,
            boolean senderIsLocal,
            long[] out);

    static native byte[] getAlgorithm(long router, byte[] bareJid);

    static native void setAlgorithm(long router, byte[] bareJid, byte[] algorithm);

    static native byte[] handleIq(long router, byte[] xml);

    static native byte[] discoFeatures(long router);

    static native Command command(boolean admin);

    static native byte[] routingCommand(long router, byte[] requester, byte[] submitted);

    static native byte[] adminForm(long router);

    static native byte[] adminFormValue(byte[] submitted, byte[] var);

    static native byte[] chooseFor(long router, byte[] bareJid, byte[] algorithm);

    static native byte[] choiceNote(long router, byte[] bareJid, byte[] algorithm);

    static native byte[] algorithmFor(long router, byte[] bareJid, byte[] stored);

    static native byte[] stats(long router, byte[] bareJid);

    static native MetricSeries metricSeries(int index);

    static native long[] metricValues(long router);

    static native byte[] algorithmName(int index);

    static native int maxPicksPerMessage();

    static native int activityIntervalMillis();
}
