"""A bare XMPP client session on a raw socket, without an event loop: PLAIN
login over the plain stream, resource binding, the legacy session when the
server offers it, and presence when asked. The Openfire fixture uses it to
see that logins work and to ask the server IQs; benches/throughput.py to
drive a server faster than an event-loop client could, writing and reading
the socket itself once the session is up."""

import base64
import socket
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"


class RawSessionError(Exception):
    """The server refused the login or an IQ, or closed the stream."""


class RawSession:
    """A session of `jid` (user@domain) on 127.0.0.1:`port`, bound to
    `resource` (or one the server picks); with a `priority`, it sends its
    presence. Usable as a context manager, which closes the stream."""

    def __init__(self, port, jid, password, resource=None, priority=None, timeout=30):
        user, self.domain = jid.split("@")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self._open()
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
            if self._next().tag != f"{{{NS_SASL}}}success":
                raise RawSessionError("login refused")
            features = self._open()
            named = f"<resource>{resource}</resource>" if resource else ""
            self.iq(f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{named}</bind>", kind="set")
            # RFC 3921's session: older servers (Openfire 4.2) want it.
            if features.find(f"{{{NS_SESSION}}}session") is not None:
                self.iq(f"<session xmlns='{NS_SESSION}'/>", kind="set")
            if priority is not None:
                self.send(f"<presence><priority>{priority}</priority></presence>")
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()

    def send(self, text):
        self.sock.sendall(text.encode())

    def _open(self):
        """Opens a new stream; returns its features."""
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.send(f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
                  f"xmlns:stream='{NS_STREAM}' version='1.0'>")
        features = self._next()
        if features.tag != f"{{{NS_STREAM}}}features":
            raise RawSessionError("no stream features")
        return features

    def _next(self):
        """The next complete top-level element of the stream."""
        while True:
            for event, element in self.parser.read_events():
                self.depth += 1 if event == "start" else -1
                if event == "end" and self.depth == 1:
                    return element
                if self.depth == 0:
                    raise RawSessionError("stream closed")
            data = self.sock.recv(65536)
            if not data:
                raise RawSessionError("connection closed")
            self.parser.feed(data)

    def iq(self, payload, kind="get", to=None):
        """Sends an IQ with `payload` (an XML string) and returns its result
        as an element; an error answer raises RawSessionError."""
        self.send(f"<iq type='{kind}' id='raw'{f' to={to!r}' if to else ''}>{payload}</iq>")
        while True:
            reply = self._next()
            if reply.tag == "{jabber:client}iq" and reply.get("id") == "raw":
                if reply.get("type") != "result":
                    raise RawSessionError(ET.tostring(reply, encoding="unicode"))
                return reply

    def disco_features(self, jid):
        reply = self.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=jid)
        return {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
