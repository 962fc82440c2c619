//! The router's figures, and the table that describes them: each host
//! builds its metrics channel by walking [`series`], so a new figure is
//! added here alone.

use crate::algorithm::{Algorithm, ALGORITHM_COUNT};
use std::sync::LazyLock;

/// The router's figures since it was made. Counters only grow; `sessions`
/// and `accounts` are what is registered now. `repr(C)`: the C ABI hands
/// it out as `cmr_metrics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Messages routed by CMR, per algorithm (the index of
    /// [`Algorithm::EVERY`], which `cmr_algorithm_name` names; a hint's
    /// algorithm when it applied).
    pub routed: [u64; ALGORITHM_COUNT],
    /// Messages left to the server although the account has sessions
    /// registered (none of them eligible), per algorithm.
    pub left_to_server: [u64; ALGORITHM_COUNT],
    /// Messages left to the server with no algorithm applied: the account
    /// has no session registered, or the type is not CMR's to route.
    pub left_to_server_unclaimed: u64,
    /// Picked sessions the host found gone.
    pub gone_sessions: u64,
    /// CMR IQs answered with a result.
    pub iq_results: u64,
    /// CMR IQs answered with an error, or refused as malformed.
    pub iq_errors: u64,
    /// Sessions registered now.
    pub sessions: u64,
    /// Accounts with a session registered now.
    pub accounts: u64,
}

impl Metrics {
    /// The values, in the order of [`series`].
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        let figures = [
            self.left_to_server_unclaimed,
            self.gone_sessions,
            self.iq_results,
            self.iq_errors,
            self.sessions,
            self.accounts,
        ];
        self.routed
            .iter()
            .chain(&self.left_to_server)
            .copied()
            .chain(figures)
    }
}

/// Whether a series only grows or stands for a current amount.
/// `repr(C)`: the C ABI hands it out as `cmr_metric_kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

/// One value of [`Metrics`] and the names it is served under. The hosts
/// have served these names since their first release, each from the
/// fields its channel is built on: Prosody's statistics from `family` and
/// `unit` (`prosody_mod_cmr__routed_messages_total`), ejabberd's command
/// from `metric` (`cmr_messages_routed_total`, the algorithm in a column
/// of its own) and Openfire's statistics from `key` (`cmr_routed_all`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    /// The series' own name, unique in the table: `routed_all`,
    /// `left_to_server_none`, `iq_errors`, `sessions`.
    pub key: String,
    /// The metric's OpenMetrics name, `_total` included for a counter,
    /// labels apart: `cmr_messages_routed_total`.
    pub metric: &'static str,
    /// The metric's short name, which its series share: `routed`, `answered`.
    pub family: &'static str,
    /// What it counts, plural: `messages`, `iqs`, `sessions`.
    pub unit: &'static str,
    /// The label that tells the family's series apart (`algorithm`,
    /// `type`); empty when the family has one series.
    pub label: &'static str,
    /// This series' value of `label`: an algorithm's short name or `none`;
    /// `result` or `error`. Empty when `label` is.
    pub label_value: &'static str,
    /// What the family counts, for the host's help text.
    pub help: &'static str,
    pub kind: MetricKind,
}

struct Family {
    family: &'static str,
    unit: &'static str,
    help: &'static str,
    kind: MetricKind,
}

const ROUTED: Family = Family {
    family: "routed",
    unit: "messages",
    help: "Messages to a bare JID (or an offline full JID) routed by CMR, by the algorithm that chose \
           (a hint's, when one applied)",
    kind: MetricKind::Counter,
};
const LEFT_TO_SERVER: Family = Family {
    family: "left_to_server",
    unit: "messages",
    help: "Messages CMR left to the server's own delivery (offline storage, an error, or its rules for \
           the type): by the account's algorithm when none of its sessions was eligible; \
           algorithm=\"none\" when no algorithm applied (no session registered, or a type CMR does \
           not route: headline, groupchat, error)",
    kind: MetricKind::Counter,
};
const GONE: Family = Family {
    family: "gone",
    unit: "sessions",
    help: "Sessions a pick chose that the host found gone (unregistered, and the message picked again)",
    kind: MetricKind::Counter,
};
const ANSWERED: Family = Family {
    family: "answered",
    unit: "iqs",
    help: "XEP-0354 IQs answered, by response type (error includes malformed requests)",
    kind: MetricKind::Counter,
};
const SESSIONS: Family = Family {
    family: "registered",
    unit: "sessions",
    help: "Sessions registered with CMR now",
    kind: MetricKind::Gauge,
};
const ACCOUNTS: Family = Family {
    family: "registered",
    unit: "accounts",
    help: "Accounts with a session registered with CMR now",
    kind: MetricKind::Gauge,
};

impl Family {
    fn series(
        &self,
        key: String,
        metric: &'static str,
        label: &'static str,
        label_value: &'static str,
    ) -> Series {
        Series {
            key,
            metric,
            family: self.family,
            unit: self.unit,
            label,
            label_value,
            help: self.help,
            kind: self.kind,
        }
    }
}

static SERIES: LazyLock<Vec<Series>> = LazyLock::new(|| {
    let per_algorithm = |family: &Family, metric| {
        Algorithm::EVERY.map(|a| {
            let key = format!("{}_{}", family.family, a.name());
            family.series(key, metric, "algorithm", a.name())
        })
    };
    let mut series = Vec::new();
    series.extend(per_algorithm(&ROUTED, "cmr_messages_routed_total"));
    series.extend(per_algorithm(
        &LEFT_TO_SERVER,
        "cmr_messages_left_to_server_total",
    ));
    let single = |family: &Family, key: &str, metric| family.series(key.into(), metric, "", "");
    series.extend([
        LEFT_TO_SERVER.series(
            "left_to_server_none".into(),
            "cmr_messages_left_to_server_total",
            "algorithm",
            "none",
        ),
        single(&GONE, "gone_sessions", "cmr_gone_sessions_total"),
        ANSWERED.series(
            "iq_results".into(),
            "cmr_iq_results_total",
            "type",
            "result",
        ),
        ANSWERED.series("iq_errors".into(), "cmr_iq_errors_total", "type", "error"),
        single(&SESSIONS, "sessions", "cmr_sessions"),
        single(&ACCOUNTS, "accounts", "cmr_accounts"),
    ]);
    series
});

/// Every series, in the order of [`Metrics::values`].
pub fn series() -> &'static [Series] {
    &SERIES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn each_value_has_its_series() {
        let metrics = Metrics {
            routed: [1, 2, 3, 4, 5, 6, 7],
            left_to_server: [8, 9, 10, 11, 12, 13, 14],
            left_to_server_unclaimed: 15,
            gone_sessions: 16,
            iq_results: 17,
            iq_errors: 18,
            sessions: 19,
            accounts: 20,
        };
        let values: Vec<u64> = metrics.values().collect();
        assert_eq!(values, (1..=20).collect::<Vec<_>>());
        let at = |key: &str| values[series().iter().position(|s| s.key == key).unwrap()];
        assert_eq!(at("routed_roundrobin"), 3);
        assert_eq!(at("left_to_server_leastloaded"), 14);
        assert_eq!(at("left_to_server_none"), 15);
        assert_eq!(at("iq_errors"), 18);
        assert_eq!(at("accounts"), 20);
    }

    #[test]
    fn keys_are_unique_and_counters_end_in_total() {
        let keys: HashSet<_> = series().iter().map(|s| &s.key).collect();
        assert_eq!(keys.len(), series().len());
        for s in series() {
            assert_eq!(
                s.metric.ends_with("_total"),
                s.kind == MetricKind::Counter,
                "{s:?}"
            );
            assert_eq!(s.label.is_empty(), s.label_value.is_empty(), "{s:?}");
        }
    }
}
