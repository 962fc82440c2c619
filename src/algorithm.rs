//! The routing algorithms. Each picks among the eligible resources of one
//! account (available, priority >= 0) and never allocates.

use crate::registry::Resource;
use crate::sessions::Sessions;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The number of algorithms: the length of [`Algorithm::EVERY`] and of the
/// metrics' per-algorithm arrays (`CMR_ALGORITHM_COUNT` in the C header).
pub const ALGORITHM_COUNT: usize = 7;

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
    pub const EVERY: [Algorithm; ALGORITHM_COUNT] = [
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

    /// What a person reads for it in a form.
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::All => "All resources",
            Algorithm::MostActive => "Most active",
            Algorithm::RoundRobin => "Round robin",
            Algorithm::Weighted => "Weighted by priority",
            Algorithm::Random => "Random",
            Algorithm::Sticky => "Same resource per sender",
            Algorithm::LeastLoaded => "Least loaded",
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

    /// Position in [`Algorithm::EVERY`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-account pick state beside the sessions' own (the round robin's
/// place lives with the order it walks, in [`Sessions`]).
#[derive(Clone, Debug)]
pub struct PickState {
    /// `leastloaded`: picks since the decay epoch began, and the epoch: the
    /// recent counts halve at each new epoch, applied lazily where read.
    window: u8,
    epoch: u32,
    /// Whether a weighted pick has moved a standing off 0 since the
    /// rotation was last at rest; until then a change has nothing to carry.
    weighted_in_use: bool,
    /// `random` and `leastloaded`. Kept per account, under the account's
    /// lock, because a thread-local generator allocates on the first pick
    /// of every new host thread.
    rng: fastrand::Rng,
}

impl PickState {
    pub fn new(seed: u64) -> PickState {
        PickState {
            window: 0,
            epoch: 0,
            weighted_in_use: false,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn weighted_in_use(&self) -> bool {
        self.weighted_in_use
    }

    pub fn set_weighted_in_use(&mut self, on: bool) {
        self.weighted_in_use = on;
    }
}

/// Which sessions a pick may choose among.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Available, non-negative, and connected: not waiting for XEP-0198
    /// resumption.
    Live,
    /// Available and non-negative, hibernating or not. A hibernating
    /// session keeps what it is sent for when it resumes, as the servers do
    /// natively; `all` always uses this tier, the others only when no
    /// session is live.
    Any,
}

impl Tier {
    /// The tier the one-resource algorithms choose in.
    pub fn of(resources: &[Resource]) -> Tier {
        if resources.iter().any(|r| r.is_eligible(Tier::Live)) {
            Tier::Live
        } else {
            Tier::Any
        }
    }
}

/// `leastloaded` halves its recent counts every this many picks, so the
/// fallback measure follows the last few dozen messages, not all history.
const RECENT_WINDOW: u8 = 64;

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
#[inline]
pub fn pick(
    algorithm: Algorithm,
    state: &mut PickState,
    sessions: &mut Sessions,
    sender: &[u8],
    out: &mut [u64],
) -> Pick {
    if algorithm == Algorithm::All {
        return match sessions.all_indexed(out) {
            Some(pick) => pick,
            None => all(sessions.eligible(), out),
        };
    }
    let candidates = sessions.candidates_len();
    if candidates == 0 {
        return Pick::NotRouted;
    }
    let Some(slot) = out.first_mut() else {
        return Pick::BufferTooSmall(1);
    };
    // Round robin, the most common choice, without the jump of the match.
    let index = if algorithm == Algorithm::RoundRobin {
        sessions.next_in_turn(candidates)
    } else {
        pick_one(algorithm, state, sessions, sender, candidates)
    };
    let chosen = sessions.get_mut(index);
    chosen.routed += 1;
    *slot = chosen.token;
    Pick::Routed(1)
}

/// The position of the session that a one-resource pick by `algorithm`
/// chooses among the `candidates` (their number, at least 1). [`pick`]
/// takes round robin, the most common choice, straight to its cursor, and
/// gives `all` its copies; their arms here keep the match whole.
#[inline]
fn pick_one(
    algorithm: Algorithm,
    state: &mut PickState,
    sessions: &mut Sessions,
    sender: &[u8],
    candidates: usize,
) -> usize {
    match algorithm {
        Algorithm::All | Algorithm::MostActive => match sessions.most_active_indexed() {
            Some(pos) => pos,
            None => most_active(sessions.candidates()),
        },
        Algorithm::RoundRobin => sessions.next_in_turn(candidates),
        Algorithm::Weighted => {
            state.weighted_in_use = true;
            match sessions.weighted_indexed() {
                Some(pos) => pos,
                None => {
                    let tier = if sessions.has_live() {
                        Tier::Live
                    } else {
                        Tier::Any
                    };
                    weighted(sessions.candidates(), tier)
                }
            }
        }
        Algorithm::Random => state.rng.usize(..candidates),
        Algorithm::Sticky => {
            let probes = Probes::of(sender);
            match sessions.sticky_indexed(&probes) {
                Some(pos) => pos,
                None => sticky(sessions.candidates(), &probes),
            }
        }
        Algorithm::LeastLoaded => least_loaded(state, sessions.candidates()),
    }
}

/// Every eligible session of the highest priority among them.
fn all(eligible: &mut [Resource], out: &mut [u64]) -> Pick {
    let Some(max) = eligible.iter().map(|r| r.priority).max() else {
        return Pick::NotRouted;
    };
    let needed = eligible.iter().filter(|r| r.priority == max).count();
    if out.len() < needed {
        return Pick::BufferTooSmall(needed);
    }
    for (slot, r) in out
        .iter_mut()
        .zip(eligible.iter_mut().filter(|r| r.priority == max))
    {
        r.routed += 1;
        *slot = r.token;
    }
    Pick::Routed(needed)
}

/// `bits` scaled from [0, 2^32) to [0, n).
fn scale(bits: u32, n: usize) -> usize {
    ((u64::from(bits) * n as u64) >> 32) as usize
}

/// Index of the first resource with the greatest `key`.
fn first_max_by<K: PartialOrd>(resources: &[Resource], key: impl Fn(&Resource) -> K) -> usize {
    let mut best: Option<(usize, K)> = None;
    for (i, r) in resources.iter().enumerate() {
        let k = key(r);
        if best.as_ref().is_none_or(|(_, b)| k > *b) {
            best = Some((i, k));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Highest priority, then show (chat > none > away > xa > dnd), then the
/// latest activity.
fn most_active(candidates: &[Resource]) -> usize {
    first_max_by(candidates, |r| (r.priority, r.show, r.last_activity))
}

/// The weights of the weighted rotation: each resource's priority, or 1
/// each when every eligible priority is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Weights {
    tier: Tier,
    all_zero: bool,
}

impl Weights {
    fn of(resources: &[Resource]) -> Weights {
        Weights::in_tier(resources, Tier::of(resources))
    }

    fn in_tier(resources: &[Resource], tier: Tier) -> Weights {
        let all_zero = resources
            .iter()
            .filter(|r| r.is_eligible(tier))
            .all(|r| r.priority == 0);
        Weights { tier, all_zero }
    }

    /// 0 for a resource outside the rotation.
    fn of_resource(self, r: &Resource) -> i64 {
        match (r.is_eligible(self.tier), self.all_zero) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => i64::from(r.priority),
        }
    }

    fn total(self, resources: &[Resource]) -> i64 {
        resources.iter().map(|r| self.of_resource(r)).sum()
    }
}

/// Smooth weighted round robin (as in nginx): every resource in the
/// rotation gains its weight, the richest (of equals, the one registered
/// first) is picked and pays the total back. `current_weight` is 0 outside
/// the rotation and sums to 0 in it. A large account's index runs the same
/// rule without a scan (`crate::rotation`).
fn weighted(candidates: &mut [Resource], tier: Tier) -> usize {
    let weights = Weights::in_tier(candidates, tier);
    let mut total = 0;
    for r in candidates.iter_mut() {
        let weight = weights.of_resource(r);
        r.current_weight += weight as i32;
        total += weight;
    }
    // Outside the rotation lowest; then by standing, then the earlier
    // registered, packed in one word.
    let best = first_max_by(candidates, |r| match weights.of_resource(r) {
        0 => i64::MIN,
        _ => i64::from(r.current_weight) << 32 | i64::from(!r.seq),
    });
    candidates[best].current_weight -= total as i32;
    best
}

/// The weighted rotation's total weight, taken before a change so that
/// [`rebalance`] can carry each resource's standing over it.
pub fn weighted_total(resources: &[Resource]) -> i64 {
    Weights::of(resources).total(resources)
}

/// Carries the weighted rotation over a change of the eligible set or of
/// the weights (`old_total` is [`weighted_total`] before it). Each staying
/// resource keeps its standing in messages (`current_weight / total`), a
/// joining one and one whose own weight changed start level, a leaving
/// one's standing is shared out by weight, and no standing is kept beyond
/// one message either way (the model tests check SPEC's bounds from the
/// change on). Returns whether every standing
/// is 0 after it (the rotation is at rest). A pass over the sessions: for
/// small accounts, and once when an account's index is dropped (a large
/// account's index carries its rotation itself, `crate::rotation`).
pub fn rebalance(resources: &mut [Resource], old_total: i64) -> bool {
    let weights = Weights::of(resources);
    let total = weights.total(resources);
    let mut sum = 0;
    for r in resources.iter_mut() {
        let weight = weights.of_resource(r);
        r.current_weight = if weight == 0 || old_total == 0 {
            0
        } else {
            (i64::from(r.current_weight) * total / old_total) as i32
        };
        sum += i64::from(r.current_weight);
    }
    if total == 0 {
        return true;
    }
    // Level the sum to 0 in proportion to weight; what truncation leaves,
    // and what the clamp takes, goes to whoever has room.
    let mut residual = sum;
    for r in resources.iter_mut() {
        let share = sum * weights.of_resource(r) / total;
        r.current_weight -= share as i32;
        residual -= share;
    }
    let bound = total - 1;
    for r in resources.iter_mut() {
        if weights.of_resource(r) == 0 {
            continue;
        }
        let clamped = i64::from(r.current_weight).clamp(-bound, bound);
        residual += clamped - i64::from(r.current_weight);
        r.current_weight = clamped as i32;
    }
    for r in resources.iter_mut() {
        if residual == 0 {
            break;
        }
        if weights.of_resource(r) == 0 {
            continue;
        }
        let current = i64::from(r.current_weight);
        let moved = (current - residual).clamp(-bound, bound) - current;
        r.current_weight = (current + moved) as i32;
        residual += moved;
    }
    debug_assert_eq!(residual, 0);
    resources.iter().all(|r| r.current_weight == 0)
}

/// What a resource's points on `sticky`'s ring derive from, kept in the
/// resource (also the key of the account's index by name).
pub fn name_hash(resource: &str) -> u32 {
    xxh3_64(resource.as_bytes()) as u32
}

/// splitmix64's output step: a well-spread 64-bit value from each input.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How many points on the ring a resource has, and how many probes stand
/// for one sender, one in each sixteenth of the ring. With one point each,
/// a resource that lands just after another gets almost no senders; with 4
/// points and 16 probes, each resource gets between about 0.5 and 1.2
/// times an even share at 4 to 1,000 resources (`examples/sticky_spread.rs`;
/// the probes as in "Multi-probe consistent hashing", Appleton and
/// O'Reilly, 2015, but one per sixteenth, so that the probe before a point
/// is found without a search).
pub(crate) const STICKY_POINTS: usize = 4;
const STICKY_PROBES: usize = 16;

/// The points on `sticky`'s ring of the resource whose [`name_hash`] is
/// `name_hash`: two from each 64-bit mix.
#[inline]
pub fn points_of(name_hash: u32) -> [u32; STICKY_POINTS] {
    let seed = u64::from(name_hash);
    let mut points = [0; STICKY_POINTS];
    for (i, pair) in points.chunks_exact_mut(2).enumerate() {
        let z = mix(seed ^ ((i as u64 + 1) << 32));
        pair[0] = z as u32;
        pair[1] = (z >> 32) as u32;
    }
    points
}

/// A sender's probes on `sticky`'s ring. A sender goes to the resource
/// with a point the least far clockwise from one of its probes. That is
/// rendezvous hashing with the nearness as the score: the sender's choice
/// depends only on the candidates there are, so only the senders of a
/// resource that leaves move, and one that joins takes senders only for
/// itself. Unlike a score per pair, the nearest point after each probe can
/// be looked up in an ordered index instead of scanning every resource.
/// xxh3 and the mixing are fixed bit for bit, so the choice is the same in
/// every process and version.
pub struct Probes {
    seed: u64,
    /// Probe `i` lies in the `i`th sixteenth of the ring.
    points: [u32; STICKY_PROBES],
}

impl Probes {
    /// The probes of the sender of `sender` (full or bare JID: its bare
    /// part counts).
    #[inline]
    pub fn of(sender: &[u8]) -> Probes {
        let bare = memchr::memchr(b'/', sender).map_or(sender, |slash| &sender[..slash]);
        let seed = xxh3_64(bare);
        let mut points = [0; STICKY_PROBES];
        for (i, pair) in points.chunks_exact_mut(2).enumerate() {
            let z = mix(seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            let sixteenth = (2 * i as u32) << 28;
            pair[0] = sixteenth | (z as u32 >> 4);
            pair[1] = (sixteenth + (1 << 28)) | ((z >> 36) as u32);
        }
        Probes { seed, points }
    }

    /// The sender's probes, for an index to look up.
    pub fn points(&self) -> &[u32] {
        &self.points
    }

    /// How far clockwise the nearest of the points of the resource whose
    /// name hashes to `name_hash` lies from one of the probes.
    #[inline]
    pub fn distance(&self, name_hash: u32) -> u32 {
        points_of(name_hash)
            .into_iter()
            .map(|point| {
                // The probe of the point's sixteenth, or the one before.
                let sixteenth = (point >> 28) as usize;
                let mut probe = self.points[sixteenth];
                if probe > point {
                    probe = self.points[sixteenth.wrapping_sub(1) % STICKY_PROBES];
                }
                point.wrapping_sub(probe)
            })
            .min()
            .unwrap_or(u32::MAX)
    }

    /// Whether this sender goes to `a`, at distance `da`, rather than to
    /// `b` at `db`. Equal distances (two names at one point, or a
    /// coincidence) go by a hash of the name and the sender, so that
    /// neither of two colliding names is left without senders.
    pub fn prefers(&self, a: &Resource, da: u32, b: &Resource, db: u32) -> bool {
        if da != db {
            return da < db;
        }
        let score = |r: &Resource| xxh3_64_with_seed(r.name.as_bytes(), self.seed);
        (score(a), &b.name) > (score(b), &a.name)
    }
}

/// `sticky`'s choice among the candidates, by scanning them.
pub(crate) fn sticky(candidates: &[Resource], probes: &Probes) -> usize {
    let mut best = 0;
    let mut nearest = probes.distance(candidates[0].name_hash);
    for (i, r) in candidates.iter().enumerate().skip(1) {
        let d = probes.distance(r.name_hash);
        if d <= nearest && probes.prefers(r, d, &candidates[best], nearest) {
            (best, nearest) = (i, d);
        }
    }
    best
}

/// `recent` as it stands in `epoch`: halved once per epoch since it was
/// written. (The epoch is 32 bits: a session left unpicked for 2^32 epochs,
/// 2^38 picks of its account, may read an old count back once.)
fn recent_in(r: &Resource, epoch: u32) -> u8 {
    let age = epoch.wrapping_sub(r.recent_epoch);
    if age >= 8 {
        0
    } else {
        r.recent >> age
    }
}

/// Power of two choices: two distinct candidates at random, the one with
/// the lower host-reported load wins, then the one that got fewer messages
/// recently.
fn least_loaded(state: &mut PickState, candidates: &mut [Resource]) -> usize {
    let n = candidates.len();
    let epoch = state.epoch;
    let index = if n == 1 {
        0
    } else {
        // Both choices from one draw, each half scaled to its range (a bias
        // below n / 2^32).
        let draw = state.rng.u64(..);
        let first = scale(draw as u32, n);
        let mut second = scale((draw >> 32) as u32, n - 1);
        if second >= first {
            second += 1;
        }
        let load = |r: &Resource| (r.load, recent_in(r, epoch));
        if load(&candidates[second]) < load(&candidates[first]) {
            second
        } else {
            first
        }
    };
    let chosen = &mut candidates[index];
    chosen.recent = recent_in(chosen, epoch).saturating_add(1);
    chosen.recent_epoch = epoch;
    state.window += 1;
    if state.window >= RECENT_WINDOW {
        state.window = 0;
        state.epoch = state.epoch.wrapping_add(1);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Presence, Show};

    fn resource(name: &str, token: u64, priority: i8) -> Resource {
        let presence = Presence {
            priority,
            show: Show::None,
            available: true,
        };
        Resource::new(name, token, presence, 0)
    }

    fn sessions(resources: Vec<Resource>) -> Sessions {
        let mut sessions = Sessions::default();
        for r in resources {
            sessions.insert(r);
        }
        sessions
    }

    /// Changes the session of `token` as a presence update would.
    fn update(sessions: &mut Sessions, token: u64, f: impl FnOnce(&mut Resource)) {
        let pos = sessions.find_token(token).unwrap();
        sessions.update(pos, 0, f);
        sessions.check();
    }

    fn of(sessions: &Sessions, token: u64) -> &Resource {
        sessions.get(sessions.find_token(token).unwrap())
    }

    fn pick_one(alg: Algorithm, state: &mut PickState, ss: &mut Sessions, sender: &str) -> u64 {
        let mut out = [0u64; 1];
        assert_eq!(
            pick(alg, state, ss, sender.as_bytes(), &mut out),
            Pick::Routed(1)
        );
        out[0]
    }

    #[test]
    fn nothing_eligible_is_not_routed() {
        let mut ss = sessions(vec![resource("a", 1, -1), resource("b", 2, 5)]);
        update(&mut ss, 2, |r| r.flags = r.flags.with_available(false));
        for alg in Algorithm::EVERY {
            let mut out = [0; 4];
            assert_eq!(
                pick(alg, &mut PickState::new(7), &mut ss, b"s@x", &mut out),
                Pick::NotRouted
            );
        }
    }

    #[test]
    fn all_reports_the_size_it_needs_and_advances_nothing() {
        let mut ss = sessions(vec![
            resource("a", 1, 1),
            resource("b", 2, 1),
            resource("c", 3, 0),
        ]);
        let mut out = [0; 1];
        let state = &mut PickState::new(7);
        assert_eq!(
            pick(Algorithm::All, state, &mut ss, b"", &mut out),
            Pick::BufferTooSmall(2)
        );
        assert!(ss.as_slice().iter().all(|r| r.routed == 0));
        let mut out = [0; 2];
        assert_eq!(
            pick(Algorithm::All, state, &mut ss, b"", &mut out),
            Pick::Routed(2)
        );
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn mostactive_orders_by_priority_then_show_then_activity() {
        let mut ss = sessions(vec![
            resource("a", 1, 1),
            resource("b", 2, 1),
            resource("c", 3, 1),
        ]);
        update(&mut ss, 1, |r| r.show = Show::Away);
        ss.touch(ss.find_token(2).unwrap(), 10);
        ss.touch(ss.find_token(3).unwrap(), 20);
        let state = &mut PickState::new(7);
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut ss, ""), 3);
        update(&mut ss, 2, |r| r.show = Show::Chat);
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut ss, ""), 2);
        update(&mut ss, 1, |r| r.priority = 2);
        assert_eq!(pick_one(Algorithm::MostActive, state, &mut ss, ""), 1);
    }

    #[test]
    fn weighted_gives_priority_zero_nothing_unless_all_are_zero() {
        let mut ss = sessions(vec![
            resource("a", 1, 3),
            resource("b", 2, 0),
            resource("c", 3, 1),
        ]);
        let state = &mut PickState::new(7);
        let picks: Vec<u64> = (0..8)
            .map(|_| pick_one(Algorithm::Weighted, state, &mut ss, ""))
            .collect();
        assert_eq!(picks.iter().filter(|&&t| t == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&t| t == 2).count(), 0);
        assert_eq!(picks, [1, 1, 3, 1, 1, 1, 3, 1], "smooth, not in bursts");
        let mut zeros = sessions(vec![resource("a", 1, 0), resource("b", 2, 0)]);
        let picks: Vec<u64> = (0..4)
            .map(|_| pick_one(Algorithm::Weighted, state, &mut zeros, ""))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn leastloaded_draws_two_distinct_candidates() {
        assert_eq!(scale(0, 5), 0);
        assert_eq!(scale(u32::MAX, 5), 4);
        let mut ss = sessions(vec![
            resource("a", 1, 0),
            resource("gone", 2, 0),
            resource("b", 3, -1),
            resource("c", 4, 0),
        ]);
        update(&mut ss, 2, |r| r.flags = r.flags.with_available(false));
        // Two eligible: every pick compares both, so the lower load wins.
        ss.get_mut(ss.find_token(1).unwrap()).load = 5;
        let state = &mut PickState::new(3);
        for _ in 0..50 {
            assert_eq!(pick_one(Algorithm::LeastLoaded, state, &mut ss, ""), 4);
        }
    }

    #[test]
    fn leastloaded_recent_counts_halve_every_window() {
        let mut ss = sessions(vec![resource("a", 1, 0)]);
        let state = &mut PickState::new(3);
        for _ in 0..RECENT_WINDOW - 1 {
            pick_one(Algorithm::LeastLoaded, state, &mut ss, "");
        }
        assert_eq!(recent_in(of(&ss, 1), state.epoch), 63);
        pick_one(Algorithm::LeastLoaded, state, &mut ss, "");
        // The window closed: 64 halved to 32, without visiting the session.
        assert_eq!(recent_in(of(&ss, 1), state.epoch), 32);
        state.epoch += 7;
        assert_eq!(recent_in(of(&ss, 1), state.epoch), 0);
    }

    #[test]
    fn sticky_depends_on_the_sender_only() {
        let mut ss = sessions(vec![
            resource("a", 1, 0),
            resource("b", 2, 0),
            resource("c", 3, 0),
        ]);
        let state = &mut PickState::new(7);
        let first = pick_one(Algorithm::Sticky, state, &mut ss, "sensor-1@x");
        for _ in 0..10 {
            assert_eq!(
                pick_one(Algorithm::Sticky, state, &mut ss, "sensor-1@x"),
                first
            );
        }
    }

    #[test]
    fn round_robin_keeps_its_place_when_the_set_changes() {
        let mut ss = sessions((1..=4).map(|t| resource(&format!("r{t}"), t, 0)).collect());
        let state = &mut PickState::new(7);
        let picks = |state: &mut PickState, ss: &mut Sessions, n: usize| -> Vec<u64> {
            (0..n)
                .map(|_| pick_one(Algorithm::RoundRobin, state, ss, ""))
                .collect()
        };
        assert_eq!(picks(state, &mut ss, 2), [1, 2]);
        // The one next in turn leaves: the turn passes to one that has not
        // had it.
        ss.remove(ss.find_token(3).unwrap());
        ss.check();
        assert_eq!(picks(state, &mut ss, 1), [4]);
        // A newcomer joins at the end of the turn.
        ss.insert(resource("new", 5, 0));
        assert_eq!(picks(state, &mut ss, 3), [5, 1, 2]);
        // One that turns ineligible is skipped, and has its turn when back.
        update(&mut ss, 4, |r| r.flags = r.flags.with_available(false));
        assert_eq!(picks(state, &mut ss, 3), [5, 1, 2]);
        update(&mut ss, 4, |r| r.flags = r.flags.with_available(true));
        assert_eq!(picks(state, &mut ss, 4), [5, 4, 1, 2]);
        // One that had its turn in this cycle leaves: the others still have
        // theirs in it.
        let served = picks(state, &mut ss, 2);
        ss.remove(ss.find_token(served[0]).unwrap());
        ss.check();
        let mut rest = picks(state, &mut ss, 2);
        rest.extend(&served);
        rest.sort();
        assert_eq!(rest, [1, 2, 4, 5]);
    }

    #[test]
    fn a_hibernating_session_gets_messages_only_when_no_other_is_live() {
        let mut ss = sessions(vec![resource("a", 1, 0), resource("b", 2, 0)]);
        update(&mut ss, 1, |r| r.flags = r.flags.with_hibernating(true));
        for alg in Algorithm::EVERY
            .into_iter()
            .filter(|&a| a != Algorithm::All)
        {
            assert_eq!(
                pick_one(alg, &mut PickState::new(7), &mut ss, "s@x"),
                2,
                "{alg:?}"
            );
        }
        // `all` delivers to every available session, as the servers do.
        let mut out = [0; 2];
        let state = &mut PickState::new(7);
        assert_eq!(
            pick(Algorithm::All, state, &mut ss, b"", &mut out),
            Pick::Routed(2)
        );
        update(&mut ss, 2, |r| r.flags = r.flags.with_hibernating(true));
        for alg in Algorithm::EVERY
            .into_iter()
            .filter(|&a| a != Algorithm::All)
        {
            let token = pick_one(alg, &mut PickState::new(7), &mut ss, "s@x");
            assert!([1, 2].contains(&token), "{alg:?}");
        }
    }

    #[test]
    fn weighted_carries_each_standing_over_a_change() {
        let mut rs = vec![
            resource("a", 1, 3),
            resource("b", 2, 2),
            resource("c", 3, 1),
        ];
        let state = &mut PickState::new(7);
        let mut ss = sessions(rs.clone());
        for _ in 0..4 {
            pick_one(Algorithm::Weighted, state, &mut ss, "");
        }
        rs.clone_from_slice(ss.as_slice());
        let sum = |rs: &[Resource]| rs.iter().map(|r| i64::from(r.current_weight)).sum::<i64>();
        // c leaves: its standing is shared out, the sum stays 0 and every
        // standing stays within one message of the new total (5).
        let before = weighted_total(&rs);
        rs.pop();
        assert!(!rebalance(&mut rs, before));
        assert_eq!(sum(&rs), 0);
        assert!(rs.iter().all(|r| r.current_weight.abs() < 5), "{rs:?}");
        // A change of weight with the same total moves nothing.
        let standing: Vec<i32> = rs.iter().map(|r| r.current_weight).collect();
        let total = weighted_total(&rs);
        rebalance(&mut rs, total);
        assert_eq!(
            rs.iter().map(|r| r.current_weight).collect::<Vec<_>>(),
            standing
        );
        // A resource that leaves the rotation keeps no standing.
        rs[1].flags = rs[1].flags.with_available(false);
        assert!(rebalance(&mut rs, 5), "at rest");
        assert_eq!((rs[0].current_weight, rs[1].current_weight), (0, 0));
    }

    #[test]
    fn sticky_keeps_a_sender_whose_resource_ties_when_another_leaves() {
        // Two names whose 32-bit hashes collide, so they score alike for
        // every sender.
        assert_eq!(name_hash("node-15754"), name_hash("node-78813"));
        let mut ss = sessions(vec![
            resource("other", 1, 0),
            resource("node-15754", 2, 0),
            resource("node-78813", 3, 0),
        ]);
        let state = &mut PickState::new(7);
        let sender = (0..)
            .map(|i| format!("sensor-{i}@example.org"))
            .find(|s| pick_one(Algorithm::Sticky, state, &mut ss, s) != 1)
            .unwrap();
        let before = pick_one(Algorithm::Sticky, state, &mut ss, &sender);
        // Its leaving reorders the other two.
        ss.remove(ss.find_token(1).unwrap());
        ss.check();
        assert_eq!(pick_one(Algorithm::Sticky, state, &mut ss, &sender), before);
    }

    #[test]
    fn sticky_choices_are_stable_across_versions() {
        // Pinned values: a change here moves every sender of every
        // deployment. (They changed once, when the ring replaced a score
        // per sender and session; README says so.)
        assert_eq!(xxh3_64(b"sensor-1@example.org"), 0xb67c_8065_4803_a9af);
        assert_eq!(name_hash("node-1"), 3_645_211_525);
        assert_eq!(
            points_of(name_hash("node-1")),
            [2_074_040_023, 2_839_734_010, 2_953_167_951, 938_522_316]
        );
        assert_eq!(
            Probes::of(b"sensor-1@example.org/x").points()[..3],
            [42_524_262, 536_420_936, 595_532_386]
        );
        let mut ss = sessions(vec![
            resource("node-1", 1, 0),
            resource("node-2", 2, 0),
            resource("node-3", 3, 0),
        ]);
        let picks: Vec<u64> = (0..8)
            .map(|i| {
                pick_one(
                    Algorithm::Sticky,
                    &mut PickState::new(7),
                    &mut ss,
                    &format!("sensor-{i}@example.org/x"),
                )
            })
            .collect();
        assert_eq!(picks, [3, 3, 2, 3, 3, 1, 3, 2]);
    }

    #[test]
    fn sticky_spreads_senders_evenly() {
        let names: Vec<String> = (0..50).map(|i| format!("node-{i}")).collect();
        let candidates: Vec<Resource> = names
            .iter()
            .zip(1..)
            .map(|(name, token)| resource(name, token, 0))
            .collect();
        let mut counts = vec![0u32; candidates.len()];
        for i in 0..50_000 {
            let probes = Probes::of(format!("sensor-{i}@example.org").as_bytes());
            counts[sticky(&candidates, &probes)] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // 1,000 each if even; the spread of 50 names is a fixed draw.
        assert!(*min >= 750 && *max <= 1_250, "{min}..{max}");
    }

    #[test]
    fn sticky_shares_the_senders_of_names_at_one_point() {
        assert_eq!(name_hash("node-15754"), name_hash("node-78813"));
        let candidates = [resource("node-15754", 1, 0), resource("node-78813", 2, 0)];
        let mut counts = [0; 2];
        for i in 0..1_000 {
            let probes = Probes::of(format!("sensor-{i}@example.org").as_bytes());
            counts[sticky(&candidates, &probes)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 400), "{counts:?}");
    }
}
