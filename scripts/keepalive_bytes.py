"""How many whitespace bytes must follow each case of the bad-stanza corpus
before a live server answers it: 0 everywhere with an expat that parses
what it gets; more for a large token under expat's reparse deferral (2.6,
and Debian 12's libexpat1 from 2.5.0-1+deb12u2 on), which parses again only
once the bytes it holds have doubled since its last try.

For each case the server answers at all, it bisects over fresh sessions of
one account: the case in one write, then, half a second later, that many
spaces in one write, and two seconds for the answer.

Usage, from the repository root, with the host built (make conformance-HOST
builds it): CMR_HOST=prosody|ejabberd|openfire .venv/bin/python
scripts/keepalive_bytes.py [CASE...]; LD_LIBRARY_PATH pointing at another
libexpat.so.1 tries that one without installing it."""

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from conftest import make_host  # noqa: E402
from test_hostile import CORPUS, FROM, cases, corpus_session, expected_live  # noqa: E402
from xmpp import close  # noqa: E402


async def answered(host, account, resource, data, spaces):
    """Whether the server answers (or closes the stream on) `data` followed
    by `spaces` spaces."""
    client, answered, closed = await corpus_session(host, account, resource)
    client.transport.write(data)
    await asyncio.sleep(0.5)
    if spaces and not (answered.done() or closed.done()):
        client.transport.write(b" " * spaces)
    done, _ = await asyncio.wait([answered, closed], timeout=2, return_when=asyncio.FIRST_COMPLETED)
    if not closed.done():
        await close(client)
    return bool(done)


async def measure(host, names):
    account = host.account()
    tries = iter(range(1_000_000))
    for name, live in cases():
        outcome = expected_live(live, host)
        if (names and name not in names) or outcome == "no-answer" or outcome.startswith("not-sent"):
            continue
        data = (CORPUS / name).read_bytes().replace(FROM, b"")
        low, high = -1, len(data)
        assert await answered(host, account, f"m{next(tries)}", data, high), f"{name}: no answer at all"
        while high - low > 1:
            middle = (low + high) // 2
            if await answered(host, account, f"m{next(tries)}", data, middle):
                high = middle
            else:
                low = middle
        print(f"{host.name} {name} ({len(data)} bytes): {high}", flush=True)


def main():
    host = make_host(Path(tempfile.mkdtemp()))
    host.start()
    try:
        asyncio.run(measure(host, sys.argv[1:]))
    finally:
        host.stop()


if __name__ == "__main__":
    main()
