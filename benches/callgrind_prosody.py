#!/usr/bin/env python3
"""Instructions per message of a live Prosody, natively and with mod_cmr
(make bench-callgrind-prosody; PATH=/tmp/p12bin:$PATH for another Prosody).

Each server runs under callgrind (`lua5.4 prosody`, the lean config of
benches/throughput.py: no archive, no carbons). A raw-socket sender of
another account writes chat messages to an account's bare JID, with (a) one
session, (b) two sessions at priority 0: natively both get each message
(Prosody's own rule), and with mod_cmr too, under `all` (the default). Only
windows are counted: the counters are zeroed when the sender starts
writing and dumped once the receivers have every copy. A window of SMALL
messages and one of SMALL + MESSAGES are taken in turn; their difference
divided by MESSAGES is the cost of one message, free of what a window costs
whatever its length. ROUNDS pairs, the median.

With --handler, no server: benches/prosody/handler_bench.lua fires the
messages at mod_message and at mod_cmr loaded into a stand-in of Prosody's
module API (the events, filters and sessions' stanzas/out filters are
Prosody's own), under callgrind; what the server does around them is left
out, so the module's own cost shows without a server's noise.

With --profile, the same traffic (PROFILE_MESSAGES messages, no valgrind)
goes to servers that also load benches/prosody/mod_lua_sampler.lua, and the
Lua-level profile of each is printed."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHES.parent / "tests" / "conformance"))
sys.path.insert(0, str(BENCHES))

from hosts.prosody import ProsodyHost  # noqa: E402
from throughput import count_messages, session  # noqa: E402

MESSAGES = int(os.environ.get("CMR_CALLGRIND_MESSAGES", 1000))
SMALL = 200
ROUNDS = int(os.environ.get("CMR_CALLGRIND_ROUNDS", 3))
PROFILE_MESSAGES = 20_000
HANDLER_MESSAGES = 5_000
TIMEOUT = 600
SCENARIOS = [("one session", 1), ("two sessions, all", 2)]


class Callgrind:
    """A server's callgrind run: its dumps, and the calls that zero and dump
    its counters (by pid and a private vgdb prefix: other runs may be on)."""

    def __init__(self, workdir):
        self.dir = Path(workdir) / "callgrind"
        self.dir.mkdir(parents=True)
        self.prefix = str(self.dir / "vgdb")
        self.launcher = ["valgrind", "--tool=callgrind", f"--vgdb-prefix={self.prefix}",
                         f"--callgrind-out-file={self.dir}/callgrind.out", "--dump-instr=no"]
        self.pid = None

    def control(self, *arguments):
        subprocess.run(["callgrind_control", f"--vgdb-prefix={self.prefix}", *arguments, str(self.pid)],
                       check=True, capture_output=True, timeout=TIMEOUT)

    def dumps(self):
        return sorted(self.dir.glob("callgrind.out.*"))

    def dumped(self):
        """Dumps the counters and returns the instructions since the last
        zero or dump."""
        before = len(self.dumps())
        self.control("--dump")
        deadline = time.monotonic() + TIMEOUT
        while len(self.dumps()) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError("callgrind wrote no dump")
            time.sleep(0.05)
        latest = max(self.dumps(), key=lambda path: int(path.name.rsplit(".", 1)[1]))
        # The file is complete once its totals line is written.
        while True:
            for line in latest.read_text().splitlines():
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
            time.sleep(0.05)


def traffic(host, account, sessions, messages, before_send=lambda: None):
    """Logs in `sessions` receivers of `account` at priority 0 and a sender
    of another account; writes `messages` chat messages to the bare JID
    after `before_send()` and waits until each receiver has them all."""
    receivers = [session(host, account, f"node-{i}", 0) for i in range(sessions)]
    sender = session(host, host.account(), "probe", None)
    # Each receiver's presence has reached the server before the first
    # message: a round trip on its stream proves it.
    for receiver in receivers:
        receiver.iq("<query xmlns='jabber:iq:roster'/>")
    counts, stop = [0] * sessions, threading.Event()
    counter = threading.Thread(target=count_messages, args=(receivers, counts, stop))
    counter.start()
    payload = "".join(f"<message to='{account}' type='chat'><body>m{i}</body></message>"
                      for i in range(messages)).encode()
    try:
        before_send()
        sender.sock.sendall(payload)
        deadline = time.monotonic() + TIMEOUT
        while min(counts) < messages:
            if host.process.poll() is not None:
                raise RuntimeError(f"the server exited with {host.process.returncode}: see {host.dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {counts} of {messages} delivered in {TIMEOUT} s")
            time.sleep(0.01)
    finally:
        stop.set()
        counter.join()
        for s in (sender, *receivers):
            s.sock.close()


def window(host, grind, account, sessions, messages):
    """The instructions of one window of `messages` messages."""
    traffic(host, account, sessions, messages, before_send=lambda: grind.control("--zero"))
    return grind.dumped()


def measure(work, with_cmr, plugins=None):
    """Instructions per message for each scenario, on one server."""
    grind = Callgrind(work)
    host = ProsodyHost(work / "server", with_cmr=with_cmr, modules=ProsodyHost.LEAN, launcher=grind.launcher,
                       **({"plugins": plugins} if plugins else {}))
    host.start()
    grind.pid = host.process.pid
    try:
        result = {}
        for label, sessions in SCENARIOS:
            account = host.account()
            # A first window warms the server up (Lua's tables and strings,
            # the account's first messages); not counted.
            window(host, grind, account, sessions, SMALL)
            figures = []
            for _ in range(ROUNDS):
                small = window(host, grind, account, sessions, SMALL)
                large = window(host, grind, account, sessions, SMALL + MESSAGES)
                figures.append((large - small) / MESSAGES)
            result[label] = figures
            print(f"  {'mod_cmr' if with_cmr else 'native':<8} {label:<18}: "
                  + ", ".join(f"{f:,.0f}" for f in figures), flush=True)
        return result
    finally:
        host.stop()


def profile(work, with_cmr, plugins=None):
    """The Lua-level profile of a server under the benchmark's traffic."""
    out = work / "lua-profile.txt"
    host = ProsodyHost(work / "server", with_cmr=with_cmr, modules=ProsodyHost.LEAN + ["lua_sampler"],
                       plugin_paths=[BENCHES / "prosody"], extra_config=f'lua_sampler_file = "{out}"',
                       **({"plugins": plugins} if plugins else {}))
    host.start()
    try:
        for _, sessions in SCENARIOS:
            traffic(host, host.account(), sessions, PROFILE_MESSAGES)
    finally:
        host.stop()
    return out.read_text()


def handler_costs(plugins):
    """Instructions per message of the handler's path, natively and with
    mod_cmr, per scenario: HANDLER_MESSAGES more messages, the difference."""
    script = BENCHES / "prosody" / "handler_bench.lua"
    source = prosody_source()
    module = (plugins or BENCHES.parent / "build" / "prosody") / "mod_cmr"

    def total(which, sessions, messages):
        run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "lua5.4", str(script),
                              source, str(module), which, str(sessions), str(messages)],
                             capture_output=True, text=True, check=True, timeout=TIMEOUT)
        return int(run.stderr.split("Collected : ")[1].split()[0])

    print(f"  {'scenario':<18} {'native':>9} {'mod_cmr':>9} {'more':>7}")
    for label, sessions in SCENARIOS:
        n, c = ((total(which, sessions, SMALL + HANDLER_MESSAGES) - total(which, sessions, SMALL)) / HANDLER_MESSAGES
                for which in ("native", "cmr"))
        print(f"  {label:<18} {n:9,.0f} {c:9,.0f} {c - n:7,.0f}", flush=True)


def prosody_source():
    """The source folder of the Prosody that `prosody` on PATH runs."""
    script = Path(shutil.which("prosody")).read_text()
    return next((line.split("'")[1] for line in script.splitlines() if line.startswith("CFG_SOURCEDIR=")),
                "/usr/lib/prosody")


def version():
    """The Prosody that runs: the one `prosody` on PATH names."""
    for candidate in (Path(prosody_source()) / "prosody.version", Path("/usr/lib/prosody/prosody.version")):
        if candidate.exists():
            return candidate.read_text().strip()
    return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handler", action="store_true", help="the handler's path alone, without a server")
    parser.add_argument("--profile", action="store_true", help="print a Lua-level profile instead")
    parser.add_argument("--plugins", type=Path, help="mod_cmr's folder's parent, for another build (default build/prosody)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders and callgrind's dumps")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cmr-callgrind-"))
    print(f"Prosody {version()}", flush=True)
    if arguments.handler:
        print(f"instructions per message of the handler's path (runs of {SMALL} and {SMALL + HANDLER_MESSAGES} "
              "messages):", flush=True)
        handler_costs(arguments.plugins)
        return
    if arguments.profile:
        for with_cmr in (False, True):
            print(f"\n== {'mod_cmr' if with_cmr else 'native'}: Lua profile, {len(SCENARIOS)} × "
                  f"{PROFILE_MESSAGES} messages ==")
            print(profile(work / ("cmr" if with_cmr else "native"), with_cmr, arguments.plugins))
        return
    print(f"instructions per message (windows of {SMALL} and {SMALL + MESSAGES} messages, {ROUNDS} rounds):",
          flush=True)
    # CMR_CALLGRIND_NATIVE: native's figures from an earlier run (one per
    # scenario, comma-separated), to try changes to mod_cmr faster.
    given = os.environ.get("CMR_CALLGRIND_NATIVE")
    native = ({label: [float(value)] for (label, _), value in zip(SCENARIOS, given.split(","))} if given
              else measure(work / "native", False))
    cmr = measure(work / "cmr", True, arguments.plugins)
    print(f"medians over {ROUNDS} rounds:")
    print(f"  {'scenario':<18} {'native':>9} {'mod_cmr':>9} {'ratio':>6}")
    for label, _ in SCENARIOS:
        n, c = statistics.median(native[label]), statistics.median(cmr[label])
        print(f"  {label:<18} {n:9,.0f} {c:9,.0f} {c / n:6.3f}")
    if arguments.keep:
        print(f"callgrind's dumps: {work}/*/callgrind (callgrind_annotate --inclusive=yes FILE)")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
