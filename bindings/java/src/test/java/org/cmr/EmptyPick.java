package org.cmr;

/**
 * What {@link Router#pick} costs without the library: the same arguments
 * cross JNI under the router's lock and are read in place, and nothing is
 * picked. For measuring the binding's overhead (benches/java); its native
 * side is only in the tests' build of the shim (cmr_jni.c with CMR_TEST).
 */
public final class EmptyPick {
    private EmptyPick() {}

    /** Returns 1. */
    public static int emptyPick(Router router, byte[] recipient, byte[] type, byte[] sender, byte[] hint,
            boolean senderIsLocal, long[] out) {
        return router.call(h -> emptyPick(h, recipient, type, sender, hint, senderIsLocal, out));
    }

    private static native int emptyPick(long router, byte[] recipient, byte[] type, byte[] sender,
            byte[] hint, boolean senderIsLocal, long[] out);
}
