"""The bad-stanza corpus (tests/corpus/stanzas), sent by a logged-in client
as raw bytes: each case gets the answer its manifest expects from a live
server (an IQ result or error, or the server's own stream error where its
parser refuses the bytes first), and the server stays up."""

import asyncio
from pathlib import Path

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import require, run
from xmpp import TIMEOUT, close, cluster, deliver, error_condition, online, round_trip

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "stanzas"
# The corpus stanzas carry the `from` a host stamps; a client sends none.
FROM = b" from='juliet@capulet.lit/balcony'"


def cases():
    for line in (CORPUS / "cases.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _library, live = line.split("\t")
            yield name, live


def expected_live(live, host):
    """The manifest's live outcome for this host: one for every host, or
    `host=outcome` pairs separated by semicolons, where a host may be named
    with its major version (`openfire5=`) for an outcome of that version."""
    if "=" not in live:
        return live
    outcomes = dict(pair.split("=", 1) for pair in live.split(";"))
    return next(outcomes[name] for name in host.outcome_names if name in outcomes)


# How long the client waits for the answer before its next keepalive.
KEEPALIVE_SECONDS = 0.2


async def corpus_session(host, account, resource="hostile"):
    """A logged-in client, and two futures: the server's answer to the
    corpus IQ (id c1, its XML), and the stream's end."""
    client = await online(host, account, resource)
    loop = asyncio.get_running_loop()
    answered, closed = loop.create_future(), loop.create_future()

    def on_iq(iq):
        if iq["id"] == "c1" and not answered.done():
            answered.set_result(iq.xml)

    def on_close(_event):
        if not closed.done():
            closed.set_result(True)

    client.register_handler(Callback("corpus answer", MatchXPath("{jabber:client}iq"), on_iq))
    client.add_event_handler("stream_error", on_close)
    client.add_event_handler("disconnected", on_close)
    # Stop slixmpp from reconnecting once the server closed the stream.
    client.add_event_handler("disconnected", lambda _: client.abort())
    return client, answered, closed


async def answer(host, account, data):
    """What the server makes of `data` from a logged-in client: `result`,
    an error condition, `stream-error` (it closed the stream) or
    `no-answer`.

    While it waits, the client sends what a client sends next: whitespace
    keepalives. Under expat's reparse deferral (expat 2.6, and Debian 12's
    2.5.0-1+deb12u2 on) the server's parser leaves a large token unparsed
    until the bytes it holds have doubled since its last try, so a large
    stanza may be answered only after more bytes follow it, and one small
    keepalive may not be enough. Each keepalive doubles the last; once
    they add up to the stanza's size, any token it held has been parsed,
    and the client waits for the answer. Whitespace between or inside
    stanzas changes no outcome: it only makes the server go on."""
    client, answered, closed = await corpus_session(host, account)
    client.transport.write(data)
    followed, keepalive = 0, 1
    while True:
        enough = followed >= len(data)
        done, _ = await asyncio.wait([answered, closed], timeout=TIMEOUT if enough else KEEPALIVE_SECONDS,
                                     return_when=asyncio.FIRST_COMPLETED)
        if done or enough:
            break
        client.transport.write(b" " * keepalive)
        followed += keepalive
        keepalive *= 2
    if answered in done:
        reply = answered.result()
        outcome = "result" if reply.get("type") == "result" else error_condition(reply)
    elif closed in done:
        outcome = "stream-error"
    else:
        outcome = "no-answer"
    if not closed.done():
        await close(client)
    return outcome


@pytest.mark.parametrize("name,live", list(cases()))
def test_bad_stanza(host, name, live):
    expected = expected_live(live, host)
    if expected.startswith("not-sent"):
        pytest.skip(f"{name}: {expected}")
    data = (CORPUS / name).read_bytes().replace(FROM, b"")
    host.expected_problems.extend(host.refused_input_logs)

    async def scenario():
        account = host.account()
        outcome = await answer(host, account, data)
        # The server is still up and still answers.
        probe = await online(host, account, "after")
        await close(probe)
        return outcome

    assert run(scenario()) == expected


def test_hostile_acks_and_shows_leave_the_log_clean(host):
    """A client controls what it acknowledges and what it shows: numbers
    that are no count, and a <show/> outside RFC 6121's four. mod_cmr
    neither fails on them nor writes a line per stanza; the session with
    the odd show is routed to as available."""
    require(host, "acks")
    host.expected_problems.extend(host.refused_input_logs)

    async def scenario():
        account, (plain, odd), sensor = await cluster(host, [0, 0], "urn:xmpp:cmr:roundrobin")
        acker = await online(host, host.account(), "acker", smacks=True)
        for h in ("0.5", "-1", "-1e400", "1e400", "nan", "x"):
            acker.transport.write(f"<a xmlns='urn:xmpp:sm:3' h='{h}'/>".encode())
        for _ in range(5):
            odd.transport.write(b"<presence><show>online</show></presence>")
        await round_trip(odd)
        counts = await deliver(sensor, account, [plain, odd], 10)
        await close(sensor, plain, odd, acker)
        return counts

    assert run(scenario()) == [5, 5]
    assert [w for w in host.warnings() if "cmr" in w and not host.expected(w)] == []
    assert host.problems() == []


def test_a_message_before_login_is_not_delivered(host):
    """A client that has not logged in sends a message to an account: the
    server refuses it (an error, or it closes the stream), and nothing
    reaches the account, whatever mod_cmr routes."""
    async def scenario():
        account = host.account()
        target = await online(host, account, "target")
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        writer.write(f"<?xml version='1.0'?><stream:stream to='{host.domain}' xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode())
        received = b""
        while b"</stream:features>" not in received:
            received += await asyncio.wait_for(reader.read(65536), TIMEOUT)
        writer.write(f"<message to='{account}' id='early'><body>before-login</body></message>".encode())
        # The server's answer: an error for the message, a stream error, or
        # the stream closed. Then the account's own round trip orders
        # anything the server might have delivered before it.
        received = b""
        while not any(mark in received for mark in (b"early", b"stream:error", b"</stream:stream>")):
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            if not chunk:
                break
            received += chunk
        writer.close()
        await round_trip(target)
        got = target.bodies()
        await close(target)
        return got

    assert run(scenario()) == []
