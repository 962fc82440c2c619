//! Property tests of the routing rules, through the public `Router` API.

use cmr::{Algorithm, Message, Pick, Policy, Router};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const ACCOUNT: &str = "cluster@example.org";

/// One registered session: (priority, available).
fn sessions(max: usize) -> impl Strategy<Value = Vec<(i8, bool)>> {
    prop::collection::vec((-3i8..=5, prop::bool::weighted(0.8)), 1..=max)
}

fn router_with(options: &str, sessions: &[(i8, bool)]) -> Router {
    let router = Router::new(Policy::from_options(options).unwrap());
    for (i, &(priority, available)) in sessions.iter().enumerate() {
        let jid = format!("{ACCOUNT}/node-{i}");
        router
            .register(&jid, i as u64, priority.into(), "", available)
            .unwrap();
    }
    router
}

fn message(sender: &str) -> Message<'_> {
    Message {
        recipient: ACCOUNT.as_bytes(),
        sender: sender.as_bytes(),
        ..Message::default()
    }
}

fn pick(router: &Router, sender: &str) -> Vec<u64> {
    let mut out = [0u64; 16];
    match router.pick(&message(sender), &mut out).unwrap() {
        Pick::Routed(n) => out[..n].to_vec(),
        Pick::NotRouted => Vec::new(),
        Pick::BufferTooSmall(n) => panic!("16 slots too small for {n}"),
    }
}

fn eligible(sessions: &[(i8, bool)]) -> Vec<u64> {
    (0..sessions.len() as u64)
        .filter(|&i| sessions[i as usize].1 && sessions[i as usize].0 >= 0)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_a_negative_priority_or_unavailable_resource(sessions in sessions(16), alg in 0..7usize) {
        let router = router_with(&format!("default={}", Algorithm::EVERY[alg].name()), &sessions);
        let eligible = eligible(&sessions);
        for i in 0..50 {
            let picked = pick(&router, &format!("s{i}@x"));
            prop_assert_eq!(picked.is_empty(), eligible.is_empty());
            for token in picked {
                prop_assert!(eligible.contains(&token), "token {} is not eligible", token);
            }
        }
    }

    #[test]
    fn all_returns_exactly_the_max_priority_eligible_set(sessions in sessions(16)) {
        let router = router_with("default=all", &sessions);
        let eligible = eligible(&sessions);
        let max = eligible.iter().map(|&t| sessions[t as usize].0).max();
        let expected: Vec<u64> = eligible.into_iter().filter(|&t| Some(sessions[t as usize].0) == max).collect();
        prop_assert_eq!(pick(&router, "s@x"), expected);
    }

    #[test]
    fn round_robin_shares_differ_by_at_most_one(sessions in sessions(16), rounds in 1..6usize) {
        let router = router_with("default=roundrobin", &sessions);
        let eligible = eligible(&sessions);
        prop_assume!(!eligible.is_empty());
        let mut counts: HashMap<u64, usize> = eligible.iter().map(|&t| (t, 0)).collect();
        for _ in 0..rounds * eligible.len() {
            *counts.get_mut(&pick(&router, "s@x")[0]).unwrap() += 1;
            let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", counts);
        }
        prop_assert!(counts.values().all(|&c| c == rounds), "{:?}", counts);
    }

    #[test]
    fn weighted_is_smooth_and_exact_over_whole_cycles(weights in prop::collection::vec(0i8..=127, 1..=16), cycles in 1..3usize) {
        let sessions: Vec<(i8, bool)> = weights.iter().map(|&w| (w, true)).collect();
        let router = router_with("default=weighted", &sessions);
        let all_zero = weights.iter().all(|&w| w == 0);
        let weight = |i: usize| if all_zero { 1.0 } else { f64::from(weights[i]) };
        let total: f64 = (0..weights.len()).map(weight).sum();
        let mut counts = vec![0usize; weights.len()];
        for n in 1..=cycles * total as usize {
            counts[pick(&router, "s@x")[0] as usize] += 1;
            for (i, &c) in counts.iter().enumerate() {
                let ideal = n as f64 * weight(i) / total;
                prop_assert!((c as f64 - ideal).abs() < 2.0, "resource {} after {}: {} vs {}", i, n, c, ideal);
            }
            if n % total as usize == 0 {
                for (i, &c) in counts.iter().enumerate() {
                    prop_assert_eq!(c as f64, (n / total as usize) as f64 * weight(i));
                }
            }
        }
    }

    #[test]
    fn sticky_moves_only_the_senders_of_a_resource_that_left(n in 2..8usize, leaving in 0..8usize) {
        let leaving = leaving % n;
        let sessions = vec![(0i8, true); n];
        let router = router_with("default=sticky", &sessions);
        let senders: Vec<String> = (0..2000).map(|i| format!("sensor-{i}@example.net/x")).collect();
        let before: Vec<u64> = senders.iter().map(|s| pick(&router, s)[0]).collect();
        for (s, &t) in senders.iter().zip(&before) {
            prop_assert_eq!(pick(&router, s)[0], t, "a sender keeps its resource");
        }
        router.unregister(&format!("{ACCOUNT}/node-{leaving}"), leaving as u64).unwrap();
        for (s, &t) in senders.iter().zip(&before) {
            let now = pick(&router, s)[0];
            if t != leaving as u64 {
                prop_assert_eq!(now, t, "only the leaving resource's senders move");
            }
        }
        // A new resource takes about 1/N of the senders, only from the others.
        router.register(&format!("{ACCOUNT}/node-{leaving}"), 99, 0, "", true).unwrap();
        let mut taken = 0;
        for (s, &t) in senders.iter().zip(&before) {
            let now = pick(&router, s)[0];
            if now == 99 {
                taken += 1;
            } else {
                prop_assert_eq!(now, t);
            }
        }
        let expected = senders.len() as f64 / n as f64;
        prop_assert!((taken as f64) > 0.7 * expected && (taken as f64) < 1.3 * expected, "{} of ~{}", taken, expected);
    }

    #[test]
    fn leastloaded_prefers_the_lower_load(loads in prop::collection::hash_set(0u32..1000, 2..8)) {
        let loads: Vec<u32> = loads.into_iter().collect();
        let sessions = vec![(0i8, true); loads.len()];
        let router = router_with("default=leastloaded", &sessions);
        for (i, &load) in loads.iter().enumerate() {
            router.set_load(&format!("{ACCOUNT}/node-{i}"), i as u64, load).unwrap();
        }
        let mut counts = vec![0usize; loads.len()];
        for _ in 0..1000 {
            counts[pick(&router, "s@x")[0] as usize] += 1;
        }
        let mut by_load: Vec<usize> = (0..loads.len()).collect();
        by_load.sort_by_key(|&i| loads[i]);
        // Of two candidates the lighter always wins, so the rank-k session
        // (0 = lightest) is picked with probability (n-1-k)/C(n,2).
        prop_assert_eq!(counts[by_load[loads.len() - 1]], 0, "the heaviest always loses its pair");
        let lightest = counts[by_load[0]];
        for &heavier in &by_load[loads.len().div_ceil(2)..] {
            prop_assert!(lightest > counts[heavier], "{:?} for loads {:?}", counts, loads);
        }
    }

    #[test]
    fn hint_overrides_the_active_algorithm_only_when_policy_allows(hints in 0..3usize, local: bool, n in 2..6usize) {
        let policy = ["never", "local", "any"][hints];
        let router = router_with(&format!("default=all hints={policy}"), &vec![(1i8, true); n]);
        let mut out = [0u64; 8];
        let hinted = Message { hint: "urn:xmpp:cmr:roundrobin", sender_is_local: local, ..message("s@x") };
        let honoured = policy == "any" || (policy == "local" && local);
        let expected = if honoured { 1 } else { n };
        prop_assert_eq!(router.pick(&hinted, &mut out).unwrap(), Pick::Routed(expected));
        // A hint naming an unknown algorithm is ignored.
        let unknown = Message { hint: "urn:example:fastest", ..hinted };
        prop_assert_eq!(router.pick(&unknown, &mut out).unwrap(), Pick::Routed(n));
    }
}

#[test]
fn random_is_uniform_within_a_stated_bound() {
    let router = router_with("default=random", &[(0, true); 4]);
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for _ in 0..40_000 {
        *counts.entry(pick(&router, "s@x")[0]).or_default() += 1;
    }
    // 10,000 expected each, standard deviation ~87: 6 sigma is ~520.
    for (&token, &count) in &counts {
        assert!((9_400..=10_600).contains(&count), "token {token}: {count}");
    }
    assert_eq!(
        counts.keys().copied().collect::<HashSet<_>>(),
        (0..4).collect()
    );
}

/// Changes every few messages must not starve the light resources: the
/// weighted rotation carries each standing over a change instead of
/// starting afresh (which gives the heaviest resource every stretch).
#[test]
fn frequent_changes_starve_no_one() {
    for (algorithm, priorities) in [("weighted", [10i32, 1, 2]), ("roundrobin", [0, 0, 0])] {
        let router = Router::new(Policy::from_options(&format!("default={algorithm}")).unwrap());
        for (i, &p) in priorities.iter().enumerate() {
            router
                .register(&format!("{ACCOUNT}/node-{i}"), i as u64, p, "", true)
                .unwrap();
        }
        let toggling = format!("{ACCOUNT}/toggling");
        let mut counts = [0usize; 4];
        let mut ideal = [0f64; 3];
        for n in 0..3000 {
            // A fourth resource comes and goes every 3 messages.
            let on = n / 3 % 2 == 0;
            router.register(&toggling, 3, 5, "", on).unwrap();
            let token = pick(&router, "s@x")[0];
            counts[token as usize] += 1;
            let weights: Vec<f64> = priorities
                .iter()
                .map(|&p| {
                    if algorithm == "weighted" {
                        p as f64
                    } else {
                        1.0
                    }
                })
                .collect();
            let extra = if on {
                if algorithm == "weighted" {
                    5.0
                } else {
                    1.0
                }
            } else {
                0.0
            };
            let total: f64 = weights.iter().sum::<f64>() + extra;
            for i in 0..3 {
                ideal[i] += weights[i] / total;
            }
        }
        for i in 0..3 {
            assert!(
                counts[i] as f64 > 0.9 * ideal[i],
                "{algorithm}: {counts:?} against {ideal:?}"
            );
        }
    }
}
