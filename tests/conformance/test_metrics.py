"""CMR's figures in the host's own metrics channel (Prosody's
mod_http_openmetrics, ejabberd's commands, Openfire's statistics), scraped
after known traffic. `host.metrics()` reads them as the host serves them and
returns the common shape:

    {"routed": {algorithm: n}, "left_to_server": {algorithm or "none": n},
     "gone_sessions": n, "iq_results": n, "iq_errors": n,
     "sessions": n, "accounts": n}

with every algorithm present (and "none" in `left_to_server`: no algorithm
applied, the account has no session registered). Counters are compared as
differences: the server is the test module's, but its own clients (an
admin probe) may have done something before."""

from conftest import require, run
from xmpp import NS_CMR, close, cluster, deliver, error_condition, online, send_messages, wait_for

ALGORITHMS = ["all", "mostactive", "roundrobin", "weighted", "random", "sticky", "leastloaded"]
COUNTERS = ["gone_sessions", "iq_results", "iq_errors"]


def difference(after, before):
    """What changed between two scrapes, leaving out what did not."""
    changed = {}
    for family in ("routed", "left_to_server"):
        for algorithm, value in after[family].items():
            if value != before[family].get(algorithm, 0):
                changed[(family, algorithm)] = value - before[family].get(algorithm, 0)
    for name in COUNTERS + ["sessions", "accounts"]:
        if after[name] != before[name]:
            changed[name] = after[name] - before[name]
    return changed


async def changes_become(host, before, expected):
    """Waits until the figures differ from `before` by exactly `expected`."""
    assert await wait_for(lambda: difference(host.metrics(), before) == expected), \
        difference(host.metrics(), before)


def test_every_figure_is_served(host):
    figures = host.metrics()
    assert set(figures["routed"]) == set(ALGORITHMS)
    assert set(figures["left_to_server"]) == set(ALGORITHMS) | {"none"}
    for name in COUNTERS + ["sessions", "accounts"]:
        assert isinstance(figures[name], int) and figures[name] >= 0, (name, figures[name])


def test_known_traffic_gives_exact_figures(host):
    async def scenario():
        before = host.metrics()
        # 3 sessions with round robin (one IQ result), 30 messages routed.
        account, nodes, sensor = await cluster(host, [0, 0, 0], "urn:xmpp:cmr:roundrobin")
        assert await deliver(sensor, account, nodes, 30) == [10, 10, 10]
        # An account whose only session has a negative priority: weighted
        # (one more result) finds nothing eligible, 4 messages left to the
        # server.
        lonely_jid = host.account()
        lonely = await online(host, lonely_jid, "low", priority=-1)
        await lonely.set_algorithm("urn:xmpp:cmr:weighted")
        send_messages(sensor, lonely_jid, 4)
        # An account with no session: 3 messages, no algorithm applied.
        send_messages(sensor, host.account(), 3)
        # An algorithm the server does not know: an error.
        reply = await nodes[0].iq("set", f"<cmr xmlns='{NS_CMR}' algorithm='urn:example:fastest'/>")
        assert error_condition(reply) == "item-not-found"
        expected = {
            ("routed", "roundrobin"): 30,
            ("left_to_server", "weighted"): 4,
            ("left_to_server", "none"): 3,
            "iq_results": 2,
            "iq_errors": 1,
            "sessions": 5,
            "accounts": 3,
        }
        await changes_become(host, before, expected)
        await close(sensor, lonely, *nodes)
        # Every session gone: the gauges are back, the counters stay.
        del expected["sessions"], expected["accounts"]
        await changes_become(host, before, expected)
    run(scenario())


def test_a_picked_session_found_gone_is_counted(host):
    # Only where a session can die without a word (kill_session): elsewhere
    # a session's end unregisters it before any pick can find it gone.
    require(host, "kill_session")

    async def scenario():
        before = host.metrics()
        account, (dead, alive), sensor = await cluster(host, [1, 0], "urn:xmpp:cmr:mostactive")
        host.kill_session(f"{account}/node-0")
        host.expected_problems.append(r"ejabberd_c2s_sup(.|\n)*reason: killed")
        # The first message picks node-0 (highest priority), finds it gone
        # and is picked again: each pick counts, 11 for 10 messages.
        assert await deliver(sensor, account, [dead, alive], 10) == [0, 10]
        await close(sensor, alive)
        expected = {("routed", "mostactive"): 11, "gone_sessions": 1, "iq_results": 1}
        await changes_become(host, before, expected)
    run(scenario())


async def gone_from_gauges(host, before, *domain):
    """Waits until the sessions a test opened have left the gauges, so that
    the next test's first scrape does not count them."""
    gauges = lambda: {name: host.metrics(*domain)[name] for name in ("sessions", "accounts")}
    assert await wait_for(lambda: gauges() == {name: before[name] for name in ("sessions", "accounts")}), gauges()


def test_types_left_to_the_server_are_counted_unclaimed(host):
    # Headline, groupchat and error messages go to the library like every
    # message, which leaves them to the server: counted with no algorithm
    # (left_to_server{none}), the same on every host (each README says so).
    async def scenario():
        start = host.metrics()
        account, nodes, sensor = await cluster(host, [0, 0], "urn:xmpp:cmr:roundrobin")
        before = host.metrics()
        for kind in ("headline", "groupchat", "error"):
            send_messages(sensor, account, 2, kind=kind, prefix=kind)
            send_messages(sensor, f"{account}/offline", 1, kind=kind, prefix=kind)
        # A chat message after them: once it is counted, they were handled.
        assert await deliver(sensor, account, nodes, 1, expected_total=None) is not None
        expected = {("routed", "roundrobin"): 1, ("left_to_server", "none"): 9}
        await changes_become(host, before, expected)
        await close(sensor, *nodes)
        await gone_from_gauges(host, start)
    run(scenario())


def test_all_counts_one_per_message_not_per_copy(host):
    async def scenario():
        before = host.metrics()
        account, nodes, sensor = await cluster(host, [0, 0, 0], "urn:xmpp:cmr:all")
        assert await deliver(sensor, account, nodes, 5, expected_total=15) == [5, 5, 5]
        expected = {("routed", "all"): 5, "iq_results": 1, "sessions": 4, "accounts": 2}
        await changes_become(host, before, expected)
        await close(sensor, *nodes)
        await gone_from_gauges(host, before)
    run(scenario())


def test_each_virtual_host_counts_its_own(host):
    require(host, "virtual_hosts")

    async def scenario():
        main, other = host.metrics(), host.metrics(host.fixed_domain)
        # The fixed domain lets no user choose: its default algorithm.
        account = host.account(host.fixed_domain)
        nodes = [await online(host, account, f"node-{i}") for i in range(2)]
        sensor = await online(host, host.account(), "probe")
        send_messages(sensor, account, 4)
        changed = lambda: difference(host.metrics(host.fixed_domain), other)
        assert await wait_for(lambda: sum(v for k, v in changed().items() if k[0] == "routed") == 4
                              and (changed()["sessions"], changed()["accounts"]) == (2, 1)), changed()
        assert [k for k in changed() if k[0] == "left_to_server"] == [], changed()
        # The sensor is the main domain's: one session, one account there.
        assert difference(host.metrics(), main) == {"sessions": 1, "accounts": 1}
        await close(sensor, *nodes)
        await gone_from_gauges(host, main)
        await gone_from_gauges(host, other, host.fixed_domain)
    run(scenario())
