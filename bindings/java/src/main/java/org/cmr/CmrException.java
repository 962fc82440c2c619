package org.cmr;

import java.nio.charset.StandardCharsets;

/**
 * A call the library refused, with its status and its message (which
 * names the argument at fault). {@link Status#PANIC} means the router is
 * failed: every later call on it throws, and the host routes by itself.
 */
public final class CmrException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final Status status;

    /** Made by the JNI shim from the library's status and message. */
    private CmrException(int status, byte[] message) {
        this(Status.of(status), new String(message, StandardCharsets.UTF_8));
    }

    CmrException(Status status, String message) {
        super(status.name().toLowerCase(java.util.Locale.ROOT) + ": " + message);
        this.status = status;
    }

    public Status status() {
        return status;
    }
}
