"""XEP-0354 protocol: disco features, the query, the set and its errors."""

from conftest import require, run
from xmpp import NS_CMR, TIMEOUT, close, error_condition, online

XEP = ["urn:xmpp:cmr:all", "urn:xmpp:cmr:mostactive", "urn:xmpp:cmr:roundrobin", "urn:xmpp:cmr:weighted"]
QUERY = f"<query xmlns='{NS_CMR}'/>"


def set_payload(algorithm=None):
    attr = f" algorithm='{algorithm}'" if algorithm else ""
    return f"<cmr xmlns='{NS_CMR}'{attr}/>"


def algorithms(reply, element):
    query = reply.find(f"{{{NS_CMR}}}query")
    return [e.get("algorithm") for e in query.findall(f"{{{NS_CMR}}}{element}")]


async def features(client, jid):
    info = await client.plugin["xep_0030"].get_info(jid=jid, timeout=TIMEOUT)
    return set(info["disco_info"]["features"])


def test_disco_features_on_server_and_account(host):
    async def scenario():
        me = host.account()
        a = await online(host, me, "r")
        assert {"urn:xmpp:cmr:0", "urn:xmpp:cmr:hints:0"} <= await features(a, host.domain)
        assert {"urn:xmpp:cmr:0", "urn:xmpp:cmr:hints:0"} <= await features(a, me)
        await close(a)
    run(scenario())


def test_disco_features_follow_each_virtual_hosts_policy(host):
    require(host, "virtual_hosts")

    async def scenario():
        b = await online(host, host.account(host.fixed_domain), "r")
        # Hints are off on the fixed host: only the protocol feature.
        fixed_features = await features(b, host.fixed_domain)
        assert "urn:xmpp:cmr:0" in fixed_features and "urn:xmpp:cmr:hints:0" not in fixed_features
        await close(b)
    run(scenario())


def test_query_own_account_server_and_another_user(host):
    async def scenario():
        me, other = host.account(), host.account()
        a = await online(host, me, "r")
        own = await a.iq("get", QUERY)
        assert own.get("type") == "result"
        assert algorithms(own, "active") == ["urn:xmpp:cmr:all"], "the default is all"
        available = algorithms(own, "available")
        assert available[:4] == XEP and len(available) == 7
        assert all(not uri.startswith("urn:xmpp:") for uri in available[4:])
        # Addressed to the own bare JID: the same answer.
        assert algorithms(await a.iq("get", QUERY, to=me), "active") == ["urn:xmpp:cmr:all"]
        server = await a.iq("get", QUERY, to=host.domain)
        assert server.get("type") == "result"
        assert algorithms(server, "active") == [] and algorithms(server, "available") == available
        assert error_condition(await a.iq("get", QUERY, to=other)) == "forbidden"
        await close(a)
    run(scenario())


def test_set_changes_the_whole_account_and_its_errors(host):
    async def scenario():
        me, other = host.account(), host.account()
        a = await online(host, me, "one")
        b = await online(host, me, "two")
        result = await a.iq("set", set_payload("urn:xmpp:cmr:roundrobin"))
        assert result.get("type") == "result" and len(result) == 0
        # Every resource of the account sees the new algorithm.
        assert algorithms(await b.iq("get", QUERY), "active") == ["urn:xmpp:cmr:roundrobin"]
        assert error_condition(await a.iq("set", set_payload("urn:example:fastest"))) == "item-not-found"
        assert error_condition(await a.iq("set", set_payload())) == "bad-request"
        assert error_condition(await a.iq("set", set_payload("urn:xmpp:cmr:all"), to=other)) == "forbidden"
        # None of the errors changed anything.
        assert algorithms(await b.iq("get", QUERY), "active") == ["urn:xmpp:cmr:roundrobin"]
        await close(a, b)
    run(scenario())


def test_policy_that_forbids_changes_and_offers_less(host):
    require(host, "virtual_hosts")

    async def scenario():
        me = host.account(host.fixed_domain)
        a = await online(host, me, "r")
        reply = await a.iq("get", QUERY)
        assert algorithms(reply, "available") == XEP[:3]
        assert error_condition(await a.iq("set", set_payload("urn:xmpp:cmr:roundrobin"))) == "not-allowed"
        assert algorithms(await a.iq("get", QUERY), "active") == ["urn:xmpp:cmr:all"]
        await close(a)
    run(scenario())
