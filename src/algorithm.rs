//! The routing algorithms. Each picks among the eligible resources of one
//! account (available, priority >= 0) and never allocates.

use crate::registry::Resource;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A routing algorithm: the four of XEP-0354 and the three this project adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    All,
    MostActive,
    RoundRobin,
    Weighted,
    Random,
    Sticky,
    LeastLoaded,
}

impl Algorithm {
    /// Every algorithm, in the order the protocol lists them.
    pub const EVERY: [Algorithm; 7] = [
        Algorithm::All,
        Algorithm::MostActive,
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::Random,
        Algorithm::Sticky,
        Algorithm::LeastLoaded,
    ];

    /// The short name, also the last segment of its URI.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::All => "all",
            Algorithm::MostActive => "mostactive",
            Algorithm::RoundRobin => "roundrobin",
            Algorithm::Weighted => "weighted",
            Algorithm::Random => "random",
            Algorithm::Sticky => "sticky",
            Algorithm::LeastLoaded => "leastloaded",
        }
    }

    /// The URI that XEP-0354 assigns; `None` for this project's additions,
    /// whose URIs come from the policy's prefix.
    pub fn xep_uri(self) -> Option<&'static str> {
        Some(match self {
            Algorithm::All => "urn:xmpp:cmr:all",
            Algorithm::MostActive => "urn:xmpp:cmr:mostactive",
            Algorithm::RoundRobin => "urn:xmpp:cmr:roundrobin",
            Algorithm::Weighted => "urn:xmpp:cmr:weighted",
            _ => return None,
        })
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::EVERY.into_iter().find(|a| a.name() == name)
    }

    /// Position in [`Algorithm::EVERY`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-account rotation state.
#[derive(Clone, Debug)]
pub struct PickState {
    /// `roundrobin`: position of the next pick among the eligible.
    cursor: u32,
    /// `leastloaded`: picks since the recent counts were last halved.
    window: u32,
    /// `random` and `leastloaded`. Kept per account, under the account's
    /// lock, because a thread-local generator allocates on the first pick
    /// of every new host thread.
    rng: fastrand::Rng,
}

impl PickState {
    pub fn new(seed: u64) -> PickState {
        PickState {
            cursor: 0,
            window: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Starts the rotations afresh (after the eligible set changed); the
    /// random generator runs on.
    pub fn restart(&mut self) {
        self.cursor = 0;
        self.window = 0;
    }
}

/// `leastloaded` halves its recent counts every this many picks, so the
/// fallback measure follows the last few dozen messages, not all history.
const RECENT_WINDOW: u32 = 64;

/// What a pick decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Nothing eligible: the host falls back to its own behaviour.
    NotRouted,
    /// The first `n` entries of the output hold the chosen tokens.
    Routed(usize),
    /// The output holds fewer than the `n` tokens needed; nothing advanced.
    BufferTooSmall(usize),
}

/// Picks the resources of one account that get a message and counts the
/// delivery in their stats. `sender` (full or bare JID) feeds `sticky` only.
pub fn pick(
    algorithm: Algorithm,
    state: &mut PickState,
    resources: &mut [Resource],
    sender: &str,
    out: &mut [u64],
) -> Pick {
    let eligible = resources.iter().filter(|r| r.is_eligible()).count();
    if eligible == 0 {
        return Pick::NotRouted;
    }
    if algorithm == Algorithm::All {
        return all(resources, out);
    }
    let Some(slot) = out.first_mut() else {
        return Pick::BufferTooSmall(1);
    };
    let index = match algorithm {
        Algorithm::All | Algorithm::MostActive => most_active(resources),
        Algorithm::RoundRobin => {
            let turn = state.cursor as usize % eligible;
            state.cursor = ((turn + 1) % eligible) as u32;
            nth_eligible(resources, turn)
        }
        Algorithm::Weighted => weighted(resources),
        Algorithm::Random => nth_eligible(resources, state.rng.usize(..eligible)),
        Algorithm::Sticky => sticky(resources, sender),
        Algorithm::LeastLoaded => least_loaded(state, resources, eligible),
    };
    let chosen = &mut resources[index];
    chosen.routed += 1;
    *slot = chosen.token;
    Pick::Routed(1)
}

fn all(resources: &mut [Resource], out: &mut [u64]) -> Pick {
    let max = resources
        .iter()
        .filter(|r| r.is_eligible())
        .map(|r| r.priority)
        .max()
        .unwrap_or(0);
    let is_target = |r: &Resource| r.is_eligible() && r.priority == max;
    let needed = resources.iter().filter(|r| is_target(r)).count();
    if out.len() < needed {
        return Pick::BufferTooSmall(needed);
    }
    for (slot, r) in out
        .iter_mut()
        .zip(resources.iter_mut().filter(|r| is_target(r)))
    {
        r.routed += 1;
        *slot = r.token;
    }
    Pick::Routed(needed)
}

fn nth_eligible(resources: &[Resource], n: usize) -> usize {
    resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_eligible())
        .nth(n)
        .map_or(0, |(i, _)| i)
}

/// `bits` scaled from [0, 2^32) to [0, n).
fn scale(bits: u32, n: usize) -> usize {
    ((u64::from(bits) * n as u64) >> 32) as usize
}

/// The indices of the `m`-th and `n`-th eligible resources (`m != n`).
fn nth_two_eligible(resources: &[Resource], m: usize, n: usize) -> (usize, usize) {
    let (mut a, mut b) = (0, 0);
    let last = m.max(n);
    for (k, (i, _)) in resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_eligible())
        .enumerate()
    {
        if k == m {
            a = i;
        }
        if k == n {
            b = i;
        }
        if k == last {
            break;
        }
    }
    (a, b)
}

/// Index of the first eligible resource with the greatest `key`.
fn first_max_by<K: PartialOrd>(resources: &[Resource], key: impl Fn(&Resource) -> K) -> usize {
    let mut best: Option<(usize, K)> = None;
    for (i, r) in resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_eligible())
    {
        let k = key(r);
        if best.as_ref().is_none_or(|(_, b)| k > *b) {
            best = Some((i, k));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Highest priority, then show (chat > none > away > xa > dnd), then the
/// latest activity.
fn most_active(resources: &[Resource]) -> usize {
    first_max_by(resources, |r| (r.priority, r.show, r.last_activity))
}

/// Smooth weighted round robin (as in nginx): every eligible resource gains
/// its weight, the richest is picked and pays the total back. Weight is the
/// priority; when every eligible priority is 0 they all weigh 1.
fn weighted(resources: &mut [Resource]) -> usize {
    let all_zero = resources
        .iter()
        .filter(|r| r.is_eligible())
        .all(|r| r.priority == 0);
    let mut total = 0;
    for r in resources.iter_mut().filter(|r| r.is_eligible()) {
        let weight = if all_zero { 1 } else { i32::from(r.priority) };
        r.current_weight += weight;
        total += weight;
    }
    let best = first_max_by(resources, |r| {
        let weighs = all_zero || r.priority > 0;
        (weighs, r.current_weight)
    });
    resources[best].current_weight -= total;
    best
}

/// The per-resource half of `sticky`'s score, kept in the resource.
pub fn name_hash(resource: &str) -> u32 {
    xxh3_64(resource.as_bytes()) as u32
}

/// Rendezvous hashing: the resource whose name scores highest for the
/// sender's bare JID. xxh3 is specified bit for bit, so the choice is the
/// same in every process and version.
fn sticky(resources: &[Resource], sender: &str) -> usize {
    let bare = sender.split('/').next().unwrap_or_default();
    let seed = xxh3_64(bare.as_bytes());
    first_max_by(resources, |r| {
        xxh3_64_with_seed(&r.name_hash.to_le_bytes(), seed)
    })
}

/// Power of two choices: two distinct eligible resources at random, the one
/// with the lower host-reported load wins, then the one that got fewer
/// messages recently.
fn least_loaded(state: &mut PickState, resources: &mut [Resource], eligible: usize) -> usize {
    let index = if eligible == 1 {
        nth_eligible(resources, 0)
    } else {
        // Both choices from one draw, each half scaled to its range (a bias
        // below eligible / 2^32), and both found in one scan.
        let draw = state.rng.u64(..);
        let first = scale(draw as u32, eligible);
        let mut second = scale((draw >> 32) as u32, eligible - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = nth_two_eligible(resources, first, second);
        let load = |r: &Resource| (r.load, r.recent);
        if load(&resources[b]) < load(&resources[a]) {
            b
        } else {
            a
        }
    };
    resources[index].recent = resources[index].recent.saturating_add(1);
    state.window += 1;
    if state.window >= RECENT_WINDOW {
        state.window = 0;
        for r in resources.iter_mut() {
            r.recent /= 2;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Show;

    pub(crate) fn resource(name: &str, token: u64, priority: i8) -> Resource {
        Resource {
            name: name.into(),
            name_hash: name_hash(name),
            token,
            last_activity: 0,
            routed: 0,
            load: 0,
            current_weight: 0,
            recent: 0,
            priority,
            show: Show::None,
            available: true,
        }
    }

    fn pick_one(alg: Algorithm, state: &mut PickState, rs: &mut [Resource], sender: &str) -> u64 {
        let mut out = [0u64; 1];
        assert_eq!(pick(alg, state, rs, sender, &mut out), Pick::Routed(1));
        out[0]
    }

    #[test]
    fn nothing_eligible_is_not_routed() {
        let mut rs = vec![resource("a", 1, -1), resource("b", 2, 5)];
        rs[1].available = false;
        for alg in Algorithm::EVERY {
            let mut out = [0; 4];
            assert_eq!(
                pick(alg, &mut PickState::new(7), &mut rs, "s@x", &mut out),
                Pick::NotRouted
            );
        }
    }

    #[test]
    fn all_reports_the_size_it_needs_and_advances_nothing() {
        let mut rs = vec![
            resource("a", 1, 1),
            resource("b", 2, 1),
            resource("c", 3, 0),
        ];
        let mut out = [0; 1];
        let state = &mut PickState::new(7);
        assert_eq!(
            pick(Algorithm::All, state, &mut rs, "", &mut out),
            Pick::BufferTooSmall(2)
        );
        assert!(rs.iter().all(|r| r.routed == 0));
        let mut out = [0; 2];
        assert_eq!(
            pick(Algorithm::All, state, &mut rs, "", &mut out),
            Pick::Routed(2)
        );
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn mostactive_orders_by_priority_then_show_then_activity() {
        let mut rs = vec![
            resource("a", 1, 1),
            resource("b", 2, 1),
            resource("c", 3, 1),
        ];
        rs[0].show = Show::Away;
        rs[1].last_activity = 10;
        rs[2].last_activity = 20;
        let state = &mut PickState::new(7);
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut rs, ""), 3);
        rs[1].show = Show::Chat;
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut rs, ""), 2);
        rs[0].priority = 2;
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut rs, ""), 1);
    }

    #[test]
    fn weighted_gives_priority_zero_nothing_unless_all_are_zero() {
        let mut rs = vec![
            resource("a", 1, 3),
            resource("b", 2, 0),
            resource("c", 3, 1),
        ];
        let state = &mut PickState::new(7);
        let picks: Vec<u64> = (0..8)
            .map(|_| pick_one(Algorithm::Weighted, state, &mut rs, ""))
            .collect();
        assert_eq!(picks.iter().filter(|&&t| t == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&t| t == 2).count(), 0);
        assert_eq!(picks, [1, 1, 3, 1, 1, 1, 3, 1], "smooth, not in bursts");
        let mut zeros = vec![resource("a", 1, 0), resource("b", 2, 0)];
        let picks: Vec<u64> = (0..4)
            .map(|_| pick_one(Algorithm::Weighted, state, &mut zeros, ""))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn leastloaded_draws_two_distinct_eligible_resources() {
        assert_eq!(scale(0, 5), 0);
        assert_eq!(scale(u32::MAX, 5), 4);
        let mut rs = vec![
            resource("a", 1, 0),
            resource("gone", 2, 0),
            resource("b", 3, -1),
            resource("c", 4, 0),
        ];
        rs[1].available = false;
        assert_eq!(nth_two_eligible(&rs, 1, 0), (3, 0));
        // Two eligible: every pick compares both, so the lower load wins.
        rs[0].load = 5;
        let state = &mut PickState::new(3);
        for _ in 0..50 {
            assert_eq!(pick_one(Algorithm::LeastLoaded, state, &mut rs, ""), 4);
        }
    }

    #[test]
    fn sticky_depends_on_the_sender_only() {
        let mut rs = vec![
            resource("a", 1, 0),
            resource("b", 2, 0),
            resource("c", 3, 0),
        ];
        let state = &mut PickState::new(7);
        let first = pick_one(Algorithm::Sticky, state, &mut rs, "sensor-1@x");
        for _ in 0..10 {
            assert_eq!(
                pick_one(Algorithm::Sticky, state, &mut rs, "sensor-1@x"),
                first
            );
        }
    }

    #[test]
    fn sticky_scores_are_stable_across_versions() {
        // Pinned values: a change here moves every sender of every deployment.
        assert_eq!(xxh3_64(b"sensor-1@example.org"), 0xb67c_8065_4803_a9af);
        assert_eq!(name_hash("node-1"), 3_645_211_525);
        let mut rs = vec![
            resource("node-1", 1, 0),
            resource("node-2", 2, 0),
            resource("node-3", 3, 0),
        ];
        let picks: Vec<u64> = (0..8)
            .map(|i| {
                pick_one(
                    Algorithm::Sticky,
                    &mut PickState::new(7),
                    &mut rs,
                    &format!("sensor-{i}@example.org/x"),
                )
            })
            .collect();
        assert_eq!(picks, [1, 2, 2, 3, 1, 2, 2, 1]);
    }
}
