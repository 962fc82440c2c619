//! The mechanics of the C boundary: the panic boundary, pointer checks,
//! the thread-local last error and the output buffers. Every export in
//! `ffi` goes through these, so none can forget a check.

use super::cmr_status;
use crate::error::Error;
use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error and returns `status`.
/// Never panics: it also runs outside the panic boundary, after a caught
/// panic, and on threads whose thread-locals are being torn down (there
/// the message is lost; the status still says what happened).
/// Messages longer than `CMR_MAX_ERROR_BYTES` (a panic's text can be
/// anything) are cut at a character boundary.
pub(super) fn fail(status: cmr_status, message: &str) -> cmr_status {
    let mut end = message.len().min(super::CMR_MAX_ERROR_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.clear();
            last.push_str(&message[..end]);
        }
    });
    status
}

/// Records a core error and returns the status that stands for it.
pub(super) fn fail_with(error: Error) -> cmr_status {
    let status = match &error {
        Error::InvalidUtf8 { .. } => cmr_status::InvalidUtf8,
        Error::InvalidJid { .. } => cmr_status::InvalidJid,
        Error::InvalidXml { .. } => cmr_status::InvalidXml,
        Error::InvalidArgument { .. } | Error::InvalidForm { .. } => cmr_status::InvalidArgument,
        Error::UnknownAlgorithm { .. } => cmr_status::UnknownAlgorithm,
        Error::NotOffered { .. } => cmr_status::NotOffered,
        Error::InvalidOption { .. } => cmr_status::InvalidOption,
        Error::NotFound { .. } => cmr_status::NotFound,
        Error::Failed => cmr_status::Panic,
    };
    fail(status, &error.to_string())
}

/// Runs `f` on this thread's last error message (empty when there is none
/// or it cannot be reached).
pub(super) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    match LAST_ERROR.try_with(|last| last.try_borrow().ok().map(|m| m.clone())) {
        Ok(Some(message)) => f(&message),
        _ => f(""),
    }
}

/// The text a panic carried, if it is a string.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// What an export returns when its body panicked.
pub(super) trait PanicDefault {
    fn on_panic(payload: &(dyn Any + Send)) -> Self;
}

impl PanicDefault for cmr_status {
    fn on_panic(payload: &(dyn Any + Send)) -> Self {
        fail(
            cmr_status::Panic,
            &format!(
                "a panic was caught inside cmr (a bug): {}",
                panic_text(payload)
            ),
        )
    }
}

impl PanicDefault for () {
    fn on_panic(_: &(dyn Any + Send)) -> Self {}
}

impl<T> PanicDefault for *const T {
    fn on_panic(_: &(dyn Any + Send)) -> Self {
        std::ptr::null()
    }
}

/// Runs an export's body, turning a panic into the return type's
/// [`PanicDefault`], so that no panic ever unwinds into C.
macro_rules! ffi_panic_boundary {
    ( $($body:tt)* ) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(ret) => ret,
            Err(payload) => $crate::ffi::boundary::PanicDefault::on_panic(&*payload),
        }
    };
}
pub(super) use ffi_panic_boundary;

/// Like `ffi_panic_boundary!` for an export on a router: `$router` (a
/// pointer) becomes a `&Router` in the body. A router whose call panicked
/// may hold an account half updated, so it is marked failed, and every
/// later call on it returns `CMR_STATUS_PANIC` without touching it.
macro_rules! router_boundary {
    ($router:ident, $($body:tt)*) => {{
        // Outside the panic boundary: neither can panic.
        let handle = $crate::ffi::boundary::try_ref!($router);
        if handle.failed.load(::std::sync::atomic::Ordering::Acquire) {
            return $crate::ffi::boundary::fail_with($crate::error::Error::Failed);
        }
        let body = ::std::panic::AssertUnwindSafe(|| {
            let $router = &handle.router;
            $($body)*
        });
        match ::std::panic::catch_unwind(body) {
            Ok(status) => status,
            Err(payload) => {
                handle.failed.store(true, ::std::sync::atomic::Ordering::Release);
                <$crate::ffi::cmr_status as $crate::ffi::boundary::PanicDefault>::on_panic(&*payload)
            }
        }
    }};
}
pub(super) use router_boundary;

/// Turns a pointer into a reference, or returns `NullParameter` naming it.
macro_rules! try_ref {
    ($ptr:ident) => {
        // SAFETY: the caller passes NULL or a valid pointer (documented on
        // every export); NULL is caught here.
        match unsafe { $ptr.as_ref() } {
            Some(r) => r,
            None => return $crate::ffi::boundary::null(stringify!($ptr)),
        }
    };
}
pub(super) use try_ref;

/// Like `try_ref!`, for the caller's output variables.
macro_rules! try_mut {
    ($ptr:ident) => {
        // SAFETY: as for `try_ref!`.
        match unsafe { $ptr.as_mut() } {
            Some(r) => r,
            None => return $crate::ffi::boundary::null(stringify!($ptr)),
        }
    };
}
pub(super) use try_mut;

/// Borrows `len` bytes at `ptr` as UTF-8, or returns the status that says
/// why not. `ptr` may be NULL when `len` is 0.
macro_rules! try_str {
    ($ptr:ident, $len:expr) => {
        // SAFETY: the caller passes `len` readable bytes at `ptr` (documented
        // on every export); NULL with a length is caught inside.
        match unsafe { $crate::ffi::boundary::str_from_raw($ptr, $len, stringify!($ptr)) } {
            Ok(s) => s,
            Err(status) => return status,
        }
    };
}
pub(super) use try_str;

/// Like `try_str!` for bytes the core checks itself, only where it reads
/// them: the pointer checked, not the encoding.
macro_rules! try_bytes {
    ($ptr:ident, $len:expr) => {
        // SAFETY: the caller passes `len` readable bytes at `ptr` (documented
        // on every export); NULL with a length is caught inside.
        match unsafe { $crate::ffi::boundary::bytes_from_raw($ptr, $len, stringify!($ptr)) } {
            Ok(bytes) => bytes,
            Err(status) => return status,
        }
    };
}
pub(super) use try_bytes;

/// `len` bytes at `ptr`; NULL only with a length of 0.
///
/// # Safety
/// `ptr` has `len` readable bytes that outlive `'a`.
#[inline]
pub(super) unsafe fn bytes_from_raw<'a>(
    ptr: *const c_char,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], cmr_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

pub(super) fn null(what: &str) -> cmr_status {
    fail(cmr_status::NullParameter, &format!("{what} is NULL"))
}

/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that outlive `'a`.
#[inline]
pub(super) unsafe fn str_from_raw<'a>(
    ptr: *const c_char,
    len: usize,
    what: &'static str,
) -> Result<&'a str, cmr_status> {
    if len == 0 {
        return Ok("");
    }
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. JIDs and types nearly always are
        // ASCII, and this check costs a fraction of full validation.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| fail_with(Error::InvalidUtf8 { what }))
}

/// Where an export writes its text result: `cap` bytes at `buf` (NULL when
/// `cap` is 0), the length written or needed into `out_len`.
pub(super) struct OutBuf<'a> {
    buf: *mut c_char,
    cap: usize,
    out_len: &'a mut usize,
}

impl<'a> OutBuf<'a> {
    pub(super) fn new(
        buf: *mut c_char,
        cap: usize,
        out_len: &'a mut usize,
    ) -> Result<Self, cmr_status> {
        if buf.is_null() && cap > 0 {
            return Err(null("buf"));
        }
        Ok(OutBuf { buf, cap, out_len })
    }

    /// Whether `len` bytes fit; when not, sets `out_len` to the size needed.
    pub(super) fn fits(&mut self, len: usize) -> bool {
        *self.out_len = len;
        len <= self.cap
    }

    /// Reports that nothing was written.
    pub(super) fn clear(&mut self) {
        *self.out_len = 0;
    }

    pub(super) fn too_small(&mut self, len: usize) -> cmr_status {
        *self.out_len = len;
        fail(
            cmr_status::BufferTooSmall,
            &format!(
                "the output buffer holds {} bytes; {len} are needed",
                self.cap
            ),
        )
    }

    /// Writes `bytes` (no NUL terminator), or reports the size needed.
    pub(super) fn write(mut self, bytes: &[u8]) -> cmr_status {
        if !self.fits(bytes.len()) {
            return self.too_small(bytes.len());
        }
        if !bytes.is_empty() {
            // SAFETY: `buf` is non-NULL (checked in `new` since cap >= len > 0)
            // and has `cap` writable bytes by the caller's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf.cast::<u8>(), bytes.len())
            };
        }
        cmr_status::Ok
    }
}

/// Builds an [`OutBuf`] or returns the status that says why not.
macro_rules! try_out {
    ($buf:ident, $cap:ident, $out_len:ident) => {{
        let out_len = $crate::ffi::boundary::try_mut!($out_len);
        match $crate::ffi::boundary::OutBuf::new($buf, $cap, out_len) {
            Ok(out) => out,
            Err(status) => return status,
        }
    }};
}
pub(super) use try_out;
