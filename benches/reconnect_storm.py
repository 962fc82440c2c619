#!/usr/bin/env python3
"""A reconnect storm (make bench-storm HOST=prosody|ejabberd SESSIONS=N):
N sessions of one account log in at once, then one chat message goes to the
account's bare JID. Two servers run side by side on loopback with the same
lean config (no archive, no carbons): natively (the server delivers to every
session of the top priority: all N) and with mod_cmr under round robin (one
session). The rounds alternate. Per round:

- storm: from the first connect to the last session's answer to an IQ sent
  after its available presence (a session's stanzas are processed in order,
  so by then the server has processed that presence), and the server's CPU
  seconds over it (/proc);
- message: from writing the message (from another account, logged in before
  the storm) to its first delivery, and to the last of the copies the setup
  delivers;
- logout: every session closes its stream at once, until the server has
  closed them all.

One asyncio process holds every session: PLAIN login with the stream's
round trips (features, success, features), then bind, presence and the IQ in
one write. After that a session only scans what it reads for two markers."""

import argparse
import asyncio
import base64
import collections
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from conftest import host_class  # noqa: E402
from rawxmpp import NS_SASL, NS_STREAM  # noqa: E402
from throughput import cpu_seconds, session, set_algorithm  # noqa: E402

# Each server's own limits on a storm, lifted for the benchmark only. The
# listen backlog (128 by default on both) would drop the burst's SYNs, which
# the clients resend only after a second or more: it gets the kernel's
# somaxconn. ejabberd kills a session whose process queue passes
# max_fsm_queue (10,000), which the presence fan-out of a big account fills;
# max_user_sessions is unlimited when unset, said here all the same; the
# client listener has no shaper unless given one, and OTP 25 allows 65,536
# ports (ERL_MAX_PORTS) by default. Prosody 13 has no session or descriptor
# limit of its own (mod_limits is not loaded; its epoll backend has no
# max_connections). Both inherit the descriptor limit raised below.
SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())
TUNING = {
    "prosody": dict(extra_config=f"network_settings = {{ tcp_backlog = {SOMAXCONN} }}"),
    "ejabberd": dict(c2s_options=f"    backlog: {SOMAXCONN}\n    max_fsm_queue: 100000000",
                     extra_config="shaper_rules:\n  max_user_sessions: infinity"),
}
# What a round of both setups does in about a minute on 2 cores. Each
# server's own presence fan-out to the account's other sessions makes a storm
# quadratic in stanzas natively (every session gets every other's presence),
# and ejabberd's routing to a full JID reads all the account's sessions, so
# there it is cubic: BENCHMARKS.md ("Reconnect storm") has the figures, and
# why 5,000 sessions do not fit.
SESSIONS = {"prosody": 300, "ejabberd": 150}
# Descriptors beyond the sessions': the servers' own files and sockets.
SPARE_FDS = 256

# What a session scans for once it has sent its presence: the answer to its
# IQ (either quoting), then the message's body.
READY = (b"id='storm'", b'id="storm"')
BODY = b"storm-message"


class Fleet:
    """The sessions of one round and what they saw."""

    def __init__(self, host, jid, count, expected):
        """`expected`: the copies of the message the setup delivers."""
        self.host, self.jid, self.count, self.expected = host, jid, count, expected
        self.sessions = []
        self.ready = 0
        self.deliveries = 0
        self.failures = []
        loop = asyncio.get_running_loop()
        self.all_ready = loop.create_future()
        self.first_delivery = None
        self.expected_delivered = loop.create_future()
        # Set once the client closes the sessions: a close before that fails the round.
        self.closing = False

    def failed(self, index, reason):
        self.failures.append(f"session {index}: {reason}")
        for future in (self.all_ready, self.expected_delivered):
            if not future.done():
                future.set_exception(RuntimeError(f"{self.failures[0]} ({len(self.failures)} failed)"))


class StormSession(asyncio.Protocol):
    """One session of the fleet: a state machine over what it reads."""

    def __init__(self, fleet, index):
        self.fleet, self.index = fleet, index
        user, self.domain = fleet.jid.split("@")
        self.token = base64.b64encode(f"\0{user}\0{fleet.host.password}".encode()).decode()
        self.buffer = b""
        self.step = "features"
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def header(self):
        self.transport.write(f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
                             f"xmlns:stream='{NS_STREAM}' version='1.0'>".encode())

    def connection_made(self, transport):
        self.transport = transport
        self.header()

    def data_received(self, data):
        if self.step in ("online", "ready"):
            self.scan(data)
            return
        self.buffer += data
        if self.step == "features" and b"</stream:features>" in self.buffer:
            self.buffer, self.step = b"", "auth"
            self.transport.write(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{self.token}</auth>".encode())
        elif self.step == "auth" and b"<failure" in self.buffer:
            self.fleet.failed(self.index, "login refused")
            self.transport.close()
        elif self.step == "auth" and b"<success" in self.buffer:
            self.buffer, self.step = b"", "restarted"
            self.header()
        elif self.step == "restarted" and b"</stream:features>" in self.buffer:
            self.buffer, self.step = b"", "online"
            self.transport.write(
                f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<resource>s{self.index}</resource></bind></iq><presence/>"
                f"<iq type='get' id='storm' to='{self.domain}'>"
                f"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>".encode())

    def scan(self, data):
        """Looks for the IQ's answer, then counts the message's copies; a
        marker cut by a read is found once (the carried tail is one byte
        shorter than a marker)."""
        chunk = self.tail + data
        self.tail = chunk[-(len(BODY) - 1):]
        fleet = self.fleet
        if self.step == "online":
            if not any(marker in chunk for marker in READY):
                return
            self.step = "ready"
            fleet.ready += 1
            if fleet.ready == fleet.count:
                fleet.all_ready.set_result(time.monotonic())
        copies = chunk.count(BODY)
        if copies:
            if fleet.first_delivery is None:
                fleet.first_delivery = time.monotonic()
            fleet.deliveries += copies
            if fleet.deliveries == fleet.expected and not fleet.expected_delivered.done():
                fleet.expected_delivered.set_result(time.monotonic())

    def connection_lost(self, exc):
        if self.step != "ready" or not self.fleet.closing:
            self.fleet.failed(self.index, f"connection lost in step {self.step}: {exc or 'closed by the server'}")
        self.closed.set_result(None)


async def storm_round(host, jid, sender, count, expected, timeout):
    """One round on `host`: returns the storm's seconds and the server's CPU
    seconds over it, the first delivery's and the expected copies' seconds,
    the logout's seconds and CPU seconds, and the copies delivered."""
    loop = asyncio.get_running_loop()
    fleet = Fleet(host, jid, count, expected)
    cpu = cpu_seconds(host)
    start = time.monotonic()
    connected = await asyncio.gather(*(loop.create_connection(lambda i=i: StormSession(fleet, i), "127.0.0.1", host.port)
                                       for i in range(count)), return_exceptions=True)
    refused = [c for c in connected if isinstance(c, BaseException)]
    if refused:
        raise RuntimeError(f"{len(refused)} of {count} connections failed: {refused[0]!r}")
    fleet.sessions = [protocol for _, protocol in connected]
    try:
        ready = await asyncio.wait_for(fleet.all_ready, timeout)
    except asyncio.TimeoutError:
        steps = collections.Counter(protocol.step for protocol in fleet.sessions)
        raise RuntimeError(f"{fleet.ready} of {count} sessions ready after {timeout} s; "
                           f"sessions per step: {dict(steps)}") from None
    storm_cpu = cpu_seconds(host) - cpu
    sent = time.monotonic()
    sender.send(f"<message to='{jid}' type='chat'><body>{BODY.decode()}</body></message>")
    try:
        all_copies = await asyncio.wait_for(fleet.expected_delivered, timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{fleet.deliveries} of {expected} copies delivered after {timeout} s") from None
    fleet.closing = True
    closing, cpu = time.monotonic(), cpu_seconds(host)
    for protocol in fleet.sessions:
        protocol.transport.write(b"</stream:stream>")
    await asyncio.wait_for(asyncio.gather(*(protocol.closed for protocol in fleet.sessions)), timeout)
    closed, logout_cpu = time.monotonic(), cpu_seconds(host) - cpu
    # Every byte a session was sent is read before its connection closes:
    # copies beyond the expected ones are counted here.
    return dict(storm=ready - start, storm_cpu=storm_cpu, first=fleet.first_delivery - sent,
                all=all_copies - sent, logout=closed - closing, logout_cpu=logout_cpu, copies=fleet.deliveries)


def raise_fd_limit(sessions):
    """Raises this process's descriptor limit to its hard limit; the servers
    started after inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = sessions + SPARE_FDS
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"error: {sessions} sessions need {needed} descriptors; the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, help="sessions of the account (default: the host's in SESSIONS)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase of a round may take")
    args = parser.parse_args()
    Host = host_class()
    if Host.name not in TUNING:
        sys.exit(f"error: the storm runs on {' and '.join(TUNING)}, not {Host.name}")
    args.sessions = args.sessions or SESSIONS[Host.name]
    limit = raise_fd_limit(args.sessions)
    work = Path(tempfile.mkdtemp(prefix="cmr-bench-storm-"))
    native = Host(work / "native", with_cmr=False, modules=Host.LEAN, **TUNING[Host.name])
    cmr = Host(work / "cmr", modules=Host.LEAN, **TUNING[Host.name])
    results = {"native": [], "mod_cmr roundrobin": []}
    try:
        for host in (native, cmr):
            host.start()
        jid = native.account()
        assert cmr.account() == jid
        set_algorithm(cmr, jid, "urn:xmpp:cmr:roundrobin")
        sender_jid = native.account()
        setups = [("native", native, args.sessions), ("mod_cmr roundrobin", cmr, 1)]
        print(f"{Host.name}: {args.sessions} sessions of {jid}, descriptor limit {limit}", flush=True)
        for round_number in range(1, args.rounds + 1):
            for label, host, expected in setups:
                with session(host, sender_jid, "sender", 0) as sender:
                    figures = asyncio.run(storm_round(host, jid, sender, args.sessions, expected, args.timeout))
                results[label].append(figures)
                print(f"round {round_number} {label:>18}: storm {figures['storm']:7.2f} s "
                      f"({figures['storm_cpu']:6.2f} s server CPU), message: first {figures['first'] * 1e3:8.1f} ms, "
                      f"all {figures['all'] * 1e3:8.1f} ms, "
                      f"copies {figures['copies']}, logout {figures['logout']:6.2f} s "
                      f"({figures['logout_cpu']:6.2f} s server CPU)", flush=True)
    finally:
        for host in (native, cmr):
            host.stop()
    report(Host.name, args.sessions, results)


def report(title, sessions, results):
    print(f"{title}: medians over {len(results['native'])} rounds of {sessions} sessions of one account:")
    print(f"  {'setup':<20} {'storm s':>8} {'CPU s':>7} {'first ms':>9} {'all ms':>9} {'copies':>7}"
          f" {'logout s':>9} {'CPU s':>7}")
    for label, rounds in results.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(f"  {label:<20} {median['storm']:8.2f} {median['storm_cpu']:7.2f} {median['first'] * 1e3:9.1f}"
              f" {median['all'] * 1e3:9.1f} {median['copies']:7.0f} {median['logout']:9.2f}"
              f" {median['logout_cpu']:7.2f}")


if __name__ == "__main__":
    main()
