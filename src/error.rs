//! Errors of the safe core. The FFI layer maps each to a `cmr_status`.

use std::fmt;

/// An input quoted in an error message: its first characters, with
/// quotes, control characters, line separators and bidirectional
/// formatting characters escaped, in at most 128 bytes once escaped, so
/// that a hostile 64 MB JID (or 128 control characters, each escaped to
/// five or more) leaves a short message and can neither forge lines in the
/// host's log nor reorder what a log viewer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    escaped: String,
    /// Whether `escaped` holds the whole input.
    whole: bool,
    /// The whole input's length in bytes.
    len: usize,
}

/// Bytes of escaped input kept in a message.
const QUOTED_BYTES: usize = 128;

/// Characters written as `\u{...}` (or `\n`, `\'`) in a quote.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\'' | '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

impl Quoted {
    pub fn new(value: &str) -> Quoted {
        let mut escaped = String::new();
        let mut whole = true;
        for c in value.chars() {
            let before = escaped.len();
            if needs_escape(c) {
                escaped.extend(c.escape_default());
            } else {
                escaped.push(c);
            }
            if escaped.len() > QUOTED_BYTES {
                escaped.truncate(before);
                whole = false;
                break;
            }
        }
        Quoted {
            escaped,
            whole,
            len: value.len(),
        }
    }

    /// The input without the quotes, for names (`option colour=...`).
    pub fn unquoted(&self) -> impl fmt::Display + '_ {
        Unquoted(self)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, quote: &str) -> fmt::Result {
        write!(f, "{quote}{}{quote}", self.escaped)?;
        if !self.whole {
            write!(f, "... ({} bytes in all)", self.len)?;
        }
        Ok(())
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, "'")
    }
}

struct Unquoted<'a>(&'a Quoted);

impl fmt::Display for Unquoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f, "")
    }
}

/// Everything that can go wrong in a call. Every variant says which input
/// was wrong, so the host can log it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A string argument was not valid UTF-8.
    InvalidUtf8 { what: &'static str },
    /// A JID did not parse, or was bare where a full JID is needed.
    InvalidJid {
        what: &'static str,
        value: Quoted,
        reason: String,
    },
    /// The XML given to the IQ handler is not well-formed, breaks one of
    /// the limits, or is not a stanza.
    InvalidXml { reason: String },
    /// A value outside its range (priority, show, ...).
    InvalidArgument {
        what: &'static str,
        value: Quoted,
        expected: &'static str,
    },
    /// A submitted command form that is not the one the command showed.
    InvalidForm { reason: String },
    /// An algorithm name or URI that the library does not know.
    UnknownAlgorithm { value: Quoted },
    /// An algorithm that exists but that the policy does not offer.
    NotOffered { value: Quoted },
    /// A policy option with a bad name or value.
    InvalidOption {
        option: Quoted,
        value: Quoted,
        reason: String,
    },
    /// The account or resource is not registered.
    NotFound { what: &'static str, value: Quoted },
    /// The router caught a panic in an earlier call (a bug in cmr) and
    /// refuses every call since, as its state may be half updated.
    Failed,
}

/// A message's string that is not UTF-8, named: the only way a pick
/// fails. Small, so that a pick's result needs no room for an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotText(pub &'static str);

impl From<NotText> for Error {
    fn from(NotText(what): NotText) -> Error {
        Error::InvalidUtf8 { what }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            Error::InvalidJid {
                what,
                value,
                reason,
            } => {
                write!(f, "{what} {value} is not a valid JID: {reason}")
            }
            Error::InvalidXml { reason } => write!(f, "invalid stanza: {reason}"),
            Error::InvalidArgument {
                what,
                value,
                expected,
            } => {
                write!(f, "{what} {value} is out of range: expected {expected}")
            }
            Error::InvalidForm { reason } => write!(f, "invalid form: expected {reason}"),
            Error::UnknownAlgorithm { value } => write!(f, "unknown algorithm {value}"),
            Error::NotOffered { value } => {
                write!(
                    f,
                    "algorithm {value} is not offered by this router's policy"
                )
            }
            Error::InvalidOption {
                option,
                value,
                reason,
            } => {
                write!(f, "option {}={value}: {reason}", option.unquoted())
            }
            Error::NotFound { what, value } => write!(f, "{what} {value} is not registered"),
            Error::Failed => write!(
                f,
                "this router caught a panic in an earlier call (a bug in cmr) and refuses every \
                 call since; the host routes messages itself until it makes a new router"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_inputs_are_short_and_escaped() {
        let long = "x".repeat(64 << 20);
        let message = Quoted::new(&long).to_string();
        assert!(message.len() < 200, "{} bytes", message.len());
        assert!(message.ends_with(&format!("... ({} bytes in all)", 64 << 20)));
        assert_eq!(Quoted::new("a\nb'c").to_string(), r"'a\nb\'c'");
        assert_eq!(
            Quoted::new("a\u{2028}b\u{202e}c").to_string(),
            r"'a\u{2028}b\u{202e}c'"
        );
        // Truncated on a character boundary.
        let wide = "é".repeat(100);
        assert!(Quoted::new(&wide)
            .to_string()
            .starts_with(&format!("'{}'", "é".repeat(64))));
        // Escapes count in the bound: a control character takes five bytes.
        let controls = Quoted::new(&"\u{1}".repeat(1000)).to_string();
        assert!(
            controls.starts_with(&format!("'{}'", r"\u{1}".repeat(25))),
            "{controls}"
        );
        assert!(controls.len() < 200, "{} bytes", controls.len());
    }

    #[test]
    fn every_message_is_bounded_whatever_the_input() {
        let hostile = |c: char| c.to_string().repeat(100_000);
        for c in ['x', '\u{1}', '\'', 'é', '\u{10ffff}'] {
            let q = || Quoted::new(&hostile(c));
            let errors = [
                Error::InvalidJid {
                    what: "full JID",
                    value: q(),
                    reason: "a reason".into(),
                },
                Error::InvalidArgument {
                    what: "show",
                    value: q(),
                    expected: "empty, chat, away, xa or dnd",
                },
                Error::UnknownAlgorithm { value: q() },
                Error::NotOffered { value: q() },
                Error::InvalidOption {
                    option: q(),
                    value: q(),
                    reason: format!("unknown algorithm {}", q()),
                },
                Error::NotFound {
                    what: "session",
                    value: q(),
                },
            ];
            for error in errors {
                let message = error.to_string();
                assert!(message.len() < 1024, "{} bytes: {message}", message.len());
            }
        }
    }
}
