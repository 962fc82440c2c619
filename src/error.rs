//! Errors of the safe core. The FFI layer maps each to a `cmr_status`.

use std::fmt;

/// Everything that can go wrong in a call. Every variant says which input
/// was wrong, so the host can log it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A string argument was not valid UTF-8.
    InvalidUtf8 { what: &'static str },
    /// A JID did not parse, or was bare where a full JID is needed.
    InvalidJid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The XML given to the IQ handler is not well-formed or is not a stanza.
    InvalidXml { reason: String },
    /// A value outside its range (priority, show, ...).
    InvalidArgument {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    /// An algorithm name or URI that the library does not know.
    UnknownAlgorithm { value: String },
    /// An algorithm that exists but that the policy does not offer.
    NotOffered { value: String },
    /// A policy option with a bad name or value.
    InvalidOption {
        option: String,
        value: String,
        reason: String,
    },
    /// The account or resource is not registered.
    NotFound { what: &'static str, value: String },
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
                write!(f, "{what} '{value}' is not a valid JID: {reason}")
            }
            Error::InvalidXml { reason } => write!(f, "invalid stanza: {reason}"),
            Error::InvalidArgument {
                what,
                value,
                expected,
            } => {
                write!(f, "{what} '{value}' is out of range: expected {expected}")
            }
            Error::UnknownAlgorithm { value } => write!(f, "unknown algorithm '{value}'"),
            Error::NotOffered { value } => {
                write!(
                    f,
                    "algorithm '{value}' is not offered by this router's policy"
                )
            }
            Error::InvalidOption {
                option,
                value,
                reason,
            } => {
                write!(f, "option {option}='{value}': {reason}")
            }
            Error::NotFound { what, value } => write!(f, "{what} '{value}' is not registered"),
        }
    }
}

impl std::error::Error for Error {}
