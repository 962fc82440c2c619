package org.cmr.openfire;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.cmr.CmrException;
import org.cmr.Router;
import org.jivesoftware.openfire.event.SessionEventListener;
import org.jivesoftware.openfire.session.ClientSession;
import org.jivesoftware.openfire.session.LocalSession;
import org.jivesoftware.openfire.session.Session;
import org.jivesoftware.openfire.user.PresenceEventListener;
import org.xmpp.packet.JID;
import org.xmpp.packet.Presence;

/**
 * Feeds the router the sessions of this node: bound, presence changes,
 * activity, gone. Each session gets a token, unique for the router's
 * lifetime, that a pick gives back.
 */
final class Sessions implements SessionEventListener, PresenceEventListener {
    /** A session known to the router, with its JID's bytes kept for calls. */
    static final class Tracked {
        final ClientSession session;
        final long token;
        final byte[] fullJid;
        /** The interval of the last activity reported (for mostactive). */
        volatile long touchedInterval;

        Tracked(ClientSession session, long token, JID address) {
            this.session = session;
            this.token = token;
            this.fullJid = address.toString().getBytes(StandardCharsets.UTF_8);
        }
    }

    private static final long ACTIVITY_INTERVAL_NANOS = Router.activityIntervalMillis() * 1_000_000L;

    private final CmrPlugin plugin;
    private final Router router;
    private final AtomicLong lastToken = new AtomicLong();
    private final Map<ClientSession, Tracked> bySession = new ConcurrentHashMap<>();
    private final Map<Long, Tracked> byToken = new ConcurrentHashMap<>();
    /** The sessions the router knows as waiting for resumption. */
    private final Set<Tracked> waiting = ConcurrentHashMap.newKeySet();

    Sessions(CmrPlugin plugin, Router router) {
        this.plugin = plugin;
        this.router = router;
    }

    /**
     * The session's entry: null before it has bound a resource (then
     * resourceBound registers it) and once it is gone.
     */
    Tracked tracked(ClientSession session) {
        return bySession.get(session);
    }

    /** The session a pick gave, or null when it is gone. */
    Tracked byToken(long token) {
        return byToken.get(token);
    }

    /** Registers the session, or updates it with its current presence. */
    void register(ClientSession session) {
        JID address = session.getAddress();
        if (address == null || address.getResource() == null || address.getNode() == null || closed(session)) {
            return;
        }
        Tracked tracked = bySession.computeIfAbsent(session, s -> {
            Tracked t = new Tracked(s, lastToken.incrementAndGet(), address);
            byToken.put(t.token, t);
            return t;
        });
        Presence presence = session.getPresence();
        boolean available = presence != null && presence.isAvailable();
        // RFC 6121 bounds a priority to -128..127; Openfire takes any
        // number. Beyond the bounds, the nearest keeps its sign and rank.
        int priority = presence == null ? 0 : Math.max(-128, Math.min(127, presence.getPriority()));
        String showText = presence == null ? null : show(presence);
        try {
            if (router.register(tracked.fullJid, tracked.token, priority, showText == null ? null : bytes(showText),
                    available)) {
                plugin.restore(address.asBareJID());
            }
        } catch (CmrException e) {
            plugin.refused(e, "Not routing to " + address);
        }
        // Registered while it waits (the plugin loaded meanwhile).
        refreshHibernation(tracked);
        // Destroyed meanwhile (its listener ran between the two lines
        // above): take back what this call registered.
        if (bySession.get(session) != tracked) {
            forget(tracked);
        }
    }

    /**
     * Tells the router whether the session waits for XEP-0198 resumption
     * (detached: its connection is gone, Openfire keeps the session for
     * it), when that changed, and says whether it waits. Openfire tells a
     * plugin neither when a session detaches nor when it resumes, so the
     * plugin looks: when it registers a session, before it delivers to a
     * picked one, when the session sends a stanza (it is back then), and
     * every second for the sessions it knows as waiting (refreshWaiting).
     */
    boolean refreshHibernation(Tracked tracked) {
        boolean detached = detached(tracked.session);
        if (detached == waiting.contains(tracked)) {
            // As the router knows it (the usual case, at each delivery).
            return detached;
        }
        synchronized (tracked) {
            detached = detached(tracked.session);
            if (detached ? waiting.add(tracked) : waiting.remove(tracked)) {
                try {
                    router.setHibernating(tracked.fullJid, tracked.token, detached);
                } catch (CmrException e) {
                    plugin.refused(e, null);
                }
            }
            return detached;
        }
    }

    /** Whether the router knows the session as waiting for resumption. */
    boolean waiting(Tracked tracked) {
        return waiting.contains(tracked);
    }

    /**
     * Looks again at the sessions known as waiting: one that resumed and
     * has sent nothing since is back in the rotation within a second.
     */
    void refreshWaiting() {
        for (Tracked tracked : waiting) {
            if (byToken.get(tracked.token) == tracked) {
                refreshHibernation(tracked);
            } else {
                // Forgotten while a check marked it.
                waiting.remove(tracked);
            }
        }
    }

    /**
     * Whether the session waits for XEP-0198 resumption. LocalSession's
     * isDetached() is the call 4.2 and 5.x share.
     */
    static boolean detached(Session session) {
        return session instanceof LocalSession && ((LocalSession) session).isDetached();
    }

    /** Forgets the session; a later pick can no longer give it. */
    void unregister(Session session) {
        Tracked tracked = bySession.remove(session);
        if (tracked != null) {
            forget(tracked);
        }
    }

    /**
     * Forgets a picked token whose session is closed or no longer known
     * here (`tracked` null), by its account's bare JID; the library counts
     * it as a gone session.
     */
    void dropPicked(long token, Tracked tracked, JID bare) {
        if (tracked != null) {
            bySession.remove(tracked.session, tracked);
            byToken.remove(token, tracked);
            waiting.remove(tracked);
        }
        try {
            router.sessionGone(bytes(bare.toBareJID()), token);
        } catch (CmrException e) {
            // Already gone from the router (a listener got there first).
            plugin.refused(e, null);
        } catch (IllegalStateException closed) {
            // The router closed under a reload: nothing left to forget.
        }
    }

    /**
     * Whether the session is closed. isClosed() is the call 4.2 to 5.x
     * share; 4.2's throws for a session waiting for XEP-0198 resumption
     * (it has no connection then), which is not closed.
     */
    static boolean closed(Session session) {
        try {
            return session.isClosed();
        } catch (NullPointerException detached) {
            return false;
        }
    }

    private void forget(Tracked tracked) {
        byToken.remove(tracked.token, tracked);
        waiting.remove(tracked);
        try {
            router.unregister(tracked.fullJid, tracked.token);
        } catch (CmrException e) {
            plugin.refused(e, null);
        }
    }

    /**
     * Reports the session's activity, at most once per the library's
     * activity interval. A session that sends is no longer waiting for
     * resumption.
     */
    void touch(Tracked tracked) {
        if (waiting(tracked)) {
            refreshHibernation(tracked);
        }
        long interval = System.nanoTime() / ACTIVITY_INTERVAL_NANOS;
        if (tracked.touchedInterval != interval) {
            tracked.touchedInterval = interval;
            try {
                router.touch(tracked.fullJid, tracked.token);
            } catch (CmrException e) {
                plugin.refused(e, null);
            }
        }
    }

    /** Forgets every session (the plugin is going). */
    void clear() {
        bySession.clear();
        byToken.clear();
        waiting.clear();
    }

    /** The presence's show, or null: an unknown one is none. */
    private static String show(Presence presence) {
        try {
            Presence.Show show = presence.getShow();
            return show == null ? null : show.name();
        } catch (IllegalArgumentException unknown) {
            // Presence.getShow() throws on a value outside RFC 6121's four.
            return null;
        }
    }

    static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    // The listeners: what goes wrong here is logged, never thrown into
    // Openfire's session or presence handling.

    @Override
    public void resourceBound(Session session) {
        if (session instanceof ClientSession) {
            guarded((ClientSession) session);
        }
    }

    @Override
    public void sessionDestroyed(Session session) {
        try {
            unregister(session);
        } catch (RuntimeException e) {
            CmrPlugin.LOG.error("cmr could not forget the session {}", session.getAddress(), e);
        }
    }

    @Override
    public void availableSession(ClientSession session, Presence presence) {
        guarded(session);
    }

    @Override
    public void unavailableSession(ClientSession session, Presence presence) {
        guarded(session);
    }

    @Override
    public void presenceChanged(ClientSession session, Presence presence) {
        guarded(session);
    }

    private void guarded(ClientSession session) {
        try {
            register(session);
        } catch (RuntimeException e) {
            CmrPlugin.LOG.error("cmr could not register the session {}", session.getAddress(), e);
        }
    }

    @Override
    public void sessionCreated(Session session) {}

    @Override
    public void anonymousSessionCreated(Session session) {}

    @Override
    public void anonymousSessionDestroyed(Session session) {
        sessionDestroyed(session);
    }

    @Override
    public void subscribedToPresence(JID subscriber, JID authorizer) {}

    @Override
    public void unsubscribedToPresence(JID unsubscriber, JID recipient) {}
}
