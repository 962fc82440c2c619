"""A real browser and a real web client: Converse.js (tests/browser/, from
the npm registry) in Debian's headless chromium, driven by Selenium through
Debian's chromedriver, logged in over WebSocket to the test server, which
serves its files. In Converse's own ad-hoc commands view the account runs
"Message routing", which shows its current choice, and chooses round robin;
then messages to the account rotate over its sessions, the browser's among
them, each session's share counted exactly (the browser's in what Converse
shows), and the command's form shows round robin and each share.

Converse takes carbon copies (XEP-0280) and fills a chat from the archive
(XEP-0313) wherever the server offers them, and either would show the
browser every message, not its share: as for a load-balanced client, this
test's server offers neither.

A failure leaves a screenshot and the browser's console log under
build/browser-failure/ and says so; every run leaves that last form, as
Converse renders it, in build/browser/routing-form.png."""

import asyncio
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import element_to_be_clickable, visibility_of_element_located
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import host_class, run, served
from xmpp import NS_CMR, TIMEOUT, close, online, send_messages, wait_for

ROOT = Path(__file__).resolve().parents[2]
WEB_CLIENT = ROOT / "tests" / "browser"
FAILURES = ROOT / "build" / "browser-failure"
FORM_PICTURE = ROOT / "build" / "browser" / "routing-form.png"
ROUTING_NODE = "urn:xmpp:cmr:0#routing"
ROUND_ROBIN = "urn:xmpp:cmr:roundrobin"

if "web_client" not in host_class().features:
    pytest.skip(host_class().lacking["web_client"], allow_module_level=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    yield from served(tmp_path_factory, options={"web_root": WEB_CLIENT, "carbons": False, "archive": False})


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # Headless; no sandbox, which Chromium cannot set up as root; no name
    # resolves, so the page reaches nothing but the test server.
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,1600",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


@contextmanager
def evidence_on_failure(driver, name):
    """On a failure, saves a screenshot and the browser's console log, and
    adds where to the failure."""
    try:
        yield
    except Exception as failure:
        FAILURES.mkdir(parents=True, exist_ok=True)
        picture, console = FAILURES / f"{name}.png", FAILURES / f"{name}-console.log"
        driver.save_screenshot(str(picture))
        console.write_text("".join(f"{entry['level']} {entry['message']}\n" for entry in driver.get_log("browser")))
        failure.add_note(f"the browser at the failure: {picture}, its console log: {console}")
        raise


def until(driver, condition, what):
    return WebDriverWait(driver, TIMEOUT).until(condition, f"no {what} in {TIMEOUT} s")


def click(driver, selector, what):
    until(driver, element_to_be_clickable((By.CSS_SELECTOR, selector)), what).click()


def log_in(driver, host, jid):
    """Opens Converse as `jid`/browser; returns once it is connected (its
    settings button shows)."""
    driver.get(host.web_url("index.html") + "?" + urlencode({"jid": f"{jid}/browser", "password": host.password}))
    until(driver, element_to_be_clickable((By.CSS_SELECTOR, ".show-client-info")), "settings button (Converse connected)")


def open_commands(driver):
    """Opens the settings (the page shows no "About" tab: they open on the
    commands view) and lists the server's commands."""
    click(driver, ".show-client-info", "settings button")
    click(driver, "converse-adhoc-commands input[type=submit]", "button to list the commands")


def routing_form(driver):
    """Runs "Message routing" from the listed commands; returns its choice
    (a Select) and its read-only lines once Converse shows the form."""
    command = until(driver, element_to_be_clickable((By.CSS_SELECTOR, f'a[data-command-node="{ROUTING_NODE}"]')),
                    "routing command in the list")
    assert command.text == "Message routing"
    command.click()
    choice = Select(until(driver, visibility_of_element_located(
        (By.CSS_SELECTOR, 'converse-adhoc-commands select[name="algorithm"]')), "routing form"))
    lines = [p.text for p in driver.find_elements(By.CSS_SELECTOR, "converse-adhoc-commands fieldset > p")]
    return choice, lines


def complete(driver, choice, label):
    """Chooses `label` and completes the command; returns the note."""
    choice.select_by_visible_text(label)
    click(driver, 'converse-adhoc-commands input[data-action="complete"]', "button to complete the command")
    return until(driver, visibility_of_element_located((By.CSS_SELECTOR, "converse-adhoc-commands > p.form-help")),
                 "completion note").text


def save_form_picture(driver):
    FORM_PICTURE.parent.mkdir(parents=True, exist_ok=True)
    driver.find_element(By.CSS_SELECTOR, "converse-user-settings-modal .modal-content").screenshot(str(FORM_PICTURE))
    print(f"the routing form as Converse renders it: {FORM_PICTURE}")


def open_chat(driver, jid):
    """Opens the chat with `jid` (Converse's #converse/chat?jid= link)."""
    driver.execute_script("location.hash = arguments[0]", f"converse/chat?jid={jid}")
    until(driver, visibility_of_element_located((By.CSS_SELECTOR, f'converse-chat[jid="{jid}"]')), f"chat with {jid}")


def shown_messages(driver, jid, count):
    """The texts of the messages that the chat with `jid` shows, once there
    are at least `count`."""
    def texts(d):
        shown = [e.text for e in d.find_elements(By.CSS_SELECTOR, f'converse-chat[jid="{jid}"] .chat-msg__text')]
        return shown if len(shown) >= count else None
    return until(driver, texts, f"{count} messages in the chat with {jid}")


async def active_algorithm(client):
    reply = await client.iq("get", f"<query xmlns='{NS_CMR}'/>")
    return reply.find(f"{{{NS_CMR}}}query/{{{NS_CMR}}}active").get("algorithm")


def test_round_robin_chosen_in_converse_rotates_over_the_browser_too(host, browser):
    async def scenario():
        account, sender_jid = host.account(), host.account()
        nodes = [await online(host, account, f"node-{i}") for i in (1, 2)]
        sender = await online(host, sender_jid, "probe")
        await asyncio.to_thread(log_in, browser, host, account)
        await asyncio.to_thread(open_commands, browser)
        choice, _ = await asyncio.to_thread(routing_form, browser)
        assert choice.first_selected_option.get_attribute("value") == await active_algorithm(nodes[0])
        note = await asyncio.to_thread(complete, browser, choice, "Round robin")
        assert "Round robin" in note, note
        assert await active_algorithm(nodes[0]) == ROUND_ROBIN, "the whole account switched"

        await asyncio.to_thread(open_chat, browser, sender_jid)
        sent = [f"rr-{i}" for i in range(9)]
        send_messages(sender, account, len(sent), prefix="rr")
        assert await wait_for(lambda: sum(len(n.messages) for n in nodes) >= 6), [n.bodies() for n in nodes]
        shown = await asyncio.to_thread(shown_messages, browser, sender_jid, 3)
        assert [len(n.messages) for n in nodes] == [3, 3] and len(shown) == 3, ([n.bodies() for n in nodes], shown)
        assert sorted(shown + nodes[0].bodies() + nodes[1].bodies()) == sent

        # The command again, from the list still open: round robin chosen,
        # each session's share.
        choice, lines = await asyncio.to_thread(routing_form, browser)
        assert choice.first_selected_option.text == "Round robin"
        assert {"browser: 3 (33%)", "node-1: 3 (33%)", "node-2: 3 (33%)"} <= set(lines), lines
        await asyncio.to_thread(save_form_picture, browser)
        await close(sender, *nodes)
    with evidence_on_failure(browser, "round-robin"):
        run(scenario())
