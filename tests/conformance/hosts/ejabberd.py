"""The ejabberd host: Debian's ejabberd 23.01 with mod_cmr from
build/erlang, as a private node on loopback (its own config, spool and
logs; no system service; epmd bound to loopback)."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from hosts.prosody import ACCOUNTS, DOMAIN, FIXED_DOMAIN, PASSWORD, free_port

ROOT = Path(__file__).resolve().parents[3]
EJABBERD = Path("/usr/lib/x86_64-linux-gnu/ejabberd-23.01")
CODE = [ROOT / "build" / "erlang" / "cmr" / "ebin", ROOT / "build" / "erlang" / "mod_cmr" / "ebin"]

CONFIG = """
hosts: ["{domain}", "{fixed}"]
loglevel: info
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
auth_method: internal
auth_password_format: plain
s2s_access: none
host_config:
  "{domain}":
    modules:
{modules}
{cmr}
  "{fixed}":
    modules:
{modules}
{fixed_cmr}
"""

# A host's `modules` in host_config replaces the list, so each host has all.
MODULES = """      mod_roster: {}
      mod_disco: {}
      mod_carboncopy: {}
      mod_stream_mgmt:
        resume_timeout: 5
        resend_on_timeout: true
      mod_offline: {}
      mod_mam:
        default: always"""
MAIN_CMR = """      mod_cmr:
        hints: any"""
FIXED_CMR = """      mod_cmr:
        offered: [all, mostactive, roundrobin]
        user_change: false
        hints: never"""


class EjabberdHost:
    name = "ejabberd"
    domain = DOMAIN
    fixed_domain = FIXED_DOMAIN
    password = PASSWORD
    features = {"carbons", "mam", "smacks", "offline", "restart"}
    hibernation_seconds = 5

    def __init__(self, workdir: Path, with_cmr: bool = True):
        self.dir = Path(workdir)
        self.port = free_port()
        self.with_cmr = with_cmr
        self.node = f"cmr{self.port}"
        self.process = None
        self._next_account = 0
        if not EJABBERD.exists():
            raise RuntimeError("ejabberd 23.01 is not installed (make test installs it)")

    def _env(self):
        return dict(os.environ, HOME=str(self.dir), EJABBERD_CONFIG_PATH=str(self.dir / "ejabberd.yml"),
                    EJABBERD_LOG_PATH=str(self.dir / "ejabberd.log"), ERL_LIBS="/usr/lib/x86_64-linux-gnu",
                    ERL_EPMD_ADDRESS="127.0.0.1")

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ejabberd.yml").write_text(CONFIG.format(
            domain=DOMAIN, fixed=FIXED_DOMAIN, port=self.port, modules=MODULES,
            cmr=MAIN_CMR if self.with_cmr else "", fixed_cmr=FIXED_CMR if self.with_cmr else ""))
        ready = self.dir / "ready"
        ready.unlink(missing_ok=True)
        users = ",".join(f'{{<<"user{i}">>,<<"{d}">>}}' for d in (DOMAIN, FIXED_DOMAIN) for i in range(ACCOUNTS))
        register = (f'[ejabberd_auth:try_register(U, S, <<"{PASSWORD}">>) || {{U, S}} <- [{users}]], '
                    f'file:write_file("{ready}", <<>>).')
        paths = [arg for p in [EJABBERD / "ebin", *CODE] for arg in ("-pa", str(p))]
        log = open(self.dir / "stdout.log", "ab")
        self.process = subprocess.Popen(
            ["erl", "-noinput", "-noshell", "-sname", self.node, "-setcookie", "cmrtest", *paths,
             "-mnesia", "dir", f'"{self.dir / "spool"}"', "-s", "ejabberd", "-eval", register],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.dir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready.exists():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"ejabberd did not start:\n{self.log_tail()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self):
        self.stop()
        self.start()

    def log_tail(self, lines=40):
        text = ""
        for name in ("ejabberd.log", "stdout.log"):
            path = self.dir / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no log)"

    def account(self, domain=DOMAIN):
        name = f"user{self._next_account}"
        self._next_account += 1
        assert self._next_account <= ACCOUNTS, "raise ACCOUNTS"
        return f"{name}@{domain}"
