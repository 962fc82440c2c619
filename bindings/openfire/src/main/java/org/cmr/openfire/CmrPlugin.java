package org.cmr.openfire;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import org.cmr.CmrException;
import org.cmr.Router;
import org.cmr.Status;
import org.jivesoftware.openfire.SessionManager;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.container.Plugin;
import org.jivesoftware.openfire.container.PluginManager;
import org.jivesoftware.openfire.disco.IQDiscoInfoHandler;
import org.jivesoftware.openfire.event.SessionEventDispatcher;
import org.jivesoftware.openfire.interceptor.InterceptorManager;
import org.jivesoftware.openfire.session.ClientSession;
import org.jivesoftware.openfire.user.PresenceEventDispatcher;
import org.jivesoftware.openfire.user.UserManager;
import org.jivesoftware.openfire.user.UserNotFoundException;
import org.jivesoftware.util.JiveGlobals;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.xmpp.packet.JID;

/**
 * XEP-0354 Customizable Message Routing for Openfire: the routing decisions
 * live in the cmr library; this plugin feeds it the sessions, routes chat
 * and normal messages for local accounts through it, and answers the
 * XEP-0354 IQs with it. See README.md beside this project.
 */
public final class CmrPlugin implements Plugin {
    static final Logger LOG = LoggerFactory.getLogger(CmrPlugin.class);
    /** The user property that keeps an account's chosen algorithm. */
    static final String ALGORITHM_PROPERTY = "cmr.algorithm";
    /** Openfire properties, each passed to the library as an option. */
    private static final String[][] SETTINGS = {
        {"cmr.offered", "offered"},
        {"cmr.default", "default"},
        {"cmr.user_change", "user_change"},
        {"cmr.hints", "hints"},
        {"cmr.prefix", "prefix"},
    };

    private Router router;
    private Sessions sessions;
    private MessageRouting routing;
    private CmrIqHandler iqHandler;
    private StatsIqHandler statsHandler;
    private Statistics statistics;
    private final List<String> features = new ArrayList<>();
    /** Null on Openfire 4.2, which shows the server's features there. */
    private AccountFeatures accountFeatures;
    private final AtomicBoolean failureLogged = new AtomicBoolean();
    private final Set<String> leftToOpenfire = ConcurrentHashMap.newKeySet();

    @Override
    public void initializePlugin(PluginManager manager, File pluginDirectory) {
        try {
            Router.loadLibrary(new File(pluginDirectory, "native/linux-x86_64/libcmr_jni.so").toPath());
        } catch (IOException e) {
            throw new IllegalStateException("cmr: cannot load the library from " + pluginDirectory, e);
        }
        router = new Router(options());
        sessions = new Sessions(this, router);
        routing = new MessageRouting(this, router, sessions);
        XMPPServer server = XMPPServer.getInstance();
        iqHandler = new CmrIqHandler(this, router);
        statsHandler = new StatsIqHandler(router, sessions);
        server.getIQRouter().addHandler(iqHandler);
        server.getIQRouter().addHandler(statsHandler);
        IQDiscoInfoHandler disco = server.getIQDiscoInfoHandler();
        for (String feature : router.discoFeatures()) {
            features.add(feature);
            disco.addServerFeature(feature);
        }
        accountFeatures = AccountFeatures.register(disco, features);
        routing.honourHints(features.contains("urn:xmpp:cmr:hints:0"));
        statistics = new Statistics(this, router, manager.getCanonicalName(this));
        statistics.register();
        // Listening first, then the sessions that exist now (a load or a
        // reload): none is missed, and one destroyed meanwhile is taken back
        // (Sessions.register). Routing starts once they are known.
        SessionEventDispatcher.addListener(sessions);
        PresenceEventDispatcher.addListener(sessions);
        for (ClientSession session : SessionManager.getInstance().getSessions()) {
            if (session.getAddress() != null && server.getRoutingTable().isLocalRoute(session.getAddress())) {
                sessions.register(session);
            }
        }
        InterceptorManager.getInstance().addInterceptor(routing);
        LOG.info("cmr {} routing for {}", Router.version(), server.getServerInfo().getXMPPDomain());
    }

    @Override
    public void destroyPlugin() {
        InterceptorManager.getInstance().removeInterceptor(routing);
        SessionEventDispatcher.removeListener(sessions);
        PresenceEventDispatcher.removeListener(sessions);
        XMPPServer server = XMPPServer.getInstance();
        server.getIQRouter().removeHandler(iqHandler);
        server.getIQRouter().removeHandler(statsHandler);
        if (accountFeatures != null) {
            accountFeatures.remove();
        }
        for (String feature : features) {
            server.getIQDiscoInfoHandler().removeServerFeature(feature);
        }
        features.clear();
        statistics.remove();
        sessions.clear();
        router.close();
    }

    /** The library's options from the cmr.* Openfire properties. */
    private static String options() {
        StringBuilder options = new StringBuilder();
        for (String[] setting : SETTINGS) {
            String value = JiveGlobals.getProperty(setting[0], null);
            if (value == null) {
                continue;
            }
            value = value.trim();
            if (value.isEmpty() || value.chars().anyMatch(Character::isWhitespace)) {
                throw new IllegalArgumentException("cmr: property " + setting[0] + " = '" + value
                        + "': a value is one word (lists are comma-separated, without spaces)");
            }
            options.append(setting[1]).append('=').append(value).append(' ');
        }
        return options.toString().trim();
    }

    /** Restores the account's stored algorithm: its first session bound. */
    void restore(JID bare) {
        String stored;
        try {
            stored = UserManager.getInstance().getUser(bare.getNode()).getProperties().get(ALGORITHM_PROPERTY);
        } catch (UserNotFoundException e) {
            return;
        }
        if (stored == null) {
            return;
        }
        try {
            router.setAlgorithm(bare.toBareJID(), stored);
        } catch (CmrException e) {
            refused(e, "Stored algorithm of " + bare + " not restored");
        }
    }

    /** Stores the account's algorithm after a user changed it. */
    void persist(JID bare) {
        try {
            String algorithm = router.algorithm(bare.toBareJID());
            Map<String, String> properties = UserManager.getInstance().getUser(bare.getNode()).getProperties();
            properties.put(ALGORITHM_PROPERTY, algorithm);
        } catch (UserNotFoundException e) {
            LOG.warn("Choice of {} not stored: no such user", bare);
        } catch (CmrException e) {
            refused(e, "Choice of " + bare + " not stored");
        }
    }

    /**
     * A call the library refused. PANIC means it caught a bug and refuses
     * every call from now on: said once, at error level, and Openfire routes
     * by itself (every caller falls back). Others are logged with `what`,
     * or at debug level when `what` is null.
     */
    void refused(CmrException e, String what) {
        if (e.status() == Status.PANIC) {
            if (failureLogged.compareAndSet(false, true)) {
                LOG.error("cmr failed; Openfire routes messages itself until the plugin is reloaded: {}",
                        e.getMessage());
            }
        } else if (what != null) {
            LOG.warn("{}: {}", what, e.getMessage());
        } else {
            LOG.debug("{}", e.getMessage());
        }
    }

    /**
     * Notes an account left to Openfire's routing because it has a session
     * on another cluster node: logged once per account.
     */
    void leftToOpenfire(JID bare) {
        if (leftToOpenfire.add(bare.toBareJID())) {
            LOG.info("{} has a session on another cluster node: Openfire routes its messages", bare);
        }
    }
}
