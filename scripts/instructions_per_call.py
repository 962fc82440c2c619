#!/usr/bin/env python3
"""Instructions per call of one C ABI function, counted by callgrind while a
criterion benchmark runs: the steady figure beside criterion's times, which
drift on a shared machine.

    scripts/instructions_per_call.py BENCH FUNCTION FILTER...

runs `cargo bench --bench BENCH` once per FILTER (a criterion benchmark id,
matched exactly) under `valgrind --tool=callgrind`, collecting only inside
FUNCTION, and prints its instructions divided by its calls. Example (the
pick bench sets up only the account counts in CMR_BENCH_ACCOUNTS):

    CMR_BENCH_ACCOUNTS=1 scripts/instructions_per_call.py pick cmr_router_pick pick/1-accounts/roundrobin/hot
"""

import json
import re
import subprocess
import sys
import tempfile


def bench_binary(bench):
    out = subprocess.run(["cargo", "bench", "--bench", bench, "--no-run", "--message-format=json"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == bench:
            return message["executable"]
    sys.exit(f"no executable for bench {bench}")


def per_call(binary, function, benchmark):
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
                        f"--toggle-collect={function}", binary, "--bench", "--profile-time", "1",
                        f"^{re.escape(benchmark)}$"], check=True, capture_output=True)
        lines = open(out.name).read().splitlines()
    names = {}
    for line in lines:
        named = re.match(r"c?fn=\((\d+)\) (.*)", line)
        if named:
            names[named.group(1)] = named.group(2)
    ids = {i for i, name in names.items() if name == function or name.endswith("::" + function)}
    calls = 0
    for i, line in enumerate(lines):
        callee = re.match(r"cfn=\((\d+)\)", line)
        if callee and callee.group(1) in ids:
            calls += int(re.match(r"calls=(\d+)", lines[i + 1]).group(1))
    total = next(int(line.split()[1]) for line in lines if line.startswith("summary:"))
    return total // calls, calls


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bench, function, benchmarks = sys.argv[1], sys.argv[2], sys.argv[3:]
    binary = bench_binary(bench)
    for benchmark in benchmarks:
        instructions, calls = per_call(binary, function, benchmark)
        print(f"{benchmark}\t{instructions:,} instructions per call ({calls:,} calls)")


if __name__ == "__main__":
    main()
