"""What real clients do to their sessions: a picked session dying with
archive results and carbons in its queue, and sessions of one account
binding at the same moment. (Resumption: test_resumption.py.)"""

import asyncio
from collections import Counter

import pytest

from conftest import require, run, session_rows
from xmpp import (bodies, close, cluster, deliver, drop_connection, online, round_trip, send_messages, settle,
                  until_expired, wait_for, withhold_acks)

ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"
NS_MAM = "urn:xmpp:mam:2"
NS_CARBONS = "urn:xmpp:carbons:2"


def test_a_picked_session_dies_with_archive_results_and_carbons_queued(host):
    require(host, "hibernation", "expiry", "mam", "carbons")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        survivor = await online(host, account, "survivor")
        victim = await online(host, account, "victim", smacks=True, carbons=True)
        await survivor.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        raw = []
        survivor.add_event_handler("message", lambda m: raw.append(m.xml))
        withhold_acks(victim)
        # Routed messages: half to the victim; the survivor's half gives the
        # victim <received/> carbons. Then the victim's archive query fills
        # its queue with results, and the sensor writes to its full JID.
        send_messages(sensor, account, 20, prefix="routed")
        assert await wait_for(lambda: sum(bodies(survivor, victim).values()) >= 20)
        assert await wait_for(lambda: len(victim.carbons) >= 10)
        await victim.iq("set", f"<query xmlns='{NS_MAM}'/>")
        send_messages(sensor, f"{account}/victim", 3, prefix="direct")
        assert await wait_for(lambda: len([b for b in victim.bodies() if b.startswith("direct")]) == 3)
        got_before = set(victim.bodies())
        await drop_connection(victim)
        # After the hibernation time the server gives up on the session and
        # hands what it never acknowledged to mod_cmr, then to mod_smacks.
        await until_expired(host, account, "victim")
        routed = {f"routed-{i}" for i in range(20)}
        assert await wait_for(lambda: routed <= set(survivor.bodies()) | got_before)
        await settle(0.5)
        await close(sensor, survivor)
        return raw, survivor.bodies()

    raw, survivor_bodies = run(scenario())
    # Nothing but routed messages reached the survivor: no archive result,
    # no carbon; and what was sent to the victim's full JID went where the
    # server sends it natively (bounced by Prosody's mod_smacks; resent by
    # ejabberd to the account, where it is routed).
    assert [m for m in raw if m.find(f"{{{NS_MAM}}}result") is not None] == []
    assert [m for m in raw if m.find(f"{{{NS_CARBONS}}}received") is not None
            or m.find(f"{{{NS_CARBONS}}}sent") is not None] == []
    direct = [b for b in survivor_bodies if b.startswith("direct")]
    assert len(direct) == (3 if host.resends_dead_session_queue else 0), survivor_bodies


def test_a_session_dying_under_all_duplicates_nothing(host):
    require(host, "hibernation", "expiry")
    if host.resends_dead_session_queue:
        pytest.skip(f"{host.name} resends a dead session's queue through its own routing (resend_on_timeout), "
                    "so every session gets those messages again, with or without mod_cmr")

    async def scenario():
        account, (keep, third), sensor = await cluster(host, [0, 0], "urn:xmpp:cmr:all")
        victim = await online(host, account, "victim", smacks=True)
        withhold_acks(victim)
        send_messages(sensor, account, 6)
        assert await wait_for(lambda: len(victim.messages) == 6 and len(keep.messages) == 6)
        await drop_connection(victim)
        await until_expired(host, account, "victim")
        # Under all the others had their copies: nothing is routed again.
        # (Whatever the server sent them when it gave up on the victim
        # precedes the answers to these round trips.)
        await round_trip(keep)
        await round_trip(third)
        counts = [bodies(keep), bodies(third)]
        await close(sensor, keep, third)
        return counts

    expected = {f"m-{i}": 1 for i in range(6)}
    assert run(scenario()) == [expected, expected]


def test_a_session_dying_beside_one_with_carbons_gives_no_double_or_private_copy(host):
    require(host, "hibernation", "expiry", "carbons")
    if host.resends_dead_session_queue:
        pytest.skip(f"{host.name} resends a dead session's queue through its own routing (resend_on_timeout), "
                    "where it is routed and copied as new, with or without mod_cmr")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        keep = await online(host, account, "keep", carbons=True)
        third = await online(host, account, "third")
        victim = await online(host, account, "victim", smacks=True)
        await keep.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        withhold_acks(victim)
        send_messages(sensor, account, 6, prefix="plain")
        send_messages(sensor, account, 3, prefix="private", payload=f"<private xmlns='{NS_CARBONS}'/>")
        assert await wait_for(lambda: sum(bodies(keep, third, victim).values()) == 9)
        victim_had = set(victim.bodies())
        await drop_connection(victim)
        await until_expired(host, account, "victim")
        await round_trip(keep)
        await round_trip(third)
        copies = [c["body"] for c in keep.carbons]
        await close(sensor, keep, third)
        return keep.bodies() + third.bodies(), keep.bodies(), copies, victim_had

    delivered, kept, copies, victim_had = run(scenario())
    sent = {f"plain-{i}" for i in range(6)} | {f"private-{i}" for i in range(3)}
    # The victim's plain messages are held by keep as carbons: left to
    # mod_smacks, never routed to keep as well. Its private ones have no copy
    # anywhere: routed again, and still not copied.
    assert set(kept).isdisjoint(copies), (kept, copies)
    assert [c for c in copies if c.startswith("private")] == []
    assert sent <= set(delivered) | set(copies), sorted(sent - set(delivered) - set(copies))
    assert max(Counter(delivered).values()) == 1, delivered
    assert {b for b in victim_had if b.startswith("private")} <= set(delivered)


def test_a_dead_sessions_share_goes_offline_when_no_one_else_is_eligible(host):
    require(host, "hibernation", "expiry", "offline")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        low = await online(host, account, "low", priority=-1)
        victim = await online(host, account, "victim", smacks=True)
        await victim.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        withhold_acks(victim)
        send_messages(sensor, account, 3)
        assert await wait_for(lambda: len(victim.messages) == 3)
        await drop_connection(victim)
        await until_expired(host, account, "victim")
        # Nobody eligible took them: they are stored, and a session that
        # comes online gets them. A login can overtake the storing (the
        # server stores them as the dead session's process winds down), even
        # part of the way, so logins follow until all three are in.
        got = []
        for attempt in range(5):
            later = await online(host, account, f"later-{attempt}")
            await wait_for(lambda: len(later.messages) >= 3, timeout=2)
            await round_trip(later)
            got += later.bodies()
            await close(later)
            if len(got) >= 3:
                break
        await close(sensor, low)
        return sorted(got)

    assert run(scenario()) == [f"m-{i}" for i in range(3)]


def test_a_dead_sessions_share_follows_an_algorithm_changed_meanwhile(host):
    require(host, "hibernation", "expiry")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        keep = await online(host, account, "keep")
        victim = await online(host, account, "victim", smacks=True)
        await keep.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        withhold_acks(victim)
        send_messages(sensor, account, 4)
        assert await wait_for(lambda: len(victim.messages) == 2 and len(keep.messages) == 2)
        # The victim's two were routed to it alone; under all now, they go
        # to every eligible session, none of which has them.
        await keep.set_algorithm("urn:xmpp:cmr:all")
        await drop_connection(victim)
        await until_expired(host, account, "victim")
        assert await wait_for(lambda: len(keep.messages) >= 4)
        await round_trip(keep)
        got = bodies(keep)
        await close(sensor, keep)
        return got

    got = run(scenario())
    assert set(got) == {f"m-{i}" for i in range(4)}
    if not host.resends_dead_session_queue:
        # (ejabberd resends the queue as new messages, to every session
        # under all, the dying one included: duplicates, natively too.)
        assert max(got.values()) == 1, got


def test_a_picked_session_whose_process_died_is_dropped(host):
    # Prosody runs every session in one process: a session cannot die
    # without its unbind, which unregisters it.
    require(host, "kill_session")

    async def scenario():
        account, (dead, alive), sensor = await cluster(host, [1, 0], "urn:xmpp:cmr:mostactive")
        host.kill_session(f"{account}/node-0")
        # The supervisor reports the kill: the test's doing, not a fault.
        host.expected_problems.append(r"ejabberd_c2s_sup(.|\n)*reason: killed")
        # node-0 is picked first (highest priority) and found dead: it leaves
        # the registry and the message goes to node-1, each time.
        counts = await deliver(sensor, account, [dead, alive], 10)
        stats = host.stats(account)
        await close(sensor, alive)
        return counts, stats

    counts, stats = run(scenario())
    assert counts == [0, 10]
    assert [(row[0], row[1]) for row in session_rows(stats)] == [("node-1", "10")], stats


def test_sessions_binding_at_the_same_moment_restore_the_choice(host):
    # Prosody handles one event at a time, so two binds never interleave
    # there: this is a smoke test. ejabberd binds each session in its own
    # process, at once; the library says which bind was the account's first
    # (tests/c/abi_test.c drives both orders), and that one restores.
    account = host.account()

    async def choose():
        node = await online(host, account, "node-0")
        await node.set_algorithm(ROUND_ROBIN)
        await close(node)

    async def together():
        nodes = await asyncio.gather(*(online(host, account, f"node-{i}") for i in range(2)))
        active = []
        for node in nodes:
            reply = await node.iq("get", "<query xmlns='urn:xmpp:cmr:0'/>")
            active.append(reply.find("{urn:xmpp:cmr:0}query/{urn:xmpp:cmr:0}active").get("algorithm"))
        await close(*nodes)
        return active

    run(choose())
    assert run(together()) == [ROUND_ROBIN, ROUND_ROBIN]
