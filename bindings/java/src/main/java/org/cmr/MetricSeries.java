package org.cmr;

import java.nio.charset.StandardCharsets;

/**
 * One series of the router's metrics as the library describes it
 * ({@code cmr_metric_series} in include/cmr.h): what a host needs to serve
 * the value at the same index of {@link Router#metricValues} in its own
 * channel. {@link Router#metricSeries} lists them.
 */
public final class MetricSeries {
    private final String key;
    private final String metric;
    private final String family;
    private final String unit;
    private final String label;
    private final String labelValue;
    private final String help;
    private final boolean counter;

    /** Made by the JNI shim from the library's table. */
    private MetricSeries(byte[] key, byte[] metric, byte[] family, byte[] unit, byte[] label,
            byte[] labelValue, byte[] help, boolean counter) {
        this.key = text(key);
        this.metric = text(metric);
        this.family = text(family);
        this.unit = text(unit);
        this.label = text(label);
        this.labelValue = text(labelValue);
        this.help = text(help);
        this.counter = counter;
    }

    private static String text(byte[] utf8) {
        return new String(utf8, StandardCharsets.UTF_8);
    }

    /** The series' own name, unique among them. */
    public String key() {
        return key;
    }

    /** The metric's OpenMetrics name ({@code _total} included for a counter). */
    public String metric() {
        return metric;
    }

    /** The metric's short name, shared by the series of one family. */
    public String family() {
        return family;
    }

    /** What it counts, plural. */
    public String unit() {
        return unit;
    }

    /** The label that tells the family's series apart; empty when it has one. */
    public String label() {
        return label;
    }

    /** This series' value of {@link #label}; empty when the label is. */
    public String labelValue() {
        return labelValue;
    }

    /** What the family counts, in a sentence. */
    public String help() {
        return help;
    }

    /** True for a counter (it only grows), false for a gauge (an amount now). */
    public boolean counter() {
        return counter;
    }
}
