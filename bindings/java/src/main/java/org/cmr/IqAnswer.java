package org.cmr;

import java.nio.charset.StandardCharsets;

/** The stanza to send back for a XEP-0354 IQ, and whether to persist. */
public final class IqAnswer {
    /** From the JNI shim: the changed flag, then the stanza's UTF-8. */
    private final byte[] flagAndStanza;

    IqAnswer(byte[] flagAndStanza) {
        this.flagAndStanza = flagAndStanza;
    }

    /** The whole response stanza (a result or an error IQ). */
    public String stanza() {
        return new String(flagAndStanza, 1, flagAndStanza.length - 1, StandardCharsets.UTF_8);
    }

    /**
     * Whether the account's algorithm changed: the host then stores
     * {@link Router#algorithm} for the account.
     */
    public boolean changed() {
        return flagAndStanza[0] != 0;
    }
}
