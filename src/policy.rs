//! Operator policy of one router: which algorithms are offered, the default,
//! whether users may change it, whether message hints are honoured.

use crate::algorithm::{Algorithm, ALGORITHM_COUNT};
use crate::error::{Error, Quoted};

/// Default URI prefix of the algorithms beyond XEP-0354. It is deliberately
/// outside `urn:xmpp:` (the XSF registrar's space); operators who own a URI
/// space set `prefix` to it.
pub const DEFAULT_PREFIX: &str = "urn:x-cmr:algorithm:";

/// The longest `prefix` accepted: it is repeated in every query answer.
const MAX_PREFIX_BYTES: usize = 256;

/// Whose `<cmr algorithm=.../>` message hints are honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hints {
    Never,
    /// Only senders on this server (the host says who is local).
    Local,
    Any,
}

/// A validated policy. Build it with [`Policy::from_options`] or
/// [`Policy::default`].
#[derive(Clone, Debug)]
pub struct Policy {
    offered: [bool; ALGORITHM_COUNT],
    default: Algorithm,
    users_may_change: bool,
    hints: Hints,
    uris: [String; ALGORITHM_COUNT],
}

impl Default for Policy {
    /// Every algorithm offered, `all` by default (what Prosody and ejabberd
    /// do natively, so loading the module changes nothing until an account
    /// chooses), users may change it, hints from local senders only.
    fn default() -> Self {
        Policy {
            offered: [true; ALGORITHM_COUNT],
            default: Algorithm::All,
            users_may_change: true,
            hints: Hints::Local,
            uris: uris(DEFAULT_PREFIX),
        }
    }
}

fn uris(prefix: &str) -> [String; ALGORITHM_COUNT] {
    Algorithm::EVERY.map(|a| match a.xep_uri() {
        Some(uri) => uri.to_owned(),
        None => format!("{prefix}{}", a.name()),
    })
}

fn invalid(option: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option: Quoted::new(option),
        value: Quoted::new(value),
        reason: reason.into(),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

fn parse_hints(value: &str) -> Result<Hints, Error> {
    match value {
        "any" => Ok(Hints::Any),
        "local" => Ok(Hints::Local),
        "never" => Ok(Hints::Never),
        _ => Err(invalid("hints", value, "expected any, local or never")),
    }
}

/// `prefix=`: a URI prefix outside `urn:xmpp:`. It goes into every
/// answer's XML, where control characters cannot be written.
fn checked_prefix(value: &str) -> Result<&str, Error> {
    let refuse = |reason: String| Err(invalid("prefix", value, reason));
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}'))
    {
        return refuse("control characters are not allowed".into());
    }
    if value.len() > MAX_PREFIX_BYTES {
        return refuse(format!("expected at most {MAX_PREFIX_BYTES} bytes"));
    }
    if !value.contains(':') {
        return refuse("expected a URI prefix such as tag:example.org,2026:cmr:".into());
    }
    if value.to_ascii_lowercase().starts_with("urn:xmpp:") {
        return refuse("urn:xmpp: belongs to the XSF registrar; use a URI space you own".into());
    }
    Ok(value)
}

impl Policy {
    /// Parses whitespace-separated `key=value` options:
    ///
    /// - `offered=roundrobin,all,...` algorithms by short name or URI
    ///   (default: all seven); must include `all` or `mostactive`. A URI
    ///   with a comma in it (a `tag:` URI) is given by its short name.
    /// - `default=NAME` (default `all`); must be offered
    /// - `user_change=true|false` (default `true`)
    /// - `hints=any|local|never` (default `local`)
    /// - `prefix=URI` prefix of the non-XEP algorithms (default
    ///   [`DEFAULT_PREFIX`]); must not be under `urn:xmpp:`
    ///
    /// An unknown or repeated option, or a bad value, is an error that names
    /// the option and the value.
    pub fn from_options(text: &str) -> Result<Policy, Error> {
        let mut policy = Policy::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut offered = None;
        let mut default = None;
        for item in text.split_whitespace() {
            let Some((key, value)) = item.split_once('=') else {
                return Err(invalid(item, "", "expected key=value"));
            };
            if seen.contains(&key) {
                return Err(invalid(key, value, "given more than once"));
            }
            seen.push(key);
            match key {
                // Resolved after the loop: they may name URIs under `prefix`.
                "offered" => offered = Some(value),
                "default" => default = Some(value),
                "user_change" => policy.users_may_change = parse_bool(key, value)?,
                "hints" => policy.hints = parse_hints(value)?,
                "prefix" => policy.uris = uris(checked_prefix(value)?),
                _ => {
                    return Err(invalid(
                        key,
                        value,
                        "unknown option (known: offered, default, user_change, hints, prefix)",
                    ))
                }
            }
        }
        if let Some(list) = offered {
            policy.offered = policy.parse_offered(list)?;
        }
        if let Some(name) = default {
            policy.default = policy
                .resolve(name)
                .ok_or_else(|| invalid("default", name, "unknown algorithm"))?;
        }
        if !policy.offers(policy.default) {
            let name = policy.uri(policy.default).to_owned();
            return Err(invalid(
                "default",
                &name,
                "not among the offered algorithms",
            ));
        }
        Ok(policy)
    }

    /// `offered=`: algorithms by short name or URI, each once, with `all`
    /// or `mostactive` among them.
    fn parse_offered(&self, list: &str) -> Result<[bool; ALGORITHM_COUNT], Error> {
        let mut offered = [false; ALGORITHM_COUNT];
        for name in list.split(',') {
            if name.is_empty() {
                return Err(invalid("offered", list, "an empty algorithm name"));
            }
            let algorithm = self.resolve(name).ok_or_else(|| {
                invalid(
                    "offered",
                    list,
                    format!("unknown algorithm {}", Quoted::new(name)),
                )
            })?;
            if std::mem::replace(&mut offered[algorithm.index()], true) {
                return Err(invalid(
                    "offered",
                    list,
                    format!("{} is listed more than once", Quoted::new(name)),
                ));
            }
        }
        let required = [Algorithm::All, Algorithm::MostActive];
        if !required.iter().any(|a| offered[a.index()]) {
            return Err(invalid(
                "offered",
                list,
                "XEP-0354 requires all or mostactive among the offered",
            ));
        }
        Ok(offered)
    }

    /// Finds an algorithm by its URI or short name, offered or not.
    pub fn resolve(&self, name: &str) -> Option<Algorithm> {
        Algorithm::EVERY
            .into_iter()
            .find(|a| self.uris[a.index()] == name || a.name() == name)
    }

    /// Finds an offered algorithm by URI only, as the wire carries it.
    /// Does not allocate.
    pub fn offered_by_uri(&self, uri: &str) -> Option<Algorithm> {
        Algorithm::EVERY
            .into_iter()
            .find(|a| self.offers(*a) && self.uris[a.index()] == uri)
    }

    pub fn uri(&self, algorithm: Algorithm) -> &str {
        &self.uris[algorithm.index()]
    }

    pub fn offers(&self, algorithm: Algorithm) -> bool {
        self.offered[algorithm.index()]
    }

    /// The offered algorithms, in protocol order.
    pub fn offered(&self) -> impl Iterator<Item = Algorithm> + '_ {
        Algorithm::EVERY.into_iter().filter(|a| self.offers(*a))
    }

    pub fn default_algorithm(&self) -> Algorithm {
        self.default
    }

    pub fn users_may_change(&self) -> bool {
        self.users_may_change
    }

    pub fn hints(&self) -> Hints {
        self.hints
    }

    /// Whether a hint from this sender is honoured.
    pub fn honours_hint(&self, sender_is_local: bool) -> bool {
        match self.hints {
            Hints::Never => false,
            Hints::Local => sender_is_local,
            Hints::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Policy::from_options(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let p = Policy::from_options("").unwrap();
        assert_eq!(p.offered().count(), ALGORITHM_COUNT);
        assert_eq!(p.default_algorithm(), Algorithm::All);
        assert!(p.users_may_change());
        assert_eq!(p.hints(), Hints::Local);
        assert_eq!(p.uri(Algorithm::Sticky), "urn:x-cmr:algorithm:sticky");
        assert_eq!(p.uri(Algorithm::RoundRobin), "urn:xmpp:cmr:roundrobin");
    }

    #[test]
    fn options_are_parsed() {
        let p = Policy::from_options(
            "offered=mostactive,urn:xmpp:cmr:roundrobin,sticky prefix=tag:ex.org,2026: \
             default=roundrobin user_change=false hints=any",
        )
        .unwrap();
        let offered: Vec<_> = p.offered().collect();
        assert_eq!(
            offered,
            [
                Algorithm::MostActive,
                Algorithm::RoundRobin,
                Algorithm::Sticky
            ]
        );
        assert_eq!(p.default_algorithm(), Algorithm::RoundRobin);
        assert!(!p.users_may_change());
        assert!(p.honours_hint(false));
        assert_eq!(
            p.offered_by_uri("tag:ex.org,2026:sticky"),
            Some(Algorithm::Sticky)
        );
        assert_eq!(p.offered_by_uri("urn:xmpp:cmr:all"), None, "not offered");
    }

    #[test]
    fn bad_options_name_the_option_and_the_value() {
        assert!(error_of("offered=roundrobin").contains("offered='roundrobin'"));
        assert!(error_of("offered=all,fastest").contains("unknown algorithm 'fastest'"));
        assert!(
            error_of("offered=all default=weighted").contains("default='urn:xmpp:cmr:weighted'")
        );
        assert!(error_of("user_change=yes").contains("user_change='yes'"));
        assert!(error_of("hints=sometimes").contains("hints='sometimes'"));
        assert!(error_of("prefix=urn:xmpp:mine:").contains("prefix='urn:xmpp:mine:'"));
        assert!(error_of("colour=blue").contains("colour='blue': unknown option"));
        assert!(error_of("hints=any hints=never").contains("more than once"));
        assert!(error_of("default").contains("expected key=value"));
        assert!(error_of("offered=all,,mostactive").contains("an empty algorithm name"));
        assert!(error_of("offered=all,").contains("an empty algorithm name"));
        assert!(error_of("offered=all,all,all").contains("'all' is listed more than once"));
        assert!(error_of("offered=all,urn:xmpp:cmr:all").contains("more than once"));
        assert!(
            error_of("prefix=tag:a\u{1}:").contains(r"prefix='tag:a\u{1}:': control characters")
        );
        assert!(error_of(&format!("prefix=tag:{}", "a".repeat(300))).contains("at most 256 bytes"));
    }
}
