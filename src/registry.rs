//! The accounts and their resources, sharded so that threads working on
//! different accounts rarely meet on one lock.

use crate::algorithm::{self, Algorithm, Pick, PickState, Tier};
use compact_str::CompactString;
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::Mutex;
use std::hash::BuildHasher;

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

/// A session's availability and XEP-0198 hibernation, in one byte so that
/// a session stays one cache line.
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

/// One session of an account, as the host registered it. Exactly one cache
/// line: a pick reads one line per session, and sessions of accounts that
/// other threads work on never share a line with it.
#[derive(Clone, Debug)]
#[repr(align(64))]
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
    /// Algorithm state: picks in `leastloaded`'s recent window (halved
    /// every 64 picks, so it stays below 128).
    pub recent: u8,
    /// `sticky`: xxh3 of `name`, computed once at registration.
    pub name_hash: u32,
    pub priority: i8,
    pub show: Show,
    pub flags: Flags,
}

impl Resource {
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
    pub resources: Vec<Resource>,
}

impl Account {
    /// Applies `change` to the resources. When it says it changed who is
    /// eligible or a weight, the weighted rotation is carried over the
    /// change; otherwise the rotations are left alone.
    fn change<R>(&mut self, change: impl FnOnce(&mut Vec<Resource>) -> (R, bool)) -> R {
        let old_total = algorithm::weighted_total(&self.resources);
        let (result, changed) = change(&mut self.resources);
        if changed {
            algorithm::rebalance(&mut self.resources, old_total);
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
/// A shard's table is not shrunk below this many slots.
const MIN_SHRINK_CAPACITY: usize = 64;

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

#[derive(Default)]
struct Shard {
    accounts: HashTable<Account>,
    /// Resources of all its accounts.
    sessions: usize,
    picks: PickCounts,
}

/// Accounts keyed by normalized bare JID. Every method locks one shard for
/// the time of one short operation; no lock is held across calls.
pub struct Registry {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..1 << SHARD_BITS)
                .map(|_| CachePadded::new(Mutex::new(Shard::default())))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl Registry {
    /// The shard comes from bits that hashbrown uses neither for the bucket
    /// (low bits) nor for its control tag (top 7 bits).
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 40) as usize) & ((1 << SHARD_BITS) - 1)]
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
        let hash = self.hasher.hash_one(bare);
        let mut shard = self.shard(hash).lock();
        let Shard {
            accounts, sessions, ..
        } = &mut *shard;
        let (account, new_account) = match accounts.find_mut(hash, |a| a.key == bare) {
            Some(account) => (account, false),
            None => (
                accounts
                    .insert_unique(
                        hash,
                        Account {
                            key: CompactString::from(bare),
                            algorithm: default_algorithm,
                            state: PickState::new(hash),
                            resources: Vec::new(),
                        },
                        |a| self.hasher.hash_one(a.key.as_str()),
                    )
                    .into_mut(),
                true,
            ),
        };
        account.change(|resources| {
            let fresh = Resource {
                name: CompactString::from(resource),
                name_hash: crate::algorithm::name_hash(resource),
                token,
                last_activity: now,
                routed: 0,
                load: 0,
                current_weight: 0,
                recent: 0,
                priority: presence.priority,
                show: presence.show,
                flags: Flags::default().with_available(presence.available),
            };
            match resources.iter_mut().find(|r| r.name == resource) {
                Some(existing) if existing.token == token => {
                    let before = standing(existing);
                    existing.priority = presence.priority;
                    existing.show = presence.show;
                    existing.flags = existing.flags.with_available(presence.available);
                    (Registration::Updated, standing(existing) != before)
                }
                Some(existing) => {
                    *existing = fresh;
                    (Registration::Replaced, true)
                }
                None => {
                    resources.push(fresh);
                    *sessions += 1;
                    let added = if new_account {
                        Registration::NewAccount
                    } else {
                        Registration::Added
                    };
                    (added, true)
                }
            }
        })
    }

    /// Removes the session that `token` owns: the one of `resource`, or with
    /// `None`, whichever of the account's sessions has it. An account without
    /// resources is dropped entirely. Returns whether anything was removed.
    pub fn unregister(&self, bare: &str, resource: Option<&str>, token: u64) -> bool {
        let hash = self.hasher.hash_one(bare);
        let mut shard = self.shard(hash).lock();
        let Shard {
            accounts: table,
            sessions,
            ..
        } = &mut *shard;
        let Ok(mut entry) = table.find_entry(hash, |a| a.key == bare) else {
            return false;
        };
        let account = entry.get_mut();
        let Some(index) = account
            .resources
            .iter()
            .position(|r| r.token == token && resource.is_none_or(|name| r.name == name))
        else {
            return false;
        };
        if account.resources.len() == 1 {
            entry.remove();
            // After mass logouts a shard would otherwise keep its peak size.
            // Shrinking at a quarter full to twice the length leaves room to
            // grow back without rehashing at once.
            let len = table.len();
            if table.capacity() > MIN_SHRINK_CAPACITY && len * 4 <= table.capacity() {
                table.shrink_to(len * 2, |a| self.hasher.hash_one(a.key.as_str()));
            }
        } else {
            account.change(|resources| {
                resources.remove(index);
                ((), true)
            });
            account.state.removed(index);
        }
        *sessions -= 1;
        true
    }

    /// Marks the session that `token` owns as waiting for XEP-0198
    /// resumption, or as back. Returns whether the session exists.
    pub fn set_hibernating(&self, bare: &str, resource: &str, token: u64, on: bool) -> bool {
        self.with_account(bare, |account| {
            account.change(|resources| {
                match resources
                    .iter_mut()
                    .find(|r| r.name == resource && r.token == token)
                {
                    Some(r) => {
                        let before = standing(r);
                        r.flags = r.flags.with_hibernating(on);
                        (true, standing(r) != before)
                    }
                    None => (false, false),
                }
            })
        })
        .unwrap_or(false)
    }

    /// Runs `f` on the account under its shard's lock, or returns `None`
    /// when the account has no registered resource. Does not allocate.
    #[inline]
    pub fn with_account<R>(&self, bare: &str, f: impl FnOnce(&mut Account) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(bare);
        let mut shard = self.shard(hash).lock();
        shard.accounts.find_mut(hash, |a| a.key == bare).map(f)
    }

    /// Runs a pick on the account under its shard's lock and counts what it
    /// decided: `f` returns the algorithm it applied and the pick, or an
    /// error (bad input it found), which counts nothing.
    #[inline]
    pub fn pick<E>(
        &self,
        bare: &str,
        f: impl FnOnce(&mut Account) -> Result<(Algorithm, Pick), E>,
    ) -> Result<Pick, E> {
        let hash = self.hasher.hash_one(bare);
        let mut shard = self.shard(hash).lock();
        let Shard {
            accounts, picks, ..
        } = &mut *shard;
        let Some(account) = accounts.find_mut(hash, |a| a.key == bare) else {
            picks.unregistered += 1;
            return Ok(Pick::NotRouted);
        };
        let (algorithm, pick) = f(account)?;
        match pick {
            Pick::Routed(_) => picks.routed[algorithm.index()] += 1,
            Pick::NotRouted => picks.left_to_server[algorithm.index()] += 1,
            // The host asks again with room: that pick is the one counted.
            Pick::BufferTooSmall(_) => {}
        }
        Ok(pick)
    }

    /// Runs `f` on the resource that `token` owns.
    pub fn with_resource<R>(
        &self,
        bare: &str,
        resource: &str,
        token: u64,
        f: impl FnOnce(&mut Resource) -> R,
    ) -> Option<R> {
        self.with_account(bare, |account| {
            account
                .resources
                .iter_mut()
                .find(|r| r.name == resource && r.token == token)
                .map(f)
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
        reg.with_account("a@x", |a| a.resources[0].routed = 5);
        assert_eq!(
            reg.register("a@x", "r", 2, AVAILABLE, 0, all),
            Registration::Replaced
        );
        assert_eq!(reg.with_account("a@x", |a| a.resources[0].routed), Some(0));
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
                .map(|s| s.lock().accounts.capacity())
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
            assert!(registry.with_account(&bare(i), |a| a.resources.len()) == Some(1));
        }
    }

    #[test]
    fn a_resource_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Resource>(), 64);
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
