package org.cmr;

import java.nio.charset.StandardCharsets;

/**
 * A command a host offers through its ad-hoc framework (XEP-0050), as the
 * library names it ({@code cmr_command} in include/cmr.h): the users'
 * routing command ({@link #routing}, run with
 * {@link Router#routingCommand}) and the administrators' one
 * ({@link #admin}, whose form is {@link Router#adminForm}).
 */
public final class Command {
    private static volatile Command routing;
    private static volatile Command admin;

    private final String node;
    private final String name;

    /** Made by the JNI shim from the library's description. */
    private Command(byte[] node, byte[] name) {
        this.node = new String(node, StandardCharsets.UTF_8);
        this.name = new String(name, StandardCharsets.UTF_8);
    }

    /** The routing command users run: "Message routing". */
    public static Command routing() {
        Command command = routing;
        if (command == null) {
            command = Native.command(false);
            routing = command;
        }
        return command;
    }

    /** The admin command: "Set an account's message routing". */
    public static Command admin() {
        Command command = admin;
        if (command == null) {
            command = Native.command(true);
            admin = command;
        }
        return command;
    }

    /** The command's node, its code in the host's command list. */
    public String node() {
        return node;
    }

    /** The name clients show in their command lists. */
    public String name() {
        return name;
    }

    @Override
    public String toString() {
        return node + " (" + name + ")";
    }
}
