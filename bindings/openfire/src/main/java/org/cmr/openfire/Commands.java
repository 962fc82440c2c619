package org.cmr.openfire;

import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.cmr.CmrException;
import org.cmr.Command;
import org.cmr.CommandAnswer;
import org.cmr.Router;
import org.dom4j.DocumentException;
import org.dom4j.DocumentHelper;
import org.dom4j.Element;
import org.dom4j.QName;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.commands.AdHocCommand;
import org.jivesoftware.openfire.commands.SessionData;
import org.jivesoftware.openfire.interceptor.PacketInterceptor;
import org.jivesoftware.openfire.session.Session;
import org.jivesoftware.openfire.user.UserManager;
import org.jivesoftware.openfire.user.UserNotFoundException;
import org.xmpp.packet.IQ;
import org.xmpp.packet.JID;
import org.xmpp.packet.Packet;

/**
 * The ad-hoc commands (XEP-0050) added to Openfire's AdHocCommandHandler:
 * the users' routing command and the administrators' "Set an account's
 * message routing". The library builds each form, checks what comes back
 * and says what happened; the commands put that into Openfire's command
 * framework, check an account by Openfire's rules and persist the choice
 * where the XEP-0354 set does.
 *
 * <p>Openfire's framework lets whoever names a command session's id act
 * in it as its owner, and hands a command the values it parsed of the
 * submitted form, not the form: {@link Guard} keeps each session of these
 * two commands to its owner and the form as the owner sent it, which the
 * library checks. The framework answers a command only with its own
 * stanza, so a form the library refuses completes with an error note
 * rather than a {@code <bad-request/>}.
 */
final class Commands {
    private static final String NS_DATA = "jabber:x:data";
    private static final String NS_COMMANDS = "http://jabber.org/protocol/commands";
    private static final List<AdHocCommand.Action> COMPLETE = Collections.singletonList(AdHocCommand.Action.complete);

    private Commands() {}

    /**
     * An interceptor that keeps each session of these commands to its
     * owner (the full JID that started it): to anyone else the session's
     * id is unknown, and Openfire answers {@code <bad-request/>} as for any
     * unknown session. It keeps the form the owner submits, as sent.
     */
    static final class Guard implements PacketInterceptor {
        /** Longer than Openfire keeps a command session (10 minutes). */
        private static final long KEPT_MILLIS = TimeUnit.HOURS.toMillis(1);

        private static final class Owned {
            final JID owner;
            final long since;
            volatile String form;

            Owned(JID owner, long since) {
                this.owner = owner;
                this.since = since;
            }
        }

        private final Map<String, Owned> sessions = new ConcurrentHashMap<>();

        /** A session of one of these commands was started. */
        void opened(SessionData data) {
            long now = System.currentTimeMillis();
            // Sessions left unfinished are forgotten after a while.
            sessions.values().removeIf(owned -> now - owned.since > KEPT_MILLIS);
            sessions.put(data.getId(), new Owned(data.getOwner(), now));
        }

        /** The session ends: the form its owner submitted, null if none. */
        String closed(SessionData data) {
            Owned owned = sessions.remove(data.getId());
            return owned == null ? null : owned.form;
        }

        @Override
        public void interceptPacket(Packet packet, Session session, boolean incoming, boolean processed) {
            if (!incoming || processed || !(packet instanceof IQ)) {
                return;
            }
            Element command = ((IQ) packet).getChildElement();
            if (command == null || !"command".equals(command.getName())
                    || !NS_COMMANDS.equals(command.getNamespaceURI())) {
                return;
            }
            String id = command.attributeValue("sessionid");
            Owned owned = id == null ? null : sessions.get(id);
            if (owned == null) {
                return;
            }
            if (!owned.owner.equals(packet.getFrom())) {
                command.addAttribute("sessionid", id + " (not yours)");
                return;
            }
            Element form = command.element(QName.get("x", NS_DATA));
            owned.form = form == null ? null : form.asXML();
        }
    }

    /**
     * A command of one form: shown, then submitted with "complete". (Each
     * subclass names itself from the library statically: AdHocCommand's
     * constructor already asks for the label, before any field is set.)
     */
    private abstract static class OneForm extends AdHocCommand {
        final CmrPlugin plugin;
        final Router router;
        private final Guard guard;

        OneForm(CmrPlugin plugin, Router router, Guard guard) {
            this.plugin = plugin;
            this.router = router;
            this.guard = guard;
        }

        /** The command's form (or a note), when the session starts. */
        abstract void showForm(SessionData data, Element command);

        @Override
        protected final void addStageInformation(SessionData data, Element command) {
            guard.opened(data);
            showForm(data, command);
        }

        /**
         * The form the owner submitted, as sent; when it sent none, what
         * Openfire kept of it (no field), which the library refuses.
         */
        String submitted(SessionData data) {
            String form = guard.closed(data);
            return form != null ? form : kept(data);
        }

        @Override
        public int getMaxStages(SessionData data) {
            return 1;
        }

        @Override
        protected List<Action> getActions(SessionData data) {
            return COMPLETE;
        }

        @Override
        protected Action getExecuteAction(SessionData data) {
            return Action.complete;
        }
    }

    /** The users' routing command: one form, then the outcome. */
    static final class Routing extends OneForm {
        Routing(CmrPlugin plugin, Router router, Guard guard) {
            super(plugin, router, guard);
        }

        @Override
        public String getCode() {
            return Command.routing().node();
        }

        @Override
        public String getDefaultLabel() {
            return Command.routing().name();
        }

        /** The server's own users, from one of their sessions. */
        @Override
        public boolean hasPermission(JID requester) {
            return localAccount(requester) && requester.getResource() != null;
        }

        @Override
        void showForm(SessionData data, Element command) {
            answer(command, data.getOwner(), null);
        }

        @Override
        public void execute(SessionData data, Element command) {
            answer(command, data.getOwner(), submitted(data));
        }

        /** The library's answer to the requester's form (or none) as the command's content. */
        private void answer(Element command, JID requester, String submitted) {
            CommandAnswer answer;
            try {
                answer = router.routingCommand(requester.toString(), submitted);
            } catch (CmrException e) {
                plugin.refused(e, null);
                note(command, "error", e.reason());
                return;
            }
            switch (answer.stage()) {
                case FORM:
                    command.add(parse(answer.text()));
                    break;
                case COMPLETED:
                    if (answer.changed()) {
                        plugin.persist(requester.asBareJID());
                    }
                    note(command, "info", answer.text());
                    break;
                default:
                    note(command, "error", answer.text());
                    break;
            }
        }
    }

    /**
     * The administrators' command: an account (online or not) and an
     * algorithm. Who may run it is the base class's rule: Openfire's admin
     * list (AdminManager).
     */
    static final class AccountRouting extends OneForm {
        AccountRouting(CmrPlugin plugin, Router router, Guard guard) {
            super(plugin, router, guard);
        }

        @Override
        public String getCode() {
            return Command.admin().node();
        }

        @Override
        public String getDefaultLabel() {
            return Command.admin().name();
        }

        @Override
        void showForm(SessionData data, Element command) {
            try {
                command.add(parse(router.adminForm()));
            } catch (CmrException e) {
                plugin.refused(e, null);
                note(command, "error", e.reason());
            }
        }

        /**
         * Checks the submitted account by Openfire's rules, has the library
         * apply the algorithm and stores it: completed with a note that
         * names the account and the algorithm, or the value refused.
         */
        @Override
        public void execute(SessionData data, Element command) {
            String submitted = submitted(data);
            // Openfire checks the permission when the command starts only:
            // the owner may have left the admin list since.
            if (!hasPermission(data.getOwner())) {
                note(command, "error", "Only the server's administrators may set an account's routing.");
                return;
            }
            String domain = XMPPServer.getInstance().getServerInfo().getXMPPDomain();
            String uri;
            JID account;
            try {
                String value = Router.adminFormValue(submitted, "accountjid");
                String algorithm = Router.adminFormValue(submitted, "algorithm");
                JID given;
                try {
                    given = new JID(value);
                } catch (IllegalArgumentException malformed) {
                    note(command, "error", "'" + value + "' is not a valid JID; nothing changed.");
                    return;
                }
                // An account is a bare JID, as on the other servers: a
                // resource is refused, not dropped.
                if (given.getResource() != null) {
                    note(command, "error", "'" + value + "' is not an account's bare JID; nothing changed.");
                    return;
                }
                account = given.asBareJID();
                if (account.getNode() == null || !XMPPServer.getInstance().isLocal(account)) {
                    note(command, "error", "'" + value + "' is not an account of " + domain + "; nothing changed.");
                    return;
                }
                if (!localAccount(account)) {
                    note(command, "error", "There is no account '" + value + "'; nothing changed.");
                    return;
                }
                uri = router.chooseFor(account.toBareJID(), algorithm);
            } catch (CmrException e) {
                plugin.refused(e, null);
                note(command, "error", e.reason());
                return;
            }
            plugin.store(account, uri);
            try {
                note(command, "info", router.choiceNote(account.toBareJID(), uri));
            } catch (CmrException e) {
                plugin.refused(e, null);
                note(command, "info", uri);
            }
        }
    }

    /** Whether `jid` is a user of this server. */
    static boolean localAccount(JID jid) {
        if (jid == null || jid.getNode() == null || !XMPPServer.getInstance().isLocal(jid)) {
            return false;
        }
        try {
            UserManager.getInstance().getUser(jid.getNode());
            return true;
        } catch (UserNotFoundException e) {
            return false;
        }
    }

    /** A submitted form made of the values Openfire kept of it. */
    static String kept(SessionData data) {
        Element form = DocumentHelper.createElement(QName.get("x", NS_DATA));
        form.addAttribute("type", "submit");
        for (Map.Entry<String, List<String>> entry : data.getData().entrySet()) {
            Element field = form.addElement(QName.get("field", NS_DATA));
            field.addAttribute("var", entry.getKey());
            for (String value : entry.getValue()) {
                field.addElement(QName.get("value", NS_DATA)).setText(value);
            }
        }
        return form.asXML();
    }

    /** The library's form as an element to add to a command. */
    static Element parse(String xml) {
        try {
            return DocumentHelper.parseText(xml).getRootElement().createCopy();
        } catch (DocumentException e) {
            throw new IllegalStateException("cmr: the library's form does not parse: " + xml, e);
        }
    }

    static void note(Element command, String type, String text) {
        command.addElement("note").addAttribute("type", type).setText(text);
    }
}
