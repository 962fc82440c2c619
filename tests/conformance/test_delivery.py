"""Delivery around the routing: offline storage, sessions that leave in the
middle of a stream, carbons, the archive, hints."""

from collections import Counter

import pytest

from conftest import require, run
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmpp import (NS_CMR, bodies, close, cluster, deliver, online, send_messages, settle, until_expired,
                  update_presence, wait_for, withhold_acks)

NS_CARBONS = "urn:xmpp:carbons:2"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"


def test_nothing_eligible_goes_offline_and_arrives_on_next_login(host):
    require(host, "offline")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        node = await online(host, account, "node-0")
        await node.set_algorithm(ROUND_ROBIN)
        await update_presence(node, available=False)
        sensor = await online(host, sensor_jid, "probe")
        send_messages(sensor, account, 5)
        await settle(0.5)
        assert node.messages == []
        await close(node)
        later = await online(host, account, "node-1")
        assert await wait_for(lambda: len(later.messages) >= 5)
        assert sorted(later.bodies()) == [f"m-{i}" for i in range(5)]
        await close(sensor, later)
    run(scenario())


def test_unavailable_in_the_middle_of_a_stream_loses_nothing(host):
    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0], ROUND_ROBIN)
        for batch in range(10):
            send_messages(sensor, account, 20, prefix=f"b{batch}")
            if batch == 4:
                nodes[1].set_presence(available=False)
            await settle(0.02)
        assert await wait_for(lambda: sum(bodies(*nodes).values()) >= 200)
        await settle(0.3)
        received = bodies(*nodes)
        assert len(received) == 200 and max(received.values()) == 1, "every message once"
        await close(sensor, *nodes)
    run(scenario())


def test_killed_connection_with_stream_management_loses_nothing(host):
    require(host, "hibernation", "expiry")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        survivor = await online(host, account, "node-0", smacks=True)
        victim = await online(host, account, "node-1", smacks=True)
        await survivor.set_algorithm(ROUND_ROBIN)
        # The victim stops acknowledging, so what it holds is unacknowledged
        # when its TCP connection dies without a word.
        withhold_acks(victim)
        sensor = await online(host, sensor_jid, "probe")
        send_messages(sensor, account, 50, prefix="before")
        assert await wait_for(lambda: sum(bodies(survivor, victim).values()) >= 50)
        victim.transport.abort()
        victim_got = set(victim.bodies())
        send_messages(sensor, account, 50, prefix="after")
        # mod_smacks keeps the dead session for its hibernation time, then
        # stores what was not acknowledged offline.
        await until_expired(host, account, "node-1")
        fresh = await online(host, account, "node-2")
        expected = {f"before-{i}" for i in range(50)} | {f"after-{i}" for i in range(50)}
        arrived = await wait_for(lambda: expected <= set(bodies(survivor, fresh)) | victim_got)
        missing = expected - set(bodies(survivor, fresh)) - victim_got
        assert arrived, f"{len(missing)} missing, e.g. {sorted(missing)[:8]}; victim had {len(victim_got)}"
        await settle(0.5)
        seen = bodies(survivor, fresh) + Counter(victim_got)
        duplicates = sum(count - 1 for count in seen.values())
        print(f"killed connection: {len(expected)} sent, {len(expected & set(seen))} received, "
              f"{duplicates} duplicates (acknowledged-late messages resent)")
        assert expected <= set(seen)
        await close(sensor, survivor, fresh)
    run(scenario())


def test_carbons_the_picked_gets_the_message_the_others_a_copy(host):
    require(host, "carbons")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        a = await online(host, account, "a", carbons=True)
        b = await online(host, account, "b", carbons=True)
        c = await online(host, account, "c")
        await a.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        send_messages(sensor, account, 30)
        assert await wait_for(lambda: sum(len(n.messages) for n in (a, b, c)) >= 30)
        assert await wait_for(lambda: len(a.carbons) + len(b.carbons) >= 40)
        await settle(0.3)
        assert [len(n.messages) for n in (a, b, c)] == [10, 10, 10]
        for session, others in ((a, (b, c)), (b, (a, c))):
            copies = {m["body"] for m in session.carbons}
            assert copies.isdisjoint(session.bodies()), "never both the message and its copy"
            assert copies == {body for o in others for body in o.bodies()}
        assert c.carbons == []
        await close(sensor, a, b, c)
    run(scenario())


def test_private_messages_are_not_copied(host):
    require(host, "carbons")

    async def scenario():
        account, (a, b), sensor = await cluster(host, [0, 0], ROUND_ROBIN, carbons=True)
        send_messages(sensor, account, 10, prefix="private", payload=f"<private xmlns='{NS_CARBONS}'/>")
        assert await wait_for(lambda: len(a.messages) + len(b.messages) >= 10)
        await settle(0.5)
        assert [len(a.messages), len(b.messages), len(a.carbons), len(b.carbons)] == [5, 5, 0, 0]
        kept = [m.xml.find(f"{{{NS_CARBONS}}}private") is not None for m in a.messages + b.messages]
        # As the server does without mod_cmr: Prosody's mod_carbons removes
        # <private/> from what it delivers; ejabberd's leaves it.
        assert kept == [host.keeps_carbons_private] * 10
        await close(sensor, a, b)
    run(scenario())


def test_archive_keeps_each_message_once(host):
    require(host, "mam")

    async def scenario():
        account, nodes, sensor = await cluster(host, [0, 0, 0], "urn:xmpp:cmr:all")
        assert await deliver(sensor, account, nodes, 12, expected_total=36) == [12, 12, 12]
        archived = await archived_bodies(nodes[0], page=5)
        assert archived == Counter(f"m-{i}" for i in range(12)), archived
        await close(sensor, *nodes)
    run(scenario())


async def archived_bodies(client, page):
    """How many times each body is in the client's account archive, read
    page by page (XEP-0313 with XEP-0059 <max/> and <after/>) until the
    server says the query is complete. Every result is counted: the total
    <count/> is optional, and Prosody 13 leaves it out where 0.12 and
    ejabberd give it."""
    results = []
    # The results are messages without a <body/> of their own, which
    # slixmpp's message event leaves out.
    client.register_handler(Callback("archive results", MatchXPath(f"{{jabber:client}}message/{{{NS_MAM}}}result"),
                                     lambda message: results.append(message.xml.find(f"{{{NS_MAM}}}result"))))
    archived, after = Counter(), None
    try:
        for number in range(100):
            queryid = f"archive-{number}"
            rsm = f"<max>{page}</max>" + (f"<after>{after}</after>" if after else "")
            reply = await client.iq("set", f"<query xmlns='{NS_MAM}' queryid='{queryid}'>"
                                    f"<set xmlns='{NS_RSM}'>{rsm}</set></query>")
            fin = reply.find(f"{{{NS_MAM}}}fin")
            assert reply.get("type") == "result" and fin is not None, ET.tostring(reply)
            last = fin.find(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last")

            def page_results():
                return [r for r in results if r.get("queryid") == queryid]

            # The results precede the <fin/>; the page's last one ends it.
            if last is not None:
                assert await wait_for(lambda: last.text in {r.get("id") for r in page_results()}), ET.tostring(reply)
            for result in page_results():
                body = result.find(f"{{{NS_FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body")
                archived[None if body is None else body.text] += 1
            if fin.get("complete") in ("true", "1") or last is None:
                return archived
            after = last.text
        raise AssertionError(f"the archive query never completed: {archived}")
    finally:
        client.remove_handler("archive results")


@pytest.mark.parametrize("honoured", [True, False], ids=["honoured", "ignored"])
def test_hints_honoured_or_ignored_per_policy(host, honoured):
    if not honoured:
        # The policy that ignores hints is the second virtual host's.
        require(host, "virtual_hosts")
    domain = host.domain if honoured else host.fixed_domain

    async def scenario():
        account, sensor_jid = host.account(domain), host.account(domain)
        nodes = [await online(host, account, f"node-{i}") for i in range(2)]
        sensor = await online(host, sensor_jid, "probe")
        # The active algorithm is the default, all; the hint asks for one.
        send_messages(sensor, account, 10, hint=ROUND_ROBIN)
        expected = 10 if honoured else 20
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= expected)
        await settle(0.3)
        counts = [len(n.messages) for n in nodes]
        assert counts == ([5, 5] if honoured else [10, 10]), (domain, counts)
        assert all(m.xml.find(f"{{{NS_CMR}}}cmr") is not None for n in nodes for m in n.messages)
        await close(sensor, *nodes)
    run(scenario())
