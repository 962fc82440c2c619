"""What every host fixture shares: the accounts, the virtual hosts and
stopping the server process."""

import re
import signal
import socket
import subprocess

# Two virtual hosts with different policies, as the suite needs.
DOMAIN = "localhost"
FIXED_DOMAIN = "fixed.localhost"
ACCOUNTS = 80
PASSWORD = "secret"
# The server's administrator (an account of DOMAIN, beside the users).
ADMIN = f"admin@{DOMAIN}"


class ToolError(Exception):
    """An operator's tool refused what it was given: the tool's own
    message."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerHost:
    """A server process on loopback with ACCOUNTS accounts on each virtual
    host. Subclasses start it and say what it can do (`features`):
    virtual_hosts (the second domain, with its own policy), carbons, mam,
    offline, acks (XEP-0198 acknowledgements), resumption (XEP-0198),
    hibernation (the module knows a session waits for resumption: the last
    resort while it waits), expiry (the server gives up on a waiting session
    after hibernation_seconds), load (the module reports each session's
    unacknowledged queue), restart, reload, unload (`stop_module` and
    `start_module`: the module goes and comes back, sessions staying
    online), stats, cluster, kill_session,
    tools (the operators' own tools set and get an account's routing:
    `tools` names them, `tool_set(tool, jid, algorithm)` and `tool_get(tool,
    jid)` run one, raising ToolError with its message when it refuses).
    `lacking` says why a host lacks one, for the skip. Every host has ADMIN
    as an administrator (`admin`)."""

    domain = DOMAIN
    fixed_domain = FIXED_DOMAIN
    password = PASSWORD
    stop_timeout = 10
    # Natively, a message to the bare JID goes to every session that shares
    # the highest priority (Prosody, ejabberd), or to one of them (Openfire).
    native_copies_to_top = True
    # What the server itself logs as an error when a client sends what its
    # own parser refuses (patterns): the hostile tests' doing, not a module's.
    refused_input_logs = []
    # What the server itself logs when a client's TCP connection is reset
    # (a test drops one with data in flight).
    reset_connection_logs = []
    # How long a dead XEP-0198 session waits for resumption; the fixtures'
    # server configs set this.
    hibernation_seconds = 5
    lacking = {}
    admin = ADMIN
    tools = []

    def __init__(self):
        self.port = free_port()
        self.process = None
        self._next_account = 0
        # Patterns of log entries a test causes on purpose (see problems()).
        self.expected_problems = []

    def start(self):
        """Starts the server (the host's `_launch`); one that fails to come
        up is stopped, so that no test leaves a server behind."""
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self):
        self.stop()
        self.start()

    def warnings(self):
        """The server log's warnings and errors, each with the indented lines
        (a traceback) that follow it. Subclasses give `log()`, the pattern
        of a warning's or an error's first line, `WARNING`, and of an
        error's, `ERROR`."""
        entries, current = [], None
        for line in self.log().splitlines():
            if re.search(self.WARNING, line):
                current = line
                entries.append(current)
            elif current is not None and line[:1].isspace():
                entries[-1] += "\n" + line
            else:
                current = None
        return entries

    def problems(self):
        """The log's errors, and any entry that carries a traceback: what
        no test may leave behind, whichever module logged it, but for what
        a test listed in `expected_problems` as its own doing."""
        return [entry for entry in self.warnings()
                if (re.search(self.ERROR, entry.splitlines()[0]) or "\n" in entry or "traceback" in entry.lower())
                and not self.expected(entry)]

    def expected(self, entry):
        """Whether a log entry is a test's own doing (`expected_problems`)."""
        return any(re.search(pattern, entry) for pattern in self.expected_problems)

    # Whether the server holds a session waiting for resumption, as the server
    # itself knows it: a host fixture that can ask the server gives
    # `waiting(jid)` (True, False, or None for no such session).
    waiting = None

    @property
    def outcome_names(self):
        """The names under which the corpus gives this host's outcomes, the
        most specific first (Openfire: per major version, then any)."""
        return [self.name]

    def account(self, domain=DOMAIN):
        """A fresh account of `domain`: the JID of a user no test used yet."""
        name = f"user{self._next_account}"
        self._next_account += 1
        assert self._next_account <= ACCOUNTS, "raise ACCOUNTS"
        return f"{name}@{domain}"
