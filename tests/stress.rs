//! Threads registering, unregistering and picking at once: every pick
//! returns tokens that were registered and eligible, and the counts add up.

use cmr::{Algorithm, Message, Pick, Policy, Router};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

const ACCOUNTS: usize = 8;
const STABLE: u64 = 3;

fn account(a: usize) -> String {
    format!("cluster-{a}@example.org")
}

/// Tokens: stable sessions are `a * 1000 + i`; churning ones count up from
/// 1_000_000, odd ones registered with negative priority (never eligible).
#[test]
fn concurrent_register_unregister_and_pick() {
    let router = Arc::new(Router::new(Policy::default()));
    for a in 0..ACCOUNTS {
        for i in 0..STABLE {
            router
                .register(
                    &format!("{}/stable-{i}", account(a)),
                    a as u64 * 1000 + i,
                    1,
                    "",
                    true,
                )
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let next_token = Arc::new(AtomicU64::new(1_000_000));
    let mut churners = Vec::new();
    for c in 0..2 {
        let (router, stop, next_token) = (router.clone(), stop.clone(), next_token.clone());
        churners.push(thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = (rounds as usize + c) % ACCOUNTS;
                let token = next_token.fetch_add(1, Ordering::Relaxed);
                let jid = format!("{}/churn-{c}", account(a));
                let priority = if token % 2 == 1 { -1 } else { 1 };
                router.register(&jid, token, priority, "", true).unwrap();
                router
                    .set_algorithm(&account(a), Algorithm::EVERY[rounds as usize % 7].name())
                    .unwrap();
                thread::yield_now();
                router.unregister(&jid, token).unwrap();
                rounds += 1;
            }
            rounds
        }));
    }
    let seen = Arc::new(Mutex::new(HashMap::<u64, u64>::new()));
    let mut pickers = Vec::new();
    for p in 0..2 {
        let (router, seen) = (router.clone(), seen.clone());
        pickers.push(thread::spawn(move || {
            let mut local: HashMap<u64, u64> = HashMap::new();
            let mut out = [0u64; 8];
            for n in 0..200_000usize {
                let recipient = account((n + p) % ACCOUNTS);
                let sender = format!("sensor-{}@example.net", n % 50);
                let m = Message {
                    recipient: recipient.as_bytes(),
                    sender: sender.as_bytes(),
                    ..Message::default()
                };
                match router.pick(&m, &mut out).unwrap() {
                    Pick::Routed(k) => {
                        for &token in &out[..k] {
                            let a = (n + p) % ACCOUNTS;
                            let stable = token / 1000 == a as u64 && token % 1000 < STABLE;
                            assert!(
                                stable || (token >= 1_000_000 && token % 2 == 0),
                                "token {token} for account {a}"
                            );
                            *local.entry(token).or_default() += 1;
                        }
                    }
                    other => panic!("stable sessions are always eligible, got {other:?}"),
                }
            }
            let mut seen = seen.lock().unwrap();
            for (token, count) in local {
                *seen.entry(token).or_default() += count;
            }
        }));
    }
    for p in pickers {
        p.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let churn_rounds: u64 = churners.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(churn_rounds > 0);
    let seen = seen.lock().unwrap();
    for a in 0..ACCOUNTS {
        let stats = router.stats(&account(a)).unwrap();
        assert_eq!(
            stats.len(),
            STABLE as usize,
            "only the stable sessions remain"
        );
        for s in stats {
            assert_eq!(
                s.routed,
                seen.get(&s.token).copied().unwrap_or(0),
                "stats of token {}",
                s.token
            );
        }
    }
}
