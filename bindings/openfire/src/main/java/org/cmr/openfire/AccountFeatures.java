package org.cmr.openfire;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import org.jivesoftware.openfire.disco.IQDiscoInfoHandler;

/**
 * The CMR features at the account (a disco#info to a user's bare JID).
 * Openfire 4.2 answers that with the server's features, so
 * {@code addServerFeature} covers it; from 4.3 on it answers only from the
 * registered {@code UserFeaturesProvider}s. That interface is not in
 * 4.2.0, the release this plugin compiles against, so the provider is a
 * {@link Proxy} of it, registered only where the interface exists: the
 * same jar serves 4.2 to 5.x.
 */
final class AccountFeatures {
    private static final String PROVIDER = "org.jivesoftware.openfire.disco.UserFeaturesProvider";

    private final IQDiscoInfoHandler disco;
    private final Class<?> type;
    private final Object provider;

    private AccountFeatures(IQDiscoInfoHandler disco, Class<?> type, Object provider) {
        this.disco = disco;
        this.type = type;
        this.provider = provider;
    }

    /**
     * Registers a provider of `features` with `disco`; null on an Openfire
     * without user features providers (4.2), where the server's features
     * already show at the account.
     */
    static AccountFeatures register(IQDiscoInfoHandler disco, List<String> features) {
        Class<?> type;
        try {
            type = Class.forName(PROVIDER, false, IQDiscoInfoHandler.class.getClassLoader());
        } catch (ClassNotFoundException olderOpenfire) {
            return null;
        }
        List<String> listed = new ArrayList<>(features);
        Object provider = Proxy.newProxyInstance(type.getClassLoader(), new Class<?>[] {type},
                (proxy, method, args) -> {
                    switch (method.getName()) {
                        case "getFeatures":
                            return listed.iterator();
                        // Openfire keeps providers in a list: removal
                        // compares them.
                        case "equals":
                            return proxy == args[0];
                        case "hashCode":
                            return System.identityHashCode(proxy);
                        case "toString":
                            return "cmr account features " + listed;
                        default:
                            throw new UnsupportedOperationException(method.toString());
                    }
                });
        AccountFeatures registered = new AccountFeatures(disco, type, provider);
        registered.call("addUserFeaturesProvider");
        return registered;
    }

    /** Removes the provider (the plugin is going). */
    void remove() {
        call("removeUserFeaturesProvider");
    }

    private void call(String name) {
        try {
            Method method = IQDiscoInfoHandler.class.getMethod(name, type);
            method.invoke(disco, provider);
        } catch (NoSuchMethodException | IllegalAccessException e) {
            throw new IllegalStateException("cmr: Openfire has " + PROVIDER + " but not " + name, e);
        } catch (InvocationTargetException e) {
            throw new IllegalStateException("cmr: " + name + " failed", e.getCause());
        }
    }
}
