from conftest import run
from xmpp import close, online, send_messages, settle, wait_for


def test_round_robin_smoke(host):
    async def scenario():
        cluster, sensor = host.account(), host.account()
        nodes = [await online(host, cluster, f"node-{i}") for i in range(2)]
        s = await online(host, sensor, "probe")
        await nodes[0].set_algorithm("urn:xmpp:cmr:roundrobin")
        await settle()
        send_messages(s, cluster, 10)
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 10)
        await settle()
        counts = [len(n.messages) for n in nodes]
        await close(s, *nodes)
        assert counts == [5, 5], (counts, host.log_tail())
    run(scenario())
