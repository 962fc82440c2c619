//! The accounts and their resources, sharded so that threads working on
//! different accounts rarely meet on one lock.

use crate::algorithm::{self, Algorithm, Pick, PickState, Tier};
use crate::sessions::Sessions;
use compact_str::CompactString;
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::Mutex;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A resource's `<show/>`, ordered from least to most available so that
/// `mostactive` can compare them directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Show {
    Dnd,
    Xa,
    Away,
    None,
    Chat,
}

impl Show {
    /// Parses the text of `<show/>`; an empty string is the absence of it.
    pub fn parse(text: &str) -> Option<Show> {
        Some(match text {
            "" => Show::None,
            "chat" => Show::Chat,
            "away" => Show::Away,
            "xa" => Show::Xa,
            "dnd" => Show::Dnd,
            _ => return None,
        })
    }

    /// The wire text; `none` stands for the absence of `<show/>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Dnd => "dnd",
            Show::Xa => "xa",
            Show::Away => "away",
            Show::None => "none",
            Show::Chat => "chat",
        }
    }
}

/// What a presence update says about a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    pub priority: i8,
    pub show: Show,
    pub available: bool,
}

/// A session's availability and XEP-0198 hibernation, in one byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    const AVAILABLE: u8 = 1;
    const HIBERNATING: u8 = 2;

    /// Whether the session has sent available presence.
    pub fn available(self) -> bool {
        self.0 & Flags::AVAILABLE != 0
    }

    /// Whether the session waits for XEP-0198 resumption.
    pub fn hibernating(self) -> bool {
        self.0 & Flags::HIBERNATING != 0
    }

    fn with(self, bit: u8, on: bool) -> Flags {
        Flags(if on { self.0 | bit } else { self.0 & !bit })
    }

    pub fn with_available(self, on: bool) -> Flags {
        self.with(Flags::AVAILABLE, on)
    }

    pub fn with_hibernating(self, on: bool) -> Flags {
        self.with(Flags::HIBERNATING, on)
    }
}

/// One session of an account, as the host registered it.
#[derive(Clone, Debug)]
pub struct Resource {
    pub name: CompactString,
    pub token: u64,
    /// Router clock (ns) of the last activity the host reported.
    pub last_activity: u64,
    /// Messages routed here since this token registered.
    pub routed: u64,
    /// Host-reported load, such as the unacknowledged XEP-0198 queue.
    pub load: u32,
    /// Algorithm state: smooth weighted round robin's current weight.
    pub current_weight: i32,
    /// `sticky`: xxh3 of `name`, computed once at registration; also the
    /// key of the account's index by name.
    pub name_hash: u32,
    /// `leastloaded`: the account's decay epoch when `recent` was last
    /// written (the count halves once per epoch since).
    pub recent_epoch: u32,
    /// Registration order within the account, for the stats.
    pub seq: u32,
    /// Algorithm state: picks in `leastloaded`'s recent window.
    pub recent: u8,
    pub priority: i8,
    pub show: Show,
    pub flags: Flags,
}

impl Resource {
    pub(crate) fn new(name: &str, token: u64, presence: Presence, now: u64) -> Resource {
        Resource {
            name: CompactString::from(name),
            name_hash: crate::algorithm::name_hash(name),
            token,
            last_activity: now,
            routed: 0,
            load: 0,
            current_weight: 0,
            recent_epoch: 0,
            seq: 0,
            recent: 0,
            priority: presence.priority,
            show: presence.show,
            flags: Flags::default().with_available(presence.available),
        }
    }

    /// RFC 6121 8.5.2.1.1: only available, non-negative resources get
    /// messages to the bare JID; in the live tier, only connected ones.
    #[inline]
    pub fn is_eligible(&self, tier: Tier) -> bool {
        self.flags.available()
            && self.priority >= 0
            && (tier == Tier::Any || !self.flags.hibernating())
    }
}

/// The routing state of one bare JID.
#[derive(Debug)]
pub struct Account {
    pub key: CompactString,
    pub algorithm: Algorithm,
    pub state: PickState,
    pub sessions: Sessions,
}

impl Account {
    /// Applies `change` to the sessions. When it says it changed who is
    /// eligible or a weight, the weighted rotation of a small account is
    /// carried over the change; otherwise the rotations are left alone. (A
    /// large account's index carries its own, and hands it over when the
    /// account grows small again.)
    fn change<R>(&mut self, change: impl FnOnce(&mut Sessions) -> (R, bool)) -> R {
        if !self.state.weighted_in_use() || self.sessions.is_indexed() {
            // Nothing to carry here: every standing is 0, and a change
            // leaves it so, or the index carries them.
            return change(&mut self.sessions).0;
        }
        let old_total = algorithm::weighted_total(self.sessions.as_slice());
        let (result, changed) = change(&mut self.sessions);
        if changed && !self.sessions.is_indexed() {
            let at_rest = algorithm::rebalance(self.sessions.standings_mut(), old_total);
            self.state.set_weighted_in_use(!at_rest);
        }
        result
    }
}

/// What the rotations depend on in one resource.
fn standing(r: &Resource) -> (bool, bool, i8) {
    (
        r.is_eligible(Tier::Live),
        r.is_eligible(Tier::Any),
        r.priority,
    )
}

/// How a register call changed the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The first session of an account that had none: the host restores
    /// the account's persisted algorithm now.
    NewAccount,
    /// A new resource of a registered account.
    Added,
    /// The same session updated its presence.
    Updated,
    /// A new session took over the resource of an older one.
    Replaced,
}

const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
/// A shard's table is not shrunk below this many slots.
const MIN_SHRINK_CAPACITY: usize = 64;
/// The registry hands memory back to the system (see
/// [`Registry::memory_to_release`]) once it has held this many sessions
/// and lost three quarters of them: low enough that the last falls of a
/// mass logout are trimmed too, where each trim is cheap.
const RELEASE_FROM: usize = 4_096;

/// What the picks decided, counted where they happen: under the lock of
/// the account's shard, so counting contends with nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PickCounts {
    /// Picks that chose sessions, per algorithm ([`Algorithm::index`]).
    pub routed: [u64; Algorithm::EVERY.len()],
    /// Picks that found no eligible session, per algorithm.
    pub left_to_server: [u64; Algorithm::EVERY.len()],
    /// Picks for an account with no registered session.
    pub unregistered: u64,
}

impl PickCounts {
    fn add(&mut self, other: &PickCounts) {
        for (mine, theirs) in self.routed.iter_mut().zip(other.routed) {
            *mine += theirs;
        }
        for (mine, theirs) in self.left_to_server.iter_mut().zip(other.left_to_server) {
            *mine += theirs;
        }
        self.unregistered += other.unregistered;
    }
}

/// The registry's figures, summed over its shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub picks: PickCounts,
    pub accounts: usize,
    pub sessions: usize,
}

/// A shard's accounts lie in one vector, found through a table of their
/// positions: the table's empty slots then cost 4 bytes, not an account.
#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    accounts: Vec<Account>,
    /// Resources of all its accounts.
    sessions: usize,
    picks: PickCounts,
}

impl Shard {
    /// The position of the account `bare` in `accounts`.
    #[inline]
    fn slot(&self, hash: u64, bare: &[u8]) -> Option<usize> {
        let accounts = &self.accounts;
        self.table
            .find(hash, |&slot| {
                same_key(accounts[slot as usize].key.as_bytes(), bare)
            })
            .map(|&slot| slot as usize)
    }

    #[inline]
    fn find(&mut self, hash: u64, bare: &[u8]) -> Option<&mut Account> {
        let slot = self.slot(hash, bare)?;
        Some(&mut self.accounts[slot])
    }

    /// The account's position, adding it with `make` when it is not there.
    fn find_or_add(
        &mut self,
        hash: u64,
        bare: &str,
        make: impl FnOnce() -> Account,
        rehash: impl Fn(&str) -> u64,
    ) -> (usize, bool) {
        if let Some(slot) = self.slot(hash, bare.as_bytes()) {
            return (slot, false);
        }
        let accounts = &mut self.accounts;
        let slot = accounts.len();
        accounts.push(make());
        self.table.insert_unique(hash, slot as u32, |&s| {
            rehash(accounts[s as usize].key.as_str())
        });
        (slot, true)
    }

    /// Removes the account at `slot`; the last account takes its place.
    fn remove(&mut self, hash: u64, slot: usize, rehash: impl Fn(&str) -> u64) {
        if let Ok(entry) = self.table.find_entry(hash, |&s| s as usize == slot) {
            entry.remove();
        }
        let last = self.accounts.len() - 1;
        self.accounts.swap_remove(slot);
        if slot != last {
            let moved = rehash(self.accounts[slot].key.as_str());
            if let Some(s) = self.table.find_mut(moved, |&s| s as usize == last) {
                *s = slot as u32;
            }
        }
        // After mass logouts a shard would otherwise keep its peak size.
        // Shrinking at a quarter full to twice the length leaves room to
        // grow back without rehashing at once.
        let len = self.table.len();
        if self.table.capacity() > MIN_SHRINK_CAPACITY && len * 4 <= self.table.capacity() {
            let accounts = &self.accounts;
            self.table
                .shrink_to(len * 2, |&s| rehash(accounts[s as usize].key.as_str()));
        }
        if self.accounts.capacity() > MIN_SHRINK_CAPACITY && len * 4 <= self.accounts.capacity() {
            self.accounts.shrink_to(len * 2);
        }
    }
}

/// Whether two keys are equal, compared a word at a time: a key is a bare
/// JID of a few dozen bytes, where a call to `memcmp` costs more than the
/// comparison.
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let word =
        |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or_default());
    // The first and the last word (overlapping when `n` is not a multiple
    // of 8) settle most keys, which are bare JIDs of 8 to 24 bytes.
    if word(a, 0) != word(b, 0) || word(a, n - 8) != word(b, n - 8) {
        return false;
    }
    let mut at = 8;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    true
}

/// Accounts keyed by normalized bare JID. Every method locks one shard for
/// the time of one short operation; no lock is held across calls.
pub struct Registry {
    shards: Box<[CachePadded<Mutex<Shard>>; SHARDS]>,
    hasher: rapidhash::fast::RandomState,
    /// Sessions registered, and the count from which the next release of
    /// memory is measured.
    sessions: AtomicUsize,
    release_mark: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(Shard::default())))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or_else(|_| unreachable!("SHARDS shards")),
            hasher: rapidhash::fast::RandomState::default(),
            sessions: AtomicUsize::new(0),
            release_mark: AtomicUsize::new(0),
        }
    }
}

impl Registry {
    /// One hasher call over the key's bytes (`Hash for str` would add a
    /// second for its terminator).
    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        hasher.finish()
    }

    /// The shard comes from bits that hashbrown uses neither for the bucket
    /// (low bits) nor for its control tag (top 7 bits).
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 40) as usize) & (SHARDS - 1)]
    }

    /// Registers or updates `resource` of the account `bare`. A new account
    /// starts with `default_algorithm`.
    pub fn register(
        &self,
        bare: &str,
        resource: &str,
        token: u64,
        presence: Presence,
        now: u64,
        default_algorithm: Algorithm,
    ) -> Registration {
        let hash = self.hash(bare.as_bytes());
        let mut shard = self.shard(hash).lock();
        let (slot, new_account) = shard.find_or_add(
            hash,
            bare,
            || Account {
                key: CompactString::from(bare),
                algorithm: default_algorithm,
                state: PickState::new(hash),
                sessions: Sessions::default(),
            },
            |key| self.hash(key.as_bytes()),
        );
        let account = &mut shard.accounts[slot];
        let registration = account.change(|sessions| match sessions.find(resource) {
            Some(pos) if sessions.get(pos).token == token => {
                let before = standing(sessions.get(pos));
                let pos = sessions.update(pos, now, |r| {
                    r.priority = presence.priority;
                    r.show = presence.show;
                    r.flags = r.flags.with_available(presence.available);
                });
                (Registration::Updated, standing(sessions.get(pos)) != before)
            }
            Some(pos) => {
                sessions.update(pos, now, |r| {
                    let seq = r.seq;
                    *r = Resource::new(resource, token, presence, now);
                    r.seq = seq;
                });
                (Registration::Replaced, true)
            }
            None => {
                sessions.insert(Resource::new(resource, token, presence, now));
                let added = if new_account {
                    Registration::NewAccount
                } else {
                    Registration::Added
                };
                (added, true)
            }
        });
        if matches!(registration, Registration::NewAccount | Registration::Added) {
            shard.sessions += 1;
            drop(shard);
            let now = self.sessions.fetch_add(1, Relaxed) + 1;
            self.release_mark.fetch_max(now, Relaxed);
        }
        registration
    }

    /// Removes the session that `token` owns: the one of `resource`, or with
    /// `None`, whichever of the account's sessions has it. An account without
    /// resources is dropped entirely. Returns whether anything was removed.
    pub fn unregister(&self, bare: &str, resource: Option<&str>, token: u64) -> bool {
        let hash = self.hash(bare.as_bytes());
        let mut shard = self.shard(hash).lock();
        let Some(slot) = shard.slot(hash, bare.as_bytes()) else {
            return false;
        };
        let account = &mut shard.accounts[slot];
        let found = match resource {
            Some(name) => account.sessions.find_owned(name, token),
            None => account.sessions.find_token(token),
        };
        let Some(pos) = found else {
            return false;
        };
        if account.sessions.len() == 1 {
            shard.remove(hash, slot, |key| self.hash(key.as_bytes()));
        } else {
            account.change(|sessions| {
                sessions.remove(pos);
                ((), true)
            });
        }
        shard.sessions -= 1;
        drop(shard);
        self.sessions.fetch_sub(1, Relaxed);
        true
    }

    /// Whether so many sessions have left since the last answer of `true`
    /// that the memory they held is worth handing back to the system
    /// (three quarters of at least [`RELEASE_FROM`]). Answers `true` once
    /// per such fall, to one caller.
    pub fn memory_to_release(&self) -> bool {
        let mark = self.release_mark.load(Relaxed);
        let now = self.sessions.load(Relaxed);
        mark >= RELEASE_FROM
            && now <= mark / 4
            && self
                .release_mark
                .compare_exchange(mark, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// Marks the session that `token` owns as waiting for XEP-0198
    /// resumption, or as back. Returns whether the session exists.
    pub fn set_hibernating(
        &self,
        bare: &str,
        resource: &str,
        token: u64,
        on: bool,
        now: u64,
    ) -> bool {
        self.with_account(bare, |account| {
            account.change(|sessions| match sessions.find_owned(resource, token) {
                Some(pos) => {
                    let before = standing(sessions.get(pos));
                    let pos = sessions.update(pos, now, |r| r.flags = r.flags.with_hibernating(on));
                    (true, standing(sessions.get(pos)) != before)
                }
                None => (false, false),
            })
        })
        .unwrap_or(false)
    }

    /// Runs `f` on the account under its shard's lock, or returns `None`
    /// when the account has no registered resource. Does not allocate.
    #[inline]
    pub fn with_account<R>(&self, bare: &str, f: impl FnOnce(&mut Account) -> R) -> Option<R> {
        let hash = self.hash(bare.as_bytes());
        let mut shard = self.shard(hash).lock();
        shard.find(hash, bare.as_bytes()).map(f)
    }

    /// Runs a pick on the account under its shard's lock and counts what it
    /// decided: `f` returns the algorithm it applied and the pick, or an
    /// error (bad input it found), which counts nothing.
    /// `bare` is taken as bytes: a key that matches one of the registry's
    /// is text. `missing` checks a key that matches none, before it counts.
    #[inline]
    pub fn pick<E>(
        &self,
        bare: &[u8],
        f: impl FnOnce(&mut Account) -> Result<(Algorithm, Pick), E>,
        missing: impl FnOnce() -> Result<(), E>,
    ) -> Result<Pick, E> {
        let hash = self.hash(bare);
        let mut shard = self.shard(hash).lock();
        let Some(account) = shard.find(hash, bare) else {
            missing()?;
            shard.picks.unregistered += 1;
            return Ok(Pick::NotRouted);
        };
        let (algorithm, pick) = f(account)?;
        let picks = &mut shard.picks;
        match pick {
            Pick::Routed(_) => picks.routed[algorithm.index()] += 1,
            Pick::NotRouted => picks.left_to_server[algorithm.index()] += 1,
            // The host asks again with room: that pick is the one counted.
            Pick::BufferTooSmall(_) => {}
        }
        Ok(pick)
    }

    /// Stamps the activity of the session that `token` owns at `now`;
    /// returns whether it exists.
    pub fn touch(&self, bare: &str, resource: &str, token: u64, now: u64) -> bool {
        self.with_account(bare, |account| {
            let sessions = &mut account.sessions;
            let pos = sessions.find_owned(resource, token)?;
            sessions.touch(pos, now);
            Some(())
        })
        .flatten()
        .is_some()
    }

    /// Runs `f` on the resource that `token` owns. `f` changes a figure the
    /// host reports (its load), not what makes it eligible or its activity.
    pub fn with_resource<R>(
        &self,
        bare: &str,
        resource: &str,
        token: u64,
        f: impl FnOnce(&mut Resource) -> R,
    ) -> Option<R> {
        self.with_account(bare, |account| {
            let sessions = &mut account.sessions;
            let pos = sessions.find_owned(resource, token)?;
            Some(f(sessions.get_mut(pos)))
        })
        .flatten()
    }

    /// The figures of every shard, summed; each shard is read under its
    /// lock in turn.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            totals.picks.add(&shard.picks);
            totals.accounts += shard.accounts.len();
            totals.sessions += shard.sessions;
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVAILABLE: Presence = Presence {
        priority: 0,
        show: Show::None,
        available: true,
    };

    #[test]
    fn register_is_an_upsert_and_a_new_token_replaces() {
        let reg = Registry::default();
        let all = Algorithm::All;
        assert_eq!(
            reg.register("a@x", "r", 1, AVAILABLE, 0, all),
            Registration::NewAccount
        );
        assert_eq!(
            reg.register("a@x", "s", 3, AVAILABLE, 0, all),
            Registration::Added
        );
        assert_eq!(
            reg.register("a@x", "r", 1, AVAILABLE, 0, all),
            Registration::Updated
        );
        reg.with_account("a@x", |a| a.sessions.get_mut(0).routed = 5);
        assert_eq!(
            reg.register("a@x", "r", 2, AVAILABLE, 0, all),
            Registration::Replaced
        );
        assert_eq!(
            reg.with_account("a@x", |a| a.sessions.get(0).routed),
            Some(0)
        );
    }

    #[test]
    fn stale_token_does_not_unregister_the_new_session() {
        let reg = Registry::default();
        reg.register("a@x", "r", 1, AVAILABLE, 0, Algorithm::All);
        reg.register("a@x", "r", 2, AVAILABLE, 0, Algorithm::All);
        assert!(!reg.unregister("a@x", Some("r"), 1));
        assert!(!reg.unregister("a@x", None, 1));
        assert!(reg.unregister("a@x", None, 2));
        assert_eq!(
            reg.totals().accounts,
            0,
            "an account without resources is dropped"
        );
    }

    #[test]
    fn tables_shrink_after_mass_unregistration() {
        let registry = Registry::default();
        let capacity = |r: &Registry| {
            r.shards
                .iter()
                .map(|s| s.lock().table.capacity())
                .sum::<usize>()
        };
        let bare = |i: usize| format!("user{i}@example.org");
        for i in 0..100_000 {
            registry.register(&bare(i), "r", 1, AVAILABLE, 0, Algorithm::All);
        }
        let peak = capacity(&registry);
        for i in 100..100_000 {
            assert!(registry.unregister(&bare(i), Some("r"), 1));
        }
        assert_eq!(registry.totals().accounts, 100);
        let after = capacity(&registry);
        // 100 accounts over 256 shards: every shard is back at its floor.
        assert!(
            after <= (1 << SHARD_BITS) * MIN_SHRINK_CAPACITY,
            "{after} slots left of {peak}"
        );
        for i in 0..100 {
            assert!(registry.with_account(&bare(i), |a| a.sessions.len()) == Some(1));
        }
    }

    #[test]
    fn keys_compare_as_their_bytes_at_every_length() {
        let key: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=key.len() {
            let a = &key[..n];
            assert!(same_key(a, a));
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!same_key(a, &b), "{n} bytes, differing at {at}");
            }
            assert!(!same_key(a, &key[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn what_a_session_and_an_account_hold() {
        // The registry's memory per session (BENCHMARKS.md): keep it so.
        assert_eq!(std::mem::size_of::<Resource>(), 72);
        assert!(std::mem::size_of::<Account>() <= 104);
    }

    #[test]
    fn show_order_is_chat_none_away_xa_dnd() {
        let mut shows: Vec<Show> = ["dnd", "", "xa", "chat", "away"]
            .iter()
            .map(|s| Show::parse(s).unwrap())
            .collect();
        shows.sort();
        shows.reverse();
        assert_eq!(
            shows,
            [Show::Chat, Show::None, Show::Away, Show::Xa, Show::Dnd]
        );
        assert_eq!(Show::parse("online"), None);
    }
}
