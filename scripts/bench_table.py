#!/usr/bin/env python3
"""Prints the pick benchmark's medians from criterion's saved estimates
(target/criterion) as the Markdown tables of BENCHMARKS.md, with the ratios
to the floor and the two-thread scaling computed."""
import json
import pathlib
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
ALGORITHMS = ["all", "mostactive", "roundrobin", "weighted", "random", "sticky", "leastloaded"]


def median(*parts):
    path = ROOT.joinpath(*parts, "new", "estimates.json")
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def ns(value):
    if value is None:
        return "–"
    return f"{value / 1000:.2f} µs" if value >= 1000 else f"{value:.1f} ns"


def ratio(value, floor):
    return "–" if value is None or not floor else f"{value / floor:.2f}×"


for accounts in ["1", "10000", "1000000"]:
    group = f"pick_{accounts}-accounts"
    floor, floor_latency = median(group, "floor_random"), median(group, "floor_random-latency")
    print(f"\n#### {int(accounts):,} account(s) of 4 sessions\n")
    print(f"floor (HashMap<String, u64> lookup + increment, same keys, same hasher): "
          f"{ns(floor)} back to back, {ns(floor_latency)} as a dependent chain\n")
    print("| algorithm | hot account | random accounts | ratio to floor | random, dependent chain | ratio to floor |")
    print("|---|---|---|---|---|---|")
    for a in ALGORITHMS:
        hot, rnd, lat = median(group, a, "hot"), median(group, a, "random"), median(group, a, "random-latency")
        print(f"| {a} | {ns(hot)} | {ns(rnd)} | {ratio(rnd, floor)} | {ns(lat)} | {ratio(lat, floor_latency)} |")

print("\n#### Sessions and IQs (10,000 accounts)\n")
print("| operation | median |")
print("|---|---|")
for name in ["register-update", "register-then-unregister", "iq-query", "iq-set"]:
    print(f"| {name} | {ns(median('session', name))} |")

print("\n#### Two threads (roundrobin, 10,000 accounts; time per iteration = one pick on each thread)\n")
print("| run | median per iteration | throughput vs one thread |")
print("|---|---|---|")
for single, doubles in [("1-thread-hot-account", ["2-threads-distinct-hot-accounts", "2-threads-one-hot-account"]),
                        ("1-thread-random-accounts", ["2-threads-distinct-random-accounts"])]:
    one = median("threads", single)
    print(f"| {single} | {ns(one)} | 1.00× |")
    for double in doubles:
        two = median("threads", double)
        print(f"| {double} | {ns(two)} | {'–' if not one or not two else f'{2 * one / two:.2f}×'} |")
