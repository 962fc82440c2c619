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
import java.util.function.IntFunction;
import java.util.function.LongConsumer;
import java.util.function.LongFunction;

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
    /** The library's metric series, read once (see {@link #metricSeries}). */
    private static volatile List<MetricSeries> metricSeries;

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
     * {@code mostactive}, ...), in its order: as the library names them,
     * so a newer library's algorithm appears without a change here.
     */
    public static List<String> algorithms() {
        List<String> names = algorithms;
        if (names == null) {
            names = readTable(i -> {
                byte[] name = Native.algorithmName(i);
                return name == null ? null : new String(name, StandardCharsets.UTF_8);
            });
            algorithms = names;
        }
        return names;
    }

    /**
     * The series of the router's metrics, as the library describes them:
     * what {@link #metricValues} gives, in the same order. A host builds
     * its metrics from this list, so a newer library's series appears
     * without a change here.
     */
    public static List<MetricSeries> metricSeries() {
        List<MetricSeries> series = metricSeries;
        if (series == null) {
            series = readTable(Native::metricSeries);
            metricSeries = series;
        }
        return series;
    }

    /** A library table, read from index 0 until null. */
    private static <T> List<T> readTable(IntFunction<T> at) {
        List<T> read = new ArrayList<>();
        for (T entry; (entry = at.apply(read.size())) != null; ) {
            read.add(entry);
        }
        return Collections.unmodifiableList(read);
    }

    /**
     * How many picks a host makes for one message in all: when a picked
     * session turns out gone it reports it ({@link #sessionGone}) and picks
     * again, up to this many, then routes the message itself.
     */
    public static int maxPicksPerMessage() {
        return Native.maxPicksPerMessage();
    }

    /**
     * The finest difference in activity that mostactive tells apart: a
     * host need report a session's activity ({@link #touch}) at most once
     * per this many milliseconds.
     */
    public static int activityIntervalMillis() {
        return Native.activityIntervalMillis();
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
        return call(h -> Native.register(h, fullJid, token, priority, show, available));
    }

    public boolean register(String fullJid, long token, int priority, String show, boolean available) {
        return register(utf8(fullJid), token, priority, utf8OrNull(show), available);
    }

    /**
     * Removes the session if {@code token} still owns it; {@code jid} is
     * its full JID, or the bare JID when the resource is not known. A
     * stale token throws with status {@code not_found} and removes nothing.
     */
    public void unregister(byte[] jid, long token) {
        Objects.requireNonNull(jid, "jid");
        run(h -> Native.unregister(h, jid, token));
    }

    public void unregister(String jid, long token) {
        unregister(utf8(jid), token);
    }

    /**
     * Removes a session that a pick gave and the host found gone, as
     * {@link #unregister} does, and counts it in the metrics. A token no
     * longer registered (another thread removed it first) is counted too,
     * and throws with status {@code not_found}. The host then picks again.
     */
    public void sessionGone(byte[] jid, long token) {
        Objects.requireNonNull(jid, "jid");
        run(h -> Native.sessionGone(h, jid, token));
    }

    public void sessionGone(String jid, long token) {
        sessionGone(utf8(jid), token);
    }

    /** Reports activity of the session (for mostactive). */
    public void touch(byte[] fullJid, long token) {
        Objects.requireNonNull(fullJid, "fullJid");
        run(h -> Native.touch(h, fullJid, token));
    }

    public void touch(String fullJid, long token) {
        touch(utf8(fullJid), token);
    }

    /** Marks the session as waiting for XEP-0198 resumption, or as back. */
    public void setHibernating(byte[] fullJid, long token, boolean hibernating) {
        Objects.requireNonNull(fullJid, "fullJid");
        run(h -> Native.setHibernating(h, fullJid, token, hibernating));
    }

    public void setHibernating(String fullJid, long token, boolean hibernating) {
        setHibernating(utf8(fullJid), token, hibernating);
    }

    /**
     * Reports the session's load (for leastloaded); a negative one throws
     * {@link IllegalArgumentException}.
     */
    public void setLoad(byte[] fullJid, long token, int load) {
        Objects.requireNonNull(fullJid, "fullJid");
        if (load < 0) {
            throw new IllegalArgumentException("cmr: load is negative: " + load);
        }
        run(h -> Native.setLoad(h, fullJid, token, load));
    }

    public void setLoad(String fullJid, long token, int load) {
        setLoad(utf8(fullJid), token, load);
    }

    /**
     * Picks the sessions that get a message to {@code recipient} (a bare
     * JID) and writes their tokens into {@code out}. Returns how many: 0
     * means the host routes the message itself (the library routes no
     * headline, groupchat or error message); more than {@code out.length}
     * means nothing was written and nothing advanced, so the host asks
     * again with an array that large (only the all algorithm picks more
     * than one).
     *
     * @param type the message's type attribute, null or empty for normal
     * @param sender the sender's JID (sticky uses its bare part), or null
     * @param hint the algorithm of a {@code <cmr/>} hint, or null
     */
    public int pick(
            byte[] recipient, byte[] type, byte[] sender, byte[] hint, boolean senderIsLocal, long[] out) {
        Objects.requireNonNull(recipient, "recipient");
        Objects.requireNonNull(out, "out");
        return call(h -> Native.pick(h, recipient, type, sender, hint, senderIsLocal, out));
    }

    public int pick(String recipient, String type, String sender, String hint, boolean senderIsLocal, long[] out) {
        return pick(utf8(recipient), utf8OrNull(type), utf8OrNull(sender), utf8OrNull(hint), senderIsLocal, out);
    }

    /** The URI of the account's active algorithm. */
    public String algorithm(byte[] bareJid) {
        Objects.requireNonNull(bareJid, "bareJid");
        return call(h -> new String(Native.getAlgorithm(h, bareJid), StandardCharsets.UTF_8));
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
        run(h -> Native.setAlgorithm(h, bareJid, algorithm));
    }

    public void setAlgorithm(String bareJid, String algorithm) {
        setAlgorithm(utf8(bareJid), utf8(algorithm));
    }

    /**
     * Answers a XEP-0354 IQ given as a whole stanza (with from, to, id and
     * type): the response to send, or null when the IQ is not CMR's (a
     * result, an error, another namespace). Malformed or oversized XML
     * throws with status {@code invalid_xml}.
     */
    public IqAnswer handleIq(byte[] xml) {
        Objects.requireNonNull(xml, "xml");
        return call(h -> {
            byte[] answer = Native.handleIq(h, xml);
            return answer == null ? null : new IqAnswer(answer);
        });
    }

    public IqAnswer handleIq(String xml) {
        return handleIq(utf8(xml));
    }

    /**
     * Runs the routing command ({@link Command#routing}) for the session
     * {@code requester} (its full JID): with no {@code submitted} form
     * (null) the form to show; with the form the client submitted
     * ({@code <x xmlns='jabber:x:data' type='submit'>}) the outcome, under
     * the same policy as a XEP-0354 set. A form that is not this command's
     * (another field, two values, not a submit) throws with status
     * {@code invalid_argument}, naming what is wrong, and changes nothing:
     * the host answers {@code <bad-request/>}.
     */
    public CommandAnswer routingCommand(byte[] requester, byte[] submitted) {
        Objects.requireNonNull(requester, "requester");
        return call(h -> new CommandAnswer(Native.routingCommand(h, requester, submitted)));
    }

    public CommandAnswer routingCommand(String requester, String submitted) {
        return routingCommand(utf8(requester), utf8OrNull(submitted));
    }

    /**
     * The admin command's form ({@link Command#admin}): the account
     * ({@code accountjid}) and the offered algorithms ({@code algorithm}).
     * Only the host's administrators may run it: the host checks that.
     */
    public String adminForm() {
        return call(h -> new String(Native.adminForm(h), StandardCharsets.UTF_8));
    }

    /**
     * The value of the field {@code var} ({@code accountjid} or
     * {@code algorithm}) of a submitted admin form, after checking the
     * whole form: anything else throws with status
     * {@code invalid_argument}, naming it (the host answers
     * {@code <bad-request/>}). The host then checks the account by its own
     * rules and calls {@link #chooseFor}.
     */
    public static String adminFormValue(byte[] submitted, String var) {
        Objects.requireNonNull(submitted, "submitted");
        Objects.requireNonNull(var, "var");
        return new String(Native.adminFormValue(submitted, utf8(var)), StandardCharsets.UTF_8);
    }

    public static String adminFormValue(String submitted, String var) {
        return adminFormValue(utf8(Objects.requireNonNull(submitted, "submitted")), var);
    }

    /**
     * An operator's choice of algorithm (a URI or a short name) for an
     * account, online or not: not bound by {@code user_change}; an
     * algorithm the policy does not offer throws, naming it. It applies at
     * once when a session of the account is registered. Returns the URI
     * that the host persists where it keeps the account's choice (restored
     * at its next first session, as after an IQ).
     */
    public String chooseFor(byte[] bareJid, byte[] algorithm) {
        Objects.requireNonNull(bareJid, "bareJid");
        Objects.requireNonNull(algorithm, "algorithm");
        return call(h -> new String(Native.chooseFor(h, bareJid, algorithm), StandardCharsets.UTF_8));
    }

    public String chooseFor(String bareJid, String algorithm) {
        return chooseFor(utf8(bareJid), utf8(algorithm));
    }

    /**
     * The note of a completed admin command that chose {@code algorithm}
     * (as {@link #chooseFor} returned it) for the account, in the routing
     * command's words.
     */
    public String choiceNote(String bareJid, String algorithm) {
        byte[] jid = utf8(bareJid), uri = utf8(algorithm);
        return call(h -> new String(Native.choiceNote(h, jid, uri), StandardCharsets.UTF_8));
    }

    /**
     * The URI of the algorithm that applies to an account, for operators:
     * its sessions' when one is registered, else {@code stored} (the
     * host's persisted choice, or null) when the policy offers it, else
     * the policy's default.
     */
    public String algorithmFor(byte[] bareJid, byte[] stored) {
        Objects.requireNonNull(bareJid, "bareJid");
        return call(h -> new String(Native.algorithmFor(h, bareJid, stored), StandardCharsets.UTF_8));
    }

    public String algorithmFor(String bareJid, String stored) {
        return algorithmFor(utf8(bareJid), utf8OrNull(stored));
    }

    /** The disco#info features to advertise, on the server and on accounts. */
    public String[] discoFeatures() {
        return call(h -> new String(Native.discoFeatures(h), StandardCharsets.UTF_8).split("\n"));
    }

    /**
     * The account's per-session figures, a tab-separated table with a
     * header line naming its 8 columns: resource, routed, priority, show,
     * available, load, token, hibernating (find a column by its name).
     */
    public String stats(byte[] bareJid) {
        Objects.requireNonNull(bareJid, "bareJid");
        return call(h -> new String(Native.stats(h, bareJid), StandardCharsets.UTF_8));
    }

    public String stats(String bareJid) {
        return stats(utf8(bareJid));
    }

    /**
     * The router's figures now, one per series of {@link #metricSeries},
     * in its order: counters since the router was made, and what is
     * registered now.
     */
    public long[] metricValues() {
        return call(Native::metricValues);
    }

    /**
     * Runs {@code op} on the native router, which {@link #close} does not
     * free meanwhile; a closed router throws {@link IllegalStateException}.
     */
    <T> T call(LongFunction<T> op) {
        long stamp = lock.readLock();
        try {
            if (handle == 0) {
                throw new IllegalStateException("cmr: the router is closed");
            }
            return op.apply(handle);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    private void run(LongConsumer op) {
        call(h -> {
            op.accept(h);
            return null;
        });
    }

    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static byte[] utf8OrNull(String text) {
        return text == null ? null : utf8(text);
    }
}
