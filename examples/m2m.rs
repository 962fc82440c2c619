//! The seed's scenario: a cluster of nodes shares one account, a fleet of
//! sensors sends it 10,000 messages, and each routing algorithm spreads
//! them over the nodes. Printed beside what the servers do natively: every
//! node with the maximum priority gets every message.
//!
//! `cargo run --release --example m2m` (or `make demo`).

use cmr::{Algorithm, Message, Pick, Policy, Router};

const ACCOUNT: &str = "sensors@example.org";
const MESSAGES: usize = 10_000;
const SENSORS: usize = 100;
/// (resource, priority, share of the cluster's processing capacity)
const NODES: [(&str, i8, f64); 4] = [
    ("node-1", 2, 0.35),
    ("node-2", 2, 0.35),
    ("node-3", 1, 0.2),
    ("node-4", 1, 0.1),
];

fn main() {
    let router = Router::new(Policy::from_options("hints=never").expect("valid policy"));
    for (token, (name, priority, _)) in NODES.iter().enumerate() {
        router
            .register(
                &format!("{ACCOUNT}/{name}"),
                token as u64,
                (*priority).into(),
                "",
                true,
            )
            .expect("valid session");
    }
    println!(
        "{MESSAGES} messages from {SENSORS} sensors to {ACCOUNT}, a cluster of {} nodes:",
        NODES.len()
    );
    for (name, priority, capacity) in NODES {
        println!(
            "  {name}: priority {priority}, processes {:.0}% of the cluster's load",
            capacity * 100.0
        );
    }
    println!();
    print!("{:<36}", "algorithm");
    for (name, _, _) in NODES {
        print!("{name:>8}");
    }
    println!("{:>12}", "deliveries");

    let max = NODES.iter().map(|n| n.1).max().unwrap_or(0);
    let native: Vec<usize> = NODES
        .iter()
        .map(|n| if n.1 == max { MESSAGES } else { 0 })
        .collect();
    print_row("native Prosody/ejabberd (all)", &native);

    let mut rng = fastrand::Rng::with_seed(354);
    for algorithm in Algorithm::EVERY {
        router
            .set_algorithm(ACCOUNT, algorithm.name())
            .expect("offered");
        let before = routed(&router);
        // Each node's backlog, which the host reports as the session's load
        // (in a server: the unacknowledged XEP-0198 queue).
        let mut backlog = [0u32; NODES.len()];
        let mut out = [0u64; NODES.len()];
        for i in 0..MESSAGES {
            let sender = format!("sensor-{}@things.example.net/probe", i % SENSORS);
            let message = Message {
                recipient: ACCOUNT.as_bytes(),
                kind: b"chat",
                sender: sender.as_bytes(),
                ..Message::default()
            };
            let Ok(Pick::Routed(n)) = router.pick(&message, &mut out) else {
                panic!("the cluster is online");
            };
            for &token in &out[..n] {
                backlog[token as usize] += 1;
            }
            for (node, (name, _, capacity)) in NODES.iter().enumerate() {
                if backlog[node] > 0 && rng.f64() < *capacity {
                    backlog[node] -= 1;
                }
                router
                    .set_load(&format!("{ACCOUNT}/{name}"), node as u64, backlog[node])
                    .expect("registered");
            }
        }
        let counts: Vec<usize> = routed(&router)
            .iter()
            .zip(before)
            .map(|(a, b)| (a - b) as usize)
            .collect();
        print_row(router.policy().uri(algorithm), &counts);
    }
    println!();
    println!("all: every max-priority node gets every message, as the servers do natively.");
    println!("mostactive: one node (priority, then show, then latest activity).");
    println!("roundrobin, random: an even share each; weighted: shares by priority (2:2:1:1).");
    println!("sticky: each sensor always reaches the same node.");
    println!("leastloaded: more to the nodes that keep up (lower backlog).");
}

fn routed(router: &Router) -> Vec<u64> {
    router
        .stats(ACCOUNT)
        .expect("registered")
        .iter()
        .map(|s| s.routed)
        .collect()
}

fn print_row(label: &str, counts: &[usize]) {
    print!("{label:<36}");
    for c in counts {
        print!("{c:>8}");
    }
    println!("{:>12}", counts.iter().sum::<usize>());
}
