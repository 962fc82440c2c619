"""Clusters (hosts with the "cluster" feature: ejabberd): three nodes joined
as an operator joins them, an account with two sessions on each (node-0 and
node-1 on the first node, node-2 and node-3 on the second, node-4 and node-5
on the third) and senders on every node. CMR routes the account as one,
whichever node a session or a sender is on.

When a node is killed or cut off, CMR must lose no more than ejabberd's own
routing loses in the same failure: an account of a virtual host without
mod_cmr (the host's `native_domain`) gets the same stream from the same
senders at the same time, and what became of each account's messages is
printed side by side.

The tests share the cluster and run in this order: the shares, a hung node,
a killed node, its return, then a partition, which comes last because ejabberd's Mnesia
does not merge the sides when they meet again: ejabberd's own session table
stays split after the partition heals."""

import asyncio
import re
import signal
from datetime import datetime, timezone
from collections import Counter, defaultdict

import pytest
from slixmpp.xmlstream import ET

from conftest import host_class, run, stop_and_check_log
from test_commands import commanding, notes, run_admin
from xmpp import NS_CMR, TIMEOUT, bodies, close, online, round_trip, send_messages, settle, wait_for

ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"
WEIGHTED = "urn:xmpp:cmr:weighted"
STICKY = "urn:x-cmr:algorithm:sticky"
SESSIONS_PER_NODE = 2
# Messages per sender and account in a batch of a failure's stream, and in
# the burst that is under way when the failure strikes.
BATCH = 10
BURST = 50
# The two accounts of a failure's stream, as the outcomes print them.
ROUTINGS = {"cmr": "CMR", "native": "ejabberd alone"}
MEMBERSHIP_LOG = "mod_cmr: nodes routing localhost are now"
OUTSIDERS_LOG = "run without mod_cmr for localhost"
UNANSWERED_LOG = r"mod_cmr: home node \S+ did not answer with \d+ forwarded messages unacknowledged"

if "cluster" not in host_class().features:
    pytest.skip(host_class().lacking.get("cluster", "the host does not cluster"), allow_module_level=True)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    cluster = [host_class()(tmp_path_factory.mktemp(f"node{i}"), native=True) for i in range(3)]
    started = []
    try:
        for node in cluster:
            node.start()
            started.append(node)
            if node is not cluster[0]:
                node.join_cluster(cluster[0])
        yield cluster
    finally:
        # All stopped before any log is checked: a failed check leaves no
        # node running.
        for node in started:
            node.stop()
        for node in started:
            stop_and_check_log(node)


async def spread(nodes, account, priorities=(0,) * 6):
    """Two sessions of `account` on each node, node-0 and node-1 on the
    first, and so on, at `priorities`."""
    return [await online(nodes[i // SESSIONS_PER_NODE], account, f"node-{i}", priority=priority)
            for i, priority in enumerate(priorities)]


def sessions_on(nodes, node, sessions):
    """Those of `sessions` (as spread() made them) that run on `node`."""
    first = nodes.index(node) * SESSIONS_PER_NODE
    return sessions[first:first + SESSIONS_PER_NODE]


def cmr_stats(node, account):
    """What `cmr_stats` prints through `node` (`printed`): the account's
    home, its algorithm, and its sessions by resource, each as {column:
    value}."""
    printed = node.stats(account)
    stats, header = {"printed": printed, "home": None, "algorithm": None, "sessions": {}}, None
    for line in printed.splitlines():
        columns = line.split("\t")
        if header and len(columns) == len(header):
            stats["sessions"][columns[0]] = dict(zip(header, columns))
        elif columns[0] == "resource":
            header = columns
        elif len(columns) == 2:
            stats[columns[0]] = columns[1]
    return stats


def holds(node, account, sessions):
    """Whether the account's home, asked through `node`, holds exactly
    `sessions`, available at their priorities."""
    held = {resource: (row["priority"], row["available"])
            for resource, row in cmr_stats(node, account)["sessions"].items()}
    return held == {s.boundjid.resource: (str(s.priority), "true") for s in sessions}


async def registered(node, account, sessions):
    """Waits until the account's home, asked through `node`, holds exactly
    `sessions`: from then on CMR routes over all of them. The sessions of
    other nodes reach the home after their login returned."""
    assert await wait_for(lambda: holds(node, account, sessions)), \
        f"{[s.boundjid.resource for s in sessions]} through {node.node}:\n{node.stats(account)}"


def home_of(nodes, account):
    """The node that is the account's home, as `cmr_stats` says."""
    stats = cmr_stats(nodes[0], account)
    assert stats["home"] in [n.node_name() for n in nodes], stats["printed"]
    return next(n for n in nodes if n.node_name() == stats["home"])


async def deliver_from(senders, account, sessions, total, prefix, expected_total=None):
    """Each of `senders` sends its part of `total` messages, bodies starting
    with `prefix`; returns how many of them each session got once all
    (`expected_total` deliveries, `total` by default) arrived."""
    for i, sender in enumerate(senders):
        send_messages(sender, account, total // len(senders), prefix=f"{prefix}-{i}")

    def counts():
        return [sum(b.startswith(f"{prefix}-") for b in s.bodies()) for s in sessions]

    assert await wait_for(lambda: sum(counts()) >= (expected_total or total)), counts()
    await settle(0.2)
    return counts()


async def active(client):
    """The account's active algorithm, as a query through `client` answers."""
    reply = await client.iq("get", f"<query xmlns='{NS_CMR}'/>")
    assert reply.get("type") == "result", ET.tostring(reply)
    return [e.get("algorithm") for e in reply.find(f"{{{NS_CMR}}}query").findall(f"{{{NS_CMR}}}active")]


def stored_offline(nodes, account):
    """The bodies of what ejabberd stored offline for `account`, read (not
    delivered) on each of `nodes`: after a partition each side has its own
    table."""
    user, domain = account.split("@")
    return {body for node in nodes for body in re.findall(r'"([^"]*)"', node.eval(
        f'[binary_to_list(fxml:get_subtag_cdata(xmpp:encode(M), <<"body">>)) '
        f'|| M <- mod_offline:get_offline_els(<<"{user}">>, <<"{domain}">>)]'))}


def watch_rehoming(node, account, sessions):
    """Starts a process on `node` that notes the time (in µs) when the
    account's home, asked from there, holds exactly `sessions` sessions (its
    sessions are fewer only once a node's are gone): how long re-homing
    takes, measured on the server, without a command's start-up in it."""
    node.eval(f'spawn(fun() -> Watch = fun Loop(N) when N > 0 -> '
              f'Rows = [L || L <- string:split(mod_cmr:stats(<<"{account}">>), "\\n", all), '
              f'lists:prefix("node-", L)], '
              f'case length(Rows) of {sessions} -> persistent_term:put(cmr_test_rehomed, '
              f'os:system_time(microsecond)); _ -> timer:sleep(2), Loop(N - 1) end; Loop(_) -> gave_up end, '
              f'Watch(30000) end)')


def rehoming_time(node, since):
    """Seconds from `since` to the time watch_rehoming() noted on `node`."""
    noted = node.eval("persistent_term:get(cmr_test_rehomed, none)")
    return "(not noted)" if noted == "none" else f"{int(noted) / 1e6 - since.timestamp():.3f}"


def noticed(survivors, since):
    """Seconds from `since` until the first survivor logged that the nodes
    running mod_cmr changed (ejabberd's log timestamps)."""
    stamps = [datetime.fromisoformat(line.split(" [")[0]) for node in survivors for line in node.log().splitlines()
              if MEMBERSHIP_LOG in line]
    return f"{min(t for t in stamps if t >= since).timestamp() - since.timestamp():.3f}"


class Twins:
    """An account of the CMR domain and one of the native domain, each with
    two sessions on every node, and a sender on every node that writes to
    both: the same stream meets the same failure under CMR and under
    ejabberd's own routing. Every body is unique, so what a session received
    is known, duplicates counting once."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.accounts = {"cmr": nodes[0].account(), "native": nodes[0].account(nodes[0].native_domain)}
        self.sessions, self.senders = {}, []
        # Bodies sent, by routing and sender's node.
        self.sent = defaultdict(set)
        self.batches = 0

    async def connect(self):
        for routing, account in self.accounts.items():
            self.sessions[routing] = await spread(self.nodes, account)
        self.senders = [await online(node, self.nodes[0].account(), "probe") for node in self.nodes]
        await self.sessions["cmr"][0].set_algorithm(ROUND_ROBIN)
        await registered(self.nodes[0], self.accounts["cmr"], self.sessions["cmr"])

    def send(self, from_nodes, count=BATCH):
        """A batch from the senders on `from_nodes` to both accounts; returns
        its bodies."""
        batch = set()
        for node, sender in zip(self.nodes, self.senders):
            if node in from_nodes:
                for routing, account in self.accounts.items():
                    prefix = f"{routing}-{node.node}-{self.batches}"
                    send_messages(sender, account, count, prefix=prefix)
                    self.sent[routing, node] |= {f"{prefix}-{i}" for i in range(count)}
                    batch |= {f"{prefix}-{i}" for i in range(count)}
        self.batches += 1
        return batch

    def received(self):
        return set(bodies(*self.sessions["cmr"], *self.sessions["native"]))

    async def stream(self, from_nodes, batches):
        for _ in range(batches):
            self.send(from_nodes)
            await settle(0.05)

    async def strike(self, failure):
        """A burst from every sender, and `failure()` once the first of it has
        arrived: the rest is on its way through the cluster."""
        burst = self.send(self.nodes, BURST)
        assert await wait_for(lambda: burst & self.received())
        failure()

    async def stream_until(self, from_nodes, condition):
        """Batches from the senders on `from_nodes` until `condition()` holds
        (through the whole change it waits for, however long the machine
        takes), then a few more; returns when it first held (the event
        loop's time), or None."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        held_at = None
        while held_at is None and asyncio.get_running_loop().time() < deadline:
            await self.stream(from_nodes, 1)
            if condition():
                held_at = asyncio.get_running_loop().time()
        await self.stream(from_nodes, 5)
        return held_at

    def outcome(self, routing, from_nodes, dead, stored):
        """What became of the messages the senders on `from_nodes` sent to the
        `routing` account: received by a session of a node still up, by one
        of a node in `dead` before it died, stored offline, or lost."""
        sent = set().union(*(self.sent[routing, node] for node in from_nodes))
        gone = [s for node in dead for s in sessions_on(self.nodes, node, self.sessions[routing])]
        received = sent & set(bodies(*[s for s in self.sessions[routing] if s not in gone]))
        before_death = (sent & set(bodies(*gone))) - received
        offline = (sent & stored) - received - before_death
        copies = bodies(*self.sessions[routing])
        counts = {"sent": len(sent), "received": len(received), "stored offline": len(offline),
                  "lost": len(sent - received - before_death - offline),
                  "received twice or more": sum(copies[b] > 1 for b in sent)}
        if dead:
            counts["received only by the dead node's sessions, before it died"] = len(before_death)
        return counts

    async def settled(self, sides, dead=()):
        """Waits until every message of the senders of each of `sides` (name:
        nodes) is accounted for under both routings, or TIMEOUT passed, and
        returns their outcomes by side and routing."""
        up = [node for node in self.nodes if node not in dead]

        def outcomes():
            found = {side: {routing: self.outcome(routing, nodes, dead, set()) for routing in ROUTINGS}
                     for side, nodes in sides.items()}
            for routing, account in self.accounts.items():
                if any(found[side][routing]["lost"] for side in sides):
                    stored = stored_offline(up, account)
                    for side, nodes in sides.items():
                        found[side][routing] = self.outcome(routing, nodes, dead, stored)
            return found

        await wait_for(lambda: not any(o["lost"] for side in outcomes().values() for o in side.values()))
        await settle(0.2)
        found = outcomes()
        for side, by_routing in found.items():
            for routing, label in ROUTINGS.items():
                print(f"{side}, {label}: " + ", ".join(f"{n} {what}" for what, n in by_routing[routing].items()))
        return found

    async def close(self, dead=()):
        gone = [s for node in dead for routing in ROUTINGS
                for s in sessions_on(self.nodes, node, self.sessions[routing])]
        await close(*[s for routing in ROUTINGS for s in self.sessions[routing] if s not in gone],
                    *[s for node, s in zip(self.nodes, self.senders) if node not in dead])


async def shares(nodes, algorithm, prefix, priorities=(0,) * 6):
    """An account under `algorithm` with two sessions on each node at
    `priorities`, and a sender on every node: once the account's home, asked
    through every node, holds all six sessions, 600 messages (bodies
    starting with `prefix`). Returns how many each session got, and the
    account's stats."""
    account = nodes[0].account()
    sessions = await spread(nodes, account, priorities)
    senders = [await online(node, nodes[0].account(), "probe") for node in nodes]
    await sessions[0].set_algorithm(algorithm)
    for node in nodes:
        await registered(node, account, sessions)
    counts = await deliver_from(senders, account, sessions, 600, prefix)
    stats = nodes[0].stats(account)
    await close(*senders, *sessions)
    return counts, stats


def test_round_robin_gives_every_session_its_share_whichever_node(nodes):
    counts, stats = run(shares(nodes, ROUND_ROBIN, "rr"))
    assert all(abs(c - 100) <= 1 for c in counts), f"{counts}\n{stats}"


def test_weighted_follows_priority_whichever_node(nodes):
    priorities = (3, 1, 2, 1, 2, 3)
    counts, stats = run(shares(nodes, WEIGHTED, "weighted", priorities))
    # 600 messages are 50 whole cycles of the weights (sum 12).
    expected = [600 * p // sum(priorities) for p in priorities]
    assert all(abs(c - share) <= 2 for c, share in zip(counts, expected)), f"{counts}, expected {expected}\n{stats}"


def test_sticky_keeps_a_sender_on_one_session_whichever_node_it_sends_from(nodes):
    async def scenario():
        account = nodes[0].account()
        sessions = await spread(nodes, account)
        await sessions[0].set_algorithm(STICKY)
        await registered(nodes[0], account, sessions)
        # A sender is a bare JID: each has a session on two different nodes.
        senders = []
        for i in range(6):
            jid = nodes[0].account()
            senders += [await online(nodes[i % 3], jid, "a"), await online(nodes[(i + 1) % 3], jid, "b")]
        for sender in senders:
            send_messages(sender, account, 10, prefix=sender.boundjid.full)
        assert await wait_for(lambda: sum(len(s.messages) for s in sessions) >= 120)
        await settle(0.2)
        owners = defaultdict(Counter)
        for session in sessions:
            for message in session.messages:
                owners[message["from"].bare][session.boundjid.resource] += 1
        await close(*senders, *sessions)
        return owners

    owners = run(scenario())
    assert len(owners) == 6 and all(list(got.values()) == [20] for got in owners.values()), dict(owners)


def test_a_choice_made_on_one_node_shows_on_the_others(nodes):
    async def scenario():
        account = nodes[0].account()
        on_first, on_third = await online(nodes[0], account, "node-0"), await online(nodes[2], account, "node-4")
        await on_first.set_algorithm(WEIGHTED)
        seen_on_third = await active(on_third)
        await on_third.set_algorithm(ROUND_ROBIN)
        seen_on_first = await active(on_first)
        await close(on_first, on_third)
        return seen_on_third, seen_on_first

    assert run(scenario()) == ([WEIGHTED], [ROUND_ROBIN])


def choices_made(nodes):
    """How many operators' choices (mod_cmr_home:choose_for/3, which applies
    one and stores it) each node has made since choices_counted()."""
    counts = {}
    for node in nodes:
        counted = node.eval("erlang:trace_info({mod_cmr_home, choose_for, 3}, call_count)")
        counts[node.node] = int(re.fullmatch(r"\{call_count,(\d+)\}", counted).group(1))
    return counts


def choices_counted(nodes, on=True):
    for node in nodes:
        node.eval(f"erlang:trace_pattern({{mod_cmr_home, choose_for, 3}}, {str(on).lower()}, [call_count])")


def test_an_operators_choice_through_any_node_is_made_and_stored_by_the_accounts_home(nodes):
    """The admin command and cmr_set_algorithm, run on a node that is not
    the account's home: the home applies the choice, so the account's
    sessions on every node switch, and it alone stores it; an offline
    account's choice, set the same way, applies at its next login."""
    async def scenario():
        account, offline_account = nodes[0].account(), nodes[0].account()
        sessions = await spread(nodes, account)
        await registered(nodes[0], account, sessions)
        home = home_of(nodes, account)
        elsewhere = next(node for node in nodes if node is not home)
        sender = await online(elsewhere, nodes[0].account(), "probe")
        admin = await commanding(elsewhere, elsewhere.admin, "console")
        choices_counted(nodes)
        try:
            note = notes(await run_admin(admin, elsewhere, account, ROUND_ROBIN))
            switched = [await active(session) for session in sessions]
            counts = await deliver_from([sender], account, sessions, 60, "admin")
            by_admin = choices_made(nodes)
            # Offline: set through a node that is not its home, then logged in there.
            offline_home = home_of(nodes, offline_account)
            through = next(node for node in nodes if node is not offline_home)
            through.tool_set("ejabberdctl", offline_account, "weighted")
            got = through.tool_get("rest", offline_account)
            by_tool = choices_made(nodes)
            later = await online(through, offline_account, "r")
            at_login = await active(later)
        finally:
            choices_counted(nodes, on=False)
        await close(admin, sender, later, *sessions)
        return (note, switched, counts, by_admin, home, offline_home, got, by_tool, at_login)

    note, switched, counts, by_admin, home, offline_home, got, by_tool, at_login = run(scenario())
    assert switched == [[ROUND_ROBIN]] * 6, f"the account's sessions on every node switched: {note}"
    assert counts == [10] * 6, "its home routes by the choice"
    assert by_admin == {node.node: int(node is home) for node in nodes}, "made and stored once, by the home"
    assert got == WEIGHTED
    assert {node: by_tool[node] - by_admin[node] for node in by_tool} == \
        {node.node: int(node is offline_home) for node in nodes}, "made and stored once, by its home"
    assert at_login == [WEIGHTED], "applied at the next login"


def test_a_node_without_mod_cmr_leaves_its_accounts_to_ejabberd_until_it_runs_it(nodes):
    """A rolling upgrade: while one node runs no mod_cmr, an account with a
    session there is routed by ejabberd itself (every session at the top
    priority gets each message); once it runs mod_cmr again, CMR routes."""
    upgraded = nodes[2]

    async def scenario():
        account = nodes[0].account()
        sessions = await spread(nodes, account)
        sender = await online(nodes[0], nodes[0].account(), "probe")
        await sessions[0].set_algorithm(ROUND_ROBIN)
        await registered(nodes[0], account, sessions)
        upgraded.stop_module()
        try:
            assert await wait_for(lambda: OUTSIDERS_LOG in nodes[0].log()), nodes[0].log_tail()
            without = await deliver_from([sender], account, sessions, 6, "without", expected_total=36)
        finally:
            upgraded.start_module()
        await registered(nodes[0], account, sessions)
        again = await deliver_from([sender], account, sessions, 60, "again")
        await close(sender, *sessions)
        return without, again

    without, again = run(scenario())
    assert without == [6] * 6, "ejabberd's own routing: every session gets each message"
    assert again == [10] * 6, "round robin over the six sessions again"


def test_messages_forwarded_to_a_home_that_does_not_answer_are_routed_by_ejabberd(nodes):
    """The home's mod_cmr process is stuck (suspended): the node that
    forwarded it messages has ejabberd route them once they go
    unacknowledged too long; when the home wakes up it routes them too
    (duplicates, not losses)."""
    async def scenario():
        account = nodes[0].account()
        sessions = await spread(nodes, account)
        await sessions[0].set_algorithm(ROUND_ROBIN)
        await registered(nodes[0], account, sessions)
        home = home_of(nodes, account)
        elsewhere = next(node for node in nodes if node is not home)
        sender = await online(elsewhere, nodes[0].account(), "probe")
        process = "mod_cmr_cluster_localhost"
        elsewhere.expected_problems.append(UNANSWERED_LOG)
        home.eval(f"sys:suspend({process})")
        try:
            # ejabberd's routing: every session at the top priority.
            stuck = await deliver_from([sender], account, sessions, 5, "stuck", expected_total=30)
        finally:
            home.eval(f"sys:resume({process})")

        def copies():
            return [sum(b.startswith("stuck-") for b in s.bodies()) for s in sessions]

        assert await wait_for(lambda: sum(copies()) >= 35), copies()
        await settle(0.2)
        woken = copies()
        assert re.search(UNANSWERED_LOG, elsewhere.log()), elsewhere.log_tail()
        await close(sender, *sessions)
        return stuck, woken

    stuck, woken = run(scenario())
    print(f"forwarded to a stuck home: {sum(stuck)} deliveries by ejabberd, {sum(woken) - sum(stuck)} more "
          f"once the home woke up")
    assert stuck == [5] * 6
    assert sum(woken) == 35, "the home routes each message once more when it wakes up"


def test_every_node_serves_its_journals_figures(nodes):
    """The cluster transport's figures beside the library's in cmr_metrics:
    what the journal holds, in bytes, and how many messages a full journal
    did not keep (mod_cmr_journal's EUnit tests check the bound itself)."""
    for node in nodes:
        figures = node.metrics()
        assert figures["journal_bytes"] >= 0 and figures["journal_overflow"] == 0, (node.node, figures)


def accounts_homed(nodes, wanted):
    """Fresh accounts of the main domain by home: `wanted` is {node: how
    many}."""
    found = {node: [] for node in wanted}
    while any(len(found[node]) < count for node, count in wanted.items()):
        account = nodes[0].account()
        home = home_of(nodes, account)
        if home in wanted and len(found[home]) < wanted[home]:
            found[home].append(account)
    return found


def suspended_processes(node):
    """How many processes of `node` are suspended: on a node whose
    distribution buffer towards another is full, those that sent there."""
    return int(node.eval("length([P || P <- erlang:processes(), process_info(P, status) =:= {status, suspended}])"))


async def archiving_off(*clients):
    """No XEP-0313 archive for these accounts: the archive is a Mnesia table
    copied on every node, so a hung node would hold up each write to it
    (ejabberd's own, whatever mod_cmr does)."""
    for client in clients:
        reply = await client.iq("set", "<prefs xmlns='urn:xmpp:mam:2' default='never'/>")
        assert reply.get("type") == "result", ET.tostring(reply)


# What the stopped node's accounts get: messages of this size until the
# distribution buffer towards it is full (a megabyte by default, and the
# sockets' buffers before it).
FLOOD_BODY = 16_000
FLOOD_BATCH = 50
# A stop longer than net_ticktime (60 s) makes the others drop the node
# and Mnesia partition: the node is woken up well before.
STOP_SECONDS = 25


def test_a_hung_node_holds_up_only_the_accounts_homed_on_it(nodes):
    """Node C stops (SIGSTOP) while a node A sends to accounts homed on C
    and on B: once A's distribution buffer towards C is full, messages from
    A to B's accounts still arrive, each exactly once, while C is stopped.
    After SIGCONT, C's accounts get every message sent to them: at least
    once, as what A's forwarder to C had sent and waited on for over 5 s
    unacknowledged is routed by ejabberd too (the home routes it as well
    when it wakes up)."""
    a, b, c = nodes

    async def scenario():
        homed = accounts_homed(nodes, {a: 1, b: 2, c: 2})
        sender = await online(a, homed[a][0], "sender")
        receivers = {node: [await online(node, account, "r") for account in homed[node]] for node in (b, c)}
        await archiving_off(sender, *receivers[b], *receivers[c])
        for node in (b, c):
            for account, receiver in zip(homed[node], receivers[node]):
                await registered(a, account, [receiver])
        a.expected_problems.append(UNANSWERED_LOG)
        flooded, during, padding = 0, None, "x" * FLOOD_BODY
        c.process.send_signal(signal.SIGSTOP)
        stopped = asyncio.get_running_loop().time()
        try:
            # Until a process of A waits on the full buffer towards C (for
            # at most half the stop).
            while (not suspended_processes(a) and flooded < 40 * FLOOD_BATCH
                   and asyncio.get_running_loop().time() - stopped < STOP_SECONDS / 2):
                for i in range(FLOOD_BATCH):
                    sender.send_raw(f"<message type='chat' to='{homed[c][(flooded + i) % 2]}'>"
                                    f"<body>flood-{flooded + i} {padding}</body></message>")
                flooded += FLOOD_BATCH
                await round_trip(sender)
            assert suspended_processes(a), f"A's buffer towards C never filled ({flooded} messages of the flood)"
            for account in homed[b]:
                send_messages(sender, account, 100, prefix="during")

            def arrived():
                return [sum(body.startswith("during-") for body in receiver.bodies()) for receiver in receivers[b]]

            left = STOP_SECONDS - (asyncio.get_running_loop().time() - stopped)
            await wait_for(lambda: sum(arrived()) >= 200, timeout=max(left, 0))
            during = arrived()
        finally:
            c.process.send_signal(signal.SIGCONT)
        duplicates = [sum(n > 1 for n in Counter(r.bodies()).values()) for r in receivers[b]]

        def flood_received():
            return {body.split(" ")[0] for receiver in receivers[c] for body in receiver.bodies()}

        await wait_for(lambda: len(flood_received()) >= flooded)
        received = len(flood_received())
        copies = sum(len(r.messages) for r in receivers[c]) - received
        await close(sender, *receivers[b], *receivers[c])
        return during, duplicates, flooded, received, copies

    during, duplicates, flooded, received, copies = run(scenario())
    print(f"C stopped: {sum(during)} of 200 messages to B's accounts delivered meanwhile (A's buffer towards C full "
          f"after {flooded} messages of {FLOOD_BODY} bytes); after SIGCONT, {received} of the {flooded} to C's "
          f"accounts delivered, {copies} more deliveries as copies")
    assert during == [100, 100] and duplicates == [0, 0], "B's accounts get everything once while C is stopped"
    assert received == flooded, f"C's accounts got every message after SIGCONT: {received}"


def test_a_killed_node_loses_no_more_than_ejabberd_alone_and_routing_comes_back(nodes):
    async def scenario():
        twins = Twins(nodes)
        await twins.connect()
        # The account's home dies, so the survivors must home it again.
        victim = home_of(nodes, twins.accounts["cmr"])
        survivors = [node for node in nodes if node is not victim]
        surviving = [s for s in twins.sessions["cmr"] if s not in sessions_on(nodes, victim, twins.sessions["cmr"])]
        await twins.stream(nodes, 5)
        watch_rehoming(survivors[0], twins.accounts["cmr"], len(surviving))
        killed = {}

        def kill():
            killed["wall"], killed["loop"] = datetime.now(timezone.utc), asyncio.get_running_loop().time()
            victim.kill()

        await twins.strike(kill)
        # Re-homed: the survivors' stats show exactly the surviving sessions.
        rehomed = await twins.stream_until(survivors, lambda: holds(survivors[0], twins.accounts["cmr"], surviving))
        if rehomed:
            print(f"{victim.node} killed: the survivors logged the change {noticed(survivors, killed['wall'])} s "
                  f"after the kill; the new home held exactly the surviving sessions "
                  f"{rehoming_time(survivors[0], killed['wall'])} s after it")
        # Only the survivors' senders count: the victim's died with it.
        outcomes = await twins.settled({f"senders on the 2 surviving nodes, {victim.node} killed": survivors},
                                       dead=[victim])
        assert rehomed, survivors[0].stats(twins.accounts["cmr"])
        senders = [s for node, s in zip(nodes, twins.senders) if node is not victim]
        counts = await deliver_from(senders, twins.accounts["cmr"], surviving, 400, "after-kill")
        stats = survivors[0].stats(twins.accounts["cmr"])
        await twins.close(dead=[victim])
        return outcomes, counts, stats

    outcomes, counts, stats = run(scenario())
    for by_routing in outcomes.values():
        assert by_routing["cmr"]["lost"] <= by_routing["native"]["lost"], by_routing
    assert counts == [100] * 4, f"round robin over the surviving sessions: {counts}\n{stats}"


def test_the_killed_node_comes_back_and_rejoins(nodes):
    down = next((node for node in nodes if node.process is None), None)
    if down is None:
        # Run on its own, without the test above: a node dies here.
        down = nodes[-1]
        down.kill()
    # Started again on its own spool: its Mnesia schema knows the cluster,
    # and it rejoins without join_cluster.
    down.start()
    everyone = ",".join(f"'{node.node_name()}'" for node in nodes)

    def rejoined():
        return all(node.eval(f"lists:sort(mnesia:system_info(running_db_nodes)) =:= lists:sort([{everyone}])")
                   == "true" for node in nodes)

    assert run(wait_for(rejoined)), [node.eval("mnesia:system_info(running_db_nodes)") for node in nodes]
    counts, stats = run(shares(nodes, ROUND_ROBIN, "rejoined"))
    assert all(abs(c - 100) <= 1 for c in counts), f"{counts}\n{stats}"


def test_a_partition_loses_no_more_than_ejabberd_alone_on_either_side_and_heals(nodes):
    async def scenario():
        twins = Twins(nodes)
        await twins.connect()
        cmr = twins.accounts["cmr"]
        # The account's home is cut off from the two other nodes.
        isolated = home_of(nodes, cmr)
        rest = [node for node in nodes if node is not isolated]

        def split():
            mine = sessions_on(nodes, isolated, twins.sessions["cmr"])
            return (holds(isolated, cmr, mine)
                    and holds(rest[0], cmr, [s for s in twins.sessions["cmr"] if s not in mine]))

        await twins.stream(nodes, 5)
        try:
            await twins.strike(lambda: isolated.disconnect(*rest))
            # Each side routes its own sessions: both sides' stats show them.
            was_split = await twins.stream_until(nodes, split)
            outcomes = await twins.settled({f"senders on the cut-off node {isolated.node}": [isolated],
                                            "senders on the two other nodes": rest})
        finally:
            isolated.reconnect(*rest)
        assert was_split, (isolated.stats(cmr), rest[0].stats(cmr))
        for node in nodes:
            await registered(node, cmr, twins.sessions["cmr"])
        counts = await deliver_from(twins.senders, cmr, twins.sessions["cmr"], 600, "healed")
        stats = nodes[0].stats(cmr)
        await twins.close()
        return outcomes, counts, stats

    outcomes, counts, stats = run(scenario())
    for by_routing in outcomes.values():
        assert by_routing["cmr"]["lost"] <= by_routing["native"]["lost"], by_routing
    assert all(abs(c - 100) <= 1 for c in counts), f"{counts}\n{stats}"
