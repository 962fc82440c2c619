package org.cmr;

import java.nio.charset.StandardCharsets;

/**
 * A call the library refused, with its status' name (the library's:
 * {@code invalid_jid}, {@code not_found}, ...) and its message (which
 * names the argument at fault). {@link #routerFailed} means the router
 * caught a bug in itself: every later call on it throws, and the host
 * routes by itself.
 */
public final class CmrException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String status;
    private final String reason;
    private final boolean routerFailed;

    /** Made by the JNI shim from the library's status and message. */
    private CmrException(byte[] status, byte[] message, boolean routerFailed) {
        this(new String(status, StandardCharsets.UTF_8), new String(message, StandardCharsets.UTF_8),
                routerFailed);
    }

    private CmrException(String status, String message, boolean routerFailed) {
        super(status + ": " + message);
        this.status = status;
        this.reason = message;
        this.routerFailed = routerFailed;
    }

    /** The library's name of the status ({@code cmr_status_name}). */
    public String status() {
        return status;
    }

    /**
     * The library's message alone, without the status' name: what to tell
     * a person (a command's note, an error's text).
     */
    public String reason() {
        return reason;
    }

    /** Whether the router has failed (the library's panic status). */
    public boolean routerFailed() {
        return routerFailed;
    }
}
