//! Shared set-up of the benchmarks: routers with many accounts, driven
//! through the C ABI as a host drives them.

#![allow(dead_code)] // each bench uses a part

use cmr::ffi::{
    cmr_message, cmr_router, cmr_router_handle_iq, cmr_router_new, cmr_router_pick,
    cmr_router_register, cmr_status,
};
use std::ffi::c_char;

pub const RESOURCES: usize = 4;

pub fn account(i: usize) -> String {
    format!("user-{i}@example.org")
}

pub struct Bench {
    pub router: *mut cmr_router,
    pub keys: Vec<String>,
}

// SAFETY: the router is thread-safe by contract; benches free it never.
unsafe impl Send for Bench {}
unsafe impl Sync for Bench {}

/// A router with `accounts` accounts of RESOURCES sessions each.
pub fn router(options: &str, accounts: usize) -> Bench {
    let mut router = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            cmr_router_new(options.as_ptr().cast(), options.len(), &mut router),
            cmr_status::Ok
        );
    }
    let bench = Bench {
        router,
        keys: (0..accounts).map(account).collect(),
    };
    for (a, key) in bench.keys.iter().enumerate() {
        for r in 0..RESOURCES {
            let token = (a * RESOURCES + r) as u64;
            register(&bench, &format!("{key}/node-{r}"), token, 1);
        }
    }
    bench
}

/// Registers (or updates) the available session `jid` with its token.
pub fn register(bench: &Bench, jid: &str, token: u64, priority: i32) {
    let status = unsafe {
        cmr_router_register(
            bench.router,
            jid.as_ptr().cast(),
            jid.len(),
            token,
            priority,
            std::ptr::null(),
            0,
            true,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, cmr_status::Ok);
}

/// Handles one IQ through the C ABI, its answer written into `answer`: the
/// status and the answer's length.
#[inline]
pub fn handle_iq(bench: &Bench, xml: &str, answer: &mut [u8]) -> (cmr_status, usize) {
    let (mut len, mut changed) = (0, false);
    let status = unsafe {
        cmr_router_handle_iq(
            bench.router,
            xml.as_ptr().cast(),
            xml.len(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            &mut len,
            &mut changed,
        )
    };
    (status, len)
}

pub fn message(recipient: &str, hint: &str) -> cmr_message {
    const SENDER: &str = "sensor-17@things.example.net/probe";
    cmr_message {
        recipient: recipient.as_ptr().cast::<c_char>(),
        recipient_len: recipient.len(),
        message_type: "chat".as_ptr().cast(),
        message_type_len: 4,
        sender: SENDER.as_ptr().cast(),
        sender_len: SENDER.len(),
        hint: hint.as_ptr().cast(),
        hint_len: hint.len(),
        sender_is_local: true,
    }
}

/// One pick through the C ABI: the tokens and how many there are.
#[inline]
pub fn pick(bench: &Bench, message: &cmr_message) -> ([u64; RESOURCES], usize) {
    let mut out = [0u64; RESOURCES];
    let mut len = 0;
    let status =
        unsafe { cmr_router_pick(bench.router, message, out.as_mut_ptr(), out.len(), &mut len) };
    debug_assert_eq!(status, cmr_status::Ok);
    (out, len)
}

/// A uniformly random order of `n` account indices, fixed by seed.
pub fn random_order(n: usize, len: usize) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(6121);
    (0..len).map(|_| rng.u32(..n as u32)).collect()
}
