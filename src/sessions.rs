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

use crate::registry::Resource;
use hashbrown::HashTable;

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

/// Positions by resource name and by token, for large accounts.
#[derive(Debug, Default)]
struct Index {
    by_name: HashTable<u32>,
    by_token: HashTable<u32>,
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
    fn of(list: &[Resource]) -> Index {
        let mut index = Index::default();
        for pos in 0..list.len() {
            index.insert(list, pos);
        }
        index
    }

    /// Indexes `list[pos]`.
    fn insert(&mut self, list: &[Resource], pos: usize) {
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

    fn remove(&mut self, r: &Resource, pos: u32) {
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

    /// The position of the session that `token` owns.
    pub fn find_token(&self, token: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index
                .by_token
                .find(token_key(token), |&p| self.list[p as usize].token == token)
                .map(|&p| p as usize),
            None => self.list.iter().position(|r| r.token == token),
        }
    }

    /// Adds a session of a resource not yet registered; returns where it is.
    pub fn insert(&mut self, mut fresh: Resource) -> usize {
        fresh.seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let pos = self.list.len();
        self.list.push(fresh);
        match &mut self.index {
            Some(index) => index.insert(&self.list, pos),
            None if self.list.len() > INDEX_ABOVE => {
                self.index = Some(Box::new(Index::of(&self.list)));
            }
            None => {}
        }
        self.settle(pos, Run::Out)
    }

    /// Changes the session at `pos` with `f` and moves it to the run it now
    /// belongs to; returns where it is. `f` must not change the name; a new
    /// token is indexed.
    pub fn update(&mut self, pos: usize, f: impl FnOnce(&mut Resource)) -> usize {
        let before = run_of(&self.list[pos]);
        let token = self.list[pos].token;
        f(&mut self.list[pos]);
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
        self.settle(pos, before)
    }

    /// Removes the session at `pos`.
    pub fn remove(&mut self, pos: usize) -> Resource {
        let pos = self.leave(pos, run_of(&self.list[pos]), Run::Out);
        let last = self.list.len() - 1;
        self.swap(pos, last);
        let gone = self.list.pop().expect("the session is there");
        if let Some(index) = &mut self.index {
            index.remove(&gone, last as u32);
        }
        if self.list.len() <= INDEX_DROP_AT {
            self.index = None;
        }
        gone
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
                for (pos, r) in self.list.iter().enumerate() {
                    assert_eq!(self.find(&r.name), Some(pos));
                    assert_eq!(self.find_token(r.token), Some(pos));
                }
            }
            None => assert!(self.list.len() <= INDEX_ABOVE),
        }
    }
}
