"""Blocking (XEP-0191) and privacy lists (XEP-0016) hold for the messages
CMR routes as they do for the server's own routing: a message from a
sender the account blocks reaches none of its sessions, not even as a
carbon copy, and a sender whose own list denies the account cannot send it
one. The native cases state what the host itself guarantees (a server
without the module)."""

import pytest

from conftest import require, run, served
from slixmpp.xmlstream import ET
from xmpp import close, online, round_trip, send_messages, wait_for

NS_BLOCKING = "urn:xmpp:blocking"
NS_PRIVACY = "jabber:iq:privacy"
ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"
ALL = "urn:xmpp:cmr:all"
# How an account blocks a JID: XEP-0191's block command, or a XEP-0016
# list made its default.
MECHANISMS = {"blocking": "XEP-0191", "privacy_lists": "XEP-0016"}
ROUTINGS = [ROUND_ROBIN, ALL, None]


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """The same server without the module: the host's own routing."""
    yield from served(tmp_path_factory, {"with_cmr": False})


def server_for(request, host, algorithm):
    return host if algorithm else request.getfixturevalue("native")


async def block(server, account, jid, mechanism, stanzas):
    """Makes `account` block `jid`: with XEP-0191, everything; with a
    XEP-0016 default list, the `stanzas` it names (an empty string: all,
    incoming and outgoing, XEP-0016's only way to deny outgoing messages).
    From a session of its own that then leaves, so that the account's
    sessions log in with the list in place: XEP-0016 refuses to change the
    default list of an account with other sessions (conflict), and Openfire
    5.1's block command, on an account without a default list, makes one
    that the sessions online at the time do not read (a session reads it
    when it logs in)."""
    client = await online(server, account, "setup", available=False)
    if mechanism == "blocking":
        commands = [f"<block xmlns='{NS_BLOCKING}'><item jid='{jid}'/></block>"]
    else:
        commands = [f"<query xmlns='{NS_PRIVACY}'><list name='cmr-test'>"
                    f"<item type='jid' value='{jid}' action='deny' order='1'>{stanzas}</item>"
                    f"<item action='allow' order='2'/></list></query>",
                    f"<query xmlns='{NS_PRIVACY}'><default name='cmr-test'/></query>"]
    for command in commands:
        reply = await client.iq("set", command)
        assert reply.get("type") == "result", ET.tostring(reply)
    await close(client)


async def no_blocked_message_arrives(server, algorithm, nodes, blocked, other, account):
    """`blocked` sends messages to the account; `other`, once the server has
    handled them, sends markers along the same path (the bare JID). Each
    session that must get a marker gets it, and none got a blocked message
    before it, nor a carbon copy of one."""
    send_messages(blocked, account, 4, prefix="blocked")
    await round_trip(blocked)
    if algorithm == ROUND_ROBIN:
        # One marker each, whatever the blocked messages did to the turn.
        send_messages(other, account, len(nodes), prefix="marker")
        reached = nodes
    else:
        send_messages(other, account, 1, prefix="marker")
        # Natively Openfire delivers to one of the top sessions.
        reached = nodes if algorithm or server.native_copies_to_top else None

    def markers_arrived():
        got = [any(b.startswith("marker-") for b in n.bodies()) for n in nodes]
        return all(got[nodes.index(n)] for n in reached) if reached else any(got)

    assert await wait_for(markers_arrived), [n.bodies() for n in nodes]
    leaked = [b for n in nodes for b in n.bodies() + [c["body"] for c in n.carbons] if b.startswith("blocked-")]
    assert leaked == [], leaked


def sender_reaches_no_session(request, host, algorithm, mechanism, account_blocks):
    """The account's two sessions under `algorithm` (None: the host's own
    routing) and a sender: the account blocks the sender
    (`account_blocks`), or the sender's own list denies the account. The
    lists are in place before the sessions they bind log in."""
    server = server_for(request, host, algorithm)
    require(server, mechanism)
    carbons = "carbons" in server.features

    async def scenario():
        account, sender_jid, other_jid = server.account(), server.account(), server.account()
        if account_blocks:
            await block(server, account, sender_jid, mechanism, "<message/>")
        else:
            await block(server, sender_jid, account, mechanism, "")
        nodes = [await online(server, account, f"node-{i}", carbons=carbons) for i in range(2)]
        if algorithm:
            await nodes[0].set_algorithm(algorithm)
        sender = await online(server, sender_jid, "probe")
        other = await online(server, other_jid, "probe")
        await no_blocked_message_arrives(server, algorithm, nodes, sender, other, account)
        await close(sender, other, *nodes)
    run(scenario())


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=MECHANISMS.values())
@pytest.mark.parametrize("algorithm", ROUTINGS, ids=["roundrobin", "all", "native"])
def test_blocked_sender_reaches_no_session(request, host, algorithm, mechanism):
    sender_reaches_no_session(request, host, algorithm, mechanism, account_blocks=True)


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=MECHANISMS.values())
@pytest.mark.parametrize("algorithm", ROUTINGS, ids=["roundrobin", "all", "native"])
def test_senders_own_list_stops_the_message(request, host, algorithm, mechanism):
    sender_reaches_no_session(request, host, algorithm, mechanism, account_blocks=False)
