"""Many senders at once to one account whose sessions come and go,
gracefully and killed (XEP-0198 on): nothing is lost, duplicates are
counted and reported, and the per-session counts add up."""

from collections import Counter

from conftest import require, run
from xmpp import TIMEOUT, close, online, send_messages, settle, until_expired, wait_for, withhold_acks

SENDERS = 8
BURSTS = 8


def test_senders_at_once_while_sessions_come_and_go(host):
    require(host, "hibernation", "expiry", "offline", "stats")

    async def scenario():
        account = host.account()
        stable = [await online(host, account, f"node-{i}", smacks=True) for i in range(2)]
        victim = await online(host, account, "victim", smacks=True)
        # The victim holds what it got unacknowledged when its TCP dies.
        withhold_acks(victim)
        await stable[0].set_algorithm("urn:xmpp:cmr:roundrobin")
        senders = [await online(host, host.account(), "probe") for _ in range(SENDERS)]
        churned = []
        # Each round every sender sends a burst without waiting, and while
        # those are in flight a session logs in or out: the test drives the
        # churn itself, so how many sessions come and go does not depend on
        # the machine's speed.
        for burst in range(BURSTS):
            for sender in senders:
                send_messages(sender, account, 5, prefix=f"{sender.boundjid.bare}-{burst}")
            if burst == 1:
                victim.transport.abort()
            if burst % 2 == 0:
                churned.append(await online(host, account, f"churn-{burst}", smacks=True))
            else:
                await close(churned[-1])
        expected = {f"{s.boundjid.bare}-{b}-{i}" for s in senders for b in range(BURSTS) for i in range(5)}
        # What the victim held comes back after the resumption time (resent
        # or stored offline); a fresh session collects what is stored.
        await until_expired(host, account, "victim")
        collector = await online(host, account, "collector")
        sessions = [*stable, *churned, collector]
        seen_by_victim = Counter(victim.bodies())
        arrived = await wait_for(lambda: expected <= set(Counter(b for c in sessions for b in c.bodies()))
                                 | set(seen_by_victim), timeout=2 * TIMEOUT)
        await settle(0.5)
        received = Counter(b for c in sessions for b in c.bodies()) + seen_by_victim
        missing = expected - set(received)
        duplicates = sum(n - 1 for n in received.values())
        print(f"concurrency: {len(expected)} sent by {SENDERS} senders, {len(expected) - len(missing)} received, "
              f"{duplicates} duplicates, {len(churned)} sessions came and went, one killed")
        assert arrived and not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"
        # The stable sessions never left: what the router counted for each is
        # what its client received.
        stats = host.stats(account)
        routed = {row.split("\t")[0]: int(row.split("\t")[1]) for row in stats.splitlines()
                  if row.startswith("node-")}
        assert routed == {f"node-{i}": len(s.messages) for i, s in enumerate(stable)}, stats
        await close(*senders, *stable, collector)

    run(scenario())
