"""Choosing the routing where people already are: the users' routing
command and the admin command (XEP-0050 ad-hoc, XEP-0004 forms, run with
slixmpp's xep_0050), and the operators' own tools."""

import re

import pytest
from slixmpp.exceptions import IqError

from conftest import require, run
from hosts.base import ToolError
from test_protocol import QUERY, algorithms
from xmpp import TIMEOUT, close, error_condition, online, send_messages, stats_row, wait_for

NODE = "urn:xmpp:cmr:0#routing"
ADMIN_NODE = "urn:xmpp:cmr:0#account-routing"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
LABELS = {
    "urn:xmpp:cmr:all": "All resources",
    "urn:xmpp:cmr:mostactive": "Most active",
    "urn:xmpp:cmr:roundrobin": "Round robin",
    "urn:xmpp:cmr:weighted": "Weighted by priority",
    "urn:x-cmr:algorithm:random": "Random",
    "urn:x-cmr:algorithm:sticky": "Same resource per sender",
    "urn:x-cmr:algorithm:leastloaded": "Least loaded",
}
ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"


async def commanding(host, jid, resource, **options):
    """A session that runs ad-hoc commands."""
    client = await online(host, jid, resource, **options)
    client.register_plugin("xep_0050")
    return client


async def listed(client, to):
    """The commands `to` lists to `client`: node -> name."""
    items = await client.plugin["xep_0050"].get_commands(jid=to, timeout=TIMEOUT)
    return {node: name for _, node, name in items["disco_items"]["items"]}


async def execute(client, node, to, fields=None, sessionid=None, form_type="submit"):
    """Runs `node`: with no `fields` its first stage, else submits them
    (var -> value, or a list of values) in `sessionid`, in a form of
    `form_type`. The answer as an element, errors included."""
    form = None
    if fields is not None:
        form = client.plugin["xep_0004"].make_form(ftype=form_type)
        for var, value in fields.items():
            form.add_field(var=var, ftype="list-multi" if isinstance(value, list) else None, value=value)
    try:
        reply = await client.plugin["xep_0050"].send_command(
            to, node, action="execute" if fields is None else "complete",
            payload=form, sessionid=sessionid, timeout=TIMEOUT)
        return reply.xml
    except IqError as error:
        return error.iq.xml


def command_of(reply):
    command = reply.find(f"{{{NS_COMMANDS}}}command")
    assert reply.get("type") == "result" and command is not None, f"not a command result: {reply}"
    return command


def form_of(reply):
    form = command_of(reply).find(f"{{{NS_DATA}}}x")
    assert form is not None and form.get("type") == "form", "no form"
    return form


def field(form, var):
    found = [f for f in form.findall(f"{{{NS_DATA}}}field") if f.get("var") == var]
    assert len(found) == 1, f"one field {var}"
    return found[0]


def values(element):
    return [v.text or "" for v in element.findall(f"{{{NS_DATA}}}value")]


def options(form, var):
    return {values(o)[0]: o.get("label") for o in field(form, var).findall(f"{{{NS_DATA}}}option")}


def fixed_lines(form):
    return [values(f)[0] for f in form.findall(f"{{{NS_DATA}}}field") if f.get("type") == "fixed"]


def notes(reply):
    """The completed command's notes: (type, text)."""
    command = command_of(reply)
    assert command.get("status") == "completed", f"not completed: {command.get('status')}"
    return [(n.get("type", "info"), n.text or "") for n in command.findall(f"{{{NS_COMMANDS}}}note")]


def refusal(reply):
    """Why a command was refused: its error note, or the IQ error's text."""
    if reply.get("type") == "error":
        text = reply.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}text")
        return text.text if text is not None else error_condition(reply)
    errors = [text for kind, text in notes(reply) if kind == "error"]
    assert errors, f"not refused: {notes(reply)}"
    return errors[0]


async def run_routing(client, host, uri):
    """Runs the routing command to its end, choosing `uri`."""
    first = command_of(await execute(client, NODE, host.domain))
    return await execute(client, NODE, host.domain, {"algorithm": uri}, sessionid=first.get("sessionid"))


async def run_admin(client, host, account, uri, to=None):
    first = await execute(client, ADMIN_NODE, to or host.domain)
    sessionid = command_of(first).get("sessionid")
    return await execute(client, ADMIN_NODE, to or host.domain, {"accountjid": account, "algorithm": uri},
                         sessionid=sessionid)


async def active(client, account=None):
    return algorithms(await client.iq("get", QUERY, to=account), "active")


def test_the_routing_command_is_listed(host):
    async def scenario():
        me = host.account()
        a = await commanding(host, me, "r")
        commands = await listed(a, host.domain)
        assert commands.get(NODE) == "Message routing"
        assert ADMIN_NODE not in commands, "listed to administrators only"
        admin = await commanding(host, host.admin, "console")
        commands = await listed(admin, host.domain)
        assert commands.get(ADMIN_NODE) == "Set an account's message routing" and NODE in commands
        await close(a, admin)
    run(scenario())


def test_the_form_shows_the_current_choice_from_every_resource(host):
    async def scenario():
        me = host.account()
        one = await commanding(host, me, "one")
        two = await commanding(host, me, "two")
        await one.set_algorithm("urn:xmpp:cmr:weighted")
        form = form_of(await execute(two, NODE, host.domain))
        choice = field(form, "algorithm")
        assert choice.get("type") == "list-single" and values(choice) == ["urn:xmpp:cmr:weighted"]
        assert options(form, "algorithm") == LABELS
        assert form.find(f"{{{NS_DATA}}}instructions").text
        lines = fixed_lines(form)
        assert "one: 0 (0%)" in lines and "two: 0 (0%)" in lines, lines
        await close(one, two)
    run(scenario())


def test_submitting_round_robin_rotates_real_messages(host):
    async def scenario():
        me = host.account()
        nodes = [await commanding(host, me, f"node-{i}") for i in range(3)]
        sender = await online(host, host.account(), "s")
        answer = await run_routing(nodes[0], host, ROUND_ROBIN)
        assert notes(answer) and "Round robin" in notes(answer)[0][1], notes(answer)
        assert await active(nodes[2]) == [ROUND_ROBIN], "the whole account switched"
        send_messages(sender, me, 9)
        await wait_for(lambda: sum(len(n.messages) for n in nodes) == 9)
        assert [len(n.messages) for n in nodes] == [3, 3, 3]
        lines = fixed_lines(form_of(await execute(nodes[1], NODE, host.domain)))
        assert all(f"node-{i}: 3 (33%)" in lines for i in range(3)), lines
        await close(sender, *nodes)
    run(scenario())


def test_the_choice_is_kept_when_every_session_has_left(host):
    async def scenario():
        me = host.account()
        a = await commanding(host, me, "r")
        notes(await run_routing(a, host, ROUND_ROBIN))
        await close(a)
        # The account has no session left: the next one restores the choice.
        await wait_for(lambda: stats_row(host, me, "r") is None)
        later = await online(host, me, "again")
        assert await active(later) == [ROUND_ROBIN], "restored at the account's next first session"
        await close(later)
    run(scenario())


def test_another_accounts_choice_is_its_own(host):
    async def scenario():
        mine, theirs = host.account(), host.account()
        a = await commanding(host, mine, "r")
        b = await commanding(host, theirs, "r")
        notes(await run_routing(a, host, ROUND_ROBIN))
        assert await active(a) == [ROUND_ROBIN]
        assert await active(b) == ["urn:xmpp:cmr:all"]
        assert values(field(form_of(await execute(b, NODE, host.domain)), "algorithm")) == ["urn:xmpp:cmr:all"]
        await close(a, b)
    run(scenario())


def test_user_change_false_is_refused(host):
    require(host, "virtual_hosts")

    async def scenario():
        a = await commanding(host, host.account(host.fixed_domain), "r")
        form = form_of(await execute(a, NODE, host.fixed_domain))
        assert "does not let users change" in form.find(f"{{{NS_DATA}}}instructions").text
        # The fixed host offers all, mostactive and roundrobin.
        assert set(options(form, "algorithm")) == {"urn:xmpp:cmr:all", "urn:xmpp:cmr:mostactive", ROUND_ROBIN}
        answer = await execute(a, NODE, host.fixed_domain, {"algorithm": ROUND_ROBIN},
                               sessionid=command_of(await execute(a, NODE, host.fixed_domain)).get("sessionid"))
        assert "does not let users change" in refusal(answer)
        assert await active(a) == ["urn:xmpp:cmr:all"]
        await close(a)
    run(scenario())


@pytest.mark.parametrize("fields, named", [
    ({"algorithm": "urn:example:fastest"}, "urn:example:fastest"),
    ({"algorithm": ROUND_ROBIN, "bogus": "x"}, "bogus"),
    ({"algorithm": [ROUND_ROBIN, "urn:xmpp:cmr:weighted"]}, "algorithm"),
])
def test_a_bogus_field_or_value_is_refused_and_changes_nothing(host, fields, named):
    async def scenario():
        a = await commanding(host, host.account(), "r")
        await a.set_algorithm("urn:xmpp:cmr:mostactive")
        sessionid = command_of(await execute(a, NODE, host.domain)).get("sessionid")
        answer = await execute(a, NODE, host.domain, fields, sessionid=sessionid)
        if answer.get("type") == "error":
            assert error_condition(answer) == "bad-request"
        assert named in refusal(answer)
        assert await active(a) == ["urn:xmpp:cmr:mostactive"]
        await close(a)
    run(scenario())


def test_the_admin_command_sets_online_and_offline_accounts(host):
    async def scenario():
        online_account, offline_account = host.account(), host.account()
        admin = await commanding(host, host.admin, "console")
        user = await online(host, online_account, "r")
        answer = await run_admin(admin, host, online_account, ROUND_ROBIN)
        assert online_account in notes(answer)[0][1], notes(answer)
        assert await active(user) == [ROUND_ROBIN], "applied at once"
        notes(await run_admin(admin, host, offline_account, "urn:xmpp:cmr:weighted"))
        later = await online(host, offline_account, "r")
        assert await active(later) == ["urn:xmpp:cmr:weighted"], "applied at the next login"
        await close(admin, user, later)
    run(scenario())


def test_the_admin_command_is_not_bound_by_user_change(host):
    require(host, "virtual_hosts")

    async def scenario():
        account = host.account(host.fixed_domain)
        admin = await commanding(host, host.admin, "console")
        notes(await run_admin(admin, host, account, ROUND_ROBIN, to=host.fixed_domain))
        user = await online(host, account, "r")
        assert await active(user) == [ROUND_ROBIN]
        refused = await run_admin(admin, host, account, "urn:xmpp:cmr:weighted", to=host.fixed_domain)
        assert "urn:xmpp:cmr:weighted" in refusal(refused), "not offered there"
        assert await active(user) == [ROUND_ROBIN]
        await close(admin, user)
    run(scenario())


@pytest.mark.parametrize("account, uri, named", [
    ("someone@elsewhere.example", ROUND_ROBIN, "someone@elsewhere.example"),
    ("bad@@jid", ROUND_ROBIN, "bad@@jid"),
    ("{account}/res", ROUND_ROBIN, "{account}/res"),
    ("nobody-here@{domain}", ROUND_ROBIN, "nobody-here@{domain}"),
    ("{account}", "urn:example:fastest", "urn:example:fastest"),
])
def test_the_admin_command_refuses_bad_input_by_name(host, account, uri, named):
    async def scenario():
        target = host.account()
        fill = {"domain": host.domain, "account": target}
        admin = await commanding(host, host.admin, "console")
        user = await online(host, target, "r")
        answer = await run_admin(admin, host, account.format(**fill), uri)
        assert named.format(**fill) in refusal(answer)
        assert await active(user) == ["urn:xmpp:cmr:all"], "nothing changed"
        await close(admin, user)
    run(scenario())


@pytest.mark.parametrize("action", ["prev", "next"])
def test_an_action_the_command_does_not_offer_is_a_bad_request(host, action):
    async def scenario():
        a = await commanding(host, host.account(), "r")
        sessionid = command_of(await execute(a, NODE, host.domain)).get("sessionid")
        form = f"<x xmlns='{NS_DATA}' type='submit'><field var='algorithm'><value>{ROUND_ROBIN}</value></field></x>"
        answer = await a.iq("set", f"<command xmlns='{NS_COMMANDS}' node='{NODE}' sessionid='{sessionid}' "
                                   f"action='{action}'>{form}</command>", to=host.domain)
        assert error_condition(answer) == "bad-request"
        assert await active(a) == ["urn:xmpp:cmr:all"], "nothing changed"
        await close(a)
    run(scenario())


def test_a_command_session_is_its_owners_alone(host):
    async def scenario():
        victim, target = host.account(), host.account()
        owner = await commanding(host, victim, "r")
        intruder = await commanding(host, host.account(), "r")
        admin = await commanding(host, host.admin, "console")
        user = await online(host, target, "r")
        sessionid = command_of(await execute(owner, NODE, host.domain)).get("sessionid")
        await execute(intruder, NODE, host.domain, {"algorithm": ROUND_ROBIN}, sessionid=sessionid)
        assert await active(owner) == ["urn:xmpp:cmr:all"], "another account's submission changed nothing"
        notes(await execute(owner, NODE, host.domain, {"algorithm": ROUND_ROBIN}, sessionid=sessionid))
        assert await active(owner) == [ROUND_ROBIN], "the owner's session still works"
        sessionid = command_of(await execute(admin, ADMIN_NODE, host.domain)).get("sessionid")
        answer = await execute(intruder, ADMIN_NODE, host.domain, {"accountjid": target, "algorithm": ROUND_ROBIN},
                               sessionid=sessionid)
        assert error_condition(answer) in ("forbidden", "bad-request")
        assert await active(user) == ["urn:xmpp:cmr:all"], "a non-admin in an admin's session changed nothing"
        await close(owner, intruder, admin, user)
    run(scenario())


def test_a_form_that_is_not_a_submission_changes_nothing(host):
    async def scenario():
        a = await commanding(host, host.account(), "r")
        sessionid = command_of(await execute(a, NODE, host.domain)).get("sessionid")
        answer = await execute(a, NODE, host.domain, {"algorithm": ROUND_ROBIN}, sessionid=sessionid,
                               form_type="cancel")
        assert "submit" in refusal(answer)
        assert await active(a) == ["urn:xmpp:cmr:all"]
        await close(a)
    run(scenario())


def test_a_non_admin_is_refused_the_admin_command(host):
    async def scenario():
        target = host.account()
        a = await commanding(host, host.account(), "r")
        assert error_condition(await execute(a, ADMIN_NODE, host.domain)) == "forbidden"
        assert error_condition(await execute(a, ADMIN_NODE, host.domain,
                                             {"accountjid": target, "algorithm": ROUND_ROBIN})) == "forbidden"
        user = await online(host, target, "r")
        assert await active(user) == ["urn:xmpp:cmr:all"]
        await close(a, user)
    run(scenario())


def test_the_operators_tools_set_and_get(host):
    require(host, "tools")

    async def scenario():
        for tool in host.tools:
            online_account, offline_account = host.account(), host.account()
            user = await online(host, online_account, "r")
            assert host.tool_get(tool, online_account) == "urn:xmpp:cmr:all"
            host.tool_set(tool, online_account, ROUND_ROBIN)
            assert await active(user) == [ROUND_ROBIN], tool
            assert host.tool_get(tool, online_account) == ROUND_ROBIN
            host.tool_set(tool, offline_account, "weighted")
            assert host.tool_get(tool, offline_account) == "urn:xmpp:cmr:weighted", tool
            later = await online(host, offline_account, "r")
            assert await active(later) == ["urn:xmpp:cmr:weighted"], tool
            for account, algorithm, named in [("bad@@jid", "all", "bad@@jid"),
                                              (f"nobody-here@{host.domain}", "all", "nobody-here"),
                                              ("someone@elsewhere.example", "all", "elsewhere.example"),
                                              (online_account, "fastest", "fastest")]:
                with pytest.raises(ToolError, match=re.escape(named)):
                    host.tool_set(tool, account, algorithm)
            with pytest.raises(ToolError, match="bad@@jid"):
                host.tool_get(tool, "bad@@jid")
            assert host.tool_get(tool, online_account) == ROUND_ROBIN, "nothing changed"
            await close(user, later)
    run(scenario())
