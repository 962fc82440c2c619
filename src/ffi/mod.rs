//! The C ABI (`include/cmr.h`). The only module with `unsafe`.
//!
//! Conventions, for every function:
//! - Strings are a pointer and a byte length, UTF-8, not NUL-terminated;
//!   the pointer may be NULL when the length is 0.
//! - Text results go into a caller's buffer: `buf` with `cap` bytes (NULL
//!   when `cap` is 0), with the length written, or needed, in `*out_len`.
//!   Too small gives `CMR_STATUS_BUFFER_TOO_SMALL` and changes no state.
//!   Nothing is NUL-terminated.
//! - Every call returns a `cmr_status`; on an error, `cmr_last_error`
//!   gives this thread's message for it. No panic crosses the boundary.
//! - The only thing to free is a router, with `cmr_router_free`.
#![allow(non_camel_case_types)]

pub(crate) mod boundary;

/// The C header's names of core items (cbindgen renames them there).
pub use crate::algorithm::ALGORITHM_COUNT as CMR_ALGORITHM_COUNT;
use crate::algorithm::{Algorithm, Pick};
use crate::command::{self, CommandAnswer};
use crate::error::Error;
pub use crate::metrics::Metrics as cmr_metrics;
use crate::metrics::{MetricKind, Metrics};
use crate::policy::Policy;
use crate::registry::Registration;
use crate::router::{Message, Router};
use boundary::{
    fail, fail_with, ffi_panic_boundary, router_boundary, try_bytes, try_mut, try_out, try_ref,
    try_str,
};
use std::ffi::{c_char, CString};
use std::sync::atomic::AtomicBool;
use std::sync::LazyLock;

/// The result of every call. The numbers are stable across versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cmr_status {
    /// Success.
    Ok = 0,
    /// `cmr_router_pick`: CMR does not route this message (nothing eligible,
    /// unknown account, or a type other than chat and normal): the host
    /// applies its own behaviour. Not an error.
    NotRouted = 1,
    /// `cmr_router_handle_iq`: not a CMR get or set; the host handles it.
    /// Not an error.
    NotMine = 2,
    /// The output buffer is too small; `*out_len` holds the size needed and
    /// no state changed.
    BufferTooSmall = 3,
    /// The account or session is not registered.
    NotFound = 4,
    /// A required pointer was NULL.
    NullParameter = 100,
    /// A string was not UTF-8.
    InvalidUtf8 = 101,
    /// A JID did not parse, or a bare JID was given where a full one is needed.
    InvalidJid = 102,
    /// The IQ was not well-formed XML, or lacked `from` or `id`.
    InvalidXml = 103,
    /// A value out of range (priority outside -128..127, unknown show).
    InvalidArgument = 104,
    /// An algorithm name or URI that cmr does not know.
    UnknownAlgorithm = 105,
    /// An algorithm the router's policy does not offer.
    NotOffered = 106,
    /// A policy option with a bad name or value.
    InvalidOption = 107,
    /// A bug inside cmr was caught before it reached the caller. The
    /// router it happened on refuses every later call with this status (its
    /// state may be half updated): the host logs it and routes messages
    /// itself until it makes a new router.
    Panic = 200,
}

/// The largest IQ `cmr_router_handle_iq` accepts, in bytes.
pub const CMR_MAX_IQ_BYTES: usize = 65536;
/// The deepest element nesting `cmr_router_handle_iq` accepts (the stanza
/// is level 1).
pub const CMR_MAX_DEPTH: usize = 16;
/// The most elements `cmr_router_handle_iq` accepts in one IQ.
pub const CMR_MAX_ELEMENTS: usize = 64;
/// The most attributes `cmr_router_handle_iq` accepts on one element.
pub const CMR_MAX_ATTRIBUTES: usize = 32;
/// The longest element or attribute name, or attribute value, that
/// `cmr_router_handle_iq` accepts, in bytes.
pub const CMR_MAX_TOKEN_BYTES: usize = 8192;
// The header's figures are the core's (cbindgen needs literals).
const _: () = assert!(
    CMR_MAX_IQ_BYTES == crate::protocol::MAX_IQ_BYTES
        && CMR_MAX_DEPTH == crate::protocol::MAX_DEPTH
        && CMR_MAX_ELEMENTS == crate::protocol::MAX_ELEMENTS
        && CMR_MAX_ATTRIBUTES == crate::protocol::MAX_ATTRIBUTES
        && CMR_MAX_TOKEN_BYTES == crate::protocol::MAX_TOKEN_BYTES
);

/// A router: the routing state and policy of one virtual host (or of
/// several that share a policy). Opaque.
pub struct cmr_router {
    router: Router,
    /// Set when a call on this router panicked.
    failed: AtomicBool,
}

/// A message to route, as borrowed views of its parts.
#[repr(C)]
pub struct cmr_message {
    /// The recipient's bare JID, as the host normalized it. Required.
    pub recipient: *const c_char,
    pub recipient_len: usize,
    /// The `type` attribute; length 0 when missing (which means normal).
    pub message_type: *const c_char,
    pub message_type_len: usize,
    /// The sender's JID; `sticky` uses its bare part.
    pub sender: *const c_char,
    pub sender_len: usize,
    /// The `algorithm` of a `<cmr xmlns='urn:xmpp:cmr:0'/>` hint; length 0
    /// when the message has none.
    pub hint: *const c_char,
    pub hint_len: usize,
    /// Whether the sender is a user of this server (hint policy `local`).
    pub sender_is_local: bool,
}

/// The library's version, as a static NUL-terminated string. Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_version() -> *const c_char {
    ffi_panic_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    }
}

/// Every status, for the lookups by number.
const STATUSES: [cmr_status; 14] = [
    cmr_status::Ok,
    cmr_status::NotRouted,
    cmr_status::NotMine,
    cmr_status::BufferTooSmall,
    cmr_status::NotFound,
    cmr_status::NullParameter,
    cmr_status::InvalidUtf8,
    cmr_status::InvalidJid,
    cmr_status::InvalidXml,
    cmr_status::InvalidArgument,
    cmr_status::UnknownAlgorithm,
    cmr_status::NotOffered,
    cmr_status::InvalidOption,
    cmr_status::Panic,
];

/// A status's name (a symbol for bindings) and message, NUL-terminated.
fn describe(status: cmr_status) -> (&'static str, &'static str) {
    match status {
        cmr_status::Ok => ("ok\0", "ok\0"),
        cmr_status::NotRouted => (
            "not_routed\0",
            "not routed by CMR: the host applies its own routing\0",
        ),
        cmr_status::NotMine => ("not_mine\0", "not a CMR IQ: the host handles it\0"),
        cmr_status::BufferTooSmall => ("buffer_too_small\0", "output buffer too small\0"),
        cmr_status::NotFound => ("not_found\0", "not registered\0"),
        cmr_status::NullParameter => ("null_parameter\0", "a required pointer is NULL\0"),
        cmr_status::InvalidUtf8 => ("invalid_utf8\0", "a string is not valid UTF-8\0"),
        cmr_status::InvalidJid => ("invalid_jid\0", "invalid JID\0"),
        cmr_status::InvalidXml => ("invalid_xml\0", "invalid XML stanza\0"),
        cmr_status::InvalidArgument => ("invalid_argument\0", "argument out of range\0"),
        cmr_status::UnknownAlgorithm => ("unknown_algorithm\0", "unknown algorithm\0"),
        cmr_status::NotOffered => ("not_offered\0", "algorithm not offered by the policy\0"),
        cmr_status::InvalidOption => ("invalid_option\0", "invalid policy option\0"),
        cmr_status::Panic => ("panic\0", "internal panic caught\0"),
    }
}

/// The name and message of a status number; `error` and `unknown status`
/// for a number no status has.
fn describe_number(number: u32) -> (&'static str, &'static str) {
    STATUSES
        .into_iter()
        .find(|status| *status as u32 == number)
        .map_or(("error\0", "unknown status\0"), describe)
}

/// A static NUL-terminated description of a status number (any number,
/// known or not). Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_status_message(status: u32) -> *const c_char {
    ffi_panic_boundary! {
        describe_number(status).1.as_ptr().cast()
    }
}

/// A static NUL-terminated name of a status number, for bindings to use as
/// a symbol: `ok`, `not_routed`, `not_mine`, `buffer_too_small`,
/// `not_found`, `null_parameter`, `invalid_utf8`, `invalid_jid`,
/// `invalid_xml`, `invalid_argument`, `unknown_algorithm`, `not_offered`,
/// `invalid_option`, `panic`; `error` for a number it does not know.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_status_name(status: u32) -> *const c_char {
    ffi_panic_boundary! {
        describe_number(status).0.as_ptr().cast()
    }
}

/// The longest message `cmr_last_error` gives, in bytes. Messages quote
/// inputs shortened (at most 128 bytes each, escapes included), so they
/// stay well under it whatever the input; a longer one is cut.
pub const CMR_MAX_ERROR_BYTES: usize = 1024;

/// Copies the message of the last error on the calling thread into `buf`.
/// The message stays until the next error on this thread; a buffer too
/// small gives `CMR_STATUS_BUFFER_TOO_SMALL` with the size needed and keeps
/// the message. A message is at most `CMR_MAX_ERROR_BYTES` bytes.
/// Thread-safe: each thread has its own message.
///
/// # Safety
/// `buf` has `cap` writable bytes (may be NULL when `cap` is 0); `out_len`
/// is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_last_error(
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    ffi_panic_boundary! {
        let mut out = try_out!(buf, cap, out_len);
        boundary::with_last_error(|message| {
            // Not `write`: a too-small error would replace the message.
            if out.fits(message.len()) {
                out.write(message.as_bytes())
            } else {
                cmr_status::BufferTooSmall
            }
        })
    }
}

/// The body of the calls that name a session by its JID and token.
///
/// # Safety
/// `router` is NULL or a live router; `jid` has `jid_len` readable bytes.
unsafe fn session_call(
    router: *const cmr_router,
    jid: *const c_char,
    jid_len: usize,
    call: impl FnOnce(&Router, &str) -> Result<(), Error>,
) -> cmr_status {
    router_boundary! { router,
        let jid = try_str!(jid, jid_len);
        status_of(call(router, jid))
    }
}

/// After most sessions have left (see `Registry::memory_to_release`),
/// hands the memory they held back to the system: glibc keeps freed small
/// blocks in its heap until `malloc_trim`. Other allocators return it
/// themselves.
fn release_memory_after_removals(router: &Router) {
    if router.memory_to_release() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only gives free pages of the heap back.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// `Ok`, or the error's status with its message.
fn status_of(result: Result<(), Error>) -> cmr_status {
    match result {
        Ok(()) => cmr_status::Ok,
        Err(error) => fail_with(error),
    }
}

/// Creates a router. `options` is a whitespace-separated list of
/// `key=value` (empty for the defaults): `offered=NAME,NAME,...`,
/// `default=NAME`, `user_change=true|false`, `hints=any|local|never`,
/// `prefix=URI`; names are short names (`roundrobin`) or URIs. A bad option
/// gives `CMR_STATUS_INVALID_OPTION` with a message that names it, and no
/// router. The caller owns `*out_router` and frees it with `cmr_router_free`.
/// Thread-safe.
///
/// # Safety
/// `options` has `options_len` readable bytes; `out_router` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_new(
    options: *const c_char,
    options_len: usize,
    out_router: *mut *mut cmr_router,
) -> cmr_status {
    ffi_panic_boundary! {
        let out_router = try_mut!(out_router);
        let options = try_str!(options, options_len);
        match Policy::from_options(options) {
            Ok(policy) => {
                let router = cmr_router { router: Router::new(policy), failed: AtomicBool::new(false) };
                *out_router = Box::into_raw(Box::new(router));
                cmr_status::Ok
            }
            Err(error) => fail_with(error),
        }
    }
}

/// Frees a router (NULL is ignored). No other call on it may run at the
/// same time or after.
///
/// # Safety
/// `router` is NULL or came from `cmr_router_new` and was not freed.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_free(router: *mut cmr_router) {
    ffi_panic_boundary! {
        if !router.is_null() {
            // SAFETY: the caller hands back the pointer `cmr_router_new` made.
            drop(unsafe { Box::from_raw(router) });
        }
    }
}

/// Registers a session, or updates it on a presence change (an upsert).
/// `full_jid` is normalized here. `token` is the host's handle for the
/// session, unique for the router's lifetime; a new token on a known
/// resource replaces the old session. `priority` is -128..127; `show` is
/// empty, `chat`, `away`, `xa` or `dnd`; `available` is whether the session
/// has sent available presence. `*out_new_account` (when not NULL) is set
/// when this call gave the account its first session: exactly one call
/// does, however many sessions bind at once, and the host then restores
/// the account's persisted algorithm with `cmr_router_set_algorithm`. A
/// presence update that changes no session's eligibility or priority
/// leaves the round robin and weighted rotations where they are.
/// Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes;
/// `out_new_account` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_register(
    router: *const cmr_router,
    full_jid: *const c_char,
    full_jid_len: usize,
    token: u64,
    priority: i32,
    show: *const c_char,
    show_len: usize,
    available: bool,
    out_new_account: *mut bool,
) -> cmr_status {
    router_boundary! { router,
        let full_jid = try_str!(full_jid, full_jid_len);
        let show = try_str!(show, show_len);
        match router.register(full_jid, token, priority, show, available) {
            Ok(registration) => {
                // SAFETY: NULL or writable, by the caller's contract.
                if let Some(out) = unsafe { out_new_account.as_mut() } {
                    *out = registration == Registration::NewAccount;
                }
                cmr_status::Ok
            }
            Err(error) => fail_with(error),
        }
    }
}

/// Removes the session if `token` still owns its resource (a stale token
/// gives `CMR_STATUS_NOT_FOUND` and removes nothing). `jid` is the
/// session's full JID, or the account's bare JID to remove whichever of
/// its sessions `token` owns (for a host that found a picked session gone
/// and no longer knows its resource). Once three quarters of the sessions
/// (of at least 4,096) have left, the call also hands the freed memory
/// back to the system (`malloc_trim(0)`, with glibc: some milliseconds for
/// millions of sessions). Thread-safe.
///
/// # Safety
/// `router` is a live router; `jid` has `jid_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_unregister(
    router: *const cmr_router,
    jid: *const c_char,
    jid_len: usize,
    token: u64,
) -> cmr_status {
    // SAFETY: the caller's contract is session_call's.
    unsafe {
        session_call(router, jid, jid_len, |router, jid| {
            let removed = router.unregister(jid, token);
            release_memory_after_removals(router);
            removed
        })
    }
}

/// Removes a session that `cmr_router_pick` chose and the host found gone,
/// as `cmr_router_unregister` does, and counts it in
/// `cmr_metrics.gone_sessions` (counted also when another thread removed
/// it first: `CMR_STATUS_NOT_FOUND`). The host then picks again.
/// Thread-safe.
///
/// # Safety
/// `router` is a live router; `jid` has `jid_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_session_gone(
    router: *const cmr_router,
    jid: *const c_char,
    jid_len: usize,
    token: u64,
) -> cmr_status {
    // SAFETY: the caller's contract is session_call's.
    unsafe {
        session_call(router, jid, jid_len, |router, jid| {
            let removed = router.session_gone(jid, token);
            release_memory_after_removals(router);
            removed
        })
    }
}

/// Reports activity of the session (for `mostactive`): stamps it with the
/// library's monotonic clock. Its registration, presence updates and
/// XEP-0198 changes count as activity too. Thread-safe.
///
/// # Safety
/// `router` is a live router; `full_jid` has `full_jid_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_touch(
    router: *const cmr_router,
    full_jid: *const c_char,
    full_jid_len: usize,
    token: u64,
) -> cmr_status {
    // SAFETY: the caller's contract is session_call's.
    unsafe {
        session_call(router, full_jid, full_jid_len, |router, jid| {
            router.touch(jid, token)
        })
    }
}

/// Marks the session as waiting for XEP-0198 resumption (`hibernating`
/// true: its connection is gone, its stream may resume), or as back (false).
/// While it waits it gets messages only when no other session is eligible,
/// and the copies of `all`, as the servers deliver to such a session
/// natively. Thread-safe.
///
/// # Safety
/// `router` is a live router; `full_jid` has `full_jid_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_set_hibernating(
    router: *const cmr_router,
    full_jid: *const c_char,
    full_jid_len: usize,
    token: u64,
    hibernating: bool,
) -> cmr_status {
    // SAFETY: the caller's contract is session_call's.
    unsafe {
        session_call(router, full_jid, full_jid_len, |router, jid| {
            router.set_hibernating(jid, token, hibernating)
        })
    }
}

/// Reports the session's load (for `leastloaded`), for example its
/// unacknowledged XEP-0198 queue. Thread-safe.
///
/// # Safety
/// `router` is a live router; `full_jid` has `full_jid_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_set_load(
    router: *const cmr_router,
    full_jid: *const c_char,
    full_jid_len: usize,
    token: u64,
    load: u32,
) -> cmr_status {
    // SAFETY: the caller's contract is session_call's.
    unsafe {
        session_call(router, full_jid, full_jid_len, |router, jid| {
            router.set_load(jid, token, load)
        })
    }
}

/// Picks the sessions that get `message`: writes their tokens into
/// `out_tokens` (room for `out_cap`) and their number into `*out_len`, and
/// counts them in the stats. `CMR_STATUS_NOT_ROUTED` (with `*out_len` 0):
/// the host routes the message itself. `CMR_STATUS_BUFFER_TOO_SMALL`:
/// `*out_len` is the number needed (only `all` picks more than one) and no
/// state advanced. The host delivers to each token without rewriting `to`;
/// if a session is gone, it unregisters it and picks again.
/// Does not allocate, parse JIDs, or block beyond one short shard lock.
/// Each string is checked as UTF-8 only where it is read: the type only
/// when it is none of the types cmr knows, the sender only under `sticky`
/// (`CMR_STATUS_INVALID_UTF8` then, and nothing is counted).
/// Thread-safe.
///
/// # Safety
/// `router` is a live router; `message` and its strings are readable;
/// `out_tokens` has room for `out_cap` tokens (may be NULL when 0).
#[no_mangle]
pub unsafe extern "C" fn cmr_router_pick(
    router: *const cmr_router,
    message: *const cmr_message,
    out_tokens: *mut u64,
    out_cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let m = try_ref!(message);
        let out_len = try_mut!(out_len);
        let (recipient, kind, sender, hint) = (m.recipient, m.message_type, m.sender, m.hint);
        let message = Message {
            recipient: try_bytes!(recipient, m.recipient_len),
            kind: try_bytes!(kind, m.message_type_len),
            sender: try_bytes!(sender, m.sender_len),
            hint: try_str!(hint, m.hint_len),
            sender_is_local: m.sender_is_local,
        };
        let out: &mut [u64] = if out_cap == 0 {
            &mut []
        } else if out_tokens.is_null() {
            return boundary::null("out_tokens");
        } else {
            // SAFETY: non-NULL with room for `out_cap` tokens by contract.
            unsafe { std::slice::from_raw_parts_mut(out_tokens, out_cap) }
        };
        match router.pick(&message, out) {
            Err(error) => {
                *out_len = 0;
                fail_with(error.into())
            }
            Ok(Pick::Routed(n)) => {
                *out_len = n;
                cmr_status::Ok
            }
            Ok(Pick::NotRouted) => {
                *out_len = 0;
                cmr_status::NotRouted
            }
            Ok(Pick::BufferTooSmall(needed)) => {
                *out_len = needed;
                fail(cmr_status::BufferTooSmall, "out_tokens is too small for the resources picked")
            }
        }
    }
}

/// Writes the URI of the account's active algorithm (the policy's default
/// when none of its sessions is registered). Thread-safe.
///
/// # Safety
/// `router` is a live router; `bare_jid` has `bare_jid_len` bytes; `buf` has
/// `cap` writable bytes; `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_get_algorithm(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        match router.algorithm(bare_jid) {
            Ok(algorithm) => out.write(router.policy().uri(algorithm).as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Sets the account's algorithm, by URI or short name: how a host restores
/// a persisted choice once the account's first session is registered (the
/// `user_change` policy does not apply to the host). Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_set_algorithm(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    algorithm: *const c_char,
    algorithm_len: usize,
) -> cmr_status {
    router_boundary! { router,
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        let algorithm = try_str!(algorithm, algorithm_len);
        status_of(router.set_algorithm(bare_jid, algorithm))
    }
}

/// Answers a XEP-0354 IQ given as a whole stanza (with `from`, `to`, `id`,
/// `type`; no `xmlns` means `jabber:client`): writes the whole response
/// stanza for the host to send, and sets `*out_changed` when the account's
/// algorithm changed (the host then persists `cmr_router_get_algorithm`);
/// a set for an account with no registered session changes nothing and is
/// answered `<unexpected-request/>`. `CMR_STATUS_NOT_MINE`: a result, an
/// error or another namespace. A protocol error is a response (an error
/// IQ) with `CMR_STATUS_OK`. Not well-formed XML, more than
/// `CMR_MAX_IQ_BYTES` bytes, elements nested deeper than `CMR_MAX_DEPTH`,
/// more than `CMR_MAX_ELEMENTS` elements, more than `CMR_MAX_ATTRIBUTES`
/// attributes on one element, a name or
/// attribute value longer than `CMR_MAX_TOKEN_BYTES`, a duplicate
/// attribute or anything after the stanza: `CMR_STATUS_INVALID_XML`, found
/// in time linear in the input, before any deep tree is built. Thread-safe.
///
/// # Safety
/// `router` is a live router; `xml` has `xml_len` bytes; `buf` has `cap`
/// writable bytes; `out_len` and `out_changed` are writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_handle_iq(
    router: *const cmr_router,
    xml: *const c_char,
    xml_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    out_changed: *mut bool,
) -> cmr_status {
    router_boundary! { router,
        let out_changed = try_mut!(out_changed);
        let mut out = try_out!(buf, cap, out_len);
        let xml = try_str!(xml, xml_len);
        *out_changed = false;
        match router.answer_iq(xml) {
            Ok(Some(answer)) if !out.fits(answer.xml.len()) => out.too_small(answer.xml.len()),
            Ok(Some(answer)) => {
                *out_changed = router.commit(&answer);
                out.write(answer.xml.as_bytes())
            }
            Ok(None) => {
                out.clear();
                cmr_status::NotMine
            }
            Err(error) => fail_with(error),
        }
    }
}

/// Where the routing command stands after a call of
/// `cmr_router_routing_command`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cmr_command_stage {
    /// The buffer holds the XEP-0004 form to show (`<x xmlns='jabber:x:data'
    /// type='form'>`); the command goes on (XEP-0050 `executing`).
    Form = 0,
    /// The buffer holds the note saying what changed; the command is
    /// `completed` (an `info` note).
    Completed = 1,
    /// The buffer holds the note saying why nothing changed; the command is
    /// `completed` (an `error` note).
    Refused = 2,
}

/// Runs the routing command (XEP-0050) for the session `requester` (its
/// full JID), to plug into the host's ad-hoc framework: with no
/// `submitted` form (length 0) the form to show; with the form the client
/// submitted (`<x xmlns='jabber:x:data' type='submit'>`) the outcome under
/// the same policy as a XEP-0354 set, `*out_changed` set when the
/// account's algorithm changed (the host then persists
/// `cmr_router_get_algorithm`, as after an IQ). A form that is not this
/// command's (another field, two values, not a submit) is
/// `CMR_STATUS_INVALID_ARGUMENT` and changes nothing: the host answers
/// `<bad-request/>`. Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes;
/// `buf` has `cap` writable bytes; `out_len`, `out_stage` and
/// `out_changed` are writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_routing_command(
    router: *const cmr_router,
    requester: *const c_char,
    requester_len: usize,
    submitted: *const c_char,
    submitted_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    out_stage: *mut cmr_command_stage,
    out_changed: *mut bool,
) -> cmr_status {
    router_boundary! { router,
        let out_stage = try_mut!(out_stage);
        let out_changed = try_mut!(out_changed);
        let mut out = try_out!(buf, cap, out_len);
        let requester = try_str!(requester, requester_len);
        let submitted = try_str!(submitted, submitted_len);
        *out_changed = false;
        let submitted = (!submitted.is_empty()).then_some(submitted);
        match router.routing_command(requester, submitted) {
            Ok(answer) => {
                let (stage, text) = match &answer {
                    CommandAnswer::Form(form) => (cmr_command_stage::Form, form),
                    CommandAnswer::Completed { note, .. } => (cmr_command_stage::Completed, note),
                    CommandAnswer::Refused(note) => (cmr_command_stage::Refused, note),
                };
                if !out.fits(text.len()) {
                    return out.too_small(text.len());
                }
                *out_stage = stage;
                *out_changed = router.commit_command(&answer);
                out.write(text.as_bytes())
            }
            Err(error) => fail_with(error),
        }
    }
}

/// A command a host offers through its ad-hoc framework (XEP-0050): its
/// node and the name shown in clients' command lists.
#[repr(C)]
pub struct cmr_command {
    pub node: *const c_char,
    pub name: *const c_char,
}

// SAFETY: the pointers point to static C strings.
unsafe impl Sync for cmr_command {}

static ROUTING_COMMAND: cmr_command = cmr_command {
    node: command::NODE.as_ptr(),
    name: command::NAME.as_ptr(),
};
static ADMIN_COMMAND: cmr_command = cmr_command {
    node: command::ADMIN_NODE.as_ptr(),
    name: command::ADMIN_NAME.as_ptr(),
};

/// The routing command users run (`cmr_router_routing_command`), static.
#[no_mangle]
pub extern "C" fn cmr_routing_command() -> *const cmr_command {
    &ROUTING_COMMAND
}

/// The admin command (`cmr_router_admin_form`), static.
#[no_mangle]
pub extern "C" fn cmr_admin_command() -> *const cmr_command {
    &ADMIN_COMMAND
}

/// Writes the admin command's XEP-0004 form ("Set an account's message
/// routing", XEP-0133 style): a `jid-single` account (`accountjid`) and the
/// offered algorithms (`algorithm`), labelled. Only the host's
/// administrators may run it: the host checks that. Thread-safe.
///
/// # Safety
/// `router` is a live router; `buf` has `cap` writable bytes; `out_len` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_admin_form(
    router: *const cmr_router,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        match router.admin_form() {
            Ok(form) => out.write(form.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Writes the value of the field `var` (`accountjid` or `algorithm`) of a
/// submitted admin form, after checking the whole form: anything that is
/// not that form (another field, two values, not a submit) is
/// `CMR_STATUS_INVALID_ARGUMENT`, naming it; the host answers
/// `<bad-request/>`. The host then checks the account by its own rules
/// (its domain, that it exists) and calls `cmr_router_choose_for`.
///
/// # Safety
/// The strings have their lengths in bytes; `buf` has `cap` writable bytes;
/// `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_admin_form_value(
    submitted: *const c_char,
    submitted_len: usize,
    var: *const c_char,
    var_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    ffi_panic_boundary! {
        let out = try_out!(buf, cap, out_len);
        let submitted = try_str!(submitted, submitted_len);
        let var = try_str!(var, var_len);
        match command::admin_value(submitted, var) {
            Ok(value) => out.write(value.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// An operator's choice of algorithm (URI or short name) for an account:
/// the admin command's and the host's admin tools'. Not bound by
/// `user_change`, which limits users; an algorithm the policy does not
/// offer is refused, naming it. It applies at once when a session of the
/// account is registered; either way it writes the algorithm's URI, which
/// the host persists (its store is restored at the account's next first
/// session, as after an IQ). Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes;
/// `buf` has `cap` writable bytes; `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_choose_for(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    algorithm: *const c_char,
    algorithm_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let mut out = try_out!(buf, cap, out_len);
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        let algorithm = try_str!(algorithm, algorithm_len);
        // Checked before anything changes: a choice applied must be one
        // the host can persist.
        let uri = match router.policy().resolve(algorithm) {
            Some(found) => router.policy().uri(found),
            None => "",
        };
        if !out.fits(uri.len()) {
            return out.too_small(uri.len());
        }
        match router.choose_for(bare_jid, algorithm) {
            Ok((_, uri)) => out.write(uri.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Writes the note of a completed admin command that chose `algorithm`
/// (URI or short name, as `cmr_router_choose_for` gave it) for the
/// account: the account and the algorithm's label, in the routing
/// command's words. Changes nothing. Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes;
/// `buf` has `cap` writable bytes; `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_choice_note(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    algorithm: *const c_char,
    algorithm_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        let algorithm = try_str!(algorithm, algorithm_len);
        match router.choice_note(bare_jid, algorithm) {
            Ok(note) => out.write(note.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Writes the URI of the algorithm that applies to an account, for the
/// operators' tools: its sessions' when one is registered; else `stored`
/// (the host's persisted choice, length 0 for none) when the policy offers
/// it; else the policy's default. Thread-safe.
///
/// # Safety
/// `router` is a live router; the strings have their lengths in bytes;
/// `buf` has `cap` writable bytes; `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_algorithm_for(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    stored: *const c_char,
    stored_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        let stored = try_str!(stored, stored_len);
        match router.algorithm_for(bare_jid, (!stored.is_empty()).then_some(stored)) {
            Ok(uri) => out.write(uri.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Writes the disco#info features to advertise on the server and on
/// accounts, one per line (`urn:xmpp:cmr:0`, and `urn:xmpp:cmr:hints:0`
/// where hints are honoured). Thread-safe.
///
/// # Safety
/// `router` is a live router; `buf` has `cap` writable bytes; `out_len` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_disco_features(
    router: *const cmr_router,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        out.write(router.disco_features().join("\n").as_bytes())
    }
}

/// Writes the account's per-session figures as a tab-separated table with a
/// header line naming its 8 columns: `resource routed priority show
/// available load token hibernating`, where `routed` counts the messages
/// routed to the session since it registered. Find a column by its name in
/// the header: later versions may add columns.
/// Thread-safe.
///
/// # Safety
/// `router` is a live router; `bare_jid` has `bare_jid_len` bytes; `buf` has
/// `cap` writable bytes; `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_stats(
    router: *const cmr_router,
    bare_jid: *const c_char,
    bare_jid_len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out = try_out!(buf, cap, out_len);
        let bare_jid = try_str!(bare_jid, bare_jid_len);
        match router.stats_table(bare_jid) {
            Ok(table) => out.write(table.as_bytes()),
            Err(error) => fail_with(error),
        }
    }
}

/// Writes the router's figures into `*out`. Each counter is read as it
/// stands, shard by shard, without stopping other threads. Thread-safe.
///
/// # Safety
/// `router` is a live router; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_metrics(
    router: *const cmr_router,
    out: *mut Metrics,
) -> cmr_status {
    router_boundary! { router,
        let out = try_mut!(out);
        *out = router.metrics();
        cmr_status::Ok
    }
}

/// The description of one series of the metrics: what a host needs to
/// serve the value at the same index of `cmr_router_metric_values` in its
/// own channel. Every string is static and NUL-terminated.
#[repr(C)]
pub struct cmr_metric_series {
    /// The series' own name, unique: `routed_all`, `left_to_server_none`,
    /// `iq_errors`, `sessions` (Openfire serves it as `cmr_KEY`).
    pub key: *const c_char,
    /// The metric's OpenMetrics name, `_total` included for a counter,
    /// labels apart: `cmr_messages_routed_total` (ejabberd's command).
    pub metric: *const c_char,
    /// The metric's short name, shared by its series: `routed`, `answered`.
    pub family: *const c_char,
    /// What it counts, plural: `messages`, `iqs`, `sessions`, `accounts`.
    pub unit: *const c_char,
    /// The label that tells the family's series apart, `algorithm` or
    /// `type`; empty when the family has one series.
    pub label: *const c_char,
    /// This series' value of `label` (an algorithm's short name or `none`;
    /// `result` or `error`); empty when `label` is.
    pub label_value: *const c_char,
    /// What the family counts, in a sentence, for the host's help text.
    pub help: *const c_char,
    pub kind: MetricKind,
}

/// The metrics' descriptions with the C strings they point into, made once.
struct SeriesTable {
    series: Vec<cmr_metric_series>,
    _strings: Vec<CString>,
}

// SAFETY: the pointers point into `_strings`, which lives as long as the
// table and is never changed.
unsafe impl Send for SeriesTable {}
unsafe impl Sync for SeriesTable {}

static SERIES: LazyLock<SeriesTable> = LazyLock::new(|| {
    let mut strings = Vec::new();
    let mut c = |text: &str| {
        let text = CString::new(text).expect("metric texts have no NUL");
        // The heap bytes stay where they are when the CString moves.
        let ptr = text.as_ptr();
        strings.push(text);
        ptr
    };
    let series = crate::metrics::series()
        .iter()
        .map(|s| cmr_metric_series {
            key: c(&s.key),
            metric: c(s.metric),
            family: c(s.family),
            unit: c(s.unit),
            label: c(s.label),
            label_value: c(s.label_value),
            help: c(s.help),
            kind: s.kind,
        })
        .collect();
    SeriesTable {
        series,
        _strings: strings,
    }
});

/// The description of the metrics' series at `index`, static; NULL from
/// the last one on. A host walks them from 0 to build its channel, then
/// reads the values with `cmr_router_metric_values`. Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_metric_series_at(index: usize) -> *const cmr_metric_series {
    ffi_panic_boundary! {
        SERIES.series.get(index).map_or(std::ptr::null(), |series| series as *const _)
    }
}

/// Writes the router's figures, one per series in the order of
/// `cmr_metric_series_at`, into `out` (room for `cap`) and their number
/// into `*out_len`; too small a buffer gives `CMR_STATUS_BUFFER_TOO_SMALL`
/// with the number needed. Each is read as it stands, shard by shard,
/// without stopping other threads. Thread-safe.
///
/// # Safety
/// `router` is a live router; `out` has room for `cap` values (may be NULL
/// when `cap` is 0); `out_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cmr_router_metric_values(
    router: *const cmr_router,
    out: *mut u64,
    cap: usize,
    out_len: *mut usize,
) -> cmr_status {
    router_boundary! { router,
        let out_len = try_mut!(out_len);
        let needed = SERIES.series.len();
        *out_len = needed;
        if cap < needed {
            return fail(cmr_status::BufferTooSmall, &format!("out holds {cap} values; {needed} are needed"));
        }
        if out.is_null() {
            return boundary::null("out");
        }
        // SAFETY: non-NULL with room for `cap` values by contract.
        let out = unsafe { std::slice::from_raw_parts_mut(out, cap) };
        for (slot, value) in out.iter_mut().zip(router.metrics().values()) {
            *slot = value;
        }
        cmr_status::Ok
    }
}

/// How many times a host picks for one message: when a picked session
/// turns out gone it reports it (`cmr_router_session_gone`) and picks
/// again, up to this many picks in all, then leaves the message to its own
/// routing. Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_max_picks_per_message() -> u32 {
    crate::router::MAX_PICKS_PER_MESSAGE
}

/// The finest difference in activity that `mostactive` tells apart, in
/// milliseconds: a host need report a session's activity
/// (`cmr_router_touch`) at most once per interval. Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_activity_interval_ms() -> u32 {
    crate::router::ACTIVITY_INTERVAL_MS
}

static ALGORITHM_NAMES: LazyLock<[CString; CMR_ALGORITHM_COUNT]> =
    LazyLock::new(|| Algorithm::EVERY.map(|a| CString::new(a.name()).expect("names have no NUL")));

/// The short name of the algorithm at `index` of `cmr_metrics`' arrays
/// (`all`, `mostactive`, `roundrobin`, `weighted`, `random`, `sticky`,
/// `leastloaded`), as a static NUL-terminated string; NULL from
/// `CMR_ALGORITHM_COUNT` on. Thread-safe.
#[no_mangle]
pub extern "C" fn cmr_algorithm_name(index: usize) -> *const c_char {
    ffi_panic_boundary! {
        ALGORITHM_NAMES.get(index).map_or(std::ptr::null(), |name| name.as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An export whose body panics, as a bug would.
    unsafe extern "C" fn buggy(router: *const cmr_router) -> cmr_status {
        router_boundary! { router,
            let _ = router;
            panic!("a bug")
        }
    }

    fn new_router() -> *mut cmr_router {
        let mut router = std::ptr::null_mut();
        let status = unsafe { cmr_router_new(std::ptr::null(), 0, &mut router) };
        assert_eq!(status, cmr_status::Ok);
        router
    }

    /// Registers `a@x/r` (token 1, available, priority 0).
    unsafe fn register(router: *const cmr_router) -> cmr_status {
        let jid = "a@x/r";
        let (show, new_account) = (std::ptr::null(), std::ptr::null_mut());
        unsafe {
            cmr_router_register(
                router,
                jid.as_ptr().cast(),
                jid.len(),
                1,
                0,
                show,
                0,
                true,
                new_account,
            )
        }
    }

    fn last_error() -> String {
        let mut buf = [0u8; 512];
        let mut len = 0;
        let status = unsafe { cmr_last_error(buf.as_mut_ptr().cast(), buf.len(), &mut len) };
        assert_eq!(status, cmr_status::Ok);
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    #[test]
    fn a_router_whose_call_panicked_refuses_every_later_call() {
        let (router, other) = (new_router(), new_router());
        unsafe {
            assert_eq!(register(router), cmr_status::Ok);
            assert_eq!(buggy(router), cmr_status::Panic);
            assert!(last_error().contains("a bug"), "{}", last_error());
            assert_eq!(register(router), cmr_status::Panic);
            assert!(
                last_error().contains("refuses every call"),
                "{}",
                last_error()
            );
            assert_eq!(register(other), cmr_status::Ok, "other routers go on");
            cmr_router_free(router);
            cmr_router_free(other);
        }
    }

    #[test]
    fn every_status_has_its_name_and_message_by_number() {
        let text = |p: *const c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap();
        for status in STATUSES {
            let (name, message) = describe(status);
            assert_eq!(
                text(cmr_status_name(status as u32)),
                name.trim_end_matches('\0')
            );
            assert_eq!(
                text(cmr_status_message(status as u32)),
                message.trim_end_matches('\0')
            );
        }
        assert_eq!(text(cmr_status_name(5)), "error");
        assert_eq!(text(cmr_status_message(5)), "unknown status");
    }

    #[test]
    fn metric_values_follow_the_series_table() {
        let router = new_router();
        unsafe {
            assert_eq!(register(router), cmr_status::Ok);
            let count = (0..)
                .take_while(|i| !cmr_metric_series_at(*i).is_null())
                .count();
            let mut len = 0;
            let status = cmr_router_metric_values(router, std::ptr::null_mut(), 0, &mut len);
            assert_eq!((status, len), (cmr_status::BufferTooSmall, count));
            let mut values = vec![0; count];
            assert_eq!(
                cmr_router_metric_values(router, values.as_mut_ptr(), count, &mut len),
                cmr_status::Ok
            );
            let key = |i: usize| {
                std::ffi::CStr::from_ptr((*cmr_metric_series_at(i)).key)
                    .to_str()
                    .unwrap()
            };
            let at = |wanted: &str| values[(0..count).position(|i| key(i) == wanted).unwrap()];
            assert_eq!(
                (at("sessions"), at("accounts"), at("routed_all")),
                (1, 1, 0)
            );
            cmr_router_free(router);
        }
    }

    #[test]
    fn the_routing_command_shows_the_form_then_switches_once_written() {
        let router = new_router();
        let run = |submitted: &str, cap: usize| {
            let (mut buf, mut len) = (vec![0u8; cap], 0);
            let (mut stage, mut changed) = (cmr_command_stage::Refused, true);
            let requester = "a@x/r";
            let status = unsafe {
                cmr_router_routing_command(
                    router,
                    requester.as_ptr().cast(),
                    requester.len(),
                    submitted.as_ptr().cast(),
                    submitted.len(),
                    buf.as_mut_ptr().cast(),
                    cap,
                    &mut len,
                    &mut stage,
                    &mut changed,
                )
            };
            (
                status,
                stage,
                changed,
                String::from_utf8_lossy(&buf[..len.min(cap)]).into_owned(),
            )
        };
        unsafe {
            assert_eq!(register(router), cmr_status::Ok);
            let (status, stage, changed, form) = run("", 4096);
            assert_eq!(
                (status, stage, changed),
                (cmr_status::Ok, cmr_command_stage::Form, false)
            );
            assert!(
                form.starts_with("<x xmlns='jabber:x:data' type='form'>"),
                "{form}"
            );
            let submit = "<x xmlns='jabber:x:data' type='submit'><field var='algorithm'><value>urn:xmpp:cmr:roundrobin</value></field></x>";
            let (status, _, changed, _) = run(submit, 4);
            assert_eq!((status, changed), (cmr_status::BufferTooSmall, false));
            let (status, stage, changed, note) = run(submit, 4096);
            assert_eq!(
                (status, stage, changed),
                (cmr_status::Ok, cmr_command_stage::Completed, true)
            );
            assert!(note.contains("Round robin"), "{note}");
            let bogus = submit.replace("algorithm", "bogus");
            assert_eq!(run(&bogus, 4096).0, cmr_status::InvalidArgument);
            assert!(last_error().contains("bogus"), "{}", last_error());
            cmr_router_free(router);
        }
    }

    #[test]
    fn an_operator_chooses_offline_and_a_refused_or_unwritten_choice_changes_nothing() {
        let router = new_router();
        let choose = |account: &str, algorithm: &str, cap: usize| {
            let (mut buf, mut len) = (vec![0u8; cap], 0);
            let status = unsafe {
                cmr_router_choose_for(
                    router,
                    account.as_ptr().cast(),
                    account.len(),
                    algorithm.as_ptr().cast(),
                    algorithm.len(),
                    buf.as_mut_ptr().cast(),
                    cap,
                    &mut len,
                )
            };
            (
                status,
                String::from_utf8_lossy(&buf[..len.min(cap)]).into_owned(),
            )
        };
        let active = |stored: &str| {
            let (mut buf, mut len, account) = ([0u8; 64], 0, "a@x");
            let status = unsafe {
                cmr_router_algorithm_for(
                    router,
                    account.as_ptr().cast(),
                    account.len(),
                    stored.as_ptr().cast(),
                    stored.len(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut len,
                )
            };
            assert_eq!(status, cmr_status::Ok);
            String::from_utf8_lossy(&buf[..len]).into_owned()
        };
        assert_eq!(
            choose("a@x", "roundrobin", 64),
            (cmr_status::Ok, "urn:xmpp:cmr:roundrobin".into()),
            "offline: the URI to persist"
        );
        assert_eq!(active(""), "urn:xmpp:cmr:all", "nothing held offline");
        assert_eq!(active("urn:xmpp:cmr:roundrobin"), "urn:xmpp:cmr:roundrobin");
        unsafe {
            assert_eq!(register(router), cmr_status::Ok);
            assert_eq!(choose("a@x", "random", 4).0, cmr_status::BufferTooSmall);
            assert_eq!(choose("a@x", "bogus", 64).0, cmr_status::UnknownAlgorithm);
            assert!(last_error().contains("'bogus'"), "{}", last_error());
            assert_eq!(active(""), "urn:xmpp:cmr:all", "nothing changed");
            assert_eq!(choose("a@x", "random", 64).0, cmr_status::Ok);
            assert_eq!(active(""), "urn:x-cmr:algorithm:random", "applied at once");
            cmr_router_free(router);
        }
    }

    #[test]
    fn the_error_path_survives_thread_teardown() {
        struct FailsOnDrop;
        impl Drop for FailsOnDrop {
            fn drop(&mut self) {
                // Thread-locals are being torn down: the status still comes.
                let status = unsafe {
                    cmr_router_pick(
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null_mut(),
                        0,
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(status, cmr_status::NullParameter);
            }
        }
        thread_local!(static GUARD: std::cell::RefCell<Option<FailsOnDrop>> = const { std::cell::RefCell::new(None) });
        std::thread::spawn(|| {
            // Thread-locals are destroyed in the reverse order of their
            // first use: the guard first, then the library's message, so
            // the message is gone when the guard calls in.
            GUARD.with(|g| *g.borrow_mut() = Some(FailsOnDrop));
            let status = unsafe { cmr_router_new(std::ptr::null(), 1, &mut std::ptr::null_mut()) };
            assert_eq!(status, cmr_status::NullParameter);
        })
        .join()
        .unwrap();
    }
}
