package org.cmr.openfire;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.ToLongFunction;
import org.cmr.CmrException;
import org.cmr.Metrics;
import org.cmr.Router;
import org.jivesoftware.openfire.stats.Statistic;
import org.jivesoftware.openfire.stats.StatisticsManager;
import org.jivesoftware.util.LocaleUtils;

/**
 * The router's figures as Openfire statistics: one per figure, and one per
 * algorithm for the per-algorithm ones, under keys {@code cmr_*}. What
 * reads Openfire's StatisticsManager sees them: the Monitoring plugin
 * samples every statistic each minute, and Openfire 5.1 and later publish
 * each as a JMX MBean ({@code org.igniterealtime.openfire:type=Statistic,name=KEY})
 * when {@code xmpp.jmx.enabled} is set. Each sample reads the library at
 * that moment; nothing is counted here.
 *
 * <p>Every statistic is of type {@code count} and its sample is the
 * current value, whoever else read it: a running total since the plugin
 * loaded for the counters, the number registered now for sessions and
 * accounts. A {@code rate} statistic must return what happened since the
 * previous sample, which only works with one reader; Openfire 5.1
 * deprecated it for that reason, and also {@code count} in favour of
 * {@code amount} (same meaning), which 4.2 lacks. Monitoring keeps a
 * {@code count}'s last value per minute, so the graph of a counter rises,
 * its slope the rate. Each statistic is partial: it covers this cluster
 * node's router, and Monitoring adds up the nodes.
 *
 * <p>Plain statistics, not multi-statistic groups: StatisticsManager
 * never forgets a group's members, so a group would grow with every
 * plugin reload.
 */
final class Statistics {
    private final CmrPlugin plugin;
    private final Router router;
    /** The plugin's canonical name: where Openfire finds its i18n bundle. */
    private final String pluginName;
    private final List<String> keys = new ArrayList<>();

    Statistics(CmrPlugin plugin, Router router, String pluginName) {
        this.plugin = plugin;
        this.router = router;
        this.pluginName = pluginName;
    }

    /** Adds every statistic to Openfire's StatisticsManager. */
    void register() {
        for (String algorithm : Router.algorithms()) {
            add("routed", algorithm, m -> m.routed().get(algorithm));
            add("left_to_server", algorithm, m -> m.leftToServer().get(algorithm));
        }
        add("left_to_server_none", null, Metrics::leftToServerUnclaimed);
        add("gone_sessions", null, Metrics::goneSessions);
        add("iq_results", null, Metrics::iqResults);
        add("iq_errors", null, Metrics::iqErrors);
        add("sessions", null, Metrics::sessions);
        add("accounts", null, Metrics::accounts);
    }

    /** Removes them (the plugin is going). */
    void remove() {
        for (String key : keys) {
            StatisticsManager.getInstance().removeStatistic(key);
        }
        keys.clear();
    }

    /**
     * A statistic with key {@code cmr_FIGURE} or {@code cmr_FIGURE_ALGORITHM},
     * its texts from the plugin's bundle under {@code stat.cmr.FIGURE.*}
     * with the algorithm as argument {0}.
     */
    private void add(String figure, String algorithm, ToLongFunction<Metrics> value) {
        String key = "cmr_" + figure + (algorithm == null ? "" : "_" + algorithm);
        StatisticsManager.getInstance().addStatistic(key, new Figure(figure, algorithm, value));
        keys.add(key);
    }

    private final class Figure implements Statistic {
        private final String resourceKey;
        private final List<String> arguments;
        private final ToLongFunction<Metrics> value;

        Figure(String figure, String algorithm, ToLongFunction<Metrics> value) {
            this.resourceKey = "stat.cmr." + figure + ".";
            this.arguments = algorithm == null ? null : Collections.singletonList(algorithm);
            this.value = value;
        }

        private String text(String part) {
            return LocaleUtils.getLocalizedString(resourceKey + part, pluginName, arguments);
        }

        @Override
        public String getName() {
            return text("name");
        }

        @Override
        public String getDescription() {
            return text("desc");
        }

        @Override
        public String getUnits() {
            return text("units");
        }

        @Override
        public Type getStatType() {
            return Type.count;
        }

        /** The value now; NaN (unknown) when the router is closed or failed. */
        @Override
        public double sample() {
            try {
                return value.applyAsLong(router.metrics());
            } catch (CmrException e) {
                plugin.refused(e, "cmr statistics not read");
                return Double.NaN;
            } catch (IllegalStateException closed) {
                // Sampled while the plugin unloads.
                return Double.NaN;
            }
        }

        @Override
        public boolean isPartialSample() {
            return true;
        }
    }
}
