//! The IQ parse against hostile shapes at two sizes, through the C ABI:
//! time grows in proportion to the input (8 KiB against 64 KiB, the most
//! accepted) for long text and for long attribute values, and stays flat
//! where a limit refuses the input without reading on (the 65th element,
//! the 17th level of nesting).
//!
//! `cargo bench --bench iq`.

mod common;

use common::{handle_iq, router};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// A query IQ whose payload holds `fill`, repeated to `size` bytes in all.
fn query(fill: &str, size: usize) -> String {
    let head =
        "<iq type='get' from='user-0@example.org/node-0' id='b'><query xmlns='urn:xmpp:cmr:0'>";
    let tail = "</query></iq>";
    let repeats = (size - head.len() - tail.len()) / fill.len();
    format!("{head}{}{tail}", fill.repeat(repeats))
}

/// `size` bytes of `<x>` nesting, closed: refused at the 17th level.
fn nested(size: usize) -> String {
    let depth = (size - 100) / 7;
    query(
        &format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth)),
        size,
    )
}

/// 8 elements of 32 attributes each, their values as long as `size` allows.
fn attributes(size: usize) -> String {
    let value = "v".repeat((size - 200) / (8 * 32) - 9);
    let attributes: String = (0..32).map(|i| format!(" a{i:02}='{value}'")).collect();
    query(&format!("<x{attributes}/>"), size)
}

fn shapes(size: usize) -> [(&'static str, String); 4] {
    [
        ("text", query("text ", size)),
        ("attributes", attributes(size)),
        ("siblings", query("<x/>", size)),
        ("nesting", nested(size)),
    ]
}

fn parse(c: &mut Criterion) {
    let bench = router("", 1);
    let mut group = c.benchmark_group("iq-parse");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    let mut answer = vec![0u8; 1 << 16];
    for size in [8 << 10, 64 << 10] {
        for (shape, xml) in shapes(size) {
            group.throughput(Throughput::Bytes(xml.len() as u64));
            group.bench_with_input(BenchmarkId::new(shape, size), &xml, |b, xml| {
                b.iter(|| black_box(handle_iq(&bench, xml, &mut answer)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
