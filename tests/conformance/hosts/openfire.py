"""The Openfire host: Openfire 4.2.0 from Maven Central's jars (`make
openfire-deps` puts them and the launcher in build/openfire/server), with
the cmr plugin from build/openfire/cmr-openfire.jar, as a private server on
loopback: its own home directory, embedded HSQLDB, schema and accounts.

With CMR_OPENFIRE_HOME set to an Openfire installation (5.x, as an
operator has it: /opt/openfire, say), the suite runs against that one
instead, with the features of its version: its lib/ runs the server and
its resources/database gives the schema, its admin console is linked in;
configuration, database, keys, logs and plugins live in the test module's
own folder, and the fixture checks after each run that nothing in the
installation changed."""

import filecmp
import os
import re
import shutil
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from hosts.base import ACCOUNTS, ADMIN, DOMAIN, PASSWORD, ServerHost, free_port
from rawxmpp import RawSession, RawSessionError

ROOT = Path(__file__).resolve().parents[3]
SERVER = ROOT / "build" / "openfire" / "server"
INSTALLATION = Path(os.environ["CMR_OPENFIRE_HOME"]).resolve() if os.environ.get("CMR_OPENFIRE_HOME") else None
PLUGIN_JAR = ROOT / "build" / "openfire" / "cmr-openfire.jar"
# The pom, launcher, schema and config templates.
FILES = Path(__file__).resolve().parent / "openfire"
NS_CMR = "urn:xmpp:cmr:0"
# The fixture's own account, for its readiness and disco checks: the
# suite's accounts stay untouched.
PROBE = "probe"

# What Openfire reads from its database: Launcher.java stores them at every
# start of 4.2.0, an installation's setup at its first. Everything but c2s
# is off: s2s (and its direct-TLS port, a fixed 5270 in 5.x), components
# (5276), BOSH, the Flash policy port (a fixed 5229), the file transfer
# proxy, the media proxy and the update checker (it goes online).
def properties(port, detach_ms):
    return {
        "xmpp.domain": DOMAIN,
        "xmpp.fqdn": DOMAIN,
        "xmpp.socket.plain.port": port,
        "xmpp.socket.ssl.active": "false",
        "xmpp.server.socket.active": "false",
        "xmpp.server.socket.ssl.active": "false",
        "xmpp.component.socket.active": "false",
        "xmpp.component.ssl.active": "false",
        "xmpp.multiplex.socket.active": "false",
        "xmpp.multiplex.ssl.active": "false",
        "httpbind.enabled": "false",
        "flash.crossdomain.enabled": "false",
        "xmpp.proxy.enabled": "false",
        "mediaproxy.enabled": "false",
        "update.service-enabled": "false",
        "xmpp.session.detach.timeout": detach_ms,
        # Openfire's admin list: who may run the admin commands (and ask
        # the stats IQ).
        "admin.authorizedJIDs": f"{PROBE}@{DOMAIN},{ADMIN}",
    }


# conf/openfire.xml of an installation's first start: its setup makes the
# embedded database from resources/database (with Openfire's own account
# "admin", ADMIN, whose password <admin> sets), the accounts, and stores
# every other property given here. Its admin console listens nowhere.
INSTALLATION_XML = """<?xml version="1.0" encoding="UTF-8"?>
<jive>
  <autosetup>
    <run>true</run>
    <locale>en</locale>
    <xmpp><domain>{domain}</domain><fqdn>{domain}</fqdn><socket><ssl><active>false</active></ssl></socket></xmpp>
    <database><mode>embedded</mode></database>
    <admin><email>admin@{domain}</email><password>{password}</password></admin>
    <users>{users}</users>
  </autosetup>
  <connectionProvider><className>org.jivesoftware.database.EmbeddedConnectionProvider</className></connectionProvider>
  <adminConsole><port>-1</port><securePort>-1</securePort></adminConsole>
  <network><interface>127.0.0.1</interface></network>
  <cmrSuite><statistics><interface>127.0.0.1</interface><port>{statistics_port}</port></statistics></cmrSuite>
  <locale>en</locale>
  {properties}
</jive>
"""

# Launcher.AdminConsole serves the statistics; on 4.2.0 it is the "admin"
# plugin (the admin console is not on Central), beside an installation's
# own admin console a plugin of its own.
STATISTICS_PLUGIN = """<?xml version="1.0" encoding="UTF-8"?>
<plugin>
  <class>Launcher$AdminConsole</class>
  <name>{name}</name>
  <version>0</version>
</plugin>
"""


def installed_version(installation):
    """An Openfire installation's version, from its lib/xmppserver-VERSION.jar."""
    jars = sorted((installation / "lib").glob("xmppserver-*.jar"))
    if not jars:
        raise RuntimeError(f"CMR_OPENFIRE_HOME={installation} holds no lib/xmppserver-*.jar: not an Openfire installation")
    return jars[-1].name[len("xmppserver-"):-len(".jar")]


def installation_files():
    """Every file and folder of the installation with its size and times:
    what must not change while the suite runs against it."""
    found = {}
    for path in [INSTALLATION, *INSTALLATION.rglob("*")]:
        stat = path.lstat()
        found[str(path)] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return found


def as_xml(properties):
    """Openfire properties (dotted names) as the nested elements of
    openfire.xml, from which an installation's setup stores them."""
    root = ET.Element("properties")
    for name, value in properties.items():
        element = root
        for part in name.split("."):
            child = element.find(part)
            element = child if child is not None else ET.SubElement(element, part)
        element.text = str(value)
    return "".join(ET.tostring(child, encoding="unicode") for child in root)

# A log entry's first line: "2026.11.28 10:00:00.000 WARN  [thread]: ...".
ENTRY = r"^\d{4}\.\d\d\.\d\d \d\d:\d\d:\d\d\.\d{3} "


class OpenfireHost(ServerHost):
    name = "openfire"
    # Openfire has XEP-0280 carbons, offline storage, XEP-0198 acks and
    # resumption; the plugin learns that a session waits for resumption
    # (LocalSession.isDetached()) when it delivers, registers, reports stats
    # and sees the session send.
    features = {"carbons", "offline", "acks", "resumption", "hibernation", "restart", "reload", "stats", "privacy_lists"}
    lacking = {
        "blocking": "Openfire answers XEP-0191 blocking commands from 4.3.0 on; 4.2.0 has XEP-0016 privacy lists only",
        "expiry": "Openfire removes a waiting (detached) session only at its sweep of detached sessions: every 3 "
                  "minutes in 4.2 (hard-coded); in 5.x a tenth of xmpp.session.detach.timeout when that is between 1 "
                  "minute and 1 hour, else every 3 minutes: far beyond the suite's hibernation time",
        "load": "a session's unacknowledged XEP-0198 queue is a private field of StreamManager (4.2 to 5.x), and the "
                "plugin reads no private state",
        "virtual_hosts": "an Openfire server serves one XMPP domain",
        "mam": "Openfire archives (XEP-0313) only through its Monitoring plugin, which is not on Maven Central",
        "kill_session": "an Openfire session has no process of its own to kill",
        "cluster": "Openfire clusters through its Hazelcast plugin, which is not on Maven Central",
        "web_client": "the suite serves its web client (Converse.js over WebSocket) from Prosody alone: the routing "
                      "form a browser renders is the library's, the same on every host",
        "tools": "Openfire has no operators' command line: its operators' tool is the admin command (XEP-0050, "
                 "tested as such), run from any client by an account of the admin list; the admin console's page "
                 "is left out, as the suite's console is a stand-in",
    }
    # RoutingTableImpl removes <private/> from the messages it delivers.
    keeps_carbons_private = False
    # A dead session's unacknowledged messages: StreamManager.onClose routes
    # them all again, as new messages (with a delay stamp).
    resends_dead_session_queue = True
    # The JVM's shutdown stops every module and shuts the database down.
    stop_timeout = 60
    plugin_name = "cmr-openfire"
    native_copies_to_top = False
    # benches/throughput.py: rounds the JIT needs before the figures settle.
    warmup_rounds = 4
    # Openfire logs a client's malformed XML, or an <a/> whose h is no
    # number, at error level with a stack trace, and closes that connection.
    # (5.x: NettyConnectionHandler, "Closing connection <which> due to ...",
    # and a NettyXMPPDecoder warning quoting the refused bytes.)
    refused_input_logs = [r"ConnectionHandler - Closing connection (.* )?due to (error while processing message|"
                          r"exception in session)",
                          r"NettyXMPPDecoder - Closing connection, as an error occurred while decoding XMPP stanza"]
    reset_connection_logs = [r"ConnectionHandler - Closing connection (.* )?due to exception in session(.|\n)*"
                             r"Connection reset"]
    # The other hosts' module lists and archive switch have no counterpart:
    # 4.2.0 has no MAM, and its built-in modules are all or nothing.
    LEAN = None

    def __init__(self, workdir: Path, with_cmr: bool = True, plugin: Path = PLUGIN_JAR, modules=None, archive=True):
        super().__init__()
        self.dir = Path(workdir)
        self.with_cmr = with_cmr
        self.plugin = Path(plugin)
        self.statistics_port = free_port()
        if shutil.which("java") is None or not (SERVER / "classes" / "Launcher.class").exists():
            raise RuntimeError("Openfire 4.2.0 is not installed: run make openfire-deps")
        self.version = installed_version(INSTALLATION) if INSTALLATION else "4.2.0"
        if tuple(int(part) for part in self.version.split("-")[0].split(".")[:2]) >= (4, 3):
            self.features = self.features | {"blocking"}
        self._installation_files = installation_files() if INSTALLATION else None

    @property
    def outcome_names(self):
        return [f"openfire{self.version.split('.')[0]}", "openfire"]

    def _write_home(self):
        if INSTALLATION:
            self._write_installation_home()
            return
        for sub in ("conf", "logs", "plugins/admin", "resources/security"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "conf" / "openfire.xml").write_text(
            (FILES / "openfire.xml").read_text().format(statistics_port=self.statistics_port))
        (self.dir / "plugins" / "admin" / "plugin.xml").write_text(STATISTICS_PLUGIN.format(name="admin"))
        # No property is stored encrypted; 4.2.0 logs an error without it.
        (self.dir / "conf" / "security.xml").write_text("<security/>\n")
        (self.dir / "conf" / "openfire.properties").write_text("".join(
            f"{name}={value}\n" for name, value in properties(self.port, self.hibernation_seconds * 1000).items()))
        # Read when the database is created: plain passwords, from which
        # Openfire derives the SCRAM keys at first use.
        now = f"{int(time.time() * 1000):015d}"
        (self.dir / "conf" / "accounts.sql").write_text("".join(
            f"INSERT INTO ofUser (username, plainPassword, creationDate, modificationDate) "
            f"VALUES ('{name}', '{PASSWORD}', '{now}', '{now}');\n"
            for name in [PROBE, ADMIN.split("@")[0]] + [f"user{i}" for i in range(ACCOUNTS)]))
        self._make_keystores()

    def _write_installation_home(self):
        """The home of an installation's server: set up at its first start
        (Openfire rewrites openfire.xml then), kept as it is at a restart."""
        conf = self.dir / "conf"
        if (conf / "openfire.xml").exists():
            return
        for sub in (conf, self.dir / "logs", self.dir / "plugins", self.dir / "resources"):
            sub.mkdir(parents=True, exist_ok=True)
        # Copies of what Openfire writes (its key stores, the encryption
        # settings); links to what it only reads (schema, admin console).
        shutil.copyfile(INSTALLATION / "conf" / "security.xml", conf / "security.xml")
        shutil.copytree(INSTALLATION / "resources" / "security", self.dir / "resources" / "security")
        (self.dir / "resources" / "database").symlink_to(INSTALLATION / "resources" / "database")
        (self.dir / "plugins" / "admin").symlink_to(INSTALLATION / "plugins" / "admin")
        # A plugin jar (5.x forgets a plugin folder that no jar unpacked).
        with zipfile.ZipFile(self.dir / "plugins" / "cmr-statistics.jar", "w") as jar:
            jar.writestr("plugin.xml", STATISTICS_PLUGIN.format(name="cmr-statistics"))
            for launcher in (SERVER / "classes").glob("Launcher*.class"):
                jar.write(launcher, f"classes/{launcher.name}")
        users = "".join(f"<user{i}><username>{name}</username><password>{PASSWORD}</password></user{i}>"
                        for i, name in enumerate([PROBE] + [f"user{n}" for n in range(ACCOUNTS)], 1))
        (conf / "openfire.xml").write_text(INSTALLATION_XML.format(
            domain=DOMAIN, password=PASSWORD, users=users, statistics_port=self.statistics_port,
            properties=as_xml(properties(self.port, self.hibernation_seconds * 1000))))

    def _make_keystores(self):
        """A self-signed certificate for the domain (STARTTLS is offered),
        and a trust store holding it: Openfire 4.2.0's default stores."""
        security = self.dir / "resources" / "security"
        if (security / "truststore").exists():
            return
        store = ["-storetype", "JKS", "-storepass", "changeit"]
        keystore = [*store, "-keystore", str(security / "keystore"), "-alias", DOMAIN]
        for command in (
                ["-genkeypair", *keystore, "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                 "-dname", f"CN={DOMAIN}", "-ext", f"SAN=dns:{DOMAIN}", "-keypass", "changeit"],
                ["-exportcert", *keystore, "-rfc", "-file", str(security / "cert.pem")],
                ["-importcert", *store, "-keystore", str(security / "truststore"), "-alias", DOMAIN,
                 "-noprompt", "-file", str(security / "cert.pem")]):
            subprocess.run(["keytool", *command], check=True, capture_output=True, timeout=120)

    def _copy_plugin(self):
        if not self.plugin.exists():
            raise RuntimeError(f"{self.plugin} is missing: build the Openfire plugin first")
        target = self.dir / "plugins" / self.plugin.name
        # A fresh copy is newer than the unpacked plugin, so Openfire
        # unpacks it again; an unchanged one stays as it is.
        if not target.exists() or not filecmp.cmp(self.plugin, target, shallow=False):
            shutil.copyfile(self.plugin, target)

    def _command(self):
        """The java command line: Launcher over Central's 4.2.0 jars, or the
        installation's own starter (as its bin/openfire.sh runs it)."""
        home = self.dir.resolve()
        # The plugin monitor looks every 5 s instead of 20.
        common = ["java", "-DdevelopmentMode=true", f"-DopenfireHome={home}"]
        if INSTALLATION:
            lib = INSTALLATION / "lib"
            return [*common, f"-Dopenfire.lib.dir={lib}", f"-Dlog4j.configurationFile={lib / 'log4j2.xml'}",
                    "-Dlog4j2.formatMsgNoLookups=true",
                    f"-Djava.security.properties={home / 'resources' / 'security' / 'java.security'}",
                    "-jar", str(lib / "startup.jar")]
        conf = self.dir / "conf"
        # Java 17: the connection pool's cglib defines classes in java.lang.
        return [*common, "--add-opens", "java.base/java.lang=ALL-UNNAMED",
                f"-Dlog4j.configuration=file:{FILES / 'log4j.properties'}",
                "-cp", f"{SERVER / 'classes'}:{SERVER / 'lib'}/*",
                "Launcher", str(conf / "openfire.properties"), str(FILES / "schema.sql"), str(conf / "accounts.sql")]

    def _launch(self):
        self._write_home()
        if self.with_cmr:
            self._copy_plugin()
        log = open(self.dir / "stdout.log", "ab")
        self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.dir)
        # Generous: a busy machine is slow, and the JVM starts cold.
        deadline = time.monotonic() + 180
        try:
            self._wait(deadline, "log in", self._login_works)
            if self.with_cmr:
                self._wait(deadline, f"offer {NS_CMR}", lambda: NS_CMR in self.server_features())
        except RuntimeError:
            self.stop()
            raise

    def _wait(self, deadline, what, condition):
        """Polls `condition` until it holds; raises with the log's tail when
        the server exits or the deadline passes first."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"openfire exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if condition():
                    return
            except (OSError, RawSessionError, ET.ParseError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"openfire did not {what} on port {self.port}:\n{self.log_tail()}")

    def _login_works(self):
        # The client port opens once the modules have started and the plugin
        # monitor made its first pass; a login proves the database works.
        with RawSession(self.port, f"{PROBE}@{DOMAIN}", PASSWORD):
            return True

    def server_features(self):
        """The features of the server's disco#info, as a logged-in client
        sees them."""
        with RawSession(self.port, f"{PROBE}@{DOMAIN}", PASSWORD) as probe:
            return probe.disco_features(DOMAIN)

    def stats(self, jid):
        """The account's algorithm and per-session figures, as the plugin
        gives them to an admin of the server (the probe account is one)."""
        with RawSession(self.port, f"{PROBE}@{DOMAIN}", PASSWORD) as probe:
            try:
                reply = probe.iq(f"<stats xmlns='urn:x-cmr:stats:0' jid='{jid}'/>", to=DOMAIN)
            except RawSessionError as refused:
                # An account with no session: the error says so.
                return str(refused)
        return reply.find("{urn:x-cmr:stats:0}stats").text or ""

    def waiting(self, jid):
        """Whether the server holds the session `jid` waiting for XEP-0198
        resumption (detached), as Openfire itself knows it (the statistics
        stand-in asks SessionManager); None when it has no such session."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.statistics_port}/sessions", timeout=30) as reply:
            for line in reply.read().decode().splitlines():
                address, detached = line.split("\t")
                if address == jid:
                    return detached == "true"
        return None

    def metrics(self):
        """CMR's figures as Openfire's statistics give them: what the
        Monitoring plugin samples each minute (and Openfire 5.1 publishes
        over JMX) is every Statistic in StatisticsManager; the admin
        console's stand-in (Launcher.AdminConsole) samples them all at each
        GET /statistics, one line each: key, type, partial, sample, units,
        name. The plugin's keys are cmr_routed_ALGORITHM,
        cmr_left_to_server_ALGORITHM (and _none), cmr_gone_sessions,
        cmr_iq_results, cmr_iq_errors, cmr_sessions and cmr_accounts: read
        into the suite's common shape. Openfire serves one XMPP domain, so
        they are host.domain's."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.statistics_port}/statistics", timeout=30) as reply:
            text = reply.read().decode()
        figures = {"routed": {}, "left_to_server": {}}
        for line in text.splitlines():
            key, kind, partial, sample, _units, _name = line.split("\t", 5)
            if not key.startswith("cmr_"):
                continue
            # Running totals and current numbers: never Openfire's
            # destructive "rate" type; this node's share ("partial").
            assert (kind, partial) == ("count", "true"), line
            value = float(sample)
            assert value.is_integer() and value >= 0, line
            name = key[len("cmr_"):]
            family = next((f for f in figures if name.startswith(f + "_")), None)
            if family:
                figures[family][name[len(family) + 1:]] = int(value)
            else:
                figures[name] = int(value)
        return figures

    @classmethod
    def installed(cls, workdir: Path):
        """A host that gets the plugin as an operator installs it: the jar,
        as built, in the server's plugins/ directory."""
        return cls(Path(workdir) / "server")

    def stop(self):
        super().stop()
        if self._installation_files is not None:
            changed = {path for path, stat in installation_files().items() ^ self._installation_files.items()}
            assert not changed, f"the Openfire installation {INSTALLATION} was written: {sorted(changed)[:10]}"

    def _loads(self):
        # 5.x names the version too: 'cmr-openfire-0.1.0'.
        return len(re.findall(f"Successfully loaded plugin '{self.plugin_name}[-'.0-9]", self.log()))

    def install_plugin(self):
        """Copies the plugin jar into the running server, as an operator
        does, and waits until it has loaded and offers CMR."""
        loads = self._loads()
        self._copy_plugin()
        self._wait_for_load(loads)

    def reload_module(self):
        """Reloads the cmr plugin, sessions staying online: a jar newer than
        its unpacked directory makes the plugin monitor unload and load it."""
        loads = self._loads()
        unpacked = (self.dir / "plugins" / self.plugin_name).stat().st_mtime
        stamp = max(time.time(), unpacked + 2)
        os.utime(self.dir / "plugins" / self.plugin.name, (stamp, stamp))
        self._wait_for_load(loads)

    def _wait_for_load(self, loads):
        deadline = time.monotonic() + 120
        self._wait(deadline, f"load {self.plugin_name}", lambda: self._loads() > loads)
        self._wait(deadline, f"offer {NS_CMR}", lambda: NS_CMR in self.server_features())

    WARNING = ENTRY + r"(WARN|ERROR) "
    ERROR = ENTRY + r"ERROR "

    def log(self):
        """logs/openfire.log, with the lines that continue an entry (an
        exception's message, its stack trace) indented, as warnings() expects;
        then what killed a thread, which the JVM prints to stdout.log
        alone, as errors."""
        path = self.dir / "logs" / "openfire.log"
        # 5.x's log4j2.xml colours each level with ANSI codes.
        lines = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace")).splitlines() if path.exists() else []
        text = "\n".join(line if re.match(ENTRY, line) or line[:1].isspace() else "\t" + line for line in lines)
        stdout = self.dir / "stdout.log"
        if stdout.exists():
            for line in stdout.read_text(errors="replace").splitlines():
                if line.startswith("Exception in thread"):
                    text += f"\n0000.00.00 00:00:00.000 ERROR [stdout.log]: {line}"
        return text

    def log_tail(self, lines=40):
        text = ""
        for path in (self.dir / "logs" / "openfire.log", self.dir / "stdout.log"):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no log)"
