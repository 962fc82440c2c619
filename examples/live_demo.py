#!/usr/bin/env python3
"""`make demo`: XEP-0354 in a real server. Starts Prosody (or ejabberd, or Openfire) on loopback
with mod_cmr, connects four cluster nodes on one account and a fleet of
sensors, sends messages under each algorithm and prints how many each node
got, next to native Prosody (the same scenario with the module off).
CMR_HOST picks the server (default prosody)."""

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from conftest import make_host  # noqa: E402
from xmpp import close, online, send_messages, settle, wait_for, withhold_acks  # noqa: E402

PRIORITIES = [2, 2, 1, 1]
SENSORS = 16
PER_SENSOR = 50
ALGORITHMS = [
    "urn:xmpp:cmr:all", "urn:xmpp:cmr:mostactive", "urn:xmpp:cmr:roundrobin", "urn:xmpp:cmr:weighted",
    "urn:x-cmr:algorithm:random", "urn:x-cmr:algorithm:sticky", "urn:x-cmr:algorithm:leastloaded",
]
OVERLOAD_FROM = ALGORITHMS[-2]


async def run_cluster(host, label_algorithms):
    account = host.account()
    nodes = [await online(host, account, f"node-{i + 1}", priority=p, smacks=True)
             for i, p in enumerate(PRIORITIES)]
    sensors = [await online(host, host.account(), "probe") for _ in range(SENSORS)]
    for label, algorithm in label_algorithms:
        if algorithm:
            await nodes[0].set_algorithm(algorithm)
        if algorithm == OVERLOAD_FROM:
            # node-4 is overloaded: it stops acknowledging (XEP-0198), so
            # its queue, the load leastloaded looks at, only grows. From the
            # round before leastloaded only, since ejabberd closes a stream
            # whose acks stay away for a minute.
            withhold_acks(nodes[3])
        await settle(0.2)
        for n in nodes:
            n.messages.clear()
        for burst in range(PER_SENSOR // 10):
            for s in sensors:
                send_messages(s, account, 10, prefix=f"{label}-{burst}")
            await settle(0.02)
        # Two sessions share the top priority: `all` gives each a copy, and
        # so does the server natively, unless it picks one (Openfire).
        copies = 2 if algorithm == "urn:xmpp:cmr:all" or (algorithm is None and host.native_copies_to_top) else 1
        expected = SENSORS * PER_SENSOR * copies
        await wait_for(lambda: sum(len(n.messages) for n in nodes) >= expected, timeout=20)
        await settle(0.3)
        print_row(label, [len(n.messages) for n in nodes])
    await close(*sensors, *nodes)


def print_row(label, counts):
    print(f"{label:<36}" + "".join(f"{c:>8}" for c in counts) + f"{sum(counts):>12}", flush=True)


async def main():
    work = Path(tempfile.mkdtemp(prefix="cmr-demo-"))
    # No archive: ejabberd's packaged archive backend (Mnesia) slows down
    # with each message stored for one account, and this sends thousands.
    native = make_host(work / "native", with_cmr=False, archive=False)
    cmr = make_host(work / "cmr", archive=False)
    print(f"{SENSORS * PER_SENSOR} messages from {SENSORS} sensors to one account with four nodes, "
          f"priorities {PRIORITIES}; from the sticky round on, node-4 stops acknowledging (XEP-0198).")
    print(f"Live {native.name} on 127.0.0.1, once without mod_cmr and once with it.\n")
    print(f"{'algorithm':<36}" + "".join(f"{'node-' + str(i + 1):>8}" for i in range(4)) + f"{'deliveries':>12}")
    native.start()
    try:
        await run_cluster(native, [(f"native {native.name} (no module)", None)])
    finally:
        native.stop()
    cmr.start()
    try:
        await run_cluster(cmr, [(a, a) for a in ALGORITHMS])
    finally:
        cmr.stop()
    native_all = "(as native)" if cmr.native_copies_to_top else f"({cmr.name} natively picks one)"
    print(f"\nall: every max-priority node gets every message {native_all}; mostactive: one node;")
    print("roundrobin, random: even shares; weighted: 2:2:1:1; sticky: each sensor keeps its node;")
    if "load" in cmr.features:
        print("leastloaded: the node that stopped acknowledging gets the fewest, fewer as its queue grows.")
    else:
        print(f"leastloaded: even shares ({cmr.name}'s plugin sees no XEP-0198 queue to call load).")


if __name__ == "__main__":
    asyncio.run(main())
