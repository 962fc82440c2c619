//! The weighted rotations of a large account: smooth weighted round robin
//! (nginx's, which [`crate::algorithm`] runs over the sessions of a small
//! account) where neither a pick nor a change visits every session.
//!
//! Each session of a rotation has a standing: the messages it is owed
//! against its share (negative when it is ahead). A pick adds
//! `weight / total` to every standing, takes the richest and charges it one
//! message. Rather than adding to every standing, a rotation keeps a
//! virtual time that each pick advances by `1 / total`, and each session a
//! key, `standing = key + time · weight`: sessions of one weight keep their
//! order as time goes on, so each weight's sessions sit in a heap by key
//! and a pick looks at the richest of each weight only.
//!
//! Standings are counted in messages, not in units of the total weight, so
//! a change of the total carries every standing over as it is, without
//! visiting anyone. A session that leaves takes its standing with it, and
//! one whose weight changes starts level (as it does in a small account);
//! what the others then owe or are owed, to sum to 0 again, goes to the
//! poorest (or comes from the richest), one or a few of them. That each
//! session stays within two messages of its share over a stretch is what
//! the model tests check (tests/model.rs), at up to 1,000 sessions; it is
//! not proven.

use std::cmp::Reverse;

/// One message, in the fixed-point units of standings, keys and time.
pub(crate) const MESSAGE: i64 = 1 << 32;
/// The most a standing keeps either way over a change: under a message.
const MOST: i64 = MESSAGE - 1;
/// Time goes back to 0 beyond this (every 2^20 · total picks), so that keys
/// (about `-time · weight`) stay far from the limits of an i64.
const TIME_LIMIT: i64 = 1 << 52;
const NONE: u32 = u32::MAX;

/// The rotation a session is in and its weight there (1 to 127).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub rotation: u8,
    pub weight: u8,
}

/// A session in a rotation.
#[derive(Clone, Copy, Debug)]
struct Member {
    /// `standing = key + time · weight`.
    key: i64,
    /// Registration order: of two equal standings the earlier goes first.
    seq: u32,
    /// Where the session is in the account's list.
    pos: u32,
    /// Where it is in its class's two heaps.
    at: [u32; 2],
}

impl Member {
    fn rank(&self) -> (i64, Reverse<u32>) {
        (self.key, Reverse(self.seq))
    }
}

/// The members of one weight, in a slab, with two heaps of their slots:
/// the richest on top of `heaps[RICHEST]`, the poorest of `heaps[POOREST]`.
#[derive(Debug)]
struct Class {
    weight: i64,
    members: Vec<Member>,
    free: Vec<u32>,
    heaps: [Vec<u32>; 2],
}

const RICHEST: usize = 0;
const POOREST: usize = 1;

impl Class {
    fn new(weight: i64) -> Class {
        Class {
            weight,
            members: Vec::new(),
            free: Vec::new(),
            heaps: [Vec::new(), Vec::new()],
        }
    }

    fn len(&self) -> usize {
        self.heaps[RICHEST].len()
    }

    fn top(&self, heap: usize) -> u32 {
        self.heaps[heap][0]
    }

    /// Whether the member in `a` belongs above the one in `b` in `heap`.
    fn above(&self, heap: usize, a: u32, b: u32) -> bool {
        let (a, b) = (
            self.members[a as usize].rank(),
            self.members[b as usize].rank(),
        );
        if heap == RICHEST {
            a > b
        } else {
            a < b
        }
    }

    fn place(&mut self, heap: usize, i: usize, slot: u32) {
        self.heaps[heap][i] = slot;
        self.members[slot as usize].at[heap] = i as u32;
    }

    /// Moves the entry at `i` of `heap` to where its rank puts it.
    fn sift(&mut self, heap: usize, mut i: usize) {
        let slot = self.heaps[heap][i];
        while i > 0 {
            let parent = (i - 1) / 2;
            let up = self.heaps[heap][parent];
            if !self.above(heap, slot, up) {
                break;
            }
            self.place(heap, i, up);
            i = parent;
        }
        loop {
            let mut child = 2 * i + 1;
            let len = self.heaps[heap].len();
            if child >= len {
                break;
            }
            let right = child + 1;
            if right < len && self.above(heap, self.heaps[heap][right], self.heaps[heap][child]) {
                child = right;
            }
            let down = self.heaps[heap][child];
            if !self.above(heap, down, slot) {
                break;
            }
            self.place(heap, i, down);
            i = child;
        }
        self.place(heap, i, slot);
    }

    fn insert(&mut self, member: Member) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.members[slot as usize] = member;
                slot
            }
            None => {
                self.members.push(member);
                (self.members.len() - 1) as u32
            }
        };
        for heap in [RICHEST, POOREST] {
            self.heaps[heap].push(slot);
            self.sift(heap, self.heaps[heap].len() - 1);
        }
        slot
    }

    fn remove(&mut self, slot: u32) -> Member {
        let member = self.members[slot as usize];
        for heap in [RICHEST, POOREST] {
            let i = member.at[heap] as usize;
            let last = self.heaps[heap].pop().expect("the member is in the heap");
            if i < self.heaps[heap].len() {
                self.place(heap, i, last);
                self.sift(heap, i);
            }
        }
        self.free.push(slot);
        member
    }

    fn rekey(&mut self, slot: u32, key: i64) {
        let member = &mut self.members[slot as usize];
        member.key = key;
        let at = member.at;
        for heap in [RICHEST, POOREST] {
            self.sift(heap, at[heap] as usize);
        }
    }
}

/// One rotation: its members by weight, and the virtual time.
#[derive(Debug, Default)]
struct Rotation {
    /// The weights present, in no order.
    classes: Vec<Class>,
    total: i64,
    /// The members' keys summed, to level their standings to 0 exactly.
    keys: i128,
    /// The virtual time at the last fold, and the picks since (fewer than
    /// `total`): `time + picks · MESSAGE / total` is the time now, kept
    /// exact between changes.
    time: i64,
    picks: i64,
}

impl Rotation {
    fn class(&self, weight: i64) -> usize {
        self.classes
            .iter()
            .position(|c| c.weight == weight)
            .expect("the class of a member")
    }

    fn standing(&self, class: usize, slot: u32) -> i64 {
        let class = &self.classes[class];
        class.members[slot as usize].key + self.time * class.weight
    }

    /// Brings the picks since the last fold into `time`, before a change of
    /// the total. Rounded to the unit: every standing moves by at most its
    /// weight in units (under 2^-25 of a message), and [`Rotation::level`]
    /// puts the sum back to 0.
    fn fold(&mut self) {
        if self.picks > 0 {
            let (picks, total) = (i128::from(self.picks), i128::from(self.total));
            self.time += ((picks * i128::from(MESSAGE) + total / 2) / total) as i64;
            self.picks = 0;
            self.rebase_if_late();
        }
    }

    fn rebase_if_late(&mut self) {
        if self.time < TIME_LIMIT {
            return;
        }
        // Every key of a class moves alike, so no heap changes order.
        for class in &mut self.classes {
            for member in &mut class.members {
                member.key += self.time * class.weight;
            }
        }
        self.keys += i128::from(self.time) * i128::from(self.total);
        self.time = 0;
    }

    /// Nginx's pick: every member gains its weight, the richest (the
    /// earlier registered of equals) pays the total. Returns its position.
    fn pick(&mut self) -> Option<u32> {
        self.picks += 1;
        let total = i128::from(self.total);
        let gained = i128::from(self.picks) * i128::from(MESSAGE);
        let mut best: Option<((i128, Reverse<u32>), usize, u32)> = None;
        for (i, class) in self.classes.iter().enumerate() {
            let slot = class.top(RICHEST);
            let member = &class.members[slot as usize];
            // In units of 2^-32 / total of a message: exact.
            let value = total * i128::from(member.key + self.time * class.weight)
                + gained * i128::from(class.weight);
            let rank = (value, Reverse(member.seq));
            if best.is_none_or(|(b, ..)| rank > b) {
                best = Some((rank, i, slot));
            }
        }
        let (_, class, slot) = best?;
        let class = &mut self.classes[class];
        let member = class.members[slot as usize];
        class.rekey(slot, member.key - MESSAGE);
        self.keys -= i128::from(MESSAGE);
        if self.picks == self.total {
            // A whole turn: time moves by exactly one message.
            self.picks = 0;
            self.time += MESSAGE;
            self.rebase_if_late();
        }
        Some(member.pos)
    }

    fn join(&mut self, weight: i64, seq: u32, pos: u32, standing: i64) -> u32 {
        self.fold();
        let class = match self.classes.iter().position(|c| c.weight == weight) {
            Some(class) => class,
            None => {
                self.classes.push(Class::new(weight));
                self.classes.len() - 1
            }
        };
        let key = standing - self.time * weight;
        self.total += weight;
        self.keys += i128::from(key);
        self.classes[class].insert(Member {
            key,
            seq,
            pos,
            at: [NONE; 2],
        })
    }

    /// Takes the member out.
    fn leave(&mut self, weight: i64, slot: u32) {
        self.fold();
        let class = self.class(weight);
        let member = self.classes[class].remove(slot);
        if self.classes[class].len() == 0 {
            self.classes.swap_remove(class);
        }
        self.total -= weight;
        self.keys -= i128::from(member.key);
        if self.total == 0 {
            *self = Rotation::default();
        }
    }

    /// The member of the highest standing (`RICHEST`) or of the lowest.
    fn extreme(&self, heap: usize) -> Option<(usize, u32, i64)> {
        let mut best: Option<(usize, u32, i64)> = None;
        for (i, class) in self.classes.iter().enumerate() {
            let slot = class.top(heap);
            let standing = self.standing(i, slot);
            let better = match best {
                None => true,
                Some((.., b)) if heap == RICHEST => standing > b,
                Some((.., b)) => standing < b,
            };
            if better {
                best = Some((i, slot, standing));
            }
        }
        best
    }

    fn shift(&mut self, class: usize, slot: u32, by: i64) {
        let class = &mut self.classes[class];
        let key = class.members[slot as usize].key;
        class.rekey(slot, key + by);
        self.keys += i128::from(by);
    }

    /// After a change: no standing beyond one message either way (picks'
    /// gains may have left some past it), and their sum 0 again. Usually
    /// one step or two; each standing past one message costs one more (88
    /// at most in the review's search at 1,000 sessions), never a pass.
    fn level(&mut self) {
        self.fold();
        for (heap, sign) in [(RICHEST, 1), (POOREST, -1)] {
            while let Some((class, slot, standing)) = self.extreme(heap) {
                if standing * sign <= MOST {
                    break;
                }
                self.shift(class, slot, sign * MOST - standing);
            }
        }
        let mut owed = -(self.keys + i128::from(self.time) * i128::from(self.total));
        while owed != 0 {
            let heap = if owed > 0 { POOREST } else { RICHEST };
            let Some((class, slot, standing)) = self.extreme(heap) else {
                break;
            };
            let room = if owed > 0 {
                MOST - standing
            } else {
                MOST + standing
            };
            let step = owed.abs().min(i128::from(room)) as i64;
            if step == 0 {
                break;
            }
            let step = if owed > 0 { step } else { -step };
            self.shift(class, slot, step);
            owed -= i128::from(step);
        }
    }
}

/// Where a session sits: its place and its slot in its class.
#[derive(Clone, Copy, Debug)]
struct Seat {
    place: Place,
    slot: u32,
}

/// The rotations of an account's index and where each session sits in
/// them, by position.
#[derive(Debug, Default)]
pub struct Rotations {
    rotations: [Rotation; 4],
    seats: Vec<Option<Seat>>,
}

impl Rotations {
    /// A position added at the end, in no rotation yet.
    pub fn push(&mut self) {
        self.seats.push(None);
    }

    /// The last position gone; its session left its rotation before.
    pub fn pop(&mut self) {
        self.seats.pop();
    }

    /// The sessions at `a` and `b` traded places.
    pub fn swapped(&mut self, a: usize, b: usize) {
        self.seats.swap(a, b);
        for pos in [a, b] {
            if let Some(seat) = self.seats[pos] {
                let rotation = &mut self.rotations[seat.place.rotation as usize];
                let class = rotation.class(i64::from(seat.place.weight));
                rotation.classes[class].members[seat.slot as usize].pos = pos as u32;
            }
        }
    }

    /// Where the session at `pos` sits, if in a rotation.
    pub fn place(&self, pos: usize) -> Option<Place> {
        self.seats[pos].map(|seat| seat.place)
    }

    /// Seats the session at `pos` (registered `seq`-th) with `standing`,
    /// without levelling: [`Rotations::level`] follows.
    pub fn join(&mut self, pos: usize, place: Place, seq: u32, standing: i64) {
        let slot = self.rotations[place.rotation as usize].join(
            i64::from(place.weight),
            seq,
            pos as u32,
            standing,
        );
        self.seats[pos] = Some(Seat { place, slot });
    }

    /// Unseats the session at `pos`; returns where it sat.
    pub fn leave(&mut self, pos: usize) -> Option<Place> {
        let seat = self.seats[pos].take()?;
        self.rotations[seat.place.rotation as usize].leave(i64::from(seat.place.weight), seat.slot);
        Some(seat.place)
    }

    pub fn level(&mut self, rotation: u8) {
        self.rotations[rotation as usize].level();
    }

    pub fn is_empty(&self, rotation: u8) -> bool {
        self.rotations[rotation as usize].total == 0
    }

    /// The position of the session that `rotation` picks.
    pub fn pick(&mut self, rotation: u8) -> Option<usize> {
        self.rotations[rotation as usize]
            .pick()
            .map(|pos| pos as usize)
    }

    /// The standing of the session at `pos`, in its rotation, and that
    /// rotation's total weight; for an index that is dropped.
    pub fn standing(&mut self, pos: usize) -> Option<(Place, i64, i64)> {
        let seat = self.seats[pos]?;
        let rotation = &mut self.rotations[seat.place.rotation as usize];
        rotation.fold();
        let class = rotation.class(i64::from(seat.place.weight));
        Some((
            seat.place,
            rotation.standing(class, seat.slot),
            rotation.total,
        ))
    }

    /// What [`Rotations::pick`] must choose, found by a scan; for tests.
    #[cfg(test)]
    pub fn pick_by_scan(&self, rotation: u8) -> Option<usize> {
        let rotation = &self.rotations[rotation as usize];
        let total = i128::from(rotation.total);
        let gained = i128::from(rotation.picks + 1) * i128::from(MESSAGE);
        rotation
            .classes
            .iter()
            .flat_map(|class| {
                class.heaps[RICHEST].iter().map(move |&slot| {
                    let m = &class.members[slot as usize];
                    let value = total * i128::from(m.key + rotation.time * class.weight)
                        + gained * i128::from(class.weight);
                    ((value, Reverse(m.seq)), m.pos as usize)
                })
            })
            .max()
            .map(|(_, pos)| pos)
    }

    /// Checks the seats against `places` (what each position's fields say)
    /// and each rotation's heaps, total and sum; for tests.
    #[cfg(test)]
    pub fn check(&self, places: &[Option<Place>]) {
        assert_eq!(self.seats.len(), places.len());
        for (pos, (seat, place)) in self.seats.iter().zip(places).enumerate() {
            assert_eq!(seat.map(|s| s.place), *place, "position {pos}");
            if let Some(seat) = seat {
                let rotation = &self.rotations[seat.place.rotation as usize];
                let class = rotation.class(i64::from(seat.place.weight));
                let member = &rotation.classes[class].members[seat.slot as usize];
                assert_eq!(member.pos as usize, pos);
            }
        }
        for (r, rotation) in self.rotations.iter().enumerate() {
            let seated = places.iter().flatten().filter(|p| p.rotation as usize == r);
            assert_eq!(
                rotation.total,
                seated.map(|p| i64::from(p.weight)).sum::<i64>()
            );
            let mut keys = 0i128;
            for class in &rotation.classes {
                assert!(class.len() > 0);
                for heap in [RICHEST, POOREST] {
                    let entries = &class.heaps[heap];
                    for (i, &slot) in entries.iter().enumerate() {
                        assert_eq!(class.members[slot as usize].at[heap] as usize, i);
                        if i > 0 {
                            assert!(!class.above(heap, slot, entries[(i - 1) / 2]));
                        }
                    }
                }
                keys += class.heaps[RICHEST]
                    .iter()
                    .map(|&slot| i128::from(class.members[slot as usize].key))
                    .sum::<i128>();
            }
            assert_eq!(keys, rotation.keys);
            assert!(rotation.picks < rotation.total.max(1));
            // The standings sum to 0: the picks since the fold took
            // `picks` messages from the keys and gave them back in time.
            assert_eq!(
                rotation.keys
                    + i128::from(rotation.time) * i128::from(rotation.total)
                    + i128::from(rotation.picks) * i128::from(MESSAGE),
                0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotation at rest of `weights`, member `i` at position `i`.
    fn rotation(weights: &[i64], time: i64) -> Rotation {
        let mut rotation = Rotation {
            time,
            ..Rotation::default()
        };
        for (i, &weight) in weights.iter().enumerate() {
            rotation.join(weight, i as u32, i as u32, 0);
        }
        rotation
    }

    fn standings(rotation: &mut Rotation) -> Vec<(u32, i64)> {
        rotation.fold();
        let mut all: Vec<(u32, i64)> = (0..rotation.classes.len())
            .flat_map(|class| {
                let members = &rotation.classes[class].heaps[RICHEST];
                members.iter().map(move |&slot| (class, slot))
            })
            .map(|(class, slot)| {
                let pos = rotation.classes[class].members[slot as usize].pos;
                (pos, rotation.standing(class, slot))
            })
            .collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn picks_are_nginx_s_from_rest() {
        let mut rotation = rotation(&[3, 1], 0);
        let picks: Vec<u32> = (0..8).map(|_| rotation.pick().unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        // Two whole turns: at rest again.
        assert!(standings(&mut rotation).iter().all(|&(_, s)| s == 0));
    }

    #[test]
    fn time_goes_back_to_0_without_changing_a_pick() {
        let weights = [3, 1, 2, 2, 7];
        let mut early = rotation(&weights, 0);
        let mut late = rotation(&weights, TIME_LIMIT - 3 * MESSAGE);
        for _ in 0..200 {
            assert_eq!(early.pick(), late.pick());
        }
        assert!(late.time < TIME_LIMIT / 2);
        assert_eq!(standings(&mut early), standings(&mut late));
    }

    #[test]
    fn a_leaver_s_standing_goes_to_one_session_with_room() {
        let mut rotation = rotation(&[5, 1, 1, 1, 2], 0);
        for _ in 0..3 {
            rotation.pick();
        }
        let before = standings(&mut rotation);
        // The heavy one, picked twice in three, leaves ahead of its share.
        let heavy = rotation.class(5);
        let gone = rotation.classes[heavy].top(RICHEST);
        rotation.fold();
        assert!(rotation.standing(heavy, gone) < 0, "{before:?}");
        rotation.leave(5, gone);
        rotation.level();
        let after = standings(&mut rotation);
        assert_eq!(after.iter().map(|&(_, s)| s).sum::<i64>(), 0);
        assert!(after.iter().all(|&(_, s)| s.abs() <= MOST), "{after:?}");
        // Everyone else keeps their standing, in messages, under the new
        // total; one gives up what the leaver was ahead.
        let moved: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(moved.len(), 1, "{before:?} {after:?}");
    }
}
