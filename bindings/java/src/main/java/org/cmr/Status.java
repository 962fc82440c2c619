package org.cmr;

/** The library's statuses (cmr_status in include/cmr.h). */
public enum Status {
    OK(0),
    NOT_ROUTED(1),
    NOT_MINE(2),
    BUFFER_TOO_SMALL(3),
    NOT_FOUND(4),
    NULL_PARAMETER(100),
    INVALID_UTF8(101),
    INVALID_JID(102),
    INVALID_XML(103),
    INVALID_ARGUMENT(104),
    UNKNOWN_ALGORITHM(105),
    NOT_OFFERED(106),
    INVALID_OPTION(107),
    PANIC(200),
    /** A number this binding does not know (a newer library). */
    UNKNOWN(-1);

    private final int code;

    Status(int code) {
        this.code = code;
    }

    /** The number the C ABI uses. */
    public int code() {
        return code;
    }

    static Status of(int code) {
        for (Status status : values()) {
            if (status.code == code) {
                return status;
            }
        }
        return UNKNOWN;
    }
}
