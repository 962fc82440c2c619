"""The Prosody host: Debian's prosody with mod_cmr from build/prosody."""

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from hosts.base import ACCOUNTS, DOMAIN, FIXED_DOMAIN, PASSWORD, ServerHost, ToolError, free_port

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ROOT / "build" / "prosody"

CONFIG = """
run_as_root = true
admins = {{ "{admin}" }}
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "{log_level}" }}, to = "file", filename = "{dir}/prosody.log" }} }}
admin_socket = "{dir}/admin.sock"
certificates = "{dir}"
plugin_paths = {{ {plugins} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
default_archive_policy = true
archive_expires_after = "never"
smacks_hibernation_time = {hibernation}
modules_enabled = {{ {modules} }}
{http}
{extra}
VirtualHost "{domain}"
  cmr_hints = "any"

VirtualHost "{fixed}"
  cmr_offered = {{ "all", "mostactive", "roundrobin" }}
  cmr_user_change = false
  cmr_hints = "never"
"""

# Prosody's HTTP server on its own loopback port, for the metrics and the
# web client.
HTTP = """
http_ports = {{ {port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
"""

# mod_http_openmetrics; statistics collected at each scrape, so what it
# serves is what the modules hold then.
METRICS = """
statistics = "internal"
statistics_interval = "manual"
openmetrics_allow_ips = { "127.0.0.1" }
"""

# A web client: its files under /files/ (mod_http_files) and XMPP over
# WebSocket at /xmpp-websocket, on the same origin; requests to 127.0.0.1
# (no virtual host's name) go to the main virtual host.
WEB = """
http_files_dir = "{root}"
http_default_host = "{domain}"
"""

# A sample line of the OpenMetrics exposition: name, labels, value.
SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def lua_string(text):
    """`text` as a Lua string literal: each byte of its UTF-8 that is not
    plainly safe as a three-digit decimal escape (a shorter one would take
    a digit that follows it; Lua's escapes are bytes, not characters)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@.:-_/ "
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in text.encode()) + '"'


class ProsodyHost(ServerHost):
    name = "prosody"
    tools = ["shell"]
    # What this host can do, for tests that need it.
    features = {"virtual_hosts", "carbons", "mam", "acks", "resumption", "hibernation", "expiry", "load", "offline", "stats",
                "restart", "reload", "unload", "tools", "web_client", "blocking"}
    lacking = {"cluster": "Prosody does not cluster",
               "privacy_lists": "Prosody dropped XEP-0016 privacy lists (mod_privacy) in 0.10: it blocks with "
                                "XEP-0191 (mod_blocklist)",
               "kill_session": "Prosody runs every session in one process: a session cannot die without its unbind"}
    # mod_carbons removes <private/> from the messages it sees delivered.
    keeps_carbons_private = False
    # A dead session's unacknowledged messages: Prosody's mod_smacks bounces
    # them to the sender (or stores them, for the last session), and mod_cmr
    # routes again what it routed to that session alone.
    resends_dead_session_queue = False

    # The least a benchmark needs: no archive, no carbons.
    LEAN = ["roster", "saslauth", "disco"]
    # What the suite needs of a server beside mod_cmr; XEP-0191 blocking
    # (mod_blocklist) a web client needs too (without it, Converse 14 opens
    # no chat).
    MODULES = ["roster", "saslauth", "disco", "carbons", "mam", "smacks", "offline", "admin_shell", "ping",
               "http_openmetrics", "blocklist"]
    # What a web client needs beside them: XMPP over WebSocket, its files.
    WEB_CLIENT = ["websocket", "http_files"]

    def __init__(self, workdir: Path, with_cmr: bool = True, plugins: Path = PLUGINS, modules=None, archive=True,
                 carbons=True, web_root: Path = None, launcher=(), plugin_paths=(), extra_config=""):
        """`web_root`: a web client's folder, served with XMPP over WebSocket
        (see `web_url`). For benchmarks: `launcher` runs the server (a Lua
        script) under a tool, such as valgrind and its options before the
        interpreter; `plugin_paths` adds module folders and `extra_config`
        global settings, as Lua lines."""
        super().__init__()
        self.launcher = list(launcher)
        self.plugin_paths = [plugins, *plugin_paths]
        self.dir = Path(workdir)
        self.with_cmr = with_cmr
        self.plugins = plugins
        listed = [m for m in self.MODULES if (archive or m != "mam") and (carbons or m != "carbons")] \
            if modules is None else modules
        self.web_root = web_root
        self.extra_config = extra_config
        self.modules = list(listed) + (self.WEB_CLIENT if web_root else []) + (["cmr"] if with_cmr else [])
        self.config = self.dir / "prosody.cfg.lua"
        self.http_port = free_port()
        self.serves_metrics = "http_openmetrics" in self.modules
        self.serves_http = self.serves_metrics or web_root is not None
        if shutil.which("prosody") is None:
            raise RuntimeError("prosody is not installed (make test installs it)")

    def _write_config(self):
        self.config.write_text(CONFIG.format(
            dir=self.dir, plugins="".join(f'"{p}"; ' for p in self.plugin_paths), hibernation=self.hibernation_seconds, port=self.port, domain=DOMAIN, fixed=FIXED_DOMAIN,
            admin=self.admin, modules="".join(f'"{m}"; ' for m in self.modules), log_level=os.environ.get("CMR_PROSODY_LOG", "info"),
            http=(HTTP.format(port=self.http_port) if self.serves_http else "")
            + (METRICS if self.serves_metrics else "") + (WEB.format(root=self.web_root, domain=DOMAIN) if self.web_root else ""),
            extra=self.extra_config))

    def _create_accounts(self):
        # Prosody's internal_plain storage: one file per account, the host
        # name with '.' escaped as %2e.
        for domain in (DOMAIN, FIXED_DOMAIN):
            accounts = self.dir / "data" / domain.replace(".", "%2e") / "accounts"
            accounts.mkdir(parents=True, exist_ok=True)
            names = [f"user{i}" for i in range(ACCOUNTS)] + ([self.admin.split("@")[0]] if domain == DOMAIN else [])
            for name in names:
                (accounts / f"{name}.dat").write_text(f'return {{ ["password"] = "{PASSWORD}"; }};\n')

    def _launch(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.dir / "data").exists():
            self._create_accounts()
        log = open(self.dir / "stdout.log", "ab")
        # Under a launcher, the script runs in its interpreter (lua5.4 on
        # 13 and 0.12) so that the tool sees the server itself.
        command = [*self.launcher, "lua5.4", shutil.which("prosody")] if self.launcher else ["prosody"]
        self.process = subprocess.Popen(
            [*command, "--config", str(self.config), "-F"], stdout=log, stderr=subprocess.STDOUT)
        # Prosody opens its ports as it loads the modules, in no set order:
        # ready when each one listens. Generous: the machine may be busy.
        ports = [self.port] + ([self.http_port] if self.serves_http else [])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                for port in ports:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"prosody did not listen on {ports}:\n{self.log_tail()}")

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"

    WARNING = r"\t(warn|error)\t"
    ERROR = r"\terror\t"

    def log(self):
        path = self.dir / "prosody.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @classmethod
    def installed(cls, workdir: Path):
        """A host whose module comes from `make install-prosody` into a
        throwaway prefix, as an operator would install it."""
        prefix = Path(workdir) / "prefix"
        subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "install-prosody", f"PREFIX={prefix}"],
                       check=True, capture_output=True)
        return cls(Path(workdir) / "server", plugins=prefix / "lib" / "prosody" / "modules")

    def reload_module(self):
        """Reloads mod_cmr on the main virtual host, sessions staying online."""
        self.shell(f"module:reload('cmr', '{DOMAIN}')")

    def stop_module(self):
        """Unloads mod_cmr from the main virtual host (not a reload),
        sessions staying online."""
        self.shell(f"module:unload('cmr', '{DOMAIN}')")

    def start_module(self):
        """Loads mod_cmr on the main virtual host again."""
        self.shell(f"module:load('cmr', '{DOMAIN}')")

    def shell(self, command):
        out = subprocess.run(["prosodyctl", "--config", str(self.config), "shell", command],
                             capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr

    def tool_get(self, tool, jid):
        return self._shell_answer(f"cmr:get({lua_string(jid)})")

    def tool_set(self, tool, jid, algorithm):
        return self._shell_answer(f"cmr:set({lua_string(jid)}, {lua_string(algorithm)})")

    def _shell_answer(self, command):
        """What a shell command returned: its `OK:` text, else ToolError
        with the shell's output."""
        out = self.shell(command)
        answers = re.findall(r"^\|?\s*OK: (.*)$", out, re.M)
        if not answers:
            raise ToolError(out.strip())
        return answers[-1]

    def stats(self, jid):
        """The output of the admin command that shows an account's figures."""
        return self.shell(f"cmr:stats('{jid}')")

    def web_url(self, page):
        """The address of `page`, a file under `web_root`: same origin as
        the WebSocket endpoint, ws://127.0.0.1:PORT/xmpp-websocket."""
        return f"http://127.0.0.1:{self.http_port}/files/{page}"

    def metrics(self, domain=DOMAIN):
        """mod_cmr's figures for `domain`, scraped from
        mod_http_openmetrics as a monitoring system would, in the suite's
        common shape."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=30) as response:
            exposition = response.read().decode()
        figures = {"routed": {}, "left_to_server": {}}
        for line in exposition.splitlines():
            sample = SAMPLE.match(line)
            if not sample or not sample[1].startswith("prosody_mod_cmr__"):
                continue
            name, labels, value = sample[1][len("prosody_mod_cmr__"):], dict(LABEL.findall(sample[2] or "")), sample[3]
            if labels.get("host") != domain:
                continue
            value = int(float(value))
            if name == "routed_messages_total":
                figures["routed"][labels["algorithm"]] = value
            elif name == "left_to_server_messages_total":
                figures["left_to_server"][labels["algorithm"]] = value
            elif name == "gone_sessions_total":
                figures["gone_sessions"] = value
            elif name == "answered_iqs_total":
                figures[{"result": "iq_results", "error": "iq_errors"}[labels["type"]]] = value
            elif name == "registered_sessions":
                figures["sessions"] = value
            elif name == "registered_accounts":
                figures["accounts"] = value
        return figures
