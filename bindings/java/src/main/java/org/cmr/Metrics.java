package org.cmr;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A router's figures at one moment, for the host's metrics: counters since
 * the router was made (they only grow), and what is registered now
 * ({@link #sessions}, {@link #accounts}). The per-algorithm maps are keyed
 * by the library's short names ({@link Router#algorithms}), in its order.
 */
public final class Metrics {
    private final Map<String, Long> routed;
    private final Map<String, Long> leftToServer;
    private final long leftToServerUnclaimed;
    private final long goneSessions;
    private final long iqResults;
    private final long iqErrors;
    private final long sessions;
    private final long accounts;

    /** From the JNI shim's array: routed[n], left_to_server[n], then six figures. */
    Metrics(List<String> algorithms, long[] values) {
        int n = algorithms.size();
        if (values.length != 2 * n + 6) {
            throw new IllegalStateException(
                    "cmr: " + values.length + " metrics for " + n + " algorithms (library and binding differ)");
        }
        routed = perAlgorithm(algorithms, values, 0);
        leftToServer = perAlgorithm(algorithms, values, n);
        leftToServerUnclaimed = values[2 * n];
        goneSessions = values[2 * n + 1];
        iqResults = values[2 * n + 2];
        iqErrors = values[2 * n + 3];
        sessions = values[2 * n + 4];
        accounts = values[2 * n + 5];
    }

    private static Map<String, Long> perAlgorithm(List<String> algorithms, long[] values, int from) {
        Map<String, Long> map = new LinkedHashMap<>();
        for (int i = 0; i < algorithms.size(); i++) {
            map.put(algorithms.get(i), values[from + i]);
        }
        return Collections.unmodifiableMap(map);
    }

    /** Messages routed by CMR, per algorithm (a hint's when it applied). */
    public Map<String, Long> routed() {
        return routed;
    }

    /**
     * Messages left to the server although the account has sessions
     * registered (none of them eligible), per algorithm.
     */
    public Map<String, Long> leftToServer() {
        return leftToServer;
    }

    /**
     * Messages left to the server with no algorithm applied: the account
     * has no session registered, or the type is not CMR's to route.
     */
    public long leftToServerUnclaimed() {
        return leftToServerUnclaimed;
    }

    /** Picked sessions the host found gone ({@link Router#sessionGone}). */
    public long goneSessions() {
        return goneSessions;
    }

    /** CMR IQs answered with a result. */
    public long iqResults() {
        return iqResults;
    }

    /** CMR IQs answered with an error, or refused as malformed. */
    public long iqErrors() {
        return iqErrors;
    }

    /** Sessions registered now. */
    public long sessions() {
        return sessions;
    }

    /** Accounts with a session registered now. */
    public long accounts() {
        return accounts;
    }
}
