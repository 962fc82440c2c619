//! The router: one policy and one registry, and every operation a host
//! needs. This is the safe API that the C ABI wraps.

use crate::algorithm::{self, Algorithm, Pick};
use crate::command::{self, CommandAnswer, SessionShare};
use crate::error::{Error, NotText, Quoted};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::{self, Condition, Query, Request};
use crate::registry::{Presence, Registration, Registry, Show};
use jid::{BareJid, FullJid, Jid};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A message to route, as the host sees it. Every string is borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Message<'a> {
    /// The recipient's bare JID, already normalized by the host, as bytes:
    /// checked as UTF-8 only when it is no registered account's.
    pub recipient: &'a [u8],
    /// The `type` attribute's bytes; empty when missing. Compared as bytes;
    /// checked as UTF-8 only when it is none of the types cmr knows.
    pub kind: &'a [u8],
    /// The sender's JID (full or bare), as bytes: `sticky` hashes its bare
    /// part, and only then is it checked as UTF-8.
    pub sender: &'a [u8],
    /// The `algorithm` of a `<cmr/>` hint in the message; empty when none.
    pub hint: &'a str,
    /// Whether the sender is a user of this server (for `hints=local`).
    pub sender_is_local: bool,
}

/// The answer to a CMR IQ, to be sent back by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqAnswer {
    /// The whole response stanza.
    pub xml: String,
    /// Whether the response is an error IQ.
    pub is_error: bool,
    change: Option<(BareJid, Algorithm)>,
}

impl IqAnswer {
    /// The account whose algorithm this answer sets (an accepted set, even
    /// to the active one), and the algorithm; the host persists it once
    /// [`Router::commit`] applied it.
    pub fn change(&self) -> Option<(&BareJid, Algorithm)> {
        self.change.as_ref().map(|(jid, a)| (jid, *a))
    }
}

/// A resource as the stats report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStats {
    pub resource: String,
    pub token: u64,
    pub routed: u64,
    pub priority: i8,
    pub show: Show,
    pub available: bool,
    pub hibernating: bool,
    pub load: u32,
}

/// How many picks a host makes for one message: one, and one more for each
/// picked session it found gone, up to this many; then the message is left
/// to the host's own routing. Bounds the work of a message whose sessions
/// keep vanishing.
pub const MAX_PICKS_PER_MESSAGE: u32 = 8;

/// The finest difference in activity `mostactive` tells apart: a host need
/// report a session's activity no more than once per interval.
pub const ACTIVITY_INTERVAL_MS: u32 = 1000;

const FEATURES: [&str; 2] = [protocol::NS, protocol::NS_HINTS];

/// Routing state for one virtual host (or several sharing one policy).
/// Every method may be called from any number of threads at once.
pub struct Router {
    policy: Policy,
    registry: Registry,
    epoch: Instant,
    /// Events too rare to contend: counted on the router, not per shard.
    not_routed_types: AtomicU64,
    gone_sessions: AtomicU64,
    iq_results: AtomicU64,
    iq_errors: AtomicU64,
}

fn invalid_jid(what: &'static str, value: &str, error: jid::Error) -> Error {
    Error::InvalidJid {
        what,
        value: Quoted::new(value),
        reason: error.to_string(),
    }
}

fn full_jid(value: &str) -> Result<FullJid, Error> {
    FullJid::new(value).map_err(|e| invalid_jid("full JID", value, e))
}

fn bare_jid(value: &str) -> Result<BareJid, Error> {
    BareJid::new(value).map_err(|e| invalid_jid("bare JID", value, e))
}

fn no_account(jid: &BareJid) -> Error {
    Error::NotFound {
        what: "account",
        value: Quoted::new(jid.as_str()),
    }
}

fn no_session(jid: &str, token: u64) -> Error {
    Error::NotFound {
        what: "session",
        value: Quoted::new(&format!("{jid} (token {token})")),
    }
}

/// RFC 6121 5.2.2: a missing or unknown type is `normal`. Only `chat` and
/// `normal` are CMR's to route (RFC 6121 8.5.2.1.1).
#[inline]
fn is_routed_type(kind: &[u8]) -> Result<bool, NotText> {
    // No type and `chat` are nearly every message: two comparisons, not a
    // match over every name.
    if kind.is_empty() || kind == b"chat" {
        return Ok(true);
    }
    is_routed_other_type(kind)
}

#[inline(never)]
fn is_routed_other_type(kind: &[u8]) -> Result<bool, NotText> {
    match kind {
        b"headline" | b"groupchat" | b"error" => Ok(false),
        b"normal" => Ok(true),
        other if is_text(other) => Ok(true),
        _ => Err(NotText("kind")),
    }
}

/// Whether `bytes` are UTF-8, checked a word at a time when they are ASCII,
/// as JIDs nearly always are.
fn is_text(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

impl Router {
    pub fn new(policy: Policy) -> Router {
        Router {
            policy,
            registry: Registry::default(),
            epoch: Instant::now(),
            not_routed_types: AtomicU64::new(0),
            gone_sessions: AtomicU64::new(0),
            iq_results: AtomicU64::new(0),
            iq_errors: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Registers a session or updates its presence. `token` is the host's
    /// handle for the session, unique for the router's lifetime; a new token
    /// on a known resource replaces the old session (and its stats).
    pub fn register(
        &self,
        full: &str,
        token: u64,
        priority: i32,
        show: &str,
        available: bool,
    ) -> Result<Registration, Error> {
        let jid = full_jid(full)?;
        let priority = i8::try_from(priority).map_err(|_| Error::InvalidArgument {
            what: "priority",
            value: Quoted::new(&priority.to_string()),
            expected: "-128..127",
        })?;
        let show = Show::parse(show).ok_or_else(|| Error::InvalidArgument {
            what: "show",
            value: Quoted::new(show),
            expected: "empty, chat, away, xa or dnd",
        })?;
        let presence = Presence {
            priority,
            show,
            available,
        };
        Ok(self.registry.register(
            jid.to_bare().as_str(),
            jid.resource().as_str(),
            token,
            presence,
            self.now(),
            self.policy.default_algorithm(),
        ))
    }

    /// Removes the session if `token` still owns the resource. Given the
    /// account's bare JID instead of the session's full one, removes
    /// whichever of its sessions `token` owns (for a host that no longer
    /// knows the resource of a session it found gone).
    pub fn unregister(&self, jid: &str, token: u64) -> Result<(), Error> {
        self.remove(jid, token, false)
    }

    /// Unregisters a session that a pick chose and the host found gone,
    /// and counts it. Counted even when the session is no longer registered
    /// (another thread found it gone first): the pick still found it gone.
    pub fn session_gone(&self, jid: &str, token: u64) -> Result<(), Error> {
        self.remove(jid, token, true)
    }

    /// Whether enough sessions have left to hand memory back to the
    /// system; `true` once per such fall.
    pub fn memory_to_release(&self) -> bool {
        self.registry.memory_to_release()
    }

    fn remove(&self, jid: &str, token: u64, gone: bool) -> Result<(), Error> {
        let parsed = Jid::new(jid).map_err(|e| invalid_jid("JID", jid, e))?;
        if gone {
            self.gone_sessions.fetch_add(1, Relaxed);
        }
        let resource = parsed.resource().map(|r| r.as_str());
        if self
            .registry
            .unregister(parsed.to_bare().as_str(), resource, token)
        {
            Ok(())
        } else {
            Err(no_session(jid, token))
        }
    }

    fn with_session(
        &self,
        full: &str,
        token: u64,
        f: impl FnOnce(&mut crate::registry::Resource),
    ) -> Result<(), Error> {
        let jid = full_jid(full)?;
        self.registry
            .with_resource(jid.to_bare().as_str(), jid.resource().as_str(), token, f)
            .ok_or_else(|| no_session(full, token))
    }

    /// Marks the session as waiting for XEP-0198 resumption (`on`), or as
    /// back. While it waits it gets messages only when no other session is
    /// eligible, and the copies of `all`.
    pub fn set_hibernating(&self, full: &str, token: u64, on: bool) -> Result<(), Error> {
        let jid = full_jid(full)?;
        let (bare, resource) = (jid.to_bare(), jid.resource());
        if self
            .registry
            .set_hibernating(bare.as_str(), resource.as_str(), token, on, self.now())
        {
            Ok(())
        } else {
            Err(no_session(full, token))
        }
    }

    /// Stamps the session's last activity with the router's clock. (Its
    /// registration, presence updates and XEP-0198 changes count as
    /// activity too.)
    pub fn touch(&self, full: &str, token: u64) -> Result<(), Error> {
        let jid = full_jid(full)?;
        let (bare, resource) = (jid.to_bare(), jid.resource());
        if self
            .registry
            .touch(bare.as_str(), resource.as_str(), token, self.now())
        {
            Ok(())
        } else {
            Err(no_session(full, token))
        }
    }

    /// Sets the load the host measures for the session.
    pub fn set_load(&self, full: &str, token: u64, load: u32) -> Result<(), Error> {
        self.with_session(full, token, |r| r.load = load)
    }

    /// Picks the sessions that get `message`, writing their tokens into
    /// `out`. Does not parse JIDs and does not allocate. A recipient, a type
    /// or (under `sticky`) a sender that is not UTF-8 is an error, counted
    /// nowhere.
    #[inline]
    pub fn pick(&self, message: &Message, out: &mut [u64]) -> Result<Pick, NotText> {
        let recipient_is_text = || match is_text(message.recipient) {
            true => Ok(()),
            false => Err(NotText("recipient")),
        };
        if !is_routed_type(message.kind)? {
            recipient_is_text()?;
            self.not_routed_types.fetch_add(1, Relaxed);
            return Ok(Pick::NotRouted);
        }
        let hinted =
            if !message.hint.is_empty() && self.policy.honours_hint(message.sender_is_local) {
                self.policy.offered_by_uri(message.hint)
            } else {
                None
            };
        self.registry.pick(
            message.recipient,
            |account| {
                let algorithm = hinted.unwrap_or(account.algorithm);
                if algorithm == Algorithm::Sticky && !is_text(message.sender) {
                    return Err(NotText("sender"));
                }
                let pick = algorithm::pick(
                    algorithm,
                    &mut account.state,
                    &mut account.sessions,
                    message.sender,
                    out,
                );
                Ok((algorithm, pick))
            },
            recipient_is_text,
        )
    }

    /// The account's active algorithm; the policy's default when none of
    /// its sessions is registered.
    pub fn algorithm(&self, bare: &str) -> Result<Algorithm, Error> {
        let jid = bare_jid(bare)?;
        Ok(self.active(&jid))
    }

    fn active(&self, jid: &BareJid) -> Algorithm {
        self.registry
            .with_account(jid.as_str(), |a| a.algorithm)
            .unwrap_or(self.policy.default_algorithm())
    }

    /// Sets the account's algorithm by URI or short name, as a host restores
    /// a persisted choice (the users' policy does not apply to the host).
    pub fn set_algorithm(&self, bare: &str, algorithm: &str) -> Result<(), Error> {
        let jid = bare_jid(bare)?;
        let algorithm = self.offered(algorithm)?;
        self.registry
            .with_account(jid.as_str(), |a| a.algorithm = algorithm)
            .ok_or_else(|| no_account(&jid))
    }

    /// An operator's choice for an account (the admin command, the host's
    /// admin tools): not bound by `user_change`, which limits users, but
    /// only an offered algorithm. It applies at once when a session of the
    /// account is registered; either way the answer is the account's
    /// normalized bare JID and the algorithm's URI, for the host to persist
    /// (and restore with [`set_algorithm`](Self::set_algorithm) when the
    /// account's first session registers).
    pub fn choose_for(&self, bare: &str, algorithm: &str) -> Result<(String, String), Error> {
        let jid = bare_jid(bare)?;
        let algorithm = self.offered(algorithm)?;
        self.registry
            .with_account(jid.as_str(), |a| a.algorithm = algorithm);
        Ok((jid.to_string(), self.policy.uri(algorithm).to_owned()))
    }

    /// The note of a completed admin command that chose `algorithm` (URI
    /// or short name) for the account: the same words as the routing
    /// command's.
    pub fn choice_note(&self, bare: &str, algorithm: &str) -> Result<String, Error> {
        let jid = bare_jid(bare)?;
        let algorithm = self
            .policy
            .resolve(algorithm)
            .ok_or_else(|| Error::UnknownAlgorithm {
                value: Quoted::new(algorithm),
            })?;
        Ok(command::choice_note(&jid, algorithm))
    }

    /// The algorithm that applies to an account, for the operators' tools:
    /// its sessions' when one is registered; else `stored` (the host's
    /// persisted choice, which the account's next first session restores)
    /// when the policy offers it; else the policy's default.
    pub fn algorithm_for(&self, bare: &str, stored: Option<&str>) -> Result<String, Error> {
        let jid = bare_jid(bare)?;
        let algorithm = self
            .registry
            .with_account(jid.as_str(), |a| a.algorithm)
            .or_else(|| stored.and_then(|s| self.offered(s).ok()))
            .unwrap_or(self.policy.default_algorithm());
        Ok(self.policy.uri(algorithm).to_owned())
    }

    /// The admin command's form (XEP-0133 style): the account and the
    /// offered algorithms.
    pub fn admin_form(&self) -> Result<String, Error> {
        command::admin_form(&self.offered_uris())
    }

    fn offered_uris(&self) -> Vec<(Algorithm, &str)> {
        self.policy
            .offered()
            .map(|a| (a, self.policy.uri(a)))
            .collect()
    }

    /// The offered algorithm a URI or short name names.
    fn offered(&self, algorithm: &str) -> Result<Algorithm, Error> {
        let found = self
            .policy
            .resolve(algorithm)
            .ok_or_else(|| Error::UnknownAlgorithm {
                value: Quoted::new(algorithm),
            })?;
        if !self.policy.offers(found) {
            return Err(Error::NotOffered {
                value: Quoted::new(self.policy.uri(found)),
            });
        }
        Ok(found)
    }

    /// Answers a XEP-0354 IQ given as a whole stanza. `Ok(None)`: not a CMR
    /// get or set. Changes nothing, and counts nothing, until the answer is
    /// [`commit`](Self::commit)ted; a refused stanza (`Err`) is counted
    /// here, as nothing of it is sent.
    pub fn answer_iq(&self, xml: &str) -> Result<Option<IqAnswer>, Error> {
        let answer = self.build_answer(xml);
        if answer.is_err() {
            self.iq_errors.fetch_add(1, Relaxed);
        }
        answer
    }

    fn build_answer(&self, xml: &str) -> Result<Option<IqAnswer>, Error> {
        let Some(iq) = protocol::parse_iq(xml)? else {
            return Ok(None);
        };
        let available = || {
            self.policy
                .offered()
                .map(|a| self.policy.uri(a).to_owned())
                .collect()
        };
        let mut change = None;
        let reply = match (iq.asked_account(), &iq.request) {
            (Some(account), _) if account != iq.from.to_bare() => protocol::error(
                &iq,
                Condition::Forbidden,
                Some("this is another user's account"),
            ),
            (_, Err(malformed)) => protocol::error(&iq, Condition::BadRequest, Some(&malformed.0)),
            (None, Ok(Request::Query)) => {
                let query = Query {
                    active: None,
                    available: available(),
                };
                protocol::result(&iq, Some((&query).into()))
            }
            (None, Ok(Request::Set(_))) => protocol::error(
                &iq,
                Condition::Forbidden,
                Some("the server's own routing cannot be changed; address your account"),
            ),
            (Some(account), Ok(Request::Query)) => {
                let active = self.policy.uri(self.active(&account)).to_owned();
                let query = Query {
                    active: Some(active),
                    available: available(),
                };
                protocol::result(&iq, Some((&query).into()))
            }
            (Some(account), Ok(Request::Set(cmr))) => {
                let registered = self.registry.with_account(account.as_str(), |_| ());
                if !self.policy.users_may_change() {
                    protocol::error(
                        &iq,
                        Condition::NotAllowed,
                        Some("the operator does not let users change the routing"),
                    )
                } else if let Some(algorithm) = self.policy.offered_by_uri(&cmr.algorithm) {
                    match registered {
                        // Nowhere to keep the choice: a set comes from a
                        // session, which the host registers first.
                        None => protocol::error(
                            &iq,
                            Condition::UnexpectedRequest,
                            Some("no session of this account is registered with CMR yet"),
                        ),
                        // Persisted even when it is already active: an
                        // explicit choice must not follow a later change of
                        // the policy's default.
                        Some(_) => {
                            change = Some((account, algorithm));
                            protocol::result(&iq, None)
                        }
                    }
                } else {
                    protocol::error(
                        &iq,
                        Condition::ItemNotFound,
                        Some("this algorithm is not offered here"),
                    )
                }
            }
        };
        Ok(Some(IqAnswer {
            xml: protocol::to_xml(&reply)?,
            is_error: reply.attr("type") == Some("error"),
            change,
        }))
    }

    /// Commits an answer that the host sends: counts it in the metrics,
    /// applies the change it carries (if any) to the registry, and says
    /// whether that set the account's algorithm: only then has the host
    /// something to persist. (The account may have lost its last session
    /// since the answer was made.) An answer never committed (the host's
    /// buffer was too small, and it asks again) counts nothing.
    pub fn commit(&self, answer: &IqAnswer) -> bool {
        if answer.is_error {
            self.iq_errors.fetch_add(1, Relaxed);
        } else {
            self.iq_results.fetch_add(1, Relaxed);
        }
        self.apply(&answer.change)
    }

    /// Sets the account's algorithm to what an answer carries: whether it
    /// did (the account may have lost its last session since).
    fn apply(&self, change: &Option<(BareJid, Algorithm)>) -> bool {
        match change {
            Some((account, algorithm)) => self
                .registry
                .with_account(account.as_str(), |a| a.algorithm = *algorithm)
                .is_some(),
            None => false,
        }
    }

    /// The routing command (XEP-0050) run by the session `requester` (a
    /// full JID): the form when nothing is `submitted`; else the submitted
    /// form (`<x xmlns='jabber:x:data' type='submit'>`) under the same
    /// policy as a XEP-0354 set. A form that is not this command's is an
    /// error; a choice the policy refuses is a `Refused` note. Changes
    /// nothing until [`commit_command`](Self::commit_command).
    pub fn routing_command(
        &self,
        requester: &str,
        submitted: Option<&str>,
    ) -> Result<CommandAnswer, Error> {
        let account = full_jid(requester)?.to_bare();
        let Some(submitted) = submitted else {
            return self.routing_form(&account).map(CommandAnswer::Form);
        };
        let uri = command::submitted_choice(submitted)?;
        let refused = |note: String| Ok(CommandAnswer::Refused(note));
        if !self.policy.users_may_change() {
            return refused(
                "The operator of this server does not let users change the routing.".into(),
            );
        }
        let Some(algorithm) = self.policy.offered_by_uri(&uri) else {
            return refused(format!(
                "{} is not offered here; nothing changed.",
                Quoted::new(&uri)
            ));
        };
        if self
            .registry
            .with_account(account.as_str(), |_| ())
            .is_none()
        {
            return refused(
                "No session of yours is registered with CMR yet; nothing changed.".into(),
            );
        }
        Ok(CommandAnswer::Completed {
            note: command::choice_note(&account, algorithm),
            change: Some((account, algorithm)),
        })
    }

    fn routing_form(&self, account: &BareJid) -> Result<String, Error> {
        let offered = self.offered_uris();
        let sessions: Vec<(String, u64)> = self
            .registry
            .with_account(account.as_str(), |a| {
                a.sessions
                    .in_registration_order()
                    .into_iter()
                    .filter(|r| r.flags.available())
                    .map(|r| (r.name.to_string(), r.routed))
                    .collect()
            })
            .unwrap_or_default();
        let shares: Vec<SessionShare> = sessions
            .iter()
            .map(|(resource, routed)| SessionShare {
                resource,
                routed: *routed,
            })
            .collect();
        let active = self.policy.uri(self.active(account));
        command::form(
            account,
            &offered,
            active,
            self.policy.users_may_change(),
            &shares,
        )
    }

    /// Applies the change a completed command carries, as
    /// [`commit`](Self::commit) does for an IQ: whether it set the
    /// account's algorithm, which the host then persists.
    pub fn commit_command(&self, answer: &CommandAnswer) -> bool {
        match answer {
            CommandAnswer::Completed { change, .. } => self.apply(change),
            _ => false,
        }
    }

    /// The disco#info features to advertise, on the server and accounts.
    pub fn disco_features(&self) -> &'static [&'static str] {
        match self.policy.hints() {
            crate::policy::Hints::Never => &FEATURES[..1],
            _ => &FEATURES,
        }
    }

    /// Per-resource figures of the account, in registration order.
    pub fn stats(&self, bare: &str) -> Result<Vec<ResourceStats>, Error> {
        let jid = bare_jid(bare)?;
        self.registry
            .with_account(jid.as_str(), |a| {
                a.sessions
                    .in_registration_order()
                    .into_iter()
                    .map(|r| ResourceStats {
                        resource: r.name.to_string(),
                        token: r.token,
                        routed: r.routed,
                        priority: r.priority,
                        show: r.show,
                        available: r.flags.available(),
                        hibernating: r.flags.hibernating(),
                        load: r.load,
                    })
                    .collect()
            })
            .ok_or_else(|| no_account(&jid))
    }

    /// The stats as a tab-separated table with a header line, for admin
    /// commands to print or parse.
    pub fn stats_table(&self, bare: &str) -> Result<String, Error> {
        let mut table =
            String::from("resource\trouted\tpriority\tshow\tavailable\tload\ttoken\thibernating\n");
        for r in self.stats(bare)? {
            let _ = writeln!(
                table,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.resource,
                r.routed,
                r.priority,
                r.show.as_str(),
                r.available,
                r.load,
                r.token,
                r.hibernating
            );
        }
        Ok(table)
    }

    /// The figures since the router was made. Counters from different
    /// threads are summed as they stand: a pick in progress may be in one
    /// and not yet in another.
    pub fn metrics(&self) -> Metrics {
        let totals = self.registry.totals();
        Metrics {
            routed: totals.picks.routed,
            left_to_server: totals.picks.left_to_server,
            left_to_server_unclaimed: totals.picks.unregistered
                + self.not_routed_types.load(Relaxed),
            gone_sessions: self.gone_sessions.load(Relaxed),
            iq_results: self.iq_results.load(Relaxed),
            iq_errors: self.iq_errors.load(Relaxed),
            sessions: totals.sessions as u64,
            accounts: totals.accounts as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(options: &str) -> Router {
        Router::new(Policy::from_options(options).unwrap())
    }

    fn msg(recipient: &str) -> Message<'_> {
        Message {
            recipient: recipient.as_bytes(),
            sender: b"sensor@x/1",
            ..Message::default()
        }
    }

    fn answer(r: &Router, xml: &str) -> IqAnswer {
        let a = r.answer_iq(xml).unwrap().expect("a CMR IQ");
        assert_eq!(r.commit(&a), a.change().is_some());
        a
    }

    #[test]
    fn jids_are_normalized_where_they_enter() {
        let r = router("");
        r.register("Juliet@Capulet.LIT/balcony", 1, 0, "", true)
            .unwrap();
        assert_eq!(
            r.register("juliet@capulet.lit/balcony", 1, 5, "chat", true)
                .unwrap(),
            Registration::Updated
        );
        let mut out = [0; 4];
        assert_eq!(
            r.pick(&msg("juliet@capulet.lit"), &mut out).unwrap(),
            Pick::Routed(1)
        );
        r.unregister("JULIET@capulet.lit/balcony", 1).unwrap();
        assert_eq!(r.metrics().accounts, 0);
    }

    #[test]
    fn bad_input_is_rejected_and_changes_nothing() {
        let r = router("");
        assert!(matches!(
            r.register("no-resource@x", 1, 0, "", true),
            Err(Error::InvalidJid { .. })
        ));
        assert!(matches!(
            r.register("a@x/r", 1, 128, "", true),
            Err(Error::InvalidArgument {
                what: "priority",
                ..
            })
        ));
        assert!(matches!(
            r.register("a@x/r", 1, 0, "busy", true),
            Err(Error::InvalidArgument { what: "show", .. })
        ));
        assert_eq!(r.metrics().accounts, 0);
        assert!(matches!(
            r.unregister("a@x/r", 1),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            r.set_algorithm("a@x", "fastest"),
            Err(Error::UnknownAlgorithm { .. })
        ));
    }

    #[test]
    fn the_routing_command_sets_what_a_set_would_and_only_once_committed() {
        let r = router("offered=all,roundrobin");
        r.register("a@x/r", 1, 0, "", true).unwrap();
        let CommandAnswer::Form(form) = r.routing_command("a@x/r", None).unwrap() else {
            panic!("a form first")
        };
        assert!(
            form.contains("<value>urn:xmpp:cmr:all</value><option"),
            "{form}"
        );
        assert!(!form.contains("sticky"), "only the offered: {form}");
        let submit = |uri: &str| {
            format!("<x xmlns='jabber:x:data' type='submit'><field var='algorithm'><value>{uri}</value></field></x>")
        };
        let answer = r
            .routing_command("a@x/r", Some(&submit("urn:xmpp:cmr:roundrobin")))
            .unwrap();
        assert!(
            matches!(&answer, CommandAnswer::Completed { note, .. } if note.contains("Round robin"))
        );
        assert_eq!(
            r.algorithm("a@x").unwrap(),
            Algorithm::All,
            "not before the commit"
        );
        assert!(r.commit_command(&answer));
        assert_eq!(r.algorithm("a@x").unwrap(), Algorithm::RoundRobin);
        for refused in ["urn:xmpp:cmr:weighted", "bogus"] {
            let answer = r.routing_command("a@x/r", Some(&submit(refused))).unwrap();
            assert!(matches!(answer, CommandAnswer::Refused(_)), "{refused}");
            assert!(!r.commit_command(&answer));
        }
        assert!(r.routing_command("a@x", None).is_err(), "a session runs it");
        assert_eq!(r.algorithm("a@x").unwrap(), Algorithm::RoundRobin);
        let fixed = router("user_change=false");
        fixed.register("a@x/r", 1, 0, "", true).unwrap();
        let answer = fixed
            .routing_command("a@x/r", Some(&submit("urn:xmpp:cmr:all")))
            .unwrap();
        assert!(matches!(answer, CommandAnswer::Refused(note) if note.contains("does not let")));
    }

    #[test]
    fn an_operator_chooses_for_an_account_online_or_not() {
        let r = router("offered=all,roundrobin user_change=false");
        let persist = r.choose_for("Offline@X", "roundrobin").unwrap();
        assert_eq!(
            persist,
            ("offline@x".into(), "urn:xmpp:cmr:roundrobin".into())
        );
        assert_eq!(
            r.choice_note("Offline@X", &persist.1).unwrap(),
            "Messages to offline@x are now routed by: Round robin."
        );
        r.register("a@x/r", 1, 0, "", true).unwrap();
        r.choose_for("a@x", "urn:xmpp:cmr:roundrobin").unwrap();
        assert_eq!(
            r.algorithm("a@x").unwrap(),
            Algorithm::RoundRobin,
            "applied at once"
        );
        assert!(matches!(
            r.choose_for("a@x", "sticky"),
            Err(Error::NotOffered { .. })
        ));
        assert!(matches!(
            r.choose_for("a@x", "bogus"),
            Err(Error::UnknownAlgorithm { .. })
        ));
        assert!(matches!(
            r.choose_for("@x", "all"),
            Err(Error::InvalidJid { .. })
        ));
        assert_eq!(
            r.algorithm("a@x").unwrap(),
            Algorithm::RoundRobin,
            "refusals change nothing"
        );
    }

    #[test]
    fn the_algorithm_for_an_account_is_its_sessions_then_the_stored_then_the_default() {
        let r = router("offered=all,roundrobin,weighted default=all");
        let uri = |stored| r.algorithm_for("a@x", stored).unwrap();
        assert_eq!(uri(None), "urn:xmpp:cmr:all");
        assert_eq!(uri(Some("urn:xmpp:cmr:weighted")), "urn:xmpp:cmr:weighted");
        assert_eq!(
            uri(Some("urn:x-cmr:algorithm:sticky")),
            "urn:xmpp:cmr:all",
            "a stored choice no longer offered is not restored"
        );
        r.register("a@x/r", 1, 0, "", true).unwrap();
        r.set_algorithm("a@x", "roundrobin").unwrap();
        assert_eq!(
            uri(Some("urn:xmpp:cmr:weighted")),
            "urn:xmpp:cmr:roundrobin"
        );
        assert!(r.algorithm_for("not a jid@", None).is_err());
    }

    #[test]
    fn types_other_than_chat_and_normal_are_not_routed() {
        let r = router("");
        r.register("a@x/r", 1, 0, "", true).unwrap();
        let mut out = [0; 4];
        for kind in ["", "normal", "chat", "something-new"] {
            let m = Message {
                kind: kind.as_bytes(),
                ..msg("a@x")
            };
            assert_eq!(
                r.pick(&m, &mut out).unwrap(),
                Pick::Routed(1),
                "type {kind:?}"
            );
        }
        for kind in ["headline", "groupchat", "error"] {
            let m = Message {
                kind: kind.as_bytes(),
                ..msg("a@x")
            };
            assert_eq!(
                r.pick(&m, &mut out).unwrap(),
                Pick::NotRouted,
                "type {kind:?}"
            );
        }
        let bad = Message {
            kind: b"\xff",
            ..msg("a@x")
        };
        assert!(matches!(r.pick(&bad, &mut out), Err(NotText("kind"))));
        let sender = Message {
            sender: b"\xffsensor@x",
            ..msg("a@x")
        };
        assert_eq!(
            r.pick(&sender, &mut out).unwrap(),
            Pick::Routed(1),
            "not read: not checked"
        );
        r.set_algorithm("a@x", "sticky").unwrap();
        assert!(matches!(r.pick(&sender, &mut out), Err(NotText("sender"))));
    }

    #[test]
    fn a_set_to_the_active_algorithm_is_still_a_choice_to_persist() {
        let r = router("");
        r.register("a@x/r", 1, 0, "", true).unwrap();
        let a = answer(
            &r,
            "<iq type='set' from='a@x/r' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:all'/></iq>",
        );
        assert_eq!(
            a.change().map(|(j, alg)| (j.to_string(), alg)),
            Some(("a@x".into(), Algorithm::All))
        );
    }

    #[test]
    fn hints_follow_policy() {
        let mut out = [0; 4];
        for (hints, local, honoured) in [
            ("any", false, true),
            ("local", false, false),
            ("local", true, true),
            ("never", true, false),
        ] {
            let r = router(&format!("hints={hints}"));
            r.register("a@x/1", 1, 0, "", true).unwrap();
            r.register("a@x/2", 2, 0, "", true).unwrap();
            let m = Message {
                hint: "urn:xmpp:cmr:roundrobin",
                sender_is_local: local,
                ..msg("a@x")
            };
            let expected = if honoured {
                Pick::Routed(1)
            } else {
                Pick::Routed(2)
            };
            assert_eq!(
                r.pick(&m, &mut out).unwrap(),
                expected,
                "hints={hints} local={local}"
            );
        }
    }

    #[test]
    fn iq_query_and_set_on_own_account() {
        let r = router("offered=all,roundrobin");
        r.register("juliet@capulet.lit/balcony", 1, 0, "", true)
            .unwrap();
        let q = answer(&r, "<iq type='get' from='juliet@capulet.lit/balcony' id='q1'><query xmlns='urn:xmpp:cmr:0'/></iq>");
        assert!(
            q.xml.contains("<active algorithm='urn:xmpp:cmr:all'"),
            "{}",
            q.xml
        );
        assert!(q
            .xml
            .contains("<available algorithm='urn:xmpp:cmr:roundrobin'"));
        assert!(!q.xml.contains("weighted"));
        let s = answer(
            &r,
            "<iq type='set' from='juliet@capulet.lit/balcony' id='s1'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>",
        );
        assert!(s.xml.contains("type='result'"), "{}", s.xml);
        assert_eq!(
            s.change().map(|(j, a)| (j.to_string(), a)),
            Some(("juliet@capulet.lit".into(), Algorithm::RoundRobin))
        );
        assert_eq!(
            r.algorithm("juliet@capulet.lit").unwrap(),
            Algorithm::RoundRobin
        );
    }

    #[test]
    fn iq_errors() {
        let r = router("offered=all,roundrobin");
        let set = |from: &str, to: &str, alg: &str| {
            format!(
                "<iq type='set' from='{from}' {to} id='e'><cmr xmlns='urn:xmpp:cmr:0' {alg}/></iq>"
            )
        };
        let cases = [
            (
                set("a@x/r", "", "algorithm='urn:xmpp:cmr:weighted'"),
                "item-not-found",
            ),
            (set("a@x/r", "", "algorithm='nope'"), "item-not-found"),
            (set("a@x/r", "", ""), "bad-request"),
            (
                set("a@x/r", "to='b@x'", "algorithm='urn:xmpp:cmr:all'"),
                "forbidden",
            ),
            (
                set("a@x/r", "to='x'", "algorithm='urn:xmpp:cmr:all'"),
                "forbidden",
            ),
        ];
        for (xml, condition) in cases {
            let a = answer(&r, &xml);
            assert!(a.xml.contains(condition), "{xml} -> {}", a.xml);
            assert_eq!(a.change(), None);
        }
        let fixed = router("user_change=false");
        let a = answer(&fixed, &set("a@x/r", "", "algorithm='urn:xmpp:cmr:all'"));
        assert!(a.xml.contains("not-allowed"), "{}", a.xml);
    }

    #[test]
    fn iq_to_the_server_lists_only_the_available() {
        let r = router("");
        let a = answer(&r, "<iq type='get' from='romeo@montague.lit/orchard' to='capulet.lit' id='d'><query xmlns='urn:xmpp:cmr:0'/></iq>");
        assert!(a.xml.contains("from='capulet.lit'"), "{}", a.xml);
        assert!(!a.xml.contains("<active"));
        assert_eq!(a.xml.matches("<available").count(), 7);
    }

    #[test]
    fn a_gone_session_is_unregistered_and_the_message_picked_again() {
        let r = router("default=roundrobin");
        for (i, name) in ["a@x/1", "a@x/2", "a@x/3"].into_iter().enumerate() {
            r.register(name, i as u64, 0, "", true).unwrap();
        }
        let mut out = [0; 1];
        assert_eq!(r.pick(&msg("a@x"), &mut out).unwrap(), Pick::Routed(1));
        let gone = out[0];
        // The host finds the session gone, unregisters it and asks again.
        r.unregister(&format!("a@x/{}", gone + 1), gone).unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            assert_eq!(r.pick(&msg("a@x"), &mut out).unwrap(), Pick::Routed(1));
            seen.push(out[0]);
        }
        assert!(!seen.contains(&gone), "{seen:?}");
        seen.sort();
        assert_eq!(
            seen,
            [0, 0, 1, 1].map(|t| if t >= gone { t + 1 } else { t }),
            "still fair"
        );
        // The last session gone: not routed, the host stores offline.
        for t in (0..3).filter(|&t| t != gone) {
            r.unregister(&format!("a@x/{}", t + 1), t).unwrap();
        }
        assert_eq!(r.pick(&msg("a@x"), &mut out).unwrap(), Pick::NotRouted);
    }

    #[test]
    fn iq_jids_are_normalized() {
        let r = router("");
        r.register("juliet@capulet.lit/balcony", 1, 0, "", true)
            .unwrap();
        let a = answer(
            &r,
            "<iq type='set' from='Juliet@Capulet.LIT/balcony' to='JULIET@capulet.lit' id='n'>\
             <cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>",
        );
        assert!(a.xml.contains("type='result'"), "{}", a.xml);
        assert_eq!(
            r.algorithm("juliet@capulet.lit").unwrap(),
            Algorithm::RoundRobin
        );
    }

    #[test]
    fn metrics_count_picks_iqs_and_gone_sessions() {
        let r = router("default=roundrobin hints=any");
        r.register("a@x/1", 1, 0, "", true).unwrap();
        r.register("a@x/2", 2, 0, "", true).unwrap();
        r.register("a@x/2", 2, 1, "", true).unwrap();
        r.register("b@x/1", 3, -1, "", true).unwrap();
        let mut out = [0; 4];
        for _ in 0..5 {
            r.pick(&msg("a@x"), &mut out).unwrap();
        }
        let hinted = Message {
            hint: "urn:xmpp:cmr:all",
            ..msg("a@x")
        };
        r.pick(&hinted, &mut out).unwrap();
        assert_eq!(r.pick(&msg("b@x"), &mut out).unwrap(), Pick::NotRouted);
        assert_eq!(r.pick(&msg("nobody@x"), &mut out).unwrap(), Pick::NotRouted);
        let headline = Message {
            kind: b"headline",
            ..msg("a@x")
        };
        assert_eq!(r.pick(&headline, &mut out).unwrap(), Pick::NotRouted);
        // Asking again with room is the pick that counts.
        r.set_algorithm("a@x", "all").unwrap();
        r.register("a@x/1", 1, 1, "", true).unwrap();
        assert_eq!(
            r.pick(&msg("a@x"), &mut out[..1]).unwrap(),
            Pick::BufferTooSmall(2)
        );
        assert_eq!(r.pick(&msg("a@x"), &mut out).unwrap(), Pick::Routed(2));
        answer(
            &r,
            "<iq type='get' from='a@x/1' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>",
        );
        answer(&r, "<iq type='set' from='a@x/1' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='nope'/></iq>");
        assert!(r.answer_iq("<iq type='get'").is_err());
        assert_eq!(
            r.answer_iq("<iq type='result' from='a@x/1' id='r'/>"),
            Ok(None)
        );
        assert!(r.session_gone("a@x/2", 2).is_ok());
        assert!(r.session_gone("a@x/2", 2).is_err(), "already gone");
        assert!(r.session_gone("@@", 2).is_err());
        let m = r.metrics();
        let at = |a: Algorithm| a.index();
        let mut routed = [0; 7];
        routed[at(Algorithm::RoundRobin)] = 5;
        routed[at(Algorithm::All)] = 2;
        let mut left = [0; 7];
        left[at(Algorithm::RoundRobin)] = 1;
        assert_eq!(
            m,
            Metrics {
                routed,
                left_to_server: left,
                left_to_server_unclaimed: 2,
                gone_sessions: 2,
                iq_results: 1,
                iq_errors: 2,
                sessions: 2,
                accounts: 2,
            }
        );
        r.unregister("a@x/1", 1).unwrap();
        r.unregister("b@x/1", 3).unwrap();
        assert_eq!((r.metrics().sessions, r.metrics().accounts), (0, 0));
    }

    #[test]
    fn stats_count_routed_messages() {
        let r = router("default=roundrobin");
        r.register("a@x/1", 1, 0, "", true).unwrap();
        r.register("a@x/2", 2, 0, "away", true).unwrap();
        let mut out = [0; 1];
        for _ in 0..5 {
            r.pick(&msg("a@x"), &mut out).unwrap();
        }
        let table = r.stats_table("a@x").unwrap();
        assert_eq!(
            table.lines().nth(1),
            Some("1\t3\t0\tnone\ttrue\t0\t1\tfalse")
        );
        assert_eq!(
            table.lines().nth(2),
            Some("2\t2\t0\taway\ttrue\t0\t2\tfalse")
        );
    }
}
