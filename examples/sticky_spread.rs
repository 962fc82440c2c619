//! How evenly `sticky` spreads senders over an account's sessions: for 4 to
//! 1,000 sessions, 1,000 senders per session, 8 draws of resource names;
//! each session's share of the senders against an even share (1.0), the
//! median over the draws of the smallest and the largest, and the worst.
//! Beside it, the same figures for senders spread uniformly at random:
//! what the sampling alone gives, the best any scheme can show here.
//!
//! `cargo run --release --example sticky_spread`

use cmr::{Message, Pick, Policy, Router};

const SENDERS_PER_SESSION: usize = 1_000;
const DRAWS: usize = 8;

fn main() {
    println!("| sessions | sticky: min (worst) | max (worst) | uniform at random: min | max |");
    println!("|---|---|---|---|---|");
    let mut rng = fastrand::Rng::with_seed(354);
    for sessions in [4, 10, 50, 1_000] {
        let senders = sessions * SENDERS_PER_SESSION;
        let mut sticky = Vec::new();
        let mut uniform = Vec::new();
        for draw in 0..DRAWS {
            sticky.push(extremes(&sticky_counts(sessions, senders, draw), senders));
            let mut counts = vec![0; sessions];
            for _ in 0..senders {
                counts[rng.usize(..sessions)] += 1;
            }
            uniform.push(extremes(&counts, senders));
        }
        let (min, worst_min) = median_and_worst(sticky.iter().map(|e| e.0), f64::min);
        let (max, worst_max) = median_and_worst(sticky.iter().map(|e| e.1), f64::max);
        let (uniform_min, _) = median_and_worst(uniform.iter().map(|e| e.0), f64::min);
        let (uniform_max, _) = median_and_worst(uniform.iter().map(|e| e.1), f64::max);
        println!(
            "| {sessions} | {min:.2} ({worst_min:.2}) | {max:.2} ({worst_max:.2}) | \
             {uniform_min:.2} | {uniform_max:.2} |"
        );
    }
}

/// Senders per session of one account of `sessions` sessions named after
/// `draw`.
fn sticky_counts(sessions: usize, senders: usize, draw: usize) -> Vec<usize> {
    let router = Router::new(Policy::from_options("default=sticky").expect("valid policy"));
    for token in 0..sessions {
        router
            .register(
                &format!("fleet@example.org/node-{draw}-{token}"),
                token as u64,
                0,
                "",
                true,
            )
            .expect("valid session");
    }
    let mut counts = vec![0; sessions];
    let mut out = [0u64; 1];
    for sender in 0..senders {
        let sender = format!("sensor-{sender}@example.org/probe");
        let message = Message {
            recipient: b"fleet@example.org",
            kind: b"chat",
            sender: sender.as_bytes(),
            hint: "",
            sender_is_local: true,
        };
        match router.pick(&message, &mut out) {
            Ok(Pick::Routed(1)) => counts[out[0] as usize] += 1,
            other => panic!("{other:?}"),
        }
    }
    counts
}

/// The smallest and the largest share, 1.0 being even.
fn extremes(counts: &[usize], senders: usize) -> (f64, f64) {
    let even = senders as f64 / counts.len() as f64;
    let share = |c: &usize| *c as f64 / even;
    let min = counts.iter().map(share).fold(f64::INFINITY, f64::min);
    let max = counts.iter().map(share).fold(0.0, f64::max);
    (min, max)
}

fn median_and_worst(values: impl Iterator<Item = f64>, worse: fn(f64, f64) -> f64) -> (f64, f64) {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let worst = values.iter().copied().reduce(worse).unwrap_or(f64::NAN);
    (values[values.len() / 2], worst)
}
