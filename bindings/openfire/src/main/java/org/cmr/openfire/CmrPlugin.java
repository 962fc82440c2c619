package org.cmr.openfire;

import java.io.File;
import java.io.IOException;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.cmr.CmrException;
import org.cmr.Router;
import org.jivesoftware.openfire.SessionManager;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.commands.AdHocCommand;
import org.jivesoftware.openfire.commands.AdHocCommandHandler;
import org.jivesoftware.openfire.container.Plugin;
import org.jivesoftware.openfire.container.PluginManager;
import org.jivesoftware.openfire.disco.IQDiscoInfoHandler;
import org.jivesoftware.openfire.event.SessionEventDispatcher;
import org.jivesoftware.openfire.handler.IQHandler;
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
    /** How to remove each part the plugin added, the last added on top. */
    private final Deque<Runnable> undo = new ArrayDeque<>();
    private final AtomicBoolean failureLogged = new AtomicBoolean();
    private final Set<String> leftToOpenfire = ConcurrentHashMap.newKeySet();

    @Override
    public void initializePlugin(PluginManager manager, File pluginDirectory) {
        try {
            Router.loadLibrary(new File(pluginDirectory, "native/linux-x86_64/libcmr_jni.so").toPath());
        } catch (IOException e) {
            throw new IllegalStateException("cmr: cannot load the library from " + pluginDirectory, e);
        }
        try {
            start();
        } catch (RuntimeException | Error e) {
            // Nothing stays behind: Openfire routes as without the plugin.
            destroyPlugin();
            throw e;
        }
    }

    /** Adds each part to Openfire, noting how to remove it. */
    private void start() {
        router = new Router(options());
        undo.push(router::close);
        Sessions sessions = new Sessions(this, router);
        undo.push(sessions::clear);
        MessageRouting routing = new MessageRouting(this, router, sessions);
        XMPPServer server = XMPPServer.getInstance();
        for (IQHandler handler : new IQHandler[] {new CmrIqHandler(this, router), new StatsIqHandler(router)}) {
            server.getIQRouter().addHandler(handler);
            undo.push(() -> server.getIQRouter().removeHandler(handler));
        }
        Commands.Guard guard = new Commands.Guard();
        InterceptorManager.getInstance().addInterceptor(guard);
        undo.push(() -> InterceptorManager.getInstance().removeInterceptor(guard));
        AdHocCommandHandler commands = server.getAdHocCommandHandler();
        for (AdHocCommand command : new AdHocCommand[] {
                new Commands.Routing(this, router, guard), new Commands.AccountRouting(this, router, guard)}) {
            commands.addCommand(command);
            undo.push(() -> commands.removeCommand(command));
        }
        IQDiscoInfoHandler disco = server.getIQDiscoInfoHandler();
        List<String> features = Arrays.asList(router.discoFeatures());
        for (String feature : features) {
            disco.addServerFeature(feature);
            undo.push(() -> disco.removeServerFeature(feature));
        }
        AccountFeatures accountFeatures = AccountFeatures.register(disco, features);
        if (accountFeatures != null) {
            undo.push(accountFeatures::remove);
        }
        routing.honourHints(features.contains("urn:xmpp:cmr:hints:0"));
        Statistics statistics = new Statistics(this, router);
        undo.push(statistics::remove);
        statistics.register();
        // Listening first, then the sessions that exist now (a load or a
        // reload): none is missed, and one destroyed meanwhile is taken back
        // (Sessions.register). Routing starts once they are known.
        SessionEventDispatcher.addListener(sessions);
        undo.push(() -> SessionEventDispatcher.removeListener(sessions));
        PresenceEventDispatcher.addListener(sessions);
        undo.push(() -> PresenceEventDispatcher.removeListener(sessions));
        for (ClientSession session : SessionManager.getInstance().getSessions()) {
            if (session.getAddress() != null && server.getRoutingTable().isLocalRoute(session.getAddress())) {
                sessions.register(session);
            }
        }
        ScheduledExecutorService checks = Executors.newSingleThreadScheduledExecutor(task -> {
            Thread thread = new Thread(task, "cmr resumption check");
            thread.setDaemon(true);
            return thread;
        });
        undo.push(() -> {
            // A check under way finishes before the router closes.
            checks.shutdown();
            try {
                checks.awaitTermination(5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        checks.scheduleWithFixedDelay(() -> {
            try {
                sessions.refreshWaiting();
            } catch (RuntimeException e) {
                LOG.error("cmr could not check the sessions waiting for resumption", e);
            }
        }, 1, 1, TimeUnit.SECONDS);
        InterceptorManager.getInstance().addInterceptor(routing);
        undo.push(() -> InterceptorManager.getInstance().removeInterceptor(routing));
        LOG.info("cmr {} routing for {}", Router.version(), server.getServerInfo().getXMPPDomain());
    }

    /** Removes what initializePlugin added, in reverse order. */
    @Override
    public void destroyPlugin() {
        while (!undo.isEmpty()) {
            undo.pop().run();
        }
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
            store(bare, router.algorithm(bare.toBareJID()));
        } catch (CmrException e) {
            refused(e, "Choice of " + bare + " not stored");
        }
    }

    /**
     * Stores `algorithm` as the account's choice (a user's, or an
     * administrator's through the admin command), restored at the
     * account's next first session.
     */
    void store(JID bare, String algorithm) {
        try {
            Map<String, String> properties = UserManager.getInstance().getUser(bare.getNode()).getProperties();
            properties.put(ALGORITHM_PROPERTY, algorithm);
        } catch (UserNotFoundException e) {
            LOG.warn("Choice of {} not stored: no such user", bare);
        }
    }

    /**
     * A call the library refused. A failed router caught a bug and refuses
     * every call from now on: said once, at error level, and Openfire routes
     * by itself (every caller falls back). Others are logged with `what`,
     * or at debug level when `what` is null.
     */
    void refused(CmrException e, String what) {
        if (e.routerFailed()) {
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
