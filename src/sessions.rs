//! One account's sessions, kept so that no operation scans them.
//!
//! The sessions sit in one vector split into three runs: the live ones
//! (eligible and connected), the resting ones (eligible but waiting for
//! XEP-0198 resumption) and the rest (unavailable or of negative priority).
//! A pick's candidates are then a prefix of the vector, and a session moves
//! between runs by a swap or two at their boundaries. Accounts of more than
//! [`INDEX_ABOVE`] sessions also index them by resource and by token; smaller
//! ones are searched directly, which costs less than an index would.
//!
//! The round robin walks the candidates with a cursor: those before it have
//! had their turn in this cycle, those after it have not. Moves keep that
//! split, so a change never gives a session a second turn in a cycle nor
//! takes one away from a session that stays (SPEC: "it does not restart").
//!
//! The weighted rotation of a small account is a scan of its candidates
//! ([`crate::algorithm`]); a large account's index keeps it in
//! [`Rotations`], which neither a pick nor a change scans.

use crate::algorithm::{self, points_of, Pick, Probes};
use crate::registry::{Resource, Show};
use crate::rotation::{Place, Rotations, MESSAGE};
use hashbrown::HashTable;
use std::collections::BTreeMap;

/// Accounts with more sessions than this get an index; it is dropped again
/// at [`INDEX_DROP_AT`] or fewer, so an account at the edge does not build
/// and drop it at every login.
const INDEX_ABOVE: usize = 8;
const INDEX_DROP_AT: usize = 4;

/// Where a session sits, in the order of the runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    Live,
    Resting,
    Out,
}

fn run_of(r: &Resource) -> Run {
    if !r.flags.available() || r.priority < 0 {
        Run::Out
    } else if r.flags.hibernating() {
        Run::Resting
    } else {
        Run::Live
    }
}

/// Positions by resource name and by token, the eligible sessions by
/// class, and the weighted rotations, for large accounts.
#[derive(Debug, Default)]
struct Index {
    by_name: HashTable<u32>,
    by_token: HashTable<u32>,
    classes: Classes,
    /// Built at the first weighted pick (or with the index, when the small
    /// account's rotation was not at rest): until then every standing is 0,
    /// and an account that never routes by weighted does not keep them.
    rotations: Option<Rotations>,
}

/// The weighted rotation an eligible session is in, and its weight there.
/// Each run has two: its sessions of priority above 0, weighted by their
/// priority, and those of priority 0, 1 each, which weighted picks from
/// only while the first is empty (SPEC: priority 0 gets nothing unless all
/// are 0). So no session is ever in two, and when the picks move from one
/// to another, nobody is carried: the other's standings are as it left them.
fn place_of(r: &Resource) -> Option<Place> {
    let (run, _) = class_of(r)?;
    let run = run as u8;
    Some(if r.priority > 0 {
        Place {
            rotation: 2 * run,
            weight: r.priority as u8,
        }
    } else {
        Place {
            rotation: 2 * run + 1,
            weight: 1,
        }
    })
}

/// The weighted rotations of `list`, each session standing where its
/// `current_weight` says in a rotation of total weight `total` (a small
/// account's).
fn rotations_of(list: &[Resource], total: i64) -> Rotations {
    let mut rotations = Rotations::default();
    for (pos, r) in list.iter().enumerate() {
        rotations.push();
        if let Some(place) = place_of(r) {
            // In messages: `current_weight / total`.
            let standing = match total {
                0 => 0,
                _ => {
                    (i128::from(r.current_weight) * i128::from(MESSAGE) / i128::from(total)) as i64
                }
            };
            rotations.join(pos, place, r.seq, standing);
        }
    }
    for rotation in 0..4 {
        rotations.level(rotation);
    }
    rotations
}

/// The rotation weighted picks from: the candidates' run's (live if any
/// session is live), of priority above 0 unless it has none.
fn weighted_rotation(live: u32, rotations: &Rotations) -> u8 {
    let weighted = if live > 0 { 0 } else { 2 };
    if rotations.is_empty(weighted) {
        weighted + 1
    } else {
        weighted
    }
}

/// What `mostactive` and `all` rank an eligible session by, after its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Standing {
    priority: i8,
    show: Show,
}

/// An eligible session's class: its run (0 live, 1 resting) and standing.
fn class_of(r: &Resource) -> Option<(usize, Standing)> {
    let run = match run_of(r) {
        Run::Live => 0,
        Run::Resting => 1,
        Run::Out => return None,
    };
    Some((
        run,
        Standing {
            priority: r.priority,
            show: r.show,
        },
    ))
}

/// The eligible sessions of one class.
#[derive(Debug, Default)]
struct Class {
    /// Their positions, in no order: the copies of `all`.
    members: Vec<u32>,
    /// Their tokens, each with the stamp of an event of it, in the order of
    /// the events (stamps rise). The last entry whose session is still in
    /// the class with that stamp is the most recently active; the entries
    /// above it are stale and dropped when met.
    recency: Vec<(u64, u64)>,
}

/// The position of the session that `token` owns, through the index.
fn position_of(by_token: &HashTable<u32>, list: &[Resource], token: u64) -> Option<usize> {
    by_token
        .find(token_key(token), |&p| list[p as usize].token == token)
        .map(|&p| p as usize)
}

/// Where the session of a recency entry is, when the entry is still its
/// latest event in the class `(run, standing)`; `None` for a stale one.
/// `slot` is [`Classes::slot`].
fn current(
    slot: &[u32],
    list: &[Resource],
    by_token: &HashTable<u32>,
    (run, standing): (usize, Standing),
    (token, stamp): (u64, u64),
) -> Option<usize> {
    position_of(by_token, list, token).filter(|&p| {
        let r = &list[p];
        slot[p] != NO_SLOT && r.last_activity == stamp && class_of(r) == Some((run, standing))
    })
}

/// Not in a class (ineligible, or being moved).
const NO_SLOT: u32 = u32::MAX;

/// No entry: the end of a bucket's chain.
const NONE: u32 = u32::MAX;

/// One session's point on `sticky`'s ring.
#[derive(Clone, Copy, Debug)]
struct RingEntry {
    point: u32,
    /// The next entry of the same bucket.
    next: u32,
    token: u64,
}

/// The points of one run's sessions on `sticky`'s ring, in buckets by
/// their top bits, about one point per bucket: the first point at or after
/// any point is then found in O(1) expected, and a session comes and goes
/// in O(1) expected. (A sorted tree would make both O(log n).) A bitmap of
/// the buckets with entries skips the empty ones a word at a time, since
/// resource names can be chosen to crowd the points into one arc.
#[derive(Debug)]
struct Ring {
    /// Bucket of a point: `point >> shift`; there are `2^(32 - shift)`.
    shift: u32,
    /// Each bucket's first entry.
    heads: Vec<u32>,
    occupied: Occupancy,
    entries: Vec<RingEntry>,
}

/// The fewest buckets a ring keeps.
const RING_MIN_BITS: u32 = 4;

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            shift: 32 - RING_MIN_BITS,
            heads: vec![NONE; 1 << RING_MIN_BITS],
            occupied: Occupancy::new(1 << RING_MIN_BITS),
            entries: Vec::new(),
        }
    }
}

impl Ring {
    fn bucket(&self, point: u32) -> usize {
        (point >> self.shift) as usize
    }

    fn insert(&mut self, point: u32, token: u64) {
        if self.entries.len() >= self.heads.len() {
            self.resize(self.heads.len().trailing_zeros() + 1);
        }
        let bucket = self.bucket(point);
        self.entries.push(RingEntry {
            point,
            next: self.heads[bucket],
            token,
        });
        self.heads[bucket] = (self.entries.len() - 1) as u32;
        self.occupied.set(bucket);
    }

    /// The first entry of `bucket` that `is` accepts, and the entry before
    /// it in the chain (`NONE` when it is the bucket's head).
    fn find_in(&self, bucket: usize, is: impl Fn(u32, &RingEntry) -> bool) -> Option<(u32, u32)> {
        let mut before = NONE;
        let mut at = self.heads[bucket];
        while at != NONE {
            let entry = &self.entries[at as usize];
            if is(at, entry) {
                return Some((before, at));
            }
            before = at;
            at = entry.next;
        }
        None
    }

    /// Points the link after `before` (the head of `bucket` when `NONE`)
    /// at `to`.
    fn link(&mut self, bucket: usize, before: u32, to: u32) {
        match before {
            NONE => self.heads[bucket] = to,
            _ => self.entries[before as usize].next = to,
        }
    }

    fn remove(&mut self, point: u32, token: u64) {
        let bucket = self.bucket(point);
        let Some((before, at)) = self.find_in(bucket, |_, e| (e.point, e.token) == (point, token))
        else {
            return;
        };
        self.link(bucket, before, self.entries[at as usize].next);
        if self.heads[bucket] == NONE {
            self.occupied.clear(bucket);
        }
        let last = (self.entries.len() - 1) as u32;
        if at != last {
            // The last entry fills the hole: its link follows it there.
            let moved = self.bucket(self.entries[last as usize].point);
            let (before_last, _) = self
                .find_in(moved, |i, _| i == last)
                .expect("every entry is in its bucket's chain");
            self.link(moved, before_last, at);
            self.entries.swap(at as usize, last as usize);
        }
        self.entries.pop();
        let bits = self.heads.len().trailing_zeros();
        if bits > RING_MIN_BITS && self.entries.len() < self.heads.len() / 4 {
            self.resize(bits - 1);
            self.entries.shrink_to(2 * self.entries.len());
        }
    }

    /// Rebuilds the buckets at `2^bits`.
    fn resize(&mut self, bits: u32) {
        self.shift = 32 - bits;
        self.heads = vec![NONE; 1 << bits];
        self.occupied = Occupancy::new(1 << bits);
        for i in 0..self.entries.len() {
            let bucket = self.bucket(self.entries[i].point);
            self.entries[i].next = self.heads[bucket];
            self.heads[bucket] = i as u32;
            self.occupied.set(bucket);
        }
    }

    /// Calls `visit(distance, token)` for the entries nearest clockwise
    /// from `from` (at least the nearest; the others of its bucket too).
    fn nearest(&self, from: u32, mut visit: impl FnMut(u32, u64)) {
        let start = self.bucket(from);
        if self.visit_bucket(start, from, |point| point >= from, &mut visit) {
            return;
        }
        // The next bucket with entries, else round the ring from the first
        // (which may be the start bucket, all of whose points lie before).
        let next = self
            .occupied
            .next(start + 1)
            .or_else(|| self.occupied.next(0));
        if let Some(bucket) = next {
            self.visit_bucket(bucket, from, |_| true, &mut visit);
        }
    }

    /// Visits the entries of `bucket` whose points `counts`; returns
    /// whether there was one.
    fn visit_bucket(
        &self,
        bucket: usize,
        from: u32,
        counts: impl Fn(u32) -> bool,
        visit: &mut impl FnMut(u32, u64),
    ) -> bool {
        let mut found = false;
        let mut at = self.heads[bucket];
        while at != NONE {
            let entry = self.entries[at as usize];
            if counts(entry.point) {
                visit(entry.point.wrapping_sub(from), entry.token);
                found = true;
            }
            at = entry.next;
        }
        found
    }
}

/// Which buckets of a [`Ring`] hold entries, a bit each, and which words
/// of those bits are not 0: the next bucket with entries is a few word
/// steps away however far it lies.
#[derive(Debug)]
struct Occupancy {
    words: Vec<u64>,
    summary: Vec<u64>,
}

impl Occupancy {
    fn new(buckets: usize) -> Occupancy {
        let words = buckets.div_ceil(64);
        Occupancy {
            words: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
        }
    }

    fn set(&mut self, bucket: usize) {
        let word = bucket / 64;
        self.words[word] |= 1 << (bucket % 64);
        self.summary[word / 64] |= 1 << (word % 64);
    }

    fn clear(&mut self, bucket: usize) {
        let word = bucket / 64;
        self.words[word] &= !(1 << (bucket % 64));
        if self.words[word] == 0 {
            self.summary[word / 64] &= !(1 << (word % 64));
        }
    }

    /// The first bucket at or after `bucket` with entries, if any.
    fn next(&self, bucket: usize) -> Option<usize> {
        let word = bucket / 64;
        let bits = self.words.get(word)? & (u64::MAX << (bucket % 64));
        if bits != 0 {
            return Some(word * 64 + bits.trailing_zeros() as usize);
        }
        let first = word + 1;
        let mut at = first / 64;
        let mut marks = self.summary.get(at)? & (u64::MAX << (first % 64));
        while marks == 0 {
            at += 1;
            marks = *self.summary.get(at)?;
        }
        let word = at * 64 + marks.trailing_zeros() as usize;
        Some(word * 64 + self.words[word].trailing_zeros() as usize)
    }
}

/// The eligible sessions by class, kept as they change, so that neither
/// `mostactive` nor `all` scans the account; and, once `sticky` is used,
/// their points on its ring, so that it does not either.
#[derive(Debug, Default)]
struct Classes {
    /// Per position: the session's place in its class's `members`.
    slot: Vec<u32>,
    /// The live sessions' classes, then the resting ones'.
    by_run: [BTreeMap<Standing, Class>; 2],
    /// The live sessions' points on `sticky`'s ring, then the resting
    /// ones': built at the account's first `sticky` pick, so that accounts
    /// that never use it do not pay for them.
    rings: Option<Box<[Ring; 2]>>,
}

impl Classes {
    /// Puts the session at `pos` in the class its fields say, as its most
    /// recent event.
    fn add(&mut self, list: &[Resource], pos: usize) -> Option<(usize, Standing)> {
        let r = &list[pos];
        let (run, standing) = class_of(r)?;
        let class = self.by_run[run].entry(standing).or_default();
        self.slot[pos] = class.members.len() as u32;
        class.members.push(pos as u32);
        class.recency.push((r.token, r.last_activity));
        Some((run, standing))
    }

    /// Puts an eligible session's points on its run's ring.
    fn enter_ring(&mut self, r: &Resource) {
        if let (Some(rings), Some((run, _))) = (&mut self.rings, class_of(r)) {
            for point in points_of(r.name_hash) {
                rings[run].insert(point, r.token);
            }
        }
    }

    /// Takes the points of the session of `token` and `name_hash` off the
    /// ring of `run` (0 live, 1 resting; none for an ineligible one).
    fn leave_ring(&mut self, run: Option<usize>, token: u64, name_hash: u32) {
        if let (Some(rings), Some(run)) = (&mut self.rings, run) {
            for point in points_of(name_hash) {
                rings[run].remove(point, token);
            }
        }
    }

    /// Drops the stale entries of a class once they
    /// outnumber its members: each member has one current entry, so every
    /// event stays O(1) amortized and a class holds at most about twice
    /// its members' entries.
    fn compact(
        &mut self,
        list: &[Resource],
        by_token: &HashTable<u32>,
        (run, standing): (usize, Standing),
    ) {
        let Some(class) = self.by_run[run].get_mut(&standing) else {
            return;
        };
        if class.recency.len() <= 2 * class.members.len() + 8 {
            return;
        }
        let slot = &self.slot;
        class
            .recency
            .retain(|&entry| current(slot, list, by_token, (run, standing), entry).is_some());
    }

    /// Takes the session at `pos` out of its class; its fields still say
    /// which.
    fn detach(&mut self, list: &[Resource], pos: usize) -> Option<(usize, Standing)> {
        let slot = std::mem::replace(&mut self.slot[pos], NO_SLOT);
        let (run, standing) = class_of(&list[pos]).filter(|_| slot != NO_SLOT)?;
        let class = self.by_run[run].get_mut(&standing)?;
        class.members.swap_remove(slot as usize);
        if let Some(&moved) = class.members.get(slot as usize) {
            self.slot[moved as usize] = slot;
        }
        if class.members.is_empty() {
            self.by_run[run].remove(&standing);
        }
        Some((run, standing))
    }

    /// The sessions at `a` and `b` traded places.
    fn swapped(&mut self, list: &[Resource], a: usize, b: usize) {
        self.slot.swap(a, b);
        for pos in [a, b] {
            let slot = self.slot[pos];
            if slot == NO_SLOT {
                continue;
            }
            if let Some((run, standing)) = class_of(&list[pos]) {
                if let Some(class) = self.by_run[run].get_mut(&standing) {
                    class.members[slot as usize] = pos as u32;
                }
            }
        }
    }
}

/// Spreads a 32-bit resource-name hash over the 64 bits hashbrown reads
/// (its buckets from the low bits, its tags from the top seven).
fn name_key(name_hash: u32) -> u64 {
    u64::from(name_hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Tokens are the hosts' handles, often aligned pointers or counters.
fn token_key(token: u64) -> u64 {
    let mixed = token.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ (mixed >> 29)
}

/// Stands in for a position while a swap rewrites two entries.
const MOVING: u32 = u32::MAX;

impl Index {
    /// The index of a small account whose weighted rotation (of total
    /// weight `total`) stands where the sessions' `current_weight` say.
    fn of(list: &[Resource], total: i64) -> Index {
        let mut index = Index::default();
        for pos in 0..list.len() {
            index.insert(list, pos);
        }
        // Into their classes in the order of their last events.
        let mut by_activity: Vec<usize> = (0..list.len()).collect();
        by_activity.sort_unstable_by_key(|&pos| list[pos].last_activity);
        for pos in by_activity {
            index.classes.add(list, pos);
        }
        if list.iter().any(|r| r.current_weight != 0) {
            index.rotations = Some(rotations_of(list, total));
        }
        index
    }

    /// Indexes `list[pos]`, outside any class and rotation.
    fn insert(&mut self, list: &[Resource], pos: usize) {
        self.classes.slot.push(NO_SLOT);
        if let Some(rotations) = &mut self.rotations {
            rotations.push();
        }
        let r = &list[pos];
        self.by_name
            .insert_unique(name_key(r.name_hash), pos as u32, |&p| {
                name_key(list[p as usize].name_hash)
            });
        self.by_token
            .insert_unique(token_key(r.token), pos as u32, |&p| {
                token_key(list[p as usize].token)
            });
    }

    /// Rewrites the entries of `r` from position `from` to `to`.
    fn relabel(&mut self, r: &Resource, from: u32, to: u32) {
        if let Some(p) = self.by_name.find_mut(name_key(r.name_hash), |&p| p == from) {
            *p = to;
        }
        if let Some(p) = self.by_token.find_mut(token_key(r.token), |&p| p == from) {
            *p = to;
        }
    }

    /// Unindexes `r`, the last session, at `pos`.
    fn remove(&mut self, r: &Resource, pos: u32) {
        self.classes.slot.pop();
        if let Some(rotations) = &mut self.rotations {
            rotations.pop();
        }
        if let Ok(entry) = self
            .by_name
            .find_entry(name_key(r.name_hash), |&p| p == pos)
        {
            entry.remove();
        }
        if let Ok(entry) = self.by_token.find_entry(token_key(r.token), |&p| p == pos) {
            entry.remove();
        }
    }
}

/// The sessions of one account, in runs (see the module's documentation).
#[derive(Debug, Default)]
pub struct Sessions {
    list: Vec<Resource>,
    /// End of the live run.
    live: u32,
    /// End of the resting run: the live and resting ones are the eligible.
    eligible: u32,
    /// The round robin's place in the candidates: before it, those that had
    /// their turn in this cycle.
    cursor: u32,
    /// Registration order, for the stats.
    next_seq: u32,
    /// The last activity stamp given: stamps rise strictly within an
    /// account, so that events order its sessions without ties.
    last_stamp: u64,
    index: Option<Box<Index>>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Every session, in no particular order.
    pub fn as_slice(&self) -> &[Resource] {
        &self.list
    }

    /// Every session, in the order they registered.
    pub fn in_registration_order(&self) -> Vec<&Resource> {
        let mut sessions: Vec<&Resource> = self.list.iter().collect();
        sessions.sort_unstable_by_key(|r| r.seq);
        sessions
    }

    /// Every session, for the weighted rotation to carry its standings over
    /// a change (it changes `current_weight` only).
    pub fn standings_mut(&mut self) -> &mut [Resource] {
        &mut self.list
    }

    #[inline]
    pub fn get(&self, pos: usize) -> &Resource {
        &self.list[pos]
    }

    /// For the figures the host reports (activity, load); what decides a
    /// session's run changes through [`Sessions::update`].
    #[inline]
    pub fn get_mut(&mut self, pos: usize) -> &mut Resource {
        &mut self.list[pos]
    }

    /// The sessions a one-resource pick chooses among: the live ones, or
    /// when none is live the resting ones (SPEC's tiers).
    #[inline]
    pub fn candidates(&mut self) -> &mut [Resource] {
        let end = self.candidates_len();
        &mut self.list[..end]
    }

    /// How many candidates there are.
    #[inline]
    pub fn candidates_len(&self) -> usize {
        if self.live > 0 {
            self.live as usize
        } else {
            self.eligible as usize
        }
    }

    /// Every eligible session, live or resting (what `all` delivers to).
    #[inline]
    pub fn eligible(&mut self) -> &mut [Resource] {
        &mut self.list[..self.eligible as usize]
    }

    /// Whether some session is live (the candidates are the live ones).
    #[inline]
    pub fn has_live(&self) -> bool {
        self.live > 0
    }

    /// The round robin's next in turn among the `candidates` (their
    /// number, at least 1); the cursor moves past it.
    #[inline]
    pub fn next_in_turn(&mut self, candidates: usize) -> usize {
        let pos = if (self.cursor as usize) < candidates {
            self.cursor as usize
        } else {
            0
        };
        self.cursor = pos as u32 + 1;
        pos
    }

    /// `mostactive`'s choice among the candidates, from the classes of a
    /// large account: the highest standing, then the latest event. `None`
    /// for a small account, which the caller scans.
    #[inline]
    pub fn most_active_indexed(&mut self) -> Option<usize> {
        let index = self.index.as_deref_mut()?;
        let run = if self.live > 0 { 0 } else { 1 };
        let Index {
            by_token, classes, ..
        } = index;
        let mut top = classes.by_run[run].last_entry()?;
        let standing = *top.key();
        let class = top.get_mut();
        while let Some(&entry) = class.recency.last() {
            let found = current(&classes.slot, &self.list, by_token, (run, standing), entry);
            if found.is_some() {
                return found;
            }
            class.recency.pop();
        }
        None
    }

    /// `weighted`'s choice among the candidates, from the rotations of a
    /// large account. `None` for a small account, which the caller scans.
    #[inline]
    pub fn weighted_indexed(&mut self) -> Option<usize> {
        let index = self.index.as_deref_mut()?;
        let rotations = index
            .rotations
            .get_or_insert_with(|| rotations_of(&self.list, 0));
        rotations.pick(weighted_rotation(self.live, rotations))
    }

    /// Whether the account is large enough to have an index, which carries
    /// its weighted rotation over every change by itself.
    pub fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    /// `all`'s copies from the classes of a large account: every eligible
    /// session of the highest priority, live or resting; the tokens go to
    /// `out`. `None` for a small account, which the caller scans.
    #[inline]
    pub fn all_indexed(&mut self, out: &mut [u64]) -> Option<Pick> {
        let index = self.index.as_deref()?;
        let by_run = &index.classes.by_run;
        let Some(top) = by_run
            .iter()
            .filter_map(|classes| classes.last_key_value().map(|(s, _)| s.priority))
            .max()
        else {
            return Some(Pick::NotRouted);
        };
        let of_top = || {
            by_run.iter().flat_map(move |classes| {
                classes
                    .range(
                        Standing {
                            priority: top,
                            show: Show::Dnd,
                        }..,
                    )
                    .flat_map(|(_, class)| class.members.iter())
            })
        };
        let needed = of_top().count();
        if out.len() < needed {
            return Some(Pick::BufferTooSmall(needed));
        }
        for (slot, &pos) in out.iter_mut().zip(of_top()) {
            let r = &mut self.list[pos as usize];
            r.routed += 1;
            *slot = r.token;
        }
        Some(Pick::Routed(needed))
    }

    /// `sticky`'s choice among the candidates, from the ring of a large
    /// account: for each of the sender's probes the nearest session after
    /// it, and of those the one the sender prefers; the account's first
    /// call builds the ring. `None` for a small account, which the caller
    /// scans.
    #[inline]
    pub fn sticky_indexed(&mut self, probes: &Probes) -> Option<usize> {
        let index = self.index.as_deref_mut()?;
        if index.classes.rings.is_none() {
            index.classes.rings = Some(Box::default());
            for r in &self.list[..self.eligible as usize] {
                index.classes.enter_ring(r);
            }
        }
        let ring = &index.classes.rings.as_ref()?[if self.live > 0 { 0 } else { 1 }];
        let position = |token| position_of(&index.by_token, &self.list, token);
        let mut best: Option<(u32, usize)> = None;
        for &probe in probes.points() {
            ring.nearest(probe, |distance, token| {
                let Some(pos) = position(token) else { return };
                let better = best.is_none_or(|(nearest, at)| {
                    distance <= nearest
                        && probes.prefers(&self.list[pos], distance, &self.list[at], nearest)
                });
                if better {
                    best = Some((distance, pos));
                }
            });
        }
        best.map(|(_, pos)| pos)
    }

    /// The position of the session of `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => {
                let hash = crate::algorithm::name_hash(name);
                index
                    .by_name
                    .find(name_key(hash), |&p| self.list[p as usize].name == name)
                    .map(|&p| p as usize)
            }
            None => self.list.iter().position(|r| r.name == name),
        }
    }

    /// The position of the session of `name`, if `token` owns it.
    pub fn find_owned(&self, name: &str, token: u64) -> Option<usize> {
        self.find(name).filter(|&pos| self.list[pos].token == token)
    }

    /// The position of the session that `token` owns.
    pub fn find_token(&self, token: u64) -> Option<usize> {
        match &self.index {
            Some(index) => position_of(&index.by_token, &self.list, token),
            None => self.list.iter().position(|r| r.token == token),
        }
    }

    /// The stamp of an event at `now` (the router's clock): `now`, or just
    /// after the account's last one.
    fn stamp(&mut self, now: u64) -> u64 {
        self.last_stamp = now.max(self.last_stamp + 1);
        self.last_stamp
    }

    /// Adds a session of a resource not yet registered, its registration
    /// being its last activity; returns where it is.
    pub fn insert(&mut self, mut fresh: Resource) -> usize {
        fresh.seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        fresh.last_activity = self.stamp(fresh.last_activity);
        let pos = self.list.len();
        // The standings of a small account are in units of its total.
        let total = match self.index {
            None if pos == INDEX_ABOVE => algorithm::weighted_total(&self.list),
            _ => 0,
        };
        self.list.push(fresh);
        if let Some(index) = &mut self.index {
            index.insert(&self.list, pos);
        }
        let pos = self.settle(pos, Run::Out);
        match &mut self.index {
            Some(index) => {
                if let Some(class) = index.classes.add(&self.list, pos) {
                    index.classes.compact(&self.list, &index.by_token, class);
                }
                index.classes.enter_ring(&self.list[pos]);
                if let (Some(rotations), Some(place)) =
                    (&mut index.rotations, place_of(&self.list[pos]))
                {
                    rotations.join(pos, place, self.list[pos].seq, 0);
                    rotations.level(place.rotation);
                }
            }
            None if self.list.len() > INDEX_ABOVE => {
                self.index = Some(Box::new(Index::of(&self.list, total)));
            }
            None => {}
        }
        pos
    }

    /// Stamps the session's activity at `now`.
    pub fn touch(&mut self, pos: usize, now: u64) {
        let stamp = self.stamp(now);
        let r = &mut self.list[pos];
        r.last_activity = stamp;
        let Some(index) = &mut self.index else {
            return;
        };
        let Index {
            by_token, classes, ..
        } = &mut **index;
        if classes.slot[pos] == NO_SLOT {
            return;
        }
        let Some((run, standing)) = class_of(r) else {
            return;
        };
        let Some(class) = classes.by_run[run].get_mut(&standing) else {
            return;
        };
        class.recency.push((r.token, stamp));
        classes.compact(&self.list, by_token, (run, standing));
    }

    /// A session whose own weight changed starts level in the weighted
    /// rotation (and the others absorb what it stood, as for a leaver).
    /// Carried over the change, a standing can leave it two messages from
    /// its share: a session a message ahead at weight 1 raised to 127 falls
    /// two behind within the stretch. Starting level costs it at most one
    /// message, which SPEC's whole-run bound allows per change.
    fn weight_changed(r: &mut Resource) {
        r.current_weight = 0;
    }

    /// Changes the session at `pos` with `f`, an event at `now`, and moves
    /// it to the run it now belongs to; returns where it is. `f` must not
    /// change the name; a new token is indexed.
    pub fn update(&mut self, pos: usize, now: u64, f: impl FnOnce(&mut Resource)) -> usize {
        let left = match &mut self.index {
            Some(index) => index.classes.detach(&self.list, pos),
            None => None,
        };
        let before = run_of(&self.list[pos]);
        let on_ring = class_of(&self.list[pos]).map(|(run, _)| run);
        let token = self.list[pos].token;
        let priority = self.list[pos].priority;
        f(&mut self.list[pos]);
        self.list[pos].last_activity = self.stamp(now);
        if self.list[pos].priority != priority {
            Self::weight_changed(&mut self.list[pos]);
        }
        if self.list[pos].token != token {
            if let Some(index) = &mut self.index {
                if let Ok(entry) = index
                    .by_token
                    .find_entry(token_key(token), |&p| p == pos as u32)
                {
                    entry.remove();
                }
                let list = &self.list;
                index
                    .by_token
                    .insert_unique(token_key(list[pos].token), pos as u32, |&p| {
                        token_key(list[p as usize].token)
                    });
            }
        }
        let pos = self.settle(pos, before);
        if let Some(index) = &mut self.index {
            let joined = index.classes.add(&self.list, pos);
            for class in [left, joined].into_iter().flatten() {
                index.classes.compact(&self.list, &index.by_token, class);
            }
            // The ring moves only with the run or the token: presence that
            // changes neither, the usual kind, costs it nothing.
            let r = &self.list[pos];
            if on_ring != joined.map(|(run, _)| run) || r.token != token {
                index.classes.leave_ring(on_ring, token, r.name_hash);
                index.classes.enter_ring(r);
            }
            let place = place_of(r);
            let moved =
                |rotations: &&mut Rotations| place != rotations.place(pos) || r.token != token;
            if let Some(rotations) = index.rotations.as_mut().filter(moved) {
                // A session whose rotation, weight or token changed starts
                // level (see `Sessions::weight_changed`).
                let left = rotations.leave(pos);
                if let Some(place) = place {
                    rotations.join(pos, place, r.seq, 0);
                }
                for place in [left, place].into_iter().flatten() {
                    rotations.level(place.rotation);
                }
            }
        }
        pos
    }

    /// Removes the session at `pos`.
    pub fn remove(&mut self, pos: usize) -> Resource {
        if let Some(index) = &mut self.index {
            let r = &self.list[pos];
            let run = class_of(r).map(|(run, _)| run);
            index.classes.leave_ring(run, r.token, r.name_hash);
            if let Some(class) = index.classes.detach(&self.list, pos) {
                index.classes.compact(&self.list, &index.by_token, class);
            }
            if let Some(rotations) = &mut index.rotations {
                if let Some(place) = rotations.leave(pos) {
                    rotations.level(place.rotation);
                }
            }
        }
        let pos = self.leave(pos, run_of(&self.list[pos]), Run::Out);
        let last = self.list.len() - 1;
        self.swap(pos, last);
        let gone = self.list.pop().expect("the session is there");
        if let Some(index) = &mut self.index {
            index.remove(&gone, last as u32);
        }
        if self.list.len() <= INDEX_DROP_AT {
            if let Some(rotations) = self.index.take().and_then(|index| index.rotations) {
                self.unindex_rotation(rotations);
            }
        }
        gone
    }

    /// Hands the weighted rotation of an account that is no longer large
    /// back to its sessions' `current_weight`, in units of its total.
    fn unindex_rotation(&mut self, mut rotations: Rotations) {
        let picked = weighted_rotation(self.live, &rotations);
        let mut total = 0;
        for (pos, r) in self.list.iter_mut().enumerate() {
            r.current_weight = match rotations.standing(pos) {
                Some((place, standing, of)) if place.rotation == picked => {
                    total = of;
                    (i128::from(standing) * i128::from(of) / i128::from(MESSAGE)) as i32
                }
                _ => 0,
            };
        }
        // Rounding may leave the sum off 0: levelled as after a change.
        algorithm::rebalance(&mut self.list, total);
    }

    /// Moves the session at `pos`, which was in run `from`, to the run its
    /// fields now say; returns where it ends.
    fn settle(&mut self, pos: usize, from: Run) -> usize {
        let to = run_of(&self.list[pos]);
        let pos = if to > from {
            self.leave(pos, from, to)
        } else if to < from {
            self.join(pos, from, to)
        } else {
            pos
        };
        // When the candidates switch between the live and the resting runs,
        // the rotation goes on in the other run from no further than its end.
        self.cursor = self.cursor.min(self.candidates_len() as u32);
        pos
    }

    /// Takes the session at `pos` out of the candidates' rotation without
    /// disturbing it: one that had its turn in this cycle trades places
    /// with the last that had, so the cursor can step back over it.
    fn out_of_turn(&mut self, pos: usize, run: Run) -> usize {
        let rotating = match run {
            Run::Live => true,
            Run::Resting => self.live == 0,
            Run::Out => false,
        };
        if rotating && pos < self.cursor as usize {
            let last_done = self.cursor as usize - 1;
            self.swap(pos, last_done);
            self.cursor -= 1;
            return last_done;
        }
        pos
    }

    /// Moves a session down the runs (`from` < `to`), each time across the
    /// boundary at the end of its run.
    fn leave(&mut self, pos: usize, from: Run, to: Run) -> usize {
        let mut pos = self.out_of_turn(pos, from);
        if from == Run::Live && to > Run::Live {
            let end = self.live as usize - 1;
            self.swap(pos, end);
            self.live -= 1;
            pos = end;
        }
        if from <= Run::Resting && to == Run::Out {
            let end = self.eligible as usize - 1;
            self.swap(pos, end);
            self.eligible -= 1;
            pos = end;
        }
        pos
    }

    /// Moves a session up the runs (`to` < `from`); it joins its new run at
    /// the end, the last in turn.
    fn join(&mut self, pos: usize, from: Run, to: Run) -> usize {
        let mut pos = pos;
        if from == Run::Out {
            let start = self.eligible as usize;
            self.swap(pos, start);
            self.eligible += 1;
            pos = start;
        }
        if to == Run::Live {
            let start = self.live as usize;
            self.swap(pos, start);
            self.live += 1;
            pos = start;
        }
        pos
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.list.swap(a, b);
        if let Some(index) = &mut self.index {
            let (a32, b32) = (a as u32, b as u32);
            index.relabel(&self.list[a], b32, MOVING);
            index.relabel(&self.list[b], a32, b32);
            index.relabel(&self.list[a], MOVING, a32);
            index.classes.swapped(&self.list, a, b);
            if let Some(rotations) = &mut index.rotations {
                rotations.swapped(a, b);
            }
        }
    }

    /// Checks the runs, the cursor and the index against the sessions'
    /// fields; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        let runs: Vec<Run> = self.list.iter().map(run_of).collect();
        assert!(runs.is_sorted(), "{runs:?}");
        assert_eq!(
            runs.iter().filter(|&&r| r == Run::Live).count(),
            self.live as usize
        );
        assert_eq!(
            runs.iter().filter(|&&r| r != Run::Out).count(),
            self.eligible as usize
        );
        assert!(self.cursor as usize <= self.candidates_len());
        match &self.index {
            Some(index) => {
                assert_eq!(index.by_name.len(), self.list.len());
                let classes = &index.classes;
                assert_eq!(classes.slot.len(), self.list.len());
                for (pos, r) in self.list.iter().enumerate() {
                    assert_eq!(self.find(&r.name), Some(pos));
                    assert_eq!(self.find_token(r.token), Some(pos));
                    let slot = classes.slot[pos];
                    match class_of(r) {
                        None => assert_eq!(slot, NO_SLOT),
                        Some((run, standing)) => {
                            let class = &classes.by_run[run][&standing];
                            assert_eq!(class.members[slot as usize], pos as u32);
                            assert!(class.recency.contains(&(r.token, r.last_activity)));
                            assert!(class.recency.len() <= 2 * class.members.len() + 9);
                        }
                    }
                }
                let members: usize = classes
                    .by_run
                    .iter()
                    .flat_map(|run| run.values())
                    .map(|class| class.members.len())
                    .sum();
                assert_eq!(members, self.eligible as usize);
                if let Some(rings) = classes.rings.as_deref() {
                    let points = crate::algorithm::STICKY_POINTS;
                    assert_eq!(rings[0].entries.len(), points * self.live as usize);
                    assert_eq!(
                        rings[0].entries.len() + rings[1].entries.len(),
                        points * self.eligible as usize
                    );
                    for ring in rings.iter() {
                        for bucket in 0..ring.heads.len() {
                            let next = ring.occupied.next(bucket);
                            let expected =
                                (bucket..ring.heads.len()).find(|&b| ring.heads[b] != NONE);
                            assert_eq!(next, expected);
                        }
                    }
                    for (run, ring) in rings.iter().enumerate() {
                        for (at, entry) in ring.entries.iter().enumerate() {
                            let r = &self.list[self.find_token(entry.token).unwrap()];
                            assert!(points_of(r.name_hash).contains(&entry.point));
                            assert_eq!(class_of(r).unwrap().0, run);
                            let bucket = ring.bucket(entry.point);
                            assert!(ring.find_in(bucket, |i, _| i == at as u32).is_some());
                        }
                    }
                }
                if let Some(rotations) = &index.rotations {
                    let places: Vec<Option<Place>> = self.list.iter().map(place_of).collect();
                    rotations.check(&places);
                }
            }
            None => assert!(self.list.len() <= INDEX_ABOVE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Flags, Presence};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Register(usize, i8, usize, bool),
        Hibernate(usize, bool),
        Touch(usize),
        /// The session of the name registers again with a new token.
        Renew(usize),
        Remove(usize),
        Pick(usize),
    }

    const SHOWS: [Show; 5] = [Show::Dnd, Show::Xa, Show::Away, Show::None, Show::Chat];

    fn op() -> impl Strategy<Value = Op> {
        let name = 0..24usize;
        prop_oneof![
            4 => (name.clone(), -1..3i8, 0..5usize, prop::bool::weighted(0.8))
                .prop_map(|(n, p, s, a)| Op::Register(n, p, s, a)),
            1 => (name.clone(), any::<bool>()).prop_map(|(n, on)| Op::Hibernate(n, on)),
            2 => name.clone().prop_map(Op::Touch),
            1 => name.clone().prop_map(Op::Renew),
            2 => name.prop_map(Op::Remove),
            3 => (1..30usize).prop_map(Op::Pick),
        ]
    }

    /// What the classes must agree with: the scan of the candidates by
    /// standing, then latest event (stamps are unique within an account).
    fn most_active_by_scan(sessions: &Sessions) -> Option<u64> {
        let end = sessions.candidates_len();
        sessions.list[..end]
            .iter()
            .max_by_key(|r| (r.priority, r.show, r.last_activity))
            .map(|r| r.token)
    }

    fn all_by_scan(sessions: &Sessions) -> Vec<u64> {
        let eligible = &sessions.list[..sessions.eligible as usize];
        let top = eligible.iter().map(|r| r.priority).max();
        let mut tokens: Vec<u64> = eligible
            .iter()
            .filter(|r| Some(r.priority) == top)
            .map(|r| r.token)
            .collect();
        tokens.sort_unstable();
        tokens
    }

    proptest! {
        #[test]
        fn the_runs_the_index_and_the_classes_follow_every_change(ops in prop::collection::vec(op(), 1..400)) {
            let mut sessions = Sessions::default();
            let mut state = crate::algorithm::PickState::new(7);
            let mut now = 0;
            let mut next_token = 0;
            for op in ops {
                now += 1 + (now % 3);
                let name = |n: usize| format!("r{n}");
                match op {
                    Op::Register(n, priority, show, available) => {
                        let presence = Presence { priority, show: SHOWS[show], available };
                        match sessions.find(&name(n)) {
                            Some(pos) => {
                                sessions.update(pos, now, |r| {
                                    r.priority = priority;
                                    r.show = SHOWS[show];
                                    r.flags = r.flags.with_available(available);
                                });
                            }
                            None => {
                                next_token += 1;
                                let mut r = Resource::new(&name(n), next_token, presence, now);
                                r.flags = Flags::default().with_available(available);
                                sessions.insert(r);
                            }
                        }
                    }
                    Op::Hibernate(n, on) => {
                        if let Some(pos) = sessions.find(&name(n)) {
                            sessions.update(pos, now, |r| r.flags = r.flags.with_hibernating(on));
                        }
                    }
                    Op::Touch(n) => {
                        if let Some(pos) = sessions.find(&name(n)) {
                            sessions.touch(pos, now);
                        }
                    }
                    Op::Renew(n) => {
                        if let Some(pos) = sessions.find(&name(n)) {
                            next_token += 1;
                            sessions.update(pos, now, |r| r.token = next_token);
                        }
                    }
                    Op::Remove(n) => {
                        if let Some(pos) = sessions.find(&name(n)) {
                            sessions.remove(pos);
                        }
                    }
                    Op::Pick(count) => {
                        for _ in 0..count {
                            let expected = sessions.index.as_ref().map(|index| {
                                // Before the first weighted pick: at rest.
                                let at_rest;
                                let rotations = match &index.rotations {
                                    Some(rotations) => rotations,
                                    None => {
                                        at_rest = rotations_of(&sessions.list, 0);
                                        &at_rest
                                    }
                                };
                                let rotation = weighted_rotation(sessions.live, rotations);
                                rotations.pick_by_scan(rotation).map(|pos| sessions.list[pos].token)
                            });
                            let mut out = [0u64; 1];
                            let picked = match crate::algorithm::pick(crate::Algorithm::Weighted, &mut state, &mut sessions, b"", &mut out) {
                                Pick::Routed(1) => Some(out[0]),
                                Pick::NotRouted => None,
                                other => panic!("{other:?}"),
                            };
                            if let Some(expected) = expected {
                                prop_assert_eq!(picked, expected);
                            }
                            sessions.check();
                        }
                    }
                }
                sessions.check();
                if sessions.index.is_some() {
                    let indexed = sessions.most_active_indexed().map(|pos| sessions.get(pos).token);
                    prop_assert_eq!(indexed, most_active_by_scan(&sessions));
                    let mut out = [0u64; 24];
                    let mut copies = match sessions.all_indexed(&mut out) {
                        Some(Pick::Routed(n)) => out[..n].to_vec(),
                        Some(Pick::NotRouted) => Vec::new(),
                        other => panic!("{other:?}"),
                    };
                    copies.sort_unstable();
                    prop_assert_eq!(copies, all_by_scan(&sessions));
                    if sessions.candidates_len() > 0 {
                        for sender in ["a@x", "b@x/r", "sensor-7@example.org"] {
                            let probes = Probes::of(sender.as_bytes());
                            let scanned = crate::algorithm::sticky(sessions.candidates(), &probes);
                            prop_assert_eq!(sessions.sticky_indexed(&probes), Some(scanned));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod sticky_ring_tests {
    use super::*;
    use crate::algorithm::sticky;
    use crate::registry::Presence;
    use std::collections::HashSet;

    fn candidate_names(sessions: &mut Sessions) -> HashSet<String> {
        sessions
            .candidates()
            .iter()
            .map(|r| r.name.to_string())
            .collect()
    }

    /// The scan's choice, and the ring's when the account has one (which
    /// the first call builds).
    fn choose(sessions: &mut Sessions, probes: &Probes, ring: bool) -> String {
        let scanned = sticky(sessions.candidates(), probes);
        if ring && sessions.index.is_some() {
            let indexed = sessions.sticky_indexed(probes).expect("a ring");
            assert_eq!(
                sessions.get(indexed).name,
                sessions.get(scanned).name,
                "ring and scan differ"
            );
        }
        sessions.get(scanned).name.to_string()
    }

    /// 1,500 names (two of them at one place) under a long random history:
    /// registrations, presence, token changes, hibernation one by one and
    /// of every live session at once (the tier flip), removals down to an
    /// unindexed account and back. After every step the ring agrees with
    /// the scan for 64 senders, and a sender whose session stayed among the
    /// candidates stays with it or goes to one that just joined.
    #[test]
    fn the_ring_agrees_with_the_scan_and_senders_move_only_when_theirs_left() {
        let mut rng = fastrand::Rng::with_seed(21);
        let mut names: Vec<String> = (0..1_500).map(|i| format!("r{i}")).collect();
        names.push("node-15754".into());
        names.push("node-78813".into());
        let senders: Vec<Probes> = (0..64)
            .map(|i| Probes::of(format!("sensor-{i}@example.org/x").as_bytes()))
            .collect();
        let mut sessions = Sessions::default();
        let mut token = 0u64;
        let mut now = 0u64;
        let mut chosen: Vec<Option<String>> = vec![None; senders.len()];
        for step in 0..6_000 {
            now += 1;
            // The ring is first built late, mid-life.
            let ring = step >= 1_500;
            if step == 3_000 {
                // Down to a small account, which drops the index and the
                // ring; the next sticky pick past 8 sessions builds it anew.
                while sessions.len() > 3 {
                    let pos = rng.usize(..sessions.len());
                    sessions.remove(pos);
                    sessions.check();
                }
            }
            let before = candidate_names(&mut sessions);
            let name = &names[rng.usize(..names.len())];
            match (sessions.find(name), rng.u8(..10)) {
                (None, _) => {
                    token += 1;
                    let presence = Presence {
                        priority: rng.i8(-1..3),
                        show: Show::None,
                        available: rng.u8(..10) != 0,
                    };
                    sessions.insert(Resource::new(name, token, presence, now));
                }
                (Some(pos), 0..=2) => {
                    let (p, a) = (rng.i8(-1..3), rng.u8(..10) != 0);
                    sessions.update(pos, now, |r| {
                        r.priority = p;
                        r.flags = r.flags.with_available(a);
                    });
                }
                (Some(pos), 3) => {
                    token += 1;
                    let t = token;
                    sessions.update(pos, now, |r| r.token = t);
                }
                (Some(pos), 4..=5) => {
                    let on = rng.bool();
                    sessions.update(pos, now, |r| r.flags = r.flags.with_hibernating(on));
                }
                (Some(_), 6) if rng.u8(..50) == 0 => {
                    // Every live session goes to rest: the candidates flip.
                    while sessions.has_live() {
                        sessions.update(0, now, |r| r.flags = r.flags.with_hibernating(true));
                    }
                }
                (Some(pos), 6..=7) => {
                    sessions.remove(pos);
                }
                (Some(pos), _) => sessions.touch(pos, now),
            }
            sessions.check();
            let after = candidate_names(&mut sessions);
            if after.is_empty() {
                chosen.iter_mut().for_each(|c| *c = None);
                continue;
            }
            for (probes, last) in senders.iter().zip(chosen.iter_mut()) {
                let now_chosen = choose(&mut sessions, probes, ring);
                if let Some(previous) = last.as_ref() {
                    if after.contains(previous) {
                        assert!(
                            *previous == now_chosen
                                || (!before.contains(&now_chosen) && after.contains(&now_chosen)),
                            "step {step}: moved from {previous} to {now_chosen}"
                        );
                    }
                }
                *last = Some(now_chosen);
            }
            if ring {
                sessions.check();
            }
        }
        assert!(sessions.len() > 500, "{}", sessions.len());
    }
}
