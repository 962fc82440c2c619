package org.cmr.openfire;

import java.util.Collections;
import java.util.List;
import java.util.Map;
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
import org.jivesoftware.openfire.user.UserManager;
import org.jivesoftware.openfire.user.UserNotFoundException;
import org.xmpp.packet.JID;

/**
 * The ad-hoc commands (XEP-0050) added to Openfire's AdHocCommandHandler:
 * the users' routing command and the administrators' "Set an account's
 * message routing". The library builds each form, checks what comes back
 * and says what happened; the commands put that into Openfire's command
 * framework, check an account by Openfire's rules and persist the choice
 * where the XEP-0354 set does.
 *
 * <p>Openfire's framework hands a command the submitted form's values
 * (SessionData.getData()), not the form; each command writes them back
 * as the {@code <x type='submit'>} the library checks. It answers a
 * command only with its own stanza, so a form the library refuses
 * completes with an error note rather than a {@code <bad-request/>}.
 */
final class Commands {
    private static final String NS_DATA = "jabber:x:data";
    private static final List<AdHocCommand.Action> COMPLETE = Collections.singletonList(AdHocCommand.Action.complete);

    private Commands() {}

    /** A command of one form: shown, then submitted with "complete". */
    private abstract static class OneForm extends AdHocCommand {
        final CmrPlugin plugin;
        final Router router;

        OneForm(CmrPlugin plugin, Router router) {
            this.plugin = plugin;
            this.router = router;
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
        Routing(CmrPlugin plugin, Router router) {
            super(plugin, router);
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
        protected void addStageInformation(SessionData data, Element command) {
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
        AccountRouting(CmrPlugin plugin, Router router) {
            super(plugin, router);
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
        protected void addStageInformation(SessionData data, Element command) {
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
            // Openfire checks the permission when the command starts only.
            if (!hasPermission(data.getOwner())) {
                note(command, "error", "Only the server's administrators may set an account's routing.");
                return;
            }
            String domain = XMPPServer.getInstance().getServerInfo().getXMPPDomain();
            String uri;
            JID account;
            try {
                String submitted = submitted(data);
                String value = Router.adminFormValue(submitted, "accountjid");
                String algorithm = Router.adminFormValue(submitted, "algorithm");
                JID given;
                try {
                    given = new JID(value);
                } catch (IllegalArgumentException malformed) {
                    note(command, "error", value + " is not a valid JID; nothing changed.");
                    return;
                }
                // An account is a bare JID, as on the other servers: a
                // resource is refused, not dropped.
                if (given.getResource() != null) {
                    note(command, "error", value + " is not an account's bare JID; nothing changed.");
                    return;
                }
                account = given.asBareJID();
                if (account.getNode() == null || !XMPPServer.getInstance().isLocal(account)) {
                    note(command, "error", value + " is not an account of " + domain + "; nothing changed.");
                    return;
                }
                if (!localAccount(account)) {
                    note(command, "error", "There is no account " + value + "; nothing changed.");
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

    /**
     * The submitted form as the library reads it, from the values
     * Openfire kept of it (each field's name and values).
     */
    static String submitted(SessionData data) {
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
