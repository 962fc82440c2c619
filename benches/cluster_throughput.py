#!/usr/bin/env python3
"""ejabberd in a two-node cluster (make bench-cluster): a raw-socket sender
on node A writes chat messages to an account whose two sessions are on
node B, and whose home (mod_cmr_cluster) is node B, so that every message
is forwarded from A to B. Against ejabberd's own routing of the same
traffic in the same cluster: an account of a virtual host without mod_cmr.
Each setup delivers each message once (the second session at priority -1
natively; round robin over two, or one session eligible, with mod_cmr).
The CPU of both nodes counts."""

import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from throughput import measure, report, set_algorithm  # noqa: E402
from hosts.ejabberd import NATIVE_DOMAIN, EjabberdHost  # noqa: E402


def homed_on(node, nodes, host):
    """An account of `host`'s main domain whose home is `node`."""
    while True:
        account = host.account()
        if node.stats(account).splitlines()[0] == f"home\t{nodes[node]}":
            return account


@contextlib.contextmanager
def two_nodes(prefix):
    """Two private ejabberd nodes with the lean config, B joined to A,
    stopped on leaving."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    a = EjabberdHost(work / "a", modules=EjabberdHost.LEAN, native=True)
    b = EjabberdHost(work / "b", modules=EjabberdHost.LEAN, native=True)
    a.start()
    try:
        b.start()
        b.join_cluster(a)
        yield a, b
    finally:
        b.stop()
        a.stop()


def main():
    with two_nodes("cmr-bench-cluster-") as (a, b):
        nodes = {a: a.node_name(), b: b.node_name()}
        both = dict(host=b, sender_host=a, servers=[a, b])
        roundrobin, one = homed_on(b, nodes, a), homed_on(b, nodes, a)
        setups = [("native", dict(both, account=a.account(NATIVE_DOMAIN), sender_jid=a.account(NATIVE_DOMAIN),
                                  second_priority=-1)),
                  ("mod_cmr roundrobin", dict(both, account=roundrobin, sender_jid=a.account(), second_priority=0)),
                  ("mod_cmr one session", dict(both, account=one, sender_jid=a.account(), second_priority=-1))]
        set_algorithm(a, roundrobin, "urn:xmpp:cmr:roundrobin")
        set_algorithm(a, one, "urn:xmpp:cmr:mostactive")
        rates, costs = measure(setups)
    report("ejabberd cluster, sender on A, account homed on B", rates, costs)


if __name__ == "__main__":
    main()
