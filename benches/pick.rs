//! Pick latency per algorithm (hot account and random accounts at 1, 10k and
//! 1M accounts), against the floor of a plain HashMap lookup plus a counter
//! increment over the same keys with the registry's hasher; register and
//! unregister; one IQ round; two threads.
//!
//! `cargo bench --bench pick` (or `make bench`).

mod common;

use cmr::ffi::{cmr_router_set_algorithm, cmr_router_unregister, cmr_status};
use cmr::Algorithm;
use common::{handle_iq, message, pick, random_order, register, router, Bench};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const ORDER_LEN: usize = 1 << 20;

/// Sets `algorithm` as the active one of every account, as hosts route:
/// by the account's choice, not by a hint.
fn activate(bench: &Bench, algorithm: Algorithm) {
    let name = algorithm.name();
    for key in &bench.keys {
        let status = unsafe {
            cmr_router_set_algorithm(
                bench.router,
                key.as_ptr().cast(),
                key.len(),
                name.as_ptr().cast(),
                name.len(),
            )
        };
        assert_eq!(status, cmr_status::Ok);
    }
}

/// The account counts to bench: all three, or those listed in
/// `CMR_BENCH_ACCOUNTS` (comma-separated), for a quick or profiled run.
fn account_counts() -> Vec<usize> {
    match std::env::var("CMR_BENCH_ACCOUNTS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.parse().expect("a number of accounts"))
            .collect(),
        Err(_) => vec![1, 10_000, 1_000_000],
    }
}

fn picks(c: &mut Criterion) {
    for accounts in account_counts() {
        let bench = router("", accounts);
        let order = random_order(accounts, ORDER_LEN);
        let mut group = c.benchmark_group(format!("pick/{accounts}-accounts"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));

        // The floor: the same keys, in the same order, with the same hasher.
        let mut plain: HashMap<String, u64, rapidhash::fast::RandomState> = HashMap::default();
        for key in &bench.keys {
            plain.insert(key.clone(), 0);
        }
        group.bench_function("floor/random", |b| {
            let mut i = 0;
            b.iter(|| {
                let key = bench.keys[order[i] as usize].as_str();
                i = (i + 1) % ORDER_LEN;
                *plain.get_mut(key).unwrap() += 1;
            })
        });
        // Latency: each lookup's key depends on the previous result, so no
        // two lookups overlap in the CPU (the shift is always 0, but the CPU
        // cannot know). This is how a server, whose picks are separated by
        // tens of microseconds of other work, experiences a pick.
        group.bench_function("floor/random-latency", |b| {
            let mut i = 0;
            b.iter(|| {
                let key = bench.keys[order[i] as usize].as_str();
                let counter = plain.get_mut(key).unwrap();
                *counter += 1;
                i = (i + 1 + (*counter >> 63) as usize) % ORDER_LEN;
            })
        });
        for algorithm in Algorithm::EVERY {
            activate(&bench, algorithm);
            group.bench_function(BenchmarkId::new(algorithm.name(), "hot"), |b| {
                let m = message(&bench.keys[0], "");
                b.iter(|| pick(&bench, &m))
            });
            if accounts == 1 {
                continue;
            }
            group.bench_function(BenchmarkId::new(algorithm.name(), "random"), |b| {
                let mut i = 0;
                b.iter(|| {
                    let m = message(&bench.keys[order[i] as usize], "");
                    i = (i + 1) % ORDER_LEN;
                    pick(&bench, &m)
                })
            });
            group.bench_function(BenchmarkId::new(algorithm.name(), "random-latency"), |b| {
                let mut i = 0;
                b.iter(|| {
                    let m = message(&bench.keys[order[i] as usize], "");
                    let (tokens, _) = pick(&bench, &m);
                    i = (i + 1 + (tokens[0] >> 63) as usize) % ORDER_LEN;
                })
            });
        }
        group.finish();
    }
}

fn sessions(c: &mut Criterion) {
    let bench = router("", 10_000);
    let mut group = c.benchmark_group("session");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    let jid = "user-17@example.org/node-1";
    group.bench_function("register-update", |b| {
        let mut priority = 0;
        b.iter(|| {
            priority = (priority + 1) % 2;
            register(&bench, jid, 17 * 4 + 1, priority);
        })
    });
    let fresh = "user-17@example.org/node-new";
    group.bench_function("register-then-unregister", |b| {
        b.iter(|| {
            register(&bench, fresh, 1 << 40, 0);
            let status = unsafe {
                cmr_router_unregister(bench.router, fresh.as_ptr().cast(), fresh.len(), 1 << 40)
            };
            assert_eq!(status, cmr_status::Ok);
        })
    });
    let iqs = [
        ("iq-query", "<iq type='get' from='user-17@example.org/node-1' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>"),
        (
            "iq-set",
            "<iq type='set' from='user-17@example.org/node-1' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>",
        ),
    ];
    for (name, xml) in iqs {
        group.bench_function(name, |b| {
            let mut answer = [0u8; 1024];
            b.iter(|| {
                let (status, len) = handle_iq(&bench, xml, &mut answer);
                assert_eq!(status, cmr_status::Ok);
                black_box(&answer[..len]);
            })
        });
    }
    group.finish();
}

/// Runs `iters` picks on each thread, thread `t` cycling through the
/// account indices `plans[t]`. Returns the wall time.
fn run_threads(bench: &Bench, plans: &[&[u32]], iters: u64) -> Duration {
    let barrier = std::sync::Barrier::new(plans.len());
    let start = Instant::now();
    std::thread::scope(|s| {
        for plan in plans {
            let barrier = &barrier;
            s.spawn(move || {
                let messages: Vec<_> = plan
                    .iter()
                    .map(|&a| message(&bench.keys[a as usize], ""))
                    .collect();
                barrier.wait();
                for i in 0..iters as usize {
                    black_box(pick(bench, &messages[i % messages.len()]));
                }
            });
        }
    });
    start.elapsed()
}

fn threads(c: &mut Criterion) {
    const ACCOUNTS: usize = 10_000;
    let bench = router("default=roundrobin", ACCOUNTS);
    // Each thread draws from its own half of the accounts, in random order.
    let order = random_order(ACCOUNTS / 2, 8192);
    let first: Vec<u32> = order[..4096].iter().map(|&a| 2 * a).collect();
    let second: Vec<u32> = order[4096..].iter().map(|&a| 2 * a + 1).collect();
    let (hot, other_hot) = ([0u32], [1u32]);
    let mut group = c.benchmark_group("threads");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    // Each iteration is one pick per thread: with perfect scaling the time
    // per iteration is the same for one and for two threads.
    group.bench_function("1-thread-hot-account", |b| {
        b.iter_custom(|iters| run_threads(&bench, &[&hot], iters))
    });
    group.bench_function("2-threads-distinct-hot-accounts", |b| {
        b.iter_custom(|iters| run_threads(&bench, &[&hot, &other_hot], iters))
    });
    group.bench_function("2-threads-one-hot-account", |b| {
        b.iter_custom(|iters| run_threads(&bench, &[&hot, &hot], iters))
    });
    group.bench_function("1-thread-random-accounts", |b| {
        b.iter_custom(|iters| run_threads(&bench, &[&first], iters))
    });
    group.bench_function("2-threads-distinct-random-accounts", |b| {
        b.iter_custom(|iters| run_threads(&bench, &[&first, &second], iters))
    });
    group.finish();
}

criterion_group!(benches, picks, sessions, threads);
criterion_main!(benches);
