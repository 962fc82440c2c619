"""Real XMPP clients (slixmpp over TCP) for the conformance suite."""

import asyncio
import logging
from collections import Counter

import slixmpp
from slixmpp.xmlstream import ET

logging.getLogger("slixmpp").setLevel(logging.ERROR)
# slixmpp leaves its stanza filter task pending at disconnect; asyncio
# reports each one when it is collected. Noise for short-lived test clients.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

NS_CMR = "urn:xmpp:cmr:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
# An upper bound for what a test waits on: generous, as a busy machine is
# slow; a passing test does not wait it out.
TIMEOUT = 30


class Client(slixmpp.ClientXMPP):
    """A session of an account. `messages` keeps every message it received
    directly; `carbons` the `<received/>` copies."""

    def __init__(self, jid, password, *, priority=0, show=None, available=True,
                 carbons=False, smacks=False):
        super().__init__(jid, password)
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.register_plugin("xep_0030")
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        if carbons:
            self.register_plugin("xep_0280")
            self.add_event_handler("carbon_received", self._on_carbon)
        if smacks:
            self.register_plugin("xep_0198")
        self.priority, self.show, self.available, self.want_carbons = priority, show, available, carbons
        self.messages = []
        self.carbons = []
        self.started = asyncio.Event()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)

    async def _on_start(self, _event):
        if self.want_carbons:
            await self.plugin["xep_0280"].enable()
        if self.available:
            self.send_presence(ppriority=self.priority, pshow=self.show)
        # Started once the server has handled the presence.
        await round_trip(self)
        self.started.set()

    def _on_message(self, msg):
        if msg.xml.find("{urn:xmpp:carbons:2}received") is not None:
            return
        if msg["type"] != "error":
            self.messages.append(msg)

    def _on_carbon(self, msg):
        self.carbons.append(msg["carbon_received"])

    def bodies(self):
        return [m["body"] for m in self.messages]

    def set_presence(self, priority=None, show=None, available=True):
        if available:
            self.priority = self.priority if priority is None else priority
            self.show = show
            self.send_presence(ppriority=self.priority, pshow=show)
        else:
            self.send_presence(ptype="unavailable")

    async def iq(self, kind, payload, to=None):
        """Sends an IQ with `payload` (an XML string) and returns the
        answer as an element, errors included."""
        iq = self.Iq(stype=kind)
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(payload))
        try:
            return (await iq.send(timeout=TIMEOUT)).xml
        except slixmpp.exceptions.IqError as e:
            return e.iq.xml

    async def set_algorithm(self, algorithm):
        reply = await self.iq("set", f"<cmr xmlns='{NS_CMR}' algorithm='{algorithm}'/>")
        assert reply.get("type") == "result", ET.tostring(reply)


async def round_trip(client):
    """A disco#info round trip to the client's server: everything the client
    sent before it has been handled when it returns."""
    await client.plugin["xep_0030"].get_info(jid=client.boundjid.domain, timeout=TIMEOUT)


async def update_presence(client, **presence):
    """Sends a presence (see Client.set_presence) and waits until the server
    has handled it."""
    client.set_presence(**presence)
    await round_trip(client)


def error_condition(reply):
    """The defined condition of an error IQ, or None."""
    error = reply.find("{jabber:client}error")
    if error is None:
        return None
    for child in error:
        if child.tag.startswith("{" + NS_STANZAS) and not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return None


async def online(host, jid, resource, **options):
    """A connected session with its presence sent."""
    client = Client(f"{jid}/{resource}", host.password, **options)
    client.connect("127.0.0.1", host.port)
    await asyncio.wait_for(client.started.wait(), TIMEOUT)
    return client


async def settle(seconds=0.3):
    """Lets the server process what was sent (presence, messages)."""
    await asyncio.sleep(seconds)


async def wait_for(predicate, timeout=TIMEOUT):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def close(*clients):
    for c in clients:
        c.disconnect()
    # A client whose stream the server already closed may never report it.
    await asyncio.wait([c.disconnected for c in clients], timeout=TIMEOUT)


def send_messages(sender, to, count, *, kind="chat", hint=None, prefix="m", payload=None):
    """Sends `count` messages; `hint` adds a CMR hint, `payload` (an XML
    string) one more child."""
    for i in range(count):
        msg = sender.make_message(mto=to, mbody=f"{prefix}-{i}")
        # Set directly: slixmpp drops a type it does not know.
        msg.xml.set("type", kind)
        if hint:
            msg.append(ET.fromstring(f"<cmr xmlns='{NS_CMR}' algorithm='{hint}'/>"))
        if payload:
            msg.append(ET.fromstring(payload))
        msg.send()


async def send_paced(sender, to, batches, size, prefix):
    """Sends `batches` batches of `size` messages with a pause after each,
    as a sensor fleet does, so that acknowledgements can come back."""
    for batch in range(batches):
        send_messages(sender, to, size, prefix=f"{prefix}-{batch}")
        await settle(0.05)


def withhold_acks(client):
    """Makes the client stop answering XEP-0198 ack requests, so what it
    receives stays unacknowledged. Returns a function that makes it answer
    again and acknowledge everything at once."""
    plugin = client.plugin["xep_0198"]
    send_ack = plugin.send_ack
    plugin.send_ack = lambda: None

    def resume():
        plugin.send_ack = send_ack
        send_ack()

    return resume


async def cluster(host, priorities, algorithm, account=None, **options):
    """An account (a fresh one unless given) with one session per priority
    and `algorithm` active, and a connected sensor of another account."""
    account, sensor_jid = account or host.account(), host.account()
    nodes = [await online(host, account, f"node-{i}", priority=p, **options) for i, p in enumerate(priorities)]
    sensor = await online(host, sensor_jid, "probe")
    await nodes[0].set_algorithm(algorithm)
    return account, nodes, sensor


async def deliver(sender, account, nodes, count, expected_total=None, **options):
    """Sends `count` messages and returns how many each node got once
    `expected_total` (default `count`) deliveries have arrived."""
    send_messages(sender, account, count, **options)
    expected = count if expected_total is None else expected_total
    assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= expected), \
        [len(n.messages) for n in nodes]
    await settle(0.2)
    return [len(n.messages) for n in nodes]


async def drop_connection(client):
    """Kills the client's TCP connection without a word, as a phone that
    loses its network does, and waits until the client has seen it."""
    lost = asyncio.get_running_loop().create_future()
    client.add_event_handler("disconnected", lambda _: lost.done() or lost.set_result(True))
    client.transport.abort()
    await asyncio.wait_for(lost, TIMEOUT)


def stats_row(host, account, resource):
    """The columns of `resource`'s row in the stats command's output, or
    None when it is not registered."""
    for line in host.stats(account).splitlines():
        columns = line.split("\t")
        if columns[0] == resource:
            return columns
    return None


async def hibernating(host, account, resource, state=True):
    """Waits until the stats show `resource` hibernating (or not)."""
    def shows():
        row = stats_row(host, account, resource)
        return row is not None and row[7] == str(state).lower()
    assert await wait_for(shows), host.stats(account)


async def until_waiting(host, account, resource):
    """Waits until the server holds the dropped session `resource` for its
    XEP-0198 resumption: as the server itself tells where the fixture can
    ask it (then the module may not know yet), else as the module's stats
    show it."""
    if host.waiting:
        assert await wait_for(lambda: host.waiting(f"{account}/{resource}")), resource
    else:
        await hibernating(host, account, resource)


async def until_expired(host, account, resource):
    """Waits until the server gave up on a dropped session that waited for
    XEP-0198 resumption (its hibernation time, then it is unregistered)."""
    assert await wait_for(lambda: stats_row(host, account, resource) is None,
                          timeout=host.hibernation_seconds + TIMEOUT), host.stats(account)


async def resume(host, client):
    """Reconnects the client; its XEP-0198 stream resumes."""
    resumed = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_resumed", lambda _: resumed.done() or resumed.set_result(True))
    client.connect("127.0.0.1", host.port)
    await asyncio.wait_for(resumed, TIMEOUT)


def foreign_attributes(client):
    """The namespaced attributes (but XML's own, such as xml:lang) of the
    messages the client received: none of the clients' protocols puts one
    on a message, so one there is what a module kept for itself and let
    through."""
    return [key for m in client.messages for key in m.xml.attrib
            if key.startswith("{") and not key.startswith("{http://www.w3.org/XML/1998/namespace}")]


def bodies(*clients):
    """How many times each body reached any of `clients`."""
    return Counter(b for c in clients for b in c.bodies())
