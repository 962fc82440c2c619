package org.cmr;

import java.nio.charset.StandardCharsets;

/**
 * Where the routing command stands after {@link Router#routingCommand},
 * with the form or the note to send, and whether to persist.
 */
public final class CommandAnswer {
    /**
     * The library's stages ({@code cmr_command_stage}), in the order of
     * their numbers there.
     */
    public enum Stage {
        /** {@link #text} is the XEP-0004 form to show; the command is executing. */
        FORM,
        /** {@link #text} says what changed: completed with an info note. */
        COMPLETED,
        /** {@link #text} says why nothing changed: completed with an error note. */
        REFUSED,
    }

    private static final Stage[] STAGES = Stage.values();

    /** From the JNI shim: the stage, the changed flag, then the text's UTF-8. */
    private final byte[] flagsAndText;

    CommandAnswer(byte[] flagsAndText) {
        this.flagsAndText = flagsAndText;
    }

    public Stage stage() {
        return STAGES[flagsAndText[0]];
    }

    /** The form ({@code <x xmlns='jabber:x:data' type='form'>}) or the note's text. */
    public String text() {
        return new String(flagsAndText, 2, flagsAndText.length - 2, StandardCharsets.UTF_8);
    }

    /**
     * Whether the account's algorithm changed: the host then stores
     * {@link Router#algorithm} for the account, as after an IQ.
     */
    public boolean changed() {
        return flagsAndText[1] != 0;
    }
}
