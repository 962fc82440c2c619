"""The conformance suite: one set of tests for every host. The host comes
from CMR_HOST (default prosody); each test module gets its own server."""

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def host_class():
    name = os.environ.get("CMR_HOST", "prosody")
    if name == "prosody":
        from hosts.prosody import ProsodyHost
        return ProsodyHost
    if name == "ejabberd":
        from hosts.ejabberd import EjabberdHost
        return EjabberdHost
    if name == "openfire":
        from hosts.openfire import OpenfireHost
        return OpenfireHost
    raise pytest.UsageError(f"unknown CMR_HOST {name!r}")


def make_host(workdir, **options):
    return host_class()(workdir, **options)


def stop_and_check_log(server):
    """Stops the server; its log must hold no error and no traceback, from
    whichever module: checked after every test module."""
    server.stop()
    problems = server.problems()
    assert problems == [], f"{server.name} logged:\n" + "\n".join(problems)


def served(tmp_path_factory, options=None, **settings):
    """A server for one test module, made with `options` (the host class's
    own) and with `settings` (attributes such as `hibernation_seconds`)
    applied before it starts."""
    server = make_host(tmp_path_factory.mktemp("host"), **(options or {}))
    for name, value in settings.items():
        setattr(server, name, value)
    server.start()
    yield server
    stop_and_check_log(server)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    yield from served(tmp_path_factory)


def require(host, *features):
    """Skips the test, saying why, on a host that lacks one of `features`."""
    missing = sorted(set(features) - host.features)
    if missing:
        pytest.skip("; ".join(f"{host.name} lacks {feature}" + (f": {host.lacking[feature]}" if feature in host.lacking else "")
                              for feature in missing))


def session_rows(stats):
    """The per-session rows (resources node-N) of the stats command's
    output, as columns."""
    return [line.split("\t") for line in stats.splitlines() if line.startswith("node-")]


def run(coro):
    """Runs one test's coroutine on a fresh event loop."""
    return asyncio.run(asyncio.wait_for(coro, 300))
