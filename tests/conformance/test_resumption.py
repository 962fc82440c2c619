"""XEP-0198 hibernation and resumption, as mobile and IoT clients live it:
the connection drops, stanzas pile up for the hibernating session, the
client resumes. The server here keeps a hibernating session long enough
that no step races the timeout."""

import asyncio
from collections import Counter

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import require, run, served
from xmpp import (TIMEOUT, bodies, close, cluster, deliver, drop_connection, foreign_attributes, hibernating, online,
                  resume, round_trip, send_messages, send_paced, settle, until_waiting, wait_for, withhold_acks)

ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    yield from served(tmp_path_factory, hibernation_seconds=300)


def test_resumption_after_a_dropped_connection(host):
    # The live session takes what is routed while the other hibernates.
    require(host, "resumption", "hibernation")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        keep = await online(host, account, "keep")
        sleeper = await online(host, account, "sleeper", smacks=True)
        await keep.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        # Routed to the sleeper before the drop and never acknowledged (the
        # client resumes with its own count of what it handled).
        withhold_acks(sleeper)
        send_messages(sensor, account, 10, prefix="before")
        assert await wait_for(lambda: sum(bodies(keep, sleeper).values()) >= 10)
        before = set(sleeper.bodies())
        assert len(before) == 5
        await drop_connection(sleeper)
        await until_waiting(host, account, "sleeper")
        # Aimed at the hibernating session: a headline to the account, a
        # presence of its other session, a message to its full JID; and
        # routed messages, which the live session takes meanwhile.
        send_messages(sensor, account, 1, kind="headline", prefix="headline")
        keep.set_presence(priority=0, show="chat")
        send_messages(sensor, f"{account}/sleeper", 1, prefix="direct")
        send_messages(sensor, account, 6, prefix="during")
        assert await wait_for(lambda: len([b for b in keep.bodies() if b.startswith("during")]) == 6)
        presences = []
        sleeper.register_handler(Callback("presences", MatchXPath("{jabber:client}presence"),
                                          lambda p: presences.append(p["from"].resource)))
        sleeper.messages.clear()
        await resume(host, sleeper)
        await hibernating(host, account, "sleeper", state=False)
        assert await wait_for(lambda: {"headline-0", "direct-0"} <= set(sleeper.bodies()))
        assert await wait_for(lambda: "keep" in presences), presences
        # Routed to again once resumed.
        send_messages(sensor, account, 10, prefix="after")
        assert await wait_for(lambda: sum(b.startswith("after") for b in bodies(keep, sleeper).elements()) >= 10)
        await settle(0.2)
        after = [sum(b.startswith("after") for b in c.bodies()) for c in (keep, sleeper)]
        sent = {f"{kind}-{i}" for kind, n in (("before", 10), ("during", 6), ("after", 10)) for i in range(n)}
        lost = sent - set(bodies(keep, sleeper)) - before
        await close(sensor, keep, sleeper)
        return after, lost, host.problems()

    after, lost, problems = run(scenario())
    assert after == [5, 5]
    assert lost == set()
    assert problems == [], "no error or traceback in the server log"


def test_the_only_session_hibernating_keeps_its_messages(host):
    require(host, "resumption")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        sleeper = await online(host, account, "sleeper", smacks=True)
        await sleeper.set_algorithm(ROUND_ROBIN)
        sensor = await online(host, sensor_jid, "probe")
        await drop_connection(sleeper)
        if "hibernation" in host.features:
            await until_waiting(host, account, "sleeper")
        # No session is live: the hibernating one keeps them for its
        # resumption, as the servers do without mod_cmr (where the module
        # cannot tell that it waits, it is still routed to as live, and its
        # stream queues them the same way).
        send_messages(sensor, account, 10, prefix="while")
        await resume(host, sleeper)
        assert await wait_for(lambda: len(sleeper.messages) >= 10)
        await settle(0.3)
        got = sorted(sleeper.bodies())
        await close(sensor, sleeper)
        return got, foreign_attributes(sleeper)

    got, attributes = run(scenario())
    assert got == sorted(f"while-{i}" for i in range(10))
    assert attributes == []


def test_an_unloaded_module_leaves_no_mark_on_what_waits_for_a_resumption(host):
    # What waits in a hibernating session's queue when the module is
    # unloaded (not reloaded) reaches the client as the client's own
    # server would send it: no attribute that the module kept there (Prosody's
    # mod_cmr marks in an XEP-0198 queue what it routed to that session
    # alone) is resent with it.
    require(host, "resumption", "unload")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        sleeper = await online(host, account, "sleeper", smacks=True)
        sensor = await online(host, sensor_jid, "probe")
        # Before: marked in the queue as they are sent, and written unmarked.
        send_messages(sensor, account, 3, prefix="live")
        assert await wait_for(lambda: len(sleeper.messages) >= 3)
        await drop_connection(sleeper)
        await until_waiting(host, account, "sleeper")
        send_messages(sensor, account, 5, prefix="queued")
        await round_trip(sensor)
        host.stop_module()
        try:
            await resume(host, sleeper)
            assert await wait_for(lambda: len(sleeper.messages) >= 5)
            await settle(0.3)
        finally:
            host.start_module()
        got = sorted(sleeper.bodies())
        await close(sensor, sleeper)
        return got, foreign_attributes(sleeper)

    got, attributes = run(scenario())
    assert got == sorted([f"live-{i}" for i in range(3)] + [f"queued-{i}" for i in range(5)])
    assert attributes == []




def test_a_resumed_session_keeps_its_show(host):
    require(host, "resumption", "hibernation")

    async def scenario():
        account, sensor_jid = host.account(), host.account()
        busy = await online(host, account, "busy", show="dnd", smacks=True)
        away = await online(host, account, "away", show="away")
        await busy.set_algorithm("urn:xmpp:cmr:mostactive")
        sensor = await online(host, sensor_jid, "probe")
        # mostactive: away beats dnd, before the drop and after the resumption.
        first = await deliver(sensor, account, [busy, away], 4, prefix="before")
        await drop_connection(busy)
        await until_waiting(host, account, "busy")
        await resume(host, busy)
        await hibernating(host, account, "busy", state=False)
        second = await deliver(sensor, account, [busy, away], 4, expected_total=8, prefix="after")
        await close(sensor, busy, away)
        return first, second

    assert run(scenario()) == ([0, 4], [0, 8])


async def resumed_after_a_drop(host, during):
    """An account round robin over two XEP-0198 sessions whose second drops
    its connection, `during` messages while it waits, and its resumption:
    the account, both sessions, the sensor, and how many of those messages
    each session got."""
    account, (keep, sleeper), sensor = await cluster(host, [0, 0], ROUND_ROBIN, smacks=True)
    await drop_connection(sleeper)
    await until_waiting(host, account, "node-1")
    counts = await deliver(sensor, account, [keep, sleeper], during, prefix="during")
    await resume(host, sleeper)
    return account, keep, sleeper, sensor, counts


def test_a_resumed_session_that_sends_is_routed_to_again(host):
    # Resumed, and once it has sent a stanza (a client does, at the latest
    # with its next ping), the session is back in the rotation: asked of
    # routing alone, with no stats read after the resumption. (Openfire
    # tells its plugin nothing of a resumption: the plugin learns it from
    # that stanza.)
    require(host, "resumption", "hibernation")

    async def scenario():
        account, keep, sleeper, sensor, during = await resumed_after_a_drop(host, 4)
        await round_trip(sleeper)
        keep.messages.clear()
        sleeper.messages.clear()
        after = await deliver(sensor, account, [keep, sleeper], 10, prefix="after")
        await close(sensor, keep, sleeper)
        return during, after

    assert run(scenario()) == ([4, 0], [5, 5])


def test_a_resumed_session_that_sends_nothing_is_routed_to_again(host):
    # A node that only receives sends nothing after its resumption: it is
    # back in the rotation all the same (Openfire's plugin finds it at its
    # check of the waiting sessions, every second).
    require(host, "resumption", "hibernation")

    async def scenario():
        account, keep, sleeper, sensor, during = await resumed_after_a_drop(host, 2)
        # One message at a time, each awaited, until the resumed session
        # takes one. (One routed to it while it was reattaching can come
        # after a later one: Openfire resends it with the queue.)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        sent = []
        while not sleeper.bodies() and asyncio.get_running_loop().time() < deadline:
            send_messages(sensor, account, 1, prefix=f"after-{len(sent)}")
            sent.append(f"after-{len(sent)}-0")
            assert await wait_for(lambda: sent[-1] in bodies(keep, sleeper)), sent[-1]
        got = bodies(keep, sleeper)
        await close(sensor, keep, sleeper)
        return during, sleeper.bodies(), got, sent

    during, resumed_got, got, sent = run(scenario())
    assert during == [2, 0]
    assert resumed_got, f"the resumed session got none of {len(sent)} messages"
    assert got == Counter(["during-0", "during-1", *sent]), got


ROUNDS = 20


def test_a_connection_dying_in_a_flood_loses_and_doubles_nothing(host):
    # Round after round, the account's XEP-0198 session loses its TCP
    # connection while a sensor floods the account, then resumes: a
    # delivery can meet the session at the moment it detaches. Every body
    # arrives once (the resumption resends what the session had not
    # handled), and the server logs no error (Openfire 4.2.0 once logged a
    # NullPointerException for a delivery to a session detaching then).
    require(host, "resumption")
    host.expected_problems.extend(host.reset_connection_logs)

    async def scenario():
        account, (keep, victim), sensor = await cluster(host, [0, 0], ROUND_ROBIN, smacks=True)
        counts = []
        for r in range(ROUNDS):
            prefix = f"r{r}"
            flood = asyncio.ensure_future(send_paced(sensor, account, 8, 10, prefix))
            assert await wait_for(lambda: sum(b.startswith(prefix + "-") for b in victim.bodies()) >= 3), r
            await drop_connection(victim)
            await flood
            await resume(host, victim)
            # What the resumption resends comes before this answer.
            await round_trip(victim)
            sent = {f"{prefix}-{batch}-{i}" for batch in range(8) for i in range(10)}
            assert await wait_for(lambda: sent <= set(bodies(keep, victim))), \
                (r, sorted(sent - set(bodies(keep, victim)))[:5])
            counts.append(Counter(b for b in bodies(keep, victim).elements() if b.startswith(prefix + "-")))
        await close(sensor, keep, victim)
        return counts

    counts = run(scenario())
    doubled = {body: n for round_counts in counts for body, n in round_counts.items() if n > 1}
    assert doubled == {}, doubled
    assert [w for w in host.warnings() if "NullPointerException" in w] == []
    assert host.problems() == []
