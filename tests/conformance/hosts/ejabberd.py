"""The ejabberd host: Debian's ejabberd (23.01, or 24.12 from
bookworm-backports) with mod_cmr from build/erlang, as a private node on
loopback (its own config, spool and logs; no system service; epmd bound to
loopback)."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from hosts.base import ACCOUNTS, ADMIN, DOMAIN, FIXED_DOMAIN, PASSWORD, ServerHost, ToolError, free_port

ROOT = Path(__file__).resolve().parents[3]
CODE = [ROOT / "build" / "erlang" / "cmr" / "ebin", ROOT / "build" / "erlang" / "mod_cmr" / "ebin"]
# The version of ejabberd those beams were built against (the Makefile's).
BUILT_FOR = ROOT / "build" / "erlang" / "mod_cmr" / "ejabberd-version"


def installed_ejabberd(what):
    """The installed ejabberd's `what` (dir, version), as the Makefile finds
    it: scripts/ejabberd-paths.sh, whatever the version."""
    out = subprocess.run([str(ROOT / "scripts" / "ejabberd-paths.sh"), what], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()

# A virtual host without mod_cmr, for cluster tests that compare with what
# ejabberd itself does in the same failure.
NATIVE_DOMAIN = "native.localhost"

CONFIG = """
hosts: [{hosts}]
loglevel: info
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
{c2s_options}
  # The ReST API, where monitoring reads mod_cmr's metrics (cmr_metrics)
  # and operators get and set an account's routing.
  - port: {api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
api_permissions:
  "monitoring":
    from: mod_http_api
    who:
      ip: 127.0.0.1/8
    what: cmr_metrics
  "operators":
    from: mod_http_api
    who:
      ip: 127.0.0.1/8
    what: [cmr_get_algorithm, cmr_set_algorithm]
# The administrators: who passes `configure` runs the admin commands.
acl:
  admin:
    user: "{admin}"
access_rules:
  configure:
    allow: admin
auth_method: internal
auth_password_format: plain
s2s_access: none
{modules_config}
{extra}
"""

# Two virtual hosts with different policies: per-host module lists.
PER_HOST = """host_config:
  "{domain}":
    modules:
{modules}
{cmr}
  "{fixed}":
    modules:
{modules}
{fixed_cmr}{native}"""
NATIVE = """
  "{native}":
    modules:
{modules}"""

# A host's `modules` in host_config replaces the list, so each host has all.
MODULES = """      mod_roster: {}
      mod_disco: {}
      mod_adhoc: {}
      mod_carboncopy: {}
      mod_stream_mgmt:
        resume_timeout: RESUME_TIMEOUT
        resend_on_timeout: true
      mod_offline: {}
      mod_privacy: {}
      mod_blocking: {}"""
ARCHIVE = """
      mod_mam:
        default: always"""
MAIN_CMR = """      mod_cmr:
        hints: any"""
FIXED_CMR = """      mod_cmr:
        offered: [all, mostactive, roundrobin]
        user_change: false
        hints: never"""


# What a partition makes ejabberd and Erlang log, whichever module runs:
# the refused connections of disconnect()'s cookie; Mnesia, which does not
# merge the sides when they meet again (and ejabberd's processes that get
# its event); Mnesia lock replies that reach a process after the split.
PARTITION_LOGS = [r"Connection attempt from node \S+ rejected\. Invalid challenge reply",
                  r"inconsistent_database,\s*running_partitioned_network",
                  r"Unexpected info: \{mnesia_locker,"]


class EjabberdHost(ServerHost):
    name = "ejabberd"
    stop_timeout = 20
    features = {"virtual_hosts", "carbons", "mam", "acks", "resumption", "hibernation", "expiry", "load", "offline", "restart",
                "stats", "reload", "cluster", "kill_session", "tools", "blocking", "privacy_lists"}
    lacking = {"web_client": "the suite serves its web client (Converse.js over WebSocket) from Prosody alone: the "
                             "routing form a browser renders is the library's, the same on every host"}
    # The cmr_get_algorithm and cmr_set_algorithm commands, through both.
    tools = ["ejabberdctl", "rest"]
    # mod_carboncopy leaves the messages it sees delivered unchanged.
    keeps_carbons_private = True
    # A dead session's unacknowledged messages: ejabberd resends them all
    # through its routing (resend_on_timeout), as new messages.
    resends_dead_session_queue = True

    # The least a benchmark needs: no archive, no carbons.
    LEAN = ["mod_roster", "mod_disco"]

    def __init__(self, workdir: Path, with_cmr: bool = True, contrib: Path = None, modules=None, archive=True,
                 native=False, c2s_options="", extra_config=""):
        """`c2s_options` (the client listener's) and `extra_config` (top
        level): a benchmark's own settings, as YAML lines."""
        super().__init__()
        self.c2s_options = c2s_options
        self.extra_config = extra_config
        self.archive = archive
        self.dir = Path(workdir)
        self.with_cmr = with_cmr
        # Where `make install-ejabberd` put the contrib package, for a host
        # that installs mod_cmr with `ejabberdctl module_install` at start.
        self.contrib = contrib
        self.modules = modules
        # The virtual host NATIVE_DOMAIN (the same modules without mod_cmr, accounts
        # registered alike), for tests that compare with ejabberd's own
        # routing under the same failure.
        self.native_domain = NATIVE_DOMAIN if native else None
        self.node = f"cmr{self.port}"
        self.api_port = free_port()
        self.ejabberd = Path(installed_ejabberd("dir"))
        version = installed_ejabberd("version")
        built = BUILT_FOR.read_text().strip() if BUILT_FOR.exists() else None
        if built != version:
            raise RuntimeError(f"mod_cmr was built for ejabberd {built}, {version} is installed: make ejabberd-module")

    @staticmethod
    def _cookie():
        """ejabberdctl runs as the user ejabberd with that user's cookie; the
        private node uses the same one, so ejabberdctl can reach it."""
        path = Path("/var/lib/ejabberd/.erlang.cookie")
        if not path.exists():
            path.write_text(os.urandom(16).hex().upper())
            shutil.chown(path, "ejabberd", "ejabberd")
            path.chmod(0o400)
        return path.read_text().strip()

    def _env(self):
        env = dict(os.environ, HOME=str(self.dir), EJABBERD_CONFIG_PATH=str(self.dir / "ejabberd.yml"),
                   EJABBERD_LOG_PATH=str(self.dir / "ejabberd.log"), ERL_LIBS=str(self.ejabberd.parent),
                   ERL_EPMD_ADDRESS="127.0.0.1")
        if self.contrib:
            env["CONTRIB_MODULES_PATH"] = str(self.contrib)
        return env

    def _write_config(self):
        listed = (MODULES.replace("RESUME_TIMEOUT", str(self.hibernation_seconds)) + (ARCHIVE if self.archive else "")
                  if self.modules is None else "\n".join(f"      {m}: {{}}" for m in self.modules))
        if self.with_cmr:
            native = NATIVE.format(native=self.native_domain, modules=listed) if self.native_domain else ""
            modules = PER_HOST.format(domain=DOMAIN, fixed=FIXED_DOMAIN, modules=listed,
                                      cmr=MAIN_CMR, fixed_cmr=FIXED_CMR, native=native)
        else:
            # One global list, which a module installed later (its own conf
            # merged in by module_install) joins.
            modules = "modules:\n" + "\n".join(line[4:] for line in listed.splitlines())
        hosts = ", ".join(f'"{d}"' for d in self._domains())
        (self.dir / "ejabberd.yml").write_text(CONFIG.format(hosts=hosts, port=self.port, api_port=self.api_port,
                                                             admin=ADMIN, modules_config=modules,
                                                             c2s_options=self.c2s_options, extra=self.extra_config))

    def _domains(self):
        return [DOMAIN, FIXED_DOMAIN] + ([self.native_domain] if self.native_domain else [])

    def _launch(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        ready = self.dir / "ready"
        ready.unlink(missing_ok=True)
        admin_user, admin_domain = ADMIN.split("@")
        users = ",".join([f'{{<<"user{i}">>,<<"{d}">>}}' for d in self._domains() for i in range(ACCOUNTS)]
                         + [f'{{<<"{admin_user}">>,<<"{admin_domain}">>}}'])
        register = (f'[ejabberd_auth:try_register(U, S, <<"{PASSWORD}">>) || {{U, S}} <- [{users}]], '
                    f'file:write_file("{ready}", <<>>).')
        paths = [arg for p in [self.ejabberd / "ebin", *CODE] for arg in ("-pa", str(p))]
        log = open(self.dir / "stdout.log", "ab")
        # Idle schedulers busy-wait by default, which skews CPU figures and
        # starves the other nodes of a cluster on a small machine.
        no_busy_wait = ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]
        self.process = subprocess.Popen(
            ["erl", "-noinput", "-noshell", *no_busy_wait, "-sname", self.node, "-setcookie", self._cookie(), *paths,
             "-mnesia", "dir", f'"{self.dir / "spool"}"', "-s", "ejabberd", "-eval", register],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.dir)
        self._wait_until_listening(ready.exists)
        if self.contrib:
            output = self.ctl("module_install", "mod_cmr")
            if "mod_cmr" not in self.ctl("modules_installed"):
                raise RuntimeError(f"module_install failed: {output}\n{self.log_tail()}")

    def _wait_until_listening(self, started):
        # Generous: a busy machine has been seen to take 30 s.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.process.returncode}:\n{self.log_tail()}")
            if started():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"ejabberd did not start:\n{self.log_tail()}")

    def join_cluster(self, other):
        """Makes this running node join `other`'s cluster, as an operator
        does with `ejabberdctl join_cluster`; ejabberd restarts on this node."""
        def listeners_started():
            return self.log().count("Start accepting TCP connections")

        def joined():
            return listeners_started() > before and other.node_name() in self.ctl("list_cluster")

        before = listeners_started()
        output = self.ctl("join_cluster", other.node_name())
        # ejabberd 23.01 answers once it joined; 24.12 answers at once ("wait
        # a few seconds and check the list of nodes") and joins after.
        try:
            self._wait_until_listening(joined)
        except RuntimeError as e:
            raise RuntimeError(f"join_cluster failed: {output}\n{e}") from None

    WARNING = r"\[(warning|error)\]"
    ERROR = r"\[error\]"

    def log(self):
        return (self.dir / "ejabberd.log").read_text(errors="replace")

    @classmethod
    def installed(cls, workdir: Path):
        """A host that gets mod_cmr as an operator would: `make
        install-ejabberd` into a contrib path, then `ejabberdctl
        module_install mod_cmr`."""
        contrib = Path(workdir) / "contrib"
        subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "install-ejabberd",
                        f"EJABBERD_CONTRIB={contrib}"], check=True, capture_output=True)
        return cls(Path(workdir) / "server", with_cmr=False, contrib=contrib)

    def log_tail(self, lines=40):
        text = ""
        for name in ("ejabberd.log", "stdout.log"):
            path = self.dir / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no log)"

    def ctl(self, *args):
        """Runs an ejabberdctl command against this node."""
        out = subprocess.run(["ejabberdctl", "--node", self.node_name(), *args], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1"))
        return out.stdout + out.stderr

    def stats(self, jid):
        return self.ctl("cmr_stats", jid)

    def _tool(self, tool, command, jid, *args):
        """Runs the ejabberd command `command` for the account `jid` (split
        into user and host, as the commands take it) through `tool`: its
        answer, or ToolError with its message."""
        user, _, host = jid.rpartition("@")
        if tool == "ejabberdctl":
            out = subprocess.run(["ejabberdctl", "--node", self.node_name(), command, user, host, *args],
                                 capture_output=True, text=True, timeout=60,
                                 env=dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1"))
            if out.returncode != 0:
                raise ToolError(out.stdout + out.stderr)
            return out.stdout.strip()
        names = {"cmr_get_algorithm": [], "cmr_set_algorithm": ["algorithm"]}[command]
        body = dict(user=user, host=host, **dict(zip(names, args)))
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/api/{command}",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.load(response)
            # ejabberd before 24.06 (its API version 1) names a string
            # result: {"algorithm": uri}.
            return answer.get("algorithm", answer) if isinstance(answer, dict) else answer
        except urllib.error.HTTPError as error:
            raise ToolError(f"HTTP {error.code}: {error.read().decode(errors='replace')}") from None

    def tool_set(self, tool, jid, algorithm):
        return self._tool(tool, "cmr_set_algorithm", jid, algorithm)

    def tool_get(self, tool, jid):
        return self._tool(tool, "cmr_get_algorithm", jid)

    def metrics(self, domain=DOMAIN):
        """mod_cmr's metrics for `domain` on this node, read as monitoring
        does: the cmr_metrics command through the ReST API (mod_http_api),
        in the suite's common shape."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/api/cmr_metrics",
                                         data=json.dumps({"host": domain}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            rows = json.load(response)
        names = {"cmr_messages_routed_total": "routed", "cmr_messages_left_to_server_total": "left_to_server",
                 "cmr_gone_sessions_total": "gone_sessions", "cmr_iq_results_total": "iq_results",
                 "cmr_iq_errors_total": "iq_errors", "cmr_sessions": "sessions", "cmr_accounts": "accounts",
                 # The cluster transport's own (mod_cmr_cluster).
                 "cmr_cluster_journal_bytes": "journal_bytes",
                 "cmr_cluster_journal_overflow_total": "journal_overflow"}
        figures = {"routed": {}, "left_to_server": {}}
        for row in rows:
            name = names[row["name"]]
            if name in figures:
                figures[name][row["algorithm"]] = row["value"]
            else:
                figures[name] = row["value"]
        return figures

    def _rpc(self, calls):
        """Runs Erlang `calls` (with `Node` bound to this node) from a hidden
        node over Erlang distribution, as ejabberdctl reaches the server, and
        returns what they printed. Hidden: it never links the cluster's
        nodes to each other, which a partition test relies on."""
        script = f"Node = '{self.node_name()}', {calls}, halt()."
        out = subprocess.run(["erl", "-noshell", "-hidden", "-sname", f"rpc{self.port}", "-setcookie", self._cookie(),
                              "-eval", script], capture_output=True, text=True, timeout=60,
                             # A failed call is reported below, not as a crash dump in the cwd.
                             env=dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1", ERL_CRASH_DUMP_SECONDS="0"))
        if out.returncode != 0:
            raise RuntimeError(f"{calls} failed on {self.node}:\n{out.stdout}{out.stderr}")
        return out.stdout

    def eval(self, expression):
        """The value of the Erlang `expression`, evaluated on this node, as
        printed on one line (~0tp): what a test reads of the server's state
        that no command shows."""
        return self._rpc(f"{{ok, Tokens, _}} = erl_scan:string({erlang_string(expression + '.')}), "
                         f"{{ok, Exprs}} = erl_parse:parse_exprs(Tokens), "
                         f"{{value, Value, _}} = rpc:call(Node, erl_eval, exprs, [Exprs, []]), "
                         f"io:format(\"~0tp~n\", [Value])").strip()

    def kill(self):
        """Kills the node outright (SIGKILL), as a crash or the OOM killer
        does: no session, no Mnesia table and no peer hears a word."""
        self.process.kill()
        self.process.wait()
        self.process = None

    def disconnect(self, *others):
        """Cuts this node off from `others`, as a network partition does; run
        here, on the side being isolated. disconnect_node alone lasts
        milliseconds: the next message between two nodes (a Mnesia lock
        reply, a pg update) connects them again. A cookie that `others` do
        not share makes every new connection fail, both ways, until
        reconnect(); it is set for all of them before any is dropped, as
        OTP's global drops this node's other connections itself when one
        goes (prevent_overlapping_partitions)."""
        for node in (self, *others):
            node.expected_problems += [log for log in PARTITION_LOGS if log not in node.expected_problems]
        names = ", ".join(f"'{node.node_name()}'" for node in others)
        self._rpc(f"[true = rpc:call(Node, erlang, set_cookie, [Other, partitioned]) || Other <- [{names}]], "
                  f"[rpc:call(Node, erlang, disconnect_node, [Other]) || Other <- [{names}]]")

    def reconnect(self, *others):
        """Heals a partition made by disconnect(), as a network that comes
        back does: the shared cookie again, then the connections. An attempt
        can lose to one the other node makes at that moment (connect_node
        then answers false, and the other's connection stands): it is tried
        again until the nodes are connected, for up to 20 s."""
        names = ", ".join(f"'{node.node_name()}'" for node in others)
        self._rpc(f"[true = rpc:call(Node, erlang, set_cookie, [Other, '{self._cookie()}']) || Other <- [{names}]], "
                  "Connected = fun C(Other, Tries) -> "
                  "    case rpc:call(Node, net_kernel, connect_node, [Other]) orelse "
                  "         lists:member(Other, rpc:call(Node, erlang, nodes, [])) of "
                  "        true -> true; "
                  "        false when Tries > 0 -> timer:sleep(200), C(Other, Tries - 1); "
                  "        false -> false "
                  "    end "
                  "end, "
                  f"[true = Connected(Other, 100) || Other <- [{names}]]")

    def reload_module(self):
        """Stops and starts mod_cmr on the main host, sessions staying
        online. ejabberdctl has no command for it, so this calls gen_mod."""
        self._rpc(f"{self._module_call('stop_module_keep_config')}, {self._module_call('start_module')}")

    def stop_module(self):
        """Stops mod_cmr on the main host, as the first step of a rolling
        upgrade of a cluster."""
        self._rpc(self._module_call("stop_module_keep_config"))

    def start_module(self):
        self._rpc(self._module_call("start_module"))

    @staticmethod
    def _module_call(function):
        return f"ok = rpc:call(Node, gen_mod, {function}, [<<\"{DOMAIN}\">>, mod_cmr])"

    def kill_session(self, jid):
        """Kills the process of the session `jid` (user@host/resource) outright,
        as a crash does: it leaves no word, and ejabberd's session table
        keeps the dead pid until it notices."""
        user, rest = jid.split("@")
        server, resource = rest.split("/")
        self._rpc(f"Pid = rpc:call(Node, ejabberd_sm, get_session_pid, [<<\"{user}\">>, <<\"{server}\">>, "
                  f"<<\"{resource}\">>]), true = is_pid(Pid), true = rpc:call(Node, erlang, exit, [Pid, kill])")

    def node_name(self):
        return f"{self.node}@{socket.gethostname().split('.')[0]}"


def erlang_string(text):
    """`text` as an Erlang string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
