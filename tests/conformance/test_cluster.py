"""Clusters (hosts with the "cluster" feature: ejabberd). Each node's
library sees only that node's sessions, so until CMR shares them across
nodes an account whose sessions are spread over nodes is routed by the
server itself, and the fallback is logged once per account."""

import pytest

from conftest import host_class, run, stop_and_check_log
from xmpp import close, deliver, online, wait_for

ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"
FALLBACK_LOG = "has sessions on other nodes"

if "cluster" not in host_class().features:
    pytest.skip("the host does not cluster", allow_module_level=True)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    first = host_class()(tmp_path_factory.mktemp("first"))
    second = host_class()(tmp_path_factory.mktemp("second"))
    first.start()
    try:
        second.start()
        second.join_cluster(first)
        yield first, second
    finally:
        stop_and_check_log(second)
        stop_and_check_log(first)


def test_an_account_split_over_nodes_falls_back_to_server_routing(nodes):
    first, second = nodes
    account, sensor_jid = first.account(), first.account()

    async def scenario():
        on_first = await online(first, account, "node-0")
        on_second = await online(second, account, "node-1")
        sensor = await online(first, sensor_jid, "probe")
        await on_first.set_algorithm(ROUND_ROBIN)
        # Server routing: every session at the highest priority gets each
        # message, where round robin would have split them 5 and 5.
        split = await deliver(sensor, account, [on_first, on_second], 10, expected_total=20)
        # Once all sessions are on one node, CMR routes again.
        await close(on_second)
        # Gone from the cluster's session table, which every node reads.
        assert await wait_for(lambda: f"{account}/node-1" not in first.ctl("connected_users"))
        joined = await online(first, account, "node-2")
        for node in (on_first, joined):
            node.messages.clear()
        together = await deliver(sensor, account, [on_first, joined], 10)
        await close(sensor, on_first, joined)
        return split, together

    assert run(scenario()) == ([10, 10], [5, 5])
    assert first.log().count(f"{account} {FALLBACK_LOG}") == 1, "the fallback is logged once per account"
