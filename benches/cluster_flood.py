#!/usr/bin/env python3
"""A flood in a two-node ejabberd cluster (make bench-cluster-flood): SENDERS
raw-socket senders on node A each write MESSAGES chat messages at once to
an account whose two sessions are on node B and whose home is node B
(round robin), so that every message is forwarded from A to B. Against the
same flood to an account of a virtual host without mod_cmr, its sessions
on B. What it shows: how long until every message arrived (each counted
once), and on node A, sampled every 50 ms, the peak of the journal (the
ETS table's memory, and with mod_cmr_journal the bytes it counts against
max_journal_size), of the longest mailbox, and the journal's overflow."""

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))

from cluster_throughput import homed_on, two_nodes  # noqa: E402
from throughput import count_messages, session, set_algorithm  # noqa: E402
from hosts.ejabberd import NATIVE_DOMAIN  # noqa: E402

SENDERS = 10
MESSAGES = 20_000
TIMEOUT = 300

# A process on node A that samples every 50 ms and answers {peak, From}
# with the peaks of {the journal table's ETS memory, the bytes counted
# against max_journal_size with the entries then, the longest mailbox}. The
# journal's table is named cmr_journal (cmr_journal_localhost before it
# was bounded); the counted bytes are mod_cmr's own metric, where it has one.
SAMPLER = """
register(cmr_flood_sampler, spawn(fun() ->
    Sample = fun() ->
        Tables = [T || T <- ets:all(), lists:member(ets:info(T, name), [cmr_journal, cmr_journal_localhost])],
        Ets = lists:sum([ets:info(T, memory) || T <- Tables]) * erlang:system_info(wordsize),
        Entries = lists:sum([ets:info(T, size) || T <- Tables]),
        Counted = case catch mod_cmr_cluster:metric_rows(<<"localhost">>) of
                      [{_, _, _, Bytes} | _] -> Bytes;
                      _ -> 0
                  end,
        Mailbox = lists:max([0 | [N || P <- processes(), {message_queue_len, N} <- [process_info(P, message_queue_len)]]]),
        {Ets, {Counted, Entries}, Mailbox}
    end,
    Loop = fun L({E0, C0, M0}) ->
        receive
            {peak, From} -> From ! {E0, C0, M0}
        after 50 ->
            {E, C, M} = Sample(),
            L({max(E0, E), max(C0, C), max(M0, M)})
        end
    end,
    Loop({0, {0, 0}, 0})
end))"""


def overflowed(node):
    rows = node.eval('catch mod_cmr_cluster:metric_rows(<<"localhost">>)')
    return rows.rsplit(",", 1)[1].rstrip("}]") if "journal_overflow" in rows else "(none)"


def flood(a, b, account, sender_jids, label):
    receivers = [session(b, account, "node-0", 0), session(b, account, "node-1", 0 if label != "native" else -1)]
    senders = [session(a, jid, "probe", 0) for jid in sender_jids]
    time.sleep(0.3)
    a.eval(SAMPLER)
    stop = threading.Event()
    counts = [0] * len(receivers)
    counter = threading.Thread(target=count_messages, args=(receivers, counts, stop))
    counter.start()
    payloads = [" ".join(f"<message to='{account}' type='chat'><body>s{s}-m{i}</body></message>"
                         for i in range(MESSAGES)).encode() for s in range(SENDERS)]
    start = time.monotonic()
    writers = [threading.Thread(target=sender.sock.sendall, args=(payload,))
               for sender, payload in zip(senders, payloads)]
    for writer in writers:
        writer.start()
    total = SENDERS * MESSAGES
    while sum(counts) < total and time.monotonic() - start < TIMEOUT:
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    peak = a.eval("cmr_flood_sampler ! {peak, self()}, receive P -> P end")
    for writer in writers:
        writer.join()
    # Anything beyond the total (a copy) arrives within a moment.
    time.sleep(1)
    stop.set()
    counter.join()
    for s in (*senders, *receivers):
        s.sock.close()
    ets, counted, entries, mailbox = (int(x) for x in peak.replace("{", "").replace("}", "").split(","))
    print(f"{label}: {sum(counts)} deliveries of {total} messages in {elapsed:.1f} s; on node A, peaks: journal "
          f"{ets / 1e6:.1f} MB of ETS memory, {counted / 1e6:.1f} MB counted against max_journal_size "
          f"({entries} entries then), longest mailbox {mailbox}; journal overflow {overflowed(a)}", flush=True)


def main():
    with two_nodes("cmr-bench-flood-") as (a, b):
        account = homed_on(b, {a: a.node_name(), b: b.node_name()}, a)
        set_algorithm(a, account, "urn:xmpp:cmr:roundrobin")
        flood(a, b, a.account(NATIVE_DOMAIN), [a.account(NATIVE_DOMAIN) for _ in range(SENDERS)], "native")
        flood(a, b, account, [a.account() for _ in range(SENDERS)], "mod_cmr roundrobin")


if __name__ == "__main__":
    main()
