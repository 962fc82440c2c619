//! Memory per registered resource: bytes actually allocated (counted by an
//! allocator wrapper, net of frees) by the registry, divided by the number
//! of resources, at 10k and 1M accounts of 4 resources.
//!
//! `cargo bench --bench memory` (or `make bench`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    // `cargo bench` passes --bench; any filter argument is ignored.
    for accounts in [10_000usize, 1_000_000] {
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let bench = common::router("", accounts);
        // The bench's own list of keys is not the registry's.
        let keys_bytes: usize =
            bench.keys.iter().map(|k| k.capacity()).sum::<usize>() + bench.keys.capacity() * 24;
        let registry = LIVE_BYTES.load(Ordering::Relaxed) - before - keys_bytes as isize;
        let resources = accounts * common::RESOURCES;
        println!(
            "memory/{accounts}-accounts: {registry} bytes for {resources} resources = {:.1} bytes per resource",
            registry as f64 / resources as f64
        );
        unsafe { cmr::ffi::cmr_router_free(bench.router) };
        drop(bench.keys);
    }
}
