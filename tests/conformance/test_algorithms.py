"""Each algorithm's distribution over a few hundred messages, and the rules
no algorithm may break."""

from collections import Counter

from conftest import require, run
from xmpp import (close, cluster, deliver, online, send_messages, send_paced, settle, stats_row, update_presence,
                  wait_for, withhold_acks)

ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"


def test_round_robin_is_exact(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0, 0, 0], ROUND_ROBIN)
        assert await deliver(sensor, account, nodes, 400) == [100, 100, 100, 100]
        await close(sensor, *nodes)
    run(scenario())


def test_weighted_follows_priority(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [3, 2, 1, 0], "urn:xmpp:cmr:weighted")
        # Weights 3:2:1, priority 0 a standby; 600 is 100 whole cycles.
        assert await deliver(sensor, account, nodes, 600) == [300, 200, 100, 0]
        await close(sensor, *nodes)
    run(scenario())


def test_mostactive_by_priority_then_show(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [1, 1, 0], "urn:xmpp:cmr:mostactive")
        await update_presence(nodes[0], priority=1, show="away")
        await update_presence(nodes[1], priority=1, show="chat")
        assert await deliver(sensor, account, nodes, 30) == [0, 30, 0]
        await update_presence(nodes[1], priority=1, show="dnd")
        assert await deliver(sensor, account, nodes, 30, expected_total=60) == [30, 30, 0], "away beats dnd"
        await close(sensor, *nodes)
    run(scenario())


def test_all_reaches_every_max_priority_resource(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [1, 1, 0], "urn:xmpp:cmr:all")
        assert await deliver(sensor, account, nodes, 100, expected_total=200) == [100, 100, 0]
        await close(sensor, *nodes)
    run(scenario())


def test_sticky_keeps_each_sender_and_moves_only_the_leavers(host):
    async def scenario():
        account, nodes, _ = await cluster(host, [0, 0, 0], "urn:x-cmr:algorithm:sticky")
        senders = [await online(host, host.account(), "probe") for _ in range(8)]
        for s in senders:
            send_messages(s, account, 10, prefix=s.boundjid.bare)
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 80)
        await settle(0.2)

        def owners():
            return {m["from"].bare: i for i, n in enumerate(nodes) for m in n.messages}
        before = owners()
        # Each sender reached exactly one resource with all its messages.
        for i, n in enumerate(nodes):
            for sender, count in Counter(m["from"].bare for m in n.messages).items():
                assert count == 10 and before[sender] == i
        leaving = next(i for i in range(3) if i in before.values())
        await close(nodes[leaving])
        assert await wait_for(lambda: stats_row(host, account, f"node-{leaving}") is None)
        staying = [n for i, n in enumerate(nodes) if i != leaving]
        for n in staying:
            n.messages.clear()
        for s in senders:
            send_messages(s, account, 1, prefix=s.boundjid.bare)
        assert await wait_for(lambda: sum(len(n.messages) for n in staying) >= 8)
        after = {m["from"].bare: nodes.index(n) for n in staying for m in n.messages}
        for sender, owner in before.items():
            if owner != leaving:
                assert after[sender] == owner, "only the leaving resource's senders move"
        await close(*senders, *staying)
    run(scenario())


def test_random_within_its_bound(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0, 0, 0], "urn:x-cmr:algorithm:random")
        counts = await deliver(sensor, account, nodes, 400)
        # 100 expected each, standard deviation 8.7: 5 sigma is 43.
        assert all(57 <= c <= 143 for c in counts), counts
        await close(sensor, *nodes)
    run(scenario())


def test_leastloaded_starves_a_client_that_withholds_acks(host):
    require(host, "load")

    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0, 0], "urn:x-cmr:algorithm:leastloaded", smacks=True)
        # node-1 stops acknowledging: its XEP-0198 queue, its load, grows.
        withhold_acks(nodes[1])
        shares = []
        for batch in range(3):
            for n in nodes:
                n.messages.clear()
            await send_paced(sensor, account, 10, 10, prefix=f"b{batch}")
            assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 100)
            shares.append([len(n.messages) for n in nodes])
        print(f"leastloaded: messages per 100 to each client, node-1 withholding acks: {shares}")
        withheld = [share[1] for share in shares]
        # Its load only grows, so after the first batch it wins a comparison
        # only when a burst briefly loads an acknowledging client above it;
        # without leastloaded it would get about a third of each batch.
        assert withheld[0] < 50 and withheld[1] + withheld[2] < 10, shares
        # The clients that acknowledge share the rest: an acknowledgement
        # lowers a client's load, not only the next message sent to it.
        assert min(shares[2][0], shares[2][2]) >= 25, shares
        await close(sensor, *nodes)
    run(scenario())


def test_leastloaded_load_falls_with_acknowledgements(host):
    require(host, "load", "resumption")

    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0, 0], "urn:x-cmr:algorithm:leastloaded", smacks=True)
        # A burst fills every queue, unacknowledged until it is all in;
        # then each client acknowledges everything at once.
        resumes = [withhold_acks(n) for n in nodes]
        send_messages(sensor, account, 150, prefix="burst")
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 150)
        for resume in resumes:
            resume()
        await settle(0.5)
        for n in nodes:
            n.messages.clear()
        # Paced: if a load stayed where the burst left it, that client
        # would lose every comparison and get nothing.
        await send_paced(sensor, account, 12, 5, prefix="paced")
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 60)
        shares = [len(n.messages) for n in nodes]
        print(f"leastloaded after a burst: messages per client of 60 paced: {shares}")
        assert min(shares) >= 10, shares
        await close(sensor, *nodes)
    run(scenario())


def test_negative_priority_and_unavailable_never_receive(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, -1, 0], ROUND_ROBIN)
        await update_presence(nodes[2], available=False)
        for algorithm in [ROUND_ROBIN, "urn:xmpp:cmr:all", "urn:x-cmr:algorithm:random"]:
            await nodes[0].set_algorithm(algorithm)
            send_messages(sensor, account, 20)
        assert await wait_for(lambda: len(nodes[0].messages) >= 60)
        await settle(0.3)
        assert [len(n.messages) for n in nodes] == [60, 0, 0]
        await close(sensor, *nodes)
    run(scenario())


def test_headline_and_groupchat_are_left_to_the_server(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0], ROUND_ROBIN)
        send_messages(sensor, account, 5, kind="headline")
        # Headlines go to every non-negative resource, as the server does.
        assert await wait_for(lambda: all(len(n.messages) >= 5 for n in nodes))
        for n in nodes:
            n.messages.clear()
        send_messages(sensor, account, 5, kind="groupchat")
        await settle(0.5)
        assert [len(n.messages) for n in nodes] == [0, 0]
        await close(sensor, *nodes)
    run(scenario())


def test_to_stays_the_bare_jid(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0], ROUND_ROBIN)
        await deliver(sensor, account, nodes, 10)
        assert {str(m["to"]) for n in nodes for m in n.messages} == {account}
        await close(sensor, *nodes)
    run(scenario())


def test_message_to_an_offline_full_jid_is_routed(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0], ROUND_ROBIN)
        for i in range(10):
            sensor.make_message(mto=f"{account}/gone", mbody=f"m-{i}", mtype="chat").send()
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 10)
        await settle(0.2)
        assert [len(n.messages) for n in nodes] == [5, 5]
        await close(sensor, *nodes)
    run(scenario())


async def interleave_presence(host, priorities, algorithm, total):
    """Sends `total` messages one at a time; after every second one, node-1
    re-sends its presence unchanged. Each step waits for the one before:
    the message is received, then the presence is sent, then node-1's round
    trip returns, so the server's order is fixed and counts are exact."""
    account, nodes, sensor = await cluster(host, priorities, algorithm)
    for i in range(total):
        send_messages(sensor, account, 1, prefix=f"m{i}")
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) == i + 1)
        if i % 2 == 1:
            await update_presence(nodes[1], priority=priorities[1])
    counts = [len(n.messages) for n in nodes]
    await close(sensor, *nodes)
    return counts


def test_round_robin_goes_on_through_unchanged_presence(host):
    # Restarting the turn on each presence gave 150/150/0 and 150/115/35.
    assert run(interleave_presence(host, [0, 0, 0], ROUND_ROBIN, 300)) == [100, 100, 100]


def test_weighted_goes_on_through_unchanged_presence(host):
    # Weights 3:2:1; 300 messages are 50 whole cycles.
    assert run(interleave_presence(host, [3, 2, 1], "urn:xmpp:cmr:weighted", 300)) == [150, 100, 50]


def test_unknown_message_types_are_routed_as_normal(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0], ROUND_ROBIN)
        counts = await deliver(sensor, account, nodes, 10, kind="x-unknown")
        await close(sensor, *nodes)
        return counts

    # RFC 6121 5.2.2: an unknown type is normal, so CMR routes it.
    assert run(scenario()) == [5, 5]
