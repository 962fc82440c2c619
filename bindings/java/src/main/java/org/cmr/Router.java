package org.cmr;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.locks.StampedLock;

/**
 * A cmr router: the sessions of every account, their routing state, and
 * the answers to XEP-0354 IQs. Safe to call from many threads at once;
 * {@link #close} waits for calls in progress and makes later ones throw
 * {@link IllegalStateException}.
 *
 * <p>Strings cross as UTF-8: each call has a {@code byte[]} form, read in
 * place by the native side, and a {@code String} convenience form that
 * encodes first. Bad input throws {@link CmrException} with the library's
 * message and changes nothing; a required argument that is null throws
 * {@link NullPointerException} naming it.
 */
public final class Router implements AutoCloseable {
    private static boolean loaded;
    /** The library's algorithm names, read once (see {@link #algorithms}). */
    private static volatile List<String> algorithms;

    private final StampedLock lock = new StampedLock();
    private long handle;

    /**
     * Loads the JNI library (the shim with libcmr linked in) once per class
     * loader. It loads a copy with a unique name, made beside the library
     * (a temporary directory may be mounted noexec): a JVM lets one class
     * loader at a time hold a native library, so a reloaded plugin needs
     * its own copy while the old loader is still being collected.
     */
    public static synchronized void loadLibrary(Path library) throws IOException {
        if (loaded) {
            return;
        }
        Path copy = Files.createTempFile(library.toAbsolutePath().getParent(), "cmr_jni-", ".so");
        try {
            Files.copy(library, copy, StandardCopyOption.REPLACE_EXISTING);
            System.load(copy.toAbsolutePath().toString());
        } finally {
            // The loaded library stays mapped; only its name goes.
            Files.deleteIfExists(copy);
        }
        loaded = true;
    }

    /** The library's version. */
    public static String version() {
        return new String(Native.version(), StandardCharsets.UTF_8);
    }

    /**
     * The short names of the library's algorithms ({@code all},
     * {@code mostactive}, ...), in the order of the per-algorithm
     * {@link Metrics}: as the library names them, so a newer library's
     * algorithm appears without a change here.
     */
    public static List<String> algorithms() {
        List<String> names = algorithms;
        if (names == null) {
            List<String> read = new ArrayList<>();
            for (byte[] name; (name = Native.algorithmName(read.size())) != null; ) {
                read.add(new String(name, StandardCharsets.UTF_8));
            }
            names = Collections.unmodifiableList(read);
            algorithms = names;
        }
        return names;
    }

    /**
     * A router with the given options (README: {@code offered=},
     * {@code default=}, {@code user_change=}, {@code hints=},
     * {@code prefix=}); empty for the defaults.
     */
    public Router(String options) {
        handle = Native.newRouter(utf8(Objects.requireNonNull(options, "options")));
    }

    /** Frees the router once calls in progress have returned. */
    @Override
    public void close() {
        long stamp = lock.writeLock();
        try {
            Native.free(handle);
            handle = 0;
        } finally {
            lock.unlockWrite(stamp);
        }
    }

    /**
     * Registers a session or updates it on a presence change. Returns true
     * when this call gave the account its first session: the host then
     * restores the account's stored algorithm with {@link #setAlgorithm}.
     *
     * @param show null or empty for none, else chat, away, xa or dnd
     */
    public boolean register(byte[] fullJid, long token, int priority, byte[] show, boolean available) {
        Objects.requireNonNull(fullJid, "fullJid");
        long stamp = enter();
        try {
            return Native.register(handle, fullJid, token, priority, show, available);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public boolean register(String fullJid, long token, int priority, String show, boolean available) {
        return register(utf8(fullJid), token, priority, utf8OrNull(show), available);
    }

    /**
     * Removes the session if {@code token} still owns it; {@code jid} is
     * its full JID, or the bare JID when the resource is not known. A
     * stale token throws with {@link Status#NOT_FOUND} and removes nothing.
     */
    public void unregister(byte[] jid, long token) {
        Objects.requireNonNull(jid, "jid");
        long stamp = enter();
        try {
            Native.unregister(handle, jid, token);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void unregister(String jid, long token) {
        unregister(utf8(jid), token);
    }

    /**
     * Removes a session that a pick gave and the host found gone, as
     * {@link #unregister} does, and counts it in
     * {@link Metrics#goneSessions}. A token no longer registered (another
     * thread removed it first) is counted too, and throws with
     * {@link Status#NOT_FOUND}. The host then picks again.
     */
    public void sessionGone(byte[] jid, long token) {
        Objects.requireNonNull(jid, "jid");
        long stamp = enter();
        try {
            Native.sessionGone(handle, jid, token);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void sessionGone(String jid, long token) {
        sessionGone(utf8(jid), token);
    }

    /** Reports activity of the session (for mostactive). */
    public void touch(byte[] fullJid, long token) {
        Objects.requireNonNull(fullJid, "fullJid");
        long stamp = enter();
        try {
            Native.touch(handle, fullJid, token);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void touch(String fullJid, long token) {
        touch(utf8(fullJid), token);
    }

    /** Marks the session as waiting for XEP-0198 resumption, or as back. */
    public void setHibernating(byte[] fullJid, long token, boolean hibernating) {
        Objects.requireNonNull(fullJid, "fullJid");
        long stamp = enter();
        try {
            Native.setHibernating(handle, fullJid, token, hibernating);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void setHibernating(String fullJid, long token, boolean hibernating) {
        setHibernating(utf8(fullJid), token, hibernating);
    }

    /** Reports the session's load (for leastloaded); not negative. */
    public void setLoad(byte[] fullJid, long token, int load) {
        Objects.requireNonNull(fullJid, "fullJid");
        if (load < 0) {
            throw new CmrException(Status.INVALID_ARGUMENT, "load is negative: " + load);
        }
        long stamp = enter();
        try {
            Native.setLoad(handle, fullJid, token, load);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void setLoad(String fullJid, long token, int load) {
        setLoad(utf8(fullJid), token, load);
    }

    /**
     * Picks the sessions that get a message to {@code recipient} (a bare
     * JID) and writes their tokens into {@code out}. Returns how many: 0
     * means the host routes the message itself; more than
     * {@code out.length} means nothing was written and nothing advanced, so
     * the host asks again with an array that large (only the all algorithm
     * picks more than one).
     *
     * @param type the message's type attribute, null or empty for normal
     * @param sender the sender's JID (sticky uses its bare part), or null
     * @param hint the algorithm of a {@code <cmr/>} hint, or null
     */
    public int pick(
            byte[] recipient, byte[] type, byte[] sender, byte[] hint, boolean senderIsLocal, long[] out) {
        Objects.requireNonNull(recipient, "recipient");
        Objects.requireNonNull(out, "out");
        long stamp = enter();
        try {
            return Native.pick(handle, recipient, type, sender, hint, senderIsLocal, out);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public int pick(String recipient, String type, String sender, String hint, boolean senderIsLocal, long[] out) {
        return pick(utf8(recipient), utf8OrNull(type), utf8OrNull(sender), utf8OrNull(hint), senderIsLocal, out);
    }

    /**
     * What {@link #pick} costs without the library: the same arguments
     * cross JNI and are read in place, and nothing is picked. Returns 1.
     * For measuring the binding's overhead.
     */
    public int emptyPick(
            byte[] recipient, byte[] type, byte[] sender, byte[] hint, boolean senderIsLocal, long[] out) {
        long stamp = enter();
        try {
            return Native.emptyPick(handle, recipient, type, sender, hint, senderIsLocal, out);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    /** The URI of the account's active algorithm. */
    public String algorithm(byte[] bareJid) {
        Objects.requireNonNull(bareJid, "bareJid");
        long stamp = enter();
        try {
            return new String(Native.getAlgorithm(handle, bareJid), StandardCharsets.UTF_8);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public String algorithm(String bareJid) {
        return algorithm(utf8(bareJid));
    }

    /**
     * Sets the account's algorithm (a URI or a short name): how a host
     * restores a stored choice once the account's first session is
     * registered.
     */
    public void setAlgorithm(byte[] bareJid, byte[] algorithm) {
        Objects.requireNonNull(bareJid, "bareJid");
        Objects.requireNonNull(algorithm, "algorithm");
        long stamp = enter();
        try {
            Native.setAlgorithm(handle, bareJid, algorithm);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public void setAlgorithm(String bareJid, String algorithm) {
        setAlgorithm(utf8(bareJid), utf8(algorithm));
    }

    /**
     * Answers a XEP-0354 IQ given as a whole stanza (with from, to, id and
     * type): the response to send, or null when the IQ is not CMR's (a
     * result, an error, another namespace). Malformed or oversized XML
     * throws with {@link Status#INVALID_XML}.
     */
    public IqAnswer handleIq(byte[] xml) {
        Objects.requireNonNull(xml, "xml");
        long stamp = enter();
        try {
            byte[] answer = Native.handleIq(handle, xml);
            return answer == null ? null : new IqAnswer(answer);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public IqAnswer handleIq(String xml) {
        return handleIq(utf8(xml));
    }

    /** The disco#info features to advertise, on the server and on accounts. */
    public String[] discoFeatures() {
        long stamp = enter();
        try {
            return new String(Native.discoFeatures(handle), StandardCharsets.UTF_8).split("\n");
        } finally {
            lock.unlockRead(stamp);
        }
    }

    /**
     * The account's per-session figures, a tab-separated table with a
     * header line naming its 8 columns: resource, routed, priority, show,
     * available, load, token, hibernating (find a column by its name).
     */
    public String stats(byte[] bareJid) {
        Objects.requireNonNull(bareJid, "bareJid");
        long stamp = enter();
        try {
            return new String(Native.stats(handle, bareJid), StandardCharsets.UTF_8);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    public String stats(String bareJid) {
        return stats(utf8(bareJid));
    }

    /** The router's figures now, for the host's metrics. */
    public Metrics metrics() {
        long stamp = enter();
        try {
            return new Metrics(algorithms(), Native.metrics(handle));
        } finally {
            lock.unlockRead(stamp);
        }
    }

    private long enter() {
        long stamp = lock.readLock();
        if (handle == 0) {
            lock.unlockRead(stamp);
            throw new IllegalStateException("cmr: the router is closed");
        }
        return stamp;
    }

    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static byte[] utf8OrNull(String text) {
        return text == null ? null : utf8(text);
    }
}
