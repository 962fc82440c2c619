#!/usr/bin/env python3
"""A server's throughput with mod_cmr against the same server natively
(make bench-throughput HOST=prosody|ejabberd). One raw-socket sender logs in and writes MESSAGES chat
messages to an account with two sessions as fast as the server takes them;
the run ends when the two receivers have counted them all. Both setups
deliver each message once: with mod_cmr, round robin over two sessions at
priority 0; natively, the second session at priority -1. The two servers
run side by side with the same lean config (no archive, no carbons), and
the runs alternate.

--one-session runs native and the one-session setup only. --jfr DIR
(Openfire) records each counted run with Java Flight Recorder,
started and written by jcmd around the run, into DIR/<setup>.jfr, and
prints each setup's top methods (benches/jfr_top.py); the recorder's own
cost is in that run's figures."""

import argparse
import os
import shutil
import subprocess
import selectors
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from conftest import host_class  # noqa: E402
from jfr_top import report as jfr_report  # noqa: E402
from rawxmpp import RawSession  # noqa: E402

MESSAGES = 50_000
ROUNDS = 7
TIMEOUT = 120


def count_messages(sessions, counts, stop):
    """Counts `</message>` on every session into `counts`, in one thread (so
    that both setups cost the load generator the same, one or two busy
    sockets)."""
    selector = selectors.DefaultSelector()
    tails = [b""] * len(sessions)
    for index, receiver in enumerate(sessions):
        receiver.sock.setblocking(False)
        selector.register(receiver.sock, selectors.EVENT_READ, index)
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.1):
            index = key.data
            try:
                data = sessions[index].sock.recv(1 << 20)
            except BlockingIOError:
                continue
            # Nine carried bytes cannot hold a whole marker, so none is
            # counted twice, and one cut by the read is counted once.
            chunk = tails[index] + data
            counts[index] += chunk.count(b"</message>")
            tails[index] = chunk[-9:]
    selector.close()


def cpu_seconds(host):
    """The server process's CPU time so far (user and system), from /proc."""
    fields = Path(f"/proc/{host.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(host, account, sender_jid, second_priority, sender_host=None, servers=None):
    """One run: returns messages per second, the server's CPU microseconds
    per message and the deliveries per session. In a cluster the sender may
    log in to another node (`sender_host`), and the CPU of all `servers`
    counts."""
    servers = servers or [host]
    receivers = [session(host, account, "node-0", 0), session(host, account, "node-1", second_priority)]
    sender = session(sender_host or host, sender_jid, "probe", 0)
    time.sleep(0.3)
    stop = threading.Event()
    counts = [0] * len(receivers)
    counter = threading.Thread(target=count_messages, args=(receivers, counts, stop))
    counter.start()
    payload = "".join(f"<message to='{account}' type='chat'><body>m{i}</body></message>"
                      for i in range(MESSAGES)).encode()
    cpu = sum(cpu_seconds(server) for server in servers)
    start = time.monotonic()
    sender.sock.sendall(payload)
    while sum(counts) < MESSAGES and time.monotonic() - start < TIMEOUT:
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    cpu = sum(cpu_seconds(server) for server in servers) - cpu
    stop.set()
    counter.join()
    for s in (sender, *receivers):
        s.sock.close()
    if sum(counts) < MESSAGES:
        raise RuntimeError(f"only {sum(counts)} of {MESSAGES} delivered in {TIMEOUT} s")
    return MESSAGES / elapsed, cpu * 1e6 / MESSAGES, counts


def session(host, jid, resource, priority):
    """A session of `jid` on `host`, available at `priority`. Its socket
    may take the whole run to write the messages."""
    return RawSession(host.port, jid, host.password, resource, priority, timeout=TIMEOUT)


def set_algorithm(host, jid, algorithm):
    """Sets an account's algorithm with a XEP-0354 set from one of its
    sessions (an error answer raises)."""
    with session(host, jid, "setup", 0) as setup:
        setup.iq(f"<cmr xmlns='urn:xmpp:cmr:0' algorithm='{algorithm}'/>", kind="set")


class Recorder:
    """Java Flight Recorder around each run of a setup, in the server's own
    JVM: JDK 17's profile settings with execution and native method
    samples every millisecond instead of 10 and 20 (runs last about a
    second). A setup's recordings go one after the other into one file,
    which jfr reads as one (a recording is a sequence of chunks)."""

    def __init__(self, folder):
        # Absolute: jcmd hands paths to the server, which has its own folder.
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.jfr"):
            old.unlink()
        java_home = Path(shutil.which("java")).resolve().parents[1]
        settings = ET.parse(java_home / "lib" / "jfr" / "profile.jfc")
        for event in settings.getroot().iter("event"):
            if event.get("name") in ("jdk.ExecutionSample", "jdk.NativeMethodSample"):
                event.find("setting[@name='period']").text = "1 ms"
        self.settings = self.folder / "settings.jfc"
        settings.write(self.settings)

    def files(self):
        return sorted(self.folder.glob("*.jfr"))

    def run(self, label, arguments):
        """`run(**arguments)`, recorded into the setup's file."""
        pid = str(arguments["host"].process.pid)
        subprocess.run(["jcmd", pid, "JFR.start", "name=bench", f"settings={self.settings}"],
                       check=True, capture_output=True, timeout=120)
        try:
            return run(**arguments)
        finally:
            part = self.folder / "part.jfr.tmp"
            subprocess.run(["jcmd", pid, "JFR.stop", "name=bench", f"filename={part}"],
                           check=True, capture_output=True, timeout=120)
            with open(self.folder / f"{label.replace(' ', '-')}.jfr", "ab") as whole:
                whole.write(part.read_bytes())
            part.unlink()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jfr", metavar="DIR", help="Openfire: record each counted run with JFR into DIR")
    parser.add_argument("--one-session", action="store_true",
                        help="native and mod_cmr one session only: the server with mod_cmr runs nothing else")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cmr-bench-"))
    Host = host_class()
    if options.jfr and Host.name != "openfire":
        parser.error("--jfr records a JVM: CMR_HOST=openfire")
    recorder = Recorder(options.jfr) if options.jfr else None
    native = Host(work / "native", with_cmr=False, modules=Host.LEAN)
    cmr = Host(work / "cmr", modules=Host.LEAN)
    for host in (native, cmr):
        host.start()
    # Each delivers each message once: the second session of native and
    # one-session setups is at priority -1.
    setups = [("native", dict(host=native, account=native.account(), sender_jid=native.account(), second_priority=-1)),
              ("mod_cmr roundrobin", dict(host=cmr, account=cmr.account(), sender_jid=cmr.account(), second_priority=0)),
              ("mod_cmr one session", dict(host=cmr, account=cmr.account(), sender_jid=cmr.account(),
                                           second_priority=-1))]
    set_algorithm(cmr, setups[1][1]["account"], "urn:xmpp:cmr:roundrobin")
    set_algorithm(cmr, setups[2][1]["account"], "urn:xmpp:cmr:mostactive")
    if options.one_session:
        # Round robin's garbage and compilations would land in the
        # one-session runs of the same JVM.
        del setups[1]
    try:
        # A JVM server compiles its hot paths during the first rounds: those
        # run, uncounted, until both servers are warm.
        rates, costs = measure(setups, getattr(Host, "warmup_rounds", 0), recorder)
    finally:
        for host in (native, cmr):
            host.stop()
    report(Host.name, rates, costs)
    for recording in recorder.files() if recorder else []:
        jfr_report(recording)


def measure(setups, warmup=0, recorder=None):
    """Runs each (label, run's arguments) setup once per round, the setups
    alternating; returns each one's rates and costs over the counted
    rounds, which the recorder (if any) records."""
    rates = {label: [] for label, _ in setups}
    costs = {label: [] for label, _ in setups}
    for round_number in range(-warmup, ROUNDS):
        for label, arguments in setups:
            if recorder and round_number >= 0:
                rate, cost, split = recorder.run(label, arguments)
            else:
                rate, cost, split = run(**arguments)
            if round_number >= 0:
                rates[label].append(rate)
                costs[label].append(cost)
            name = f"round {round_number + 1}" if round_number >= 0 else "warm-up"
            print(f"{name:<8} {label:>20}: {rate:8.0f} msg/s  {cost:5.1f} µs server CPU per message"
                  f"  deliveries per session {split}", flush=True)
    return rates, costs


def report(title, rates, costs):
    """Medians per setup, and their ratios to the one labelled native."""
    rate = {label: statistics.median(values) for label, values in rates.items()}
    cost = {label: statistics.median(values) for label, values in costs.items()}
    # Wall-clock rates swing with the machine's other load; the server's own
    # CPU time per message swings much less.
    print(f"{title}: medians over {len(rates['native'])} rounds of {MESSAGES} messages:")
    print(f"  {'setup':<20} {'msg/s':>8} {'ratio':>6} {'µs CPU/msg':>11} {'ratio':>6}")
    for label in rates:
        print(f"  {label:<20} {rate[label]:8.0f} {rate[label] / rate['native']:6.3f}"
              f" {cost[label]:11.1f} {cost['native'] / cost[label]:6.3f}")


if __name__ == "__main__":
    main()
