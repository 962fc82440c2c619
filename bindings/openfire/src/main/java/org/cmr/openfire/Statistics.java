package org.cmr.openfire;

import java.util.ArrayList;
import java.util.List;
import org.cmr.CmrException;
import org.cmr.MetricSeries;
import org.cmr.Router;
import org.jivesoftware.openfire.stats.Statistic;
import org.jivesoftware.openfire.stats.StatisticsManager;

/**
 * The router's figures as Openfire statistics: one per series of the
 * library's metrics ({@link Router#metricSeries}), under the key
 * {@code cmr_KEY}, with the library's texts. What reads Openfire's
 * StatisticsManager sees them: the Monitoring plugin
 * samples every statistic each minute, and Openfire 5.1 and later publish
 * each as a JMX MBean ({@code org.igniterealtime.openfire:type=Statistic,name=KEY})
 * when {@code xmpp.jmx.enabled} is set. Each sample reads the library at
 * that moment; nothing is counted here.
 *
 * <p>Every statistic is of type {@code count} and its sample is the
 * current value, whoever else read it: a running total since the plugin
 * loaded for the counters, the number registered now for the gauges. A
 * {@code rate} statistic must return what happened since the
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
    private final List<String> keys = new ArrayList<>();

    Statistics(CmrPlugin plugin, Router router) {
        this.plugin = plugin;
        this.router = router;
    }

    /** Adds every statistic to Openfire's StatisticsManager. */
    void register() {
        List<MetricSeries> series = Router.metricSeries();
        for (int i = 0; i < series.size(); i++) {
            String key = "cmr_" + series.get(i).key();
            StatisticsManager.getInstance().addStatistic(key, new Series(series.get(i), i));
            keys.add(key);
        }
    }

    /** Removes them (the plugin is going). */
    void remove() {
        for (String key : keys) {
            StatisticsManager.getInstance().removeStatistic(key);
        }
        keys.clear();
    }

    private final class Series implements Statistic {
        private final MetricSeries series;
        /** Where its value is in {@link Router#metricValues}. */
        private final int index;

        Series(MetricSeries series, int index) {
            this.series = series;
            this.index = index;
        }

        /**
         * The family and unit, and this series' label, which together tell
         * the series apart: "CMR routed messages (algorithm all)", "CMR
         * registered sessions".
         */
        @Override
        public String getName() {
            return "CMR " + series.family().replace('_', ' ') + " " + series.unit() + label();
        }

        @Override
        public String getDescription() {
            return series.help() + label();
        }

        /** " (LABEL VALUE)", or nothing for a family of one series. */
        private String label() {
            return series.label().isEmpty() ? "" : " (" + series.label() + " " + series.labelValue() + ")";
        }

        @Override
        public String getUnits() {
            return series.unit();
        }

        @Override
        public Type getStatType() {
            return Type.count;
        }

        /** The value now; NaN (unknown) when the router is closed or failed. */
        @Override
        public double sample() {
            try {
                return router.metricValues()[index];
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
