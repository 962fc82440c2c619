package org.cmr.openfire;

import java.util.ArrayList;
import java.util.List;
import org.cmr.CmrException;
import org.cmr.Router;
import org.dom4j.Element;
import org.dom4j.QName;
import org.jivesoftware.openfire.RoutingTable;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.cluster.ClusterManager;
import org.jivesoftware.openfire.interceptor.InterceptorManager;
import org.jivesoftware.openfire.interceptor.PacketInterceptor;
import org.jivesoftware.openfire.interceptor.PacketRejectedException;
import org.jivesoftware.openfire.privacy.PrivacyList;
import org.jivesoftware.openfire.session.ClientSession;
import org.jivesoftware.openfire.session.Session;
import org.xmpp.packet.JID;
import org.xmpp.packet.Message;
import org.xmpp.packet.Packet;

/**
 * Routes messages for a local account's bare JID (and for a full JID that
 * is not online) through the library, before Openfire routes them:
 * delivers to the picked sessions with `to` untouched, then does what
 * Openfire's own path would have done after routing — carbons, removing
 * <private/>, the processed-phase interceptors — and stops Openfire's
 * routing. What the library does not route (nothing eligible, headline,
 * groupchat and error messages, a failed library) goes on to Openfire:
 * offline storage, errors, headline broadcast. Privacy lists (XEP-0016, and
 * XEP-0191's block list, which Openfire keeps as one) hold as they do in
 * Openfire's routing: a message the sender's list denies is left to
 * Openfire, which refuses it; the recipient's session checks its own list
 * as it processes the message; a carbon goes only where the list lets the
 * message in.
 */
final class MessageRouting implements PacketInterceptor {
    private static final String CARBONS = "urn:xmpp:carbons:2";
    private static final String FORWARD = "urn:xmpp:forward:0";
    private static final String CLIENT = "jabber:client";
    private static final QName PRIVATE = QName.get("private", CARBONS);
    private static final QName HINT = QName.get("cmr", "urn:xmpp:cmr:0");
    /**
     * A picked session can close, or start waiting for resumption, between
     * the pick and the delivery; each attempt drops or marks at least one,
     * so a few attempts settle (after the last, Openfire routes it).
     */
    private static final int MAX_PICKS = Router.maxPicksPerMessage();
    /**
     * What stops Openfire's own routing of a delivered message. One
     * instance: creating an exception records its stack, which would cost
     * each message microseconds, and nothing reads or changes this one
     * (MessageRouter only looks for a rejection message, and it has none).
     */
    private static final PacketRejectedException DELIVERED = new PacketRejectedException();

    private final CmrPlugin plugin;
    private final Router router;
    private final Sessions sessions;
    private final XMPPServer server = XMPPServer.getInstance();
    private final RoutingTable routingTable = server.getRoutingTable();
    private volatile boolean honourHints;
    /** Tokens of one pick, per thread: `all` may ask for more room. */
    private final ThreadLocal<long[]> picked = ThreadLocal.withInitial(() -> new long[8]);

    MessageRouting(CmrPlugin plugin, Router router, Sessions sessions) {
        this.plugin = plugin;
        this.router = router;
        this.sessions = sessions;
    }

    /** Whether messages are searched for a hint (the policy honours them). */
    void honourHints(boolean honour) {
        honourHints = honour;
    }

    @Override
    public void interceptPacket(Packet packet, Session session, boolean incoming, boolean processed)
            throws PacketRejectedException {
        if (!incoming || processed) {
            return;
        }
        ClientSession sender = session instanceof ClientSession ? (ClientSession) session : null;
        if (sender != null) {
            // A session is tracked from its resource binding until it is
            // gone. One that is not has not logged in or bound yet:
            // Openfire refuses what it sends (not-authorized) after the
            // interceptors; leave it so.
            Sessions.Tracked tracked = sessions.tracked(sender);
            if (tracked == null) {
                return;
            }
            // Any stanza from a session is its activity (mostactive), and
            // says it is not waiting for resumption.
            touch(tracked);
        }
        if (!(packet instanceof Message)) {
            return;
        }
        Message message = (Message) packet;
        // Packet's getters make the JID's text again at each call: each is
        // read once.
        JID from = message.getFrom();
        JID to = message.getTo();
        if (to == null && from != null) {
            to = from.asBareJID();
        }
        if (to == null || to.getNode() == null || !server.isLocal(to)) {
            return;
        }
        if (to.getResource() != null && routingTable.hasClientRoute(to)) {
            // To an online full JID: Openfire's to deliver.
            return;
        }
        if (sender != null && sendersListDenies(sender, message)) {
            // MessageRouter answers not-acceptable after the interceptors.
            return;
        }
        boolean delivered;
        try {
            delivered = route(message, to.asBareJID(), from, sender, session);
        } catch (PacketRejectedException rejected) {
            throw rejected;
        } catch (RuntimeException | LinkageError e) {
            // A bug here must not lose the message: Openfire routes it.
            CmrPlugin.LOG.error("cmr could not route a message to {}; Openfire routes it", to, e);
            return;
        }
        if (delivered) {
            // Openfire drops a rejected packet silently.
            throw DELIVERED;
        }
    }

    /**
     * Whether the sender's privacy list denies the message, checked as
     * MessageRouter does: the recipient's message to the sender, as the
     * sender's session would receive it.
     */
    private static boolean sendersListDenies(ClientSession sender, Message message) {
        PrivacyList list = privacyList(sender);
        if (list == null) {
            return false;
        }
        Message reversed = message.createCopy();
        reversed.setFrom(message.getTo());
        reversed.setTo(message.getFrom());
        return list.shouldBlockPacket(reversed);
    }

    /**
     * The list a session's privacy check reads: its active list, else its
     * account's default list. Read as LocalClientSession does (canProcess in
     * 4.2, canDeliver in 5.x, which also answers the sender): neither is
     * one API across the versions the plugin runs on, ClientSession's
     * getters are.
     */
    private static PrivacyList privacyList(ClientSession session) {
        PrivacyList active = session.getActiveList();
        return active != null ? active : session.getDefaultList();
    }

    /** Whether `session`'s privacy list lets `packet` in. */
    private static boolean accepts(ClientSession session, Packet packet) {
        PrivacyList list = privacyList(session);
        return list == null || !list.shouldBlockPacket(packet);
    }

    /** Activity of the sender's session. */
    private void touch(Sessions.Tracked sender) {
        try {
            sessions.touch(sender);
        } catch (RuntimeException e) {
            CmrPlugin.LOG.error("cmr could not note the activity of {}", sender.session.getAddress(), e);
        }
    }

    /**
     * Runs what InterceptorManager would run after this interceptor: the
     * global interceptors added later, then the sender's user
     * interceptors. One that fails is logged and skipped, as Openfire does.
     */
    private void invokeLaterInterceptors(Message message, Session session) throws PacketRejectedException {
        InterceptorManager manager = InterceptorManager.getInstance();
        // The list's iterator is a snapshot (copy-on-write); none run when
        // this one is no longer in it (the plugin is unloading).
        boolean after = false;
        for (PacketInterceptor interceptor : manager.getInterceptors()) {
            if (after) {
                invoke(interceptor, message, session);
            }
            after |= interceptor == this;
        }
        String username = session == null ? null : session.getAddress().getNode();
        if (username != null && server.isLocal(session.getAddress())) {
            for (PacketInterceptor interceptor : manager.getUserInterceptors(username)) {
                invoke(interceptor, message, session);
            }
        }
    }

    private static void invoke(PacketInterceptor interceptor, Message message, Session session)
            throws PacketRejectedException {
        try {
            interceptor.interceptPacket(message, session, true, false);
        } catch (PacketRejectedException rejected) {
            throw rejected;
        } catch (Exception | Error e) {
            // As InterceptorManager does: logged, and the others go on.
            CmrPlugin.LOG.error("Error in interceptor " + interceptor + " while intercepting " + message.toXML(), e);
        }
    }

    /**
     * Routes the message to the account's picked sessions; false leaves it
     * to Openfire, unchanged.
     */
    private boolean route(Message message, JID bare, JID from, ClientSession sender, Session session)
            throws PacketRejectedException {
        // Read as text: Message.getType() throws on a type it does not know.
        // The library decides which types are its to route.
        String type = message.getElement().attributeValue("type", "");
        // In a cluster, an account with a session on another node is left
        // to Openfire (outside one, every route is this node's).
        if (ClusterManager.isClusteringStarted()) {
            for (JID route : routingTable.getRoutes(bare, null)) {
                if (!routingTable.isLocalRoute(route)) {
                    plugin.leftToOpenfire(bare);
                    return false;
                }
            }
        }
        Element privateElement = message.getElement().element(PRIVATE);
        List<ClientSession> delivered = new ArrayList<>(1);
        try {
            deliver(message, bare, type, from, sender, session, privateElement, delivered);
        } finally {
            if (delivered.isEmpty() && privateElement != null && privateElement.getParent() == null) {
                // Back to Openfire as it came.
                message.getElement().add(privateElement);
            }
        }
        if (delivered.isEmpty()) {
            return false;
        }
        if (type.equals("chat") && privateElement == null) {
            carbons(message, bare, delivered, sender);
        }
        try {
            // What Openfire's MessageRouter does once it has routed: the
            // processed phase (archiving plugins listen there).
            InterceptorManager.getInstance().invokeInterceptors(message, sender, true, true);
        } catch (PacketRejectedException e) {
            // Too late to reject: it has been delivered.
        }
        return true;
    }

    /**
     * Picks and delivers, adding the sessions that took the message to
     * `delivered` (left empty when the library does not route it).
     */
    private void deliver(Message message, JID bare, String type, JID from, ClientSession sender, Session session,
            Element privateElement, List<ClientSession> delivered) throws PacketRejectedException {
        byte[] recipientBytes = Sessions.bytes(bare.toBareJID());
        byte[] typeBytes = Sessions.bytes(type);
        byte[] senderBytes = from == null ? null : Sessions.bytes(from.toString());
        String hint = null;
        if (honourHints) {
            Element element = message.getElement().element(HINT);
            hint = element == null ? null : element.attributeValue("algorithm");
        }
        boolean senderIsLocal = hint != null && (sender != null || (from != null && server.isLocal(from)));
        byte[] hintBytes = hint == null ? null : Sessions.bytes(hint);
        for (int attempt = 0; attempt < MAX_PICKS && delivered.isEmpty(); attempt++) {
            long[] tokens = picked.get();
            int n;
            try {
                n = router.pick(recipientBytes, typeBytes, senderBytes, hintBytes, senderIsLocal, tokens);
                if (n > tokens.length) {
                    tokens = new long[n];
                    picked.set(tokens);
                    n = router.pick(recipientBytes, typeBytes, senderBytes, hintBytes, senderIsLocal, tokens);
                }
            } catch (CmrException e) {
                plugin.refused(e, "Not routing a message to " + bare);
                return;
            }
            if (n == 0 || n > tokens.length) {
                return;
            }
            if (attempt == 0) {
                // The interceptors after this one never see a packet this
                // one rejects: once it is CMR's to deliver, they get their
                // say, and may reject it (as they would natively).
                invokeLaterInterceptors(message, session);
            }
            if (!ready(tokens, n, bare)) {
                continue;
            }
            if (privateElement != null && privateElement.getParent() != null) {
                // The receiving server removes <private/> before delivering.
                message.getElement().remove(privateElement);
            }
            for (int i = 0; i < n; i++) {
                Sessions.Tracked tracked = sessions.byToken(tokens[i]);
                if (tracked == null) {
                    // Destroyed since: its listener unregistered it.
                    continue;
                }
                // Each session its own copy: a session's XEP-0198 queue
                // keeps what it was given and may change it (delay).
                tracked.session.process(delivered.isEmpty() ? message : message.createCopy());
                delivered.add(tracked.session);
            }
        }
    }

    /**
     * Whether the picked sessions can all take the message as the router
     * saw them. One found gone is dropped; one found waiting for XEP-0198
     * resumption that the router did not know to be waiting is marked (the
     * router then picks it only when no live session is eligible, or for
     * the copies of all). Either way the message is picked again.
     */
    private boolean ready(long[] tokens, int n, JID bare) {
        boolean ready = true;
        for (int i = 0; i < n; i++) {
            Sessions.Tracked tracked = sessions.byToken(tokens[i]);
            if (tracked == null || Sessions.closed(tracked.session)) {
                CmrPlugin.LOG.debug("Picked session {} is gone; routing again", tokens[i]);
                sessions.dropPicked(tokens[i], tracked, bare);
                ready = false;
            } else {
                boolean known = sessions.waiting(tracked);
                if (sessions.refreshHibernation(tracked) && !known) {
                    CmrPlugin.LOG.debug("Picked session {} waits for resumption; routing again", tokens[i]);
                    ready = false;
                }
            }
        }
        return ready;
    }

    /**
     * XEP-0280 as Openfire does it for chat messages (the only type copied): a `received` copy to
     * the recipient's other carbons-enabled sessions, a `sent` copy to the
     * sender's.
     */
    private void carbons(Message message, JID bare, List<ClientSession> delivered, ClientSession sender) {
        for (JID route : routingTable.getRoutes(bare, null)) {
            ClientSession other = routingTable.getClientRoute(route);
            // The copy comes from the account itself, past the session's
            // privacy check: the original must pass it.
            if (other != null && !delivered.contains(other) && other.isMessageCarbonsEnabled()
                    && accepts(other, message)) {
                other.process(carbon(message, "received", bare, route));
            }
        }
        // As delivered: an interceptor after this one may have changed it.
        JID from = sender == null ? null : message.getFrom();
        if (from != null) {
            JID senderBare = from.asBareJID();
            for (JID route : routingTable.getRoutes(senderBare, null)) {
                ClientSession other = routingTable.getClientRoute(route);
                if (other != null && other != sender && !delivered.contains(other) && other.isMessageCarbonsEnabled()) {
                    other.process(carbon(message, "sent", senderBare, route));
                }
            }
        }
    }

    private static Message carbon(Message message, String direction, JID from, JID to) {
        Message carbon = new Message();
        carbon.setType(Message.Type.chat);
        carbon.setFrom(from);
        carbon.setTo(to);
        // Packets carry no namespace (the stream's default applies); inside
        // <forwarded/> the message and its unqualified children need
        // jabber:client spelled out.
        Element copy = message.createCopy().getElement();
        copy.setQName(QName.get("message", CLIENT));
        for (Element child : copy.elements()) {
            if (child.getNamespaceURI().isEmpty()) {
                child.setQName(QName.get(child.getName(), CLIENT));
            }
        }
        carbon.getElement().addElement(QName.get(direction, CARBONS))
                .addElement(QName.get("forwarded", FORWARD))
                .add(copy);
        return carbon;
    }
}
