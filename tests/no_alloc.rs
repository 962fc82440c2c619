//! `cmr_router_pick` must not allocate: counted through the C ABI with a
//! global allocator that counts this thread's allocations.

use cmr::ffi::{
    cmr_message, cmr_router, cmr_router_free, cmr_router_new, cmr_router_pick, cmr_router_register,
    cmr_router_set_algorithm, cmr_status,
};
use cmr::Algorithm;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_char;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn s(text: &str) -> (*const c_char, usize) {
    (text.as_ptr().cast(), text.len())
}

#[test]
fn pick_does_not_allocate() {
    let mut router: *mut cmr_router = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            cmr_router_new(std::ptr::null(), 0, &mut router),
            cmr_status::Ok
        );
        for (i, jid) in ["a@x/1", "a@x/2", "a@x/3", "a@x/4"].into_iter().enumerate() {
            let (p, l) = s(jid);
            assert_eq!(
                cmr_router_register(
                    router,
                    p,
                    l,
                    i as u64,
                    1,
                    std::ptr::null(),
                    0,
                    true,
                    std::ptr::null_mut()
                ),
                cmr_status::Ok
            );
        }
    }
    let (recipient, recipient_len) = s("a@x");
    let (sender, sender_len) = s("sensor@example.net/probe");
    let (hint, hint_len) = s("urn:xmpp:cmr:roundrobin");
    let (missing, missing_len) = s("nobody@x");
    let message = |recipient, recipient_len, hint_len| cmr_message {
        recipient,
        recipient_len,
        message_type: std::ptr::null(),
        message_type_len: 0,
        sender,
        sender_len,
        hint,
        hint_len,
        sender_is_local: true,
    };
    let mut out = [0u64; 8];
    let mut out_len = 0usize;
    for algorithm in Algorithm::EVERY.map(Algorithm::name) {
        let (bare, bare_len) = s("a@x");
        let (alg, alg_len) = s(algorithm);
        unsafe {
            assert_eq!(
                cmr_router_set_algorithm(router, bare, bare_len, alg, alg_len),
                cmr_status::Ok
            )
        };
        let routed = message(recipient, recipient_len, 0);
        let hinted = message(recipient, recipient_len, hint_len);
        let unknown = message(missing, missing_len, 0);
        let before = ALLOCATIONS.with(Cell::get);
        for _ in 0..1000 {
            unsafe {
                assert_eq!(
                    cmr_router_pick(router, &routed, out.as_mut_ptr(), out.len(), &mut out_len),
                    cmr_status::Ok
                );
                assert_eq!(
                    cmr_router_pick(router, &hinted, out.as_mut_ptr(), out.len(), &mut out_len),
                    cmr_status::Ok
                );
                assert_eq!(
                    cmr_router_pick(router, &unknown, out.as_mut_ptr(), out.len(), &mut out_len),
                    cmr_status::NotRouted
                );
            }
        }
        let allocations = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(
            allocations, 0,
            "{algorithm}: {allocations} allocations in 3000 picks"
        );
    }
    unsafe { cmr_router_free(router) };
}
