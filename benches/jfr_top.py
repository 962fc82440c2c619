#!/usr/bin/env python3
"""Where a JVM's time and allocations went, from a Java Flight Recorder
file: the methods with the largest shares of the execution samples (self:
the sample's top frame; total: anywhere on its stack), the native methods
that Java code was in, and the bytes allocated by the allocating method
(`jfr print --json`, JDK 17's jfr has no summary by method).

    benches/jfr_top.py FILE.jfr [--top N] [--under METHOD]

--under keeps the samples whose stack holds METHOD (Class.method, the
class's simple name): the shares are then of those samples, and the
header says how many of all they are."""

import argparse
import collections
import json
import subprocess

EVENTS = ("jdk.ExecutionSample", "jdk.NativeMethodSample", "jdk.ObjectAllocationSample")


def frames(event):
    """The event's stack as Class.method names, top first."""
    trace = event["values"].get("stackTrace") or {}
    names = []
    for frame in trace.get("frames") or []:
        method = frame["method"]
        names.append(f"{method['type']['name'].replace('/', '.').rsplit('.', 1)[-1]}.{method['name']}")
    return names


def read(path):
    """The file's samples: {event name: [(stack, weight)]}."""
    text = subprocess.run(["jfr", "print", "--json", "--stack-depth", "128", "--events", ",".join(EVENTS),
                           str(path)], check=True, capture_output=True, text=True).stdout
    samples = collections.defaultdict(list)
    for event in json.loads(text)["recording"]["events"]:
        weight = event["values"].get("weight", 1) if event["type"] == "jdk.ObjectAllocationSample" else 1
        samples[event["type"]].append((frames(event), weight))
    return samples


def shares(samples, top):
    """Self and total weight per method, as the `top` largest shares."""
    whole = sum(weight for _, weight in samples) or 1
    own, anywhere = collections.Counter(), collections.Counter()
    for stack, weight in samples:
        if stack:
            own[stack[0]] += weight
        for name in set(stack):
            anywhere[name] += weight
    return ([(name, count / whole) for name, count in own.most_common(top)],
            [(name, count / whole) for name, count in anywhere.most_common(top)])


def report(path, top=20, under=None):
    """Prints the file's top methods, as the module's docstring says."""
    samples = read(path)
    if under:
        samples = {kind: [(stack, weight) for stack, weight in found if under in stack]
                   for kind, found in samples.items()}
    executed = samples.get("jdk.ExecutionSample", [])
    print(f"{path}: {len(executed)} execution samples" + (f" holding {under}" if under else ""))
    own, anywhere = shares(executed, top)
    print(f"  {'self':>6}  method{' ' * 44}{'total':>6}  method")
    for row in range(max(len(own), len(anywhere))):
        left = f"{own[row][1]:6.1%}  {own[row][0]:<50}" if row < len(own) else " " * 58
        right = f"{anywhere[row][1]:6.1%}  {anywhere[row][0]}" if row < len(anywhere) else ""
        print(f"  {left}{right}")
    # Threads in native code: the JNI pick is there, beside threads that
    # wait in epoll or a socket read (not CPU).
    native = collections.Counter(stack[0] for stack, _ in samples.get("jdk.NativeMethodSample", []) if stack)
    print("  native methods (threads in native code, waiting ones too): "
          + ", ".join(f"{name} {count}" for name, count in native.most_common(8)))
    allocated = samples.get("jdk.ObjectAllocationSample", [])
    own, _ = shares(allocated, top // 2)
    print(f"  allocation by allocating method ({sum(w for _, w in allocated) / 2**20:.0f} MiB sampled): "
          + ", ".join(f"{name} {share:.1%}" for name, share in own))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--under")
    arguments = parser.parse_args()
    for path in arguments.files:
        report(path, arguments.top, arguments.under)


if __name__ == "__main__":
    main()
