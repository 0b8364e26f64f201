"""Micro benchmark of flow-desc decoding: os-ken objects vs ``messages``.

Installs the cold benchmark's desired state (``bench.encode.corpus``: N LBs,
one VIP each, 5 backends, affinity) on a private ovs-vswitchd, dumps lbaffd's
flows back as OF1.5 flow-desc replies, checks both decoders agree on every
entry, and times decoding each entry the old way
(``messages.decode_flow_fallback``: os-ken objects, then lbaffd's) and the new way
(``messages.decode_flow``: from cold memos, as a restarted daemon, and warm),
and the same for the group-desc entries.
Needs root (it starts ovsdb-server/ovs-vswitchd).
``python -m bench.decode [--lbs 5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence

from bench.common import bench_sandbox
from bench.encode import corpus
from lbaffd.model import ownership as own
from lbaffd.openflow import messages
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import FlowSpec, GroupSpec
from lbaffd.openflow.groupdesc import iter_group_entries

Entry = tuple[bytes, int]


def dump_entries(n: int) -> tuple[list[FlowSpec], list[GroupSpec], list[Entry], list[Entry]]:
    """The corpus at ``n`` LBs as OVS reports it: (reply, offset) per flow and per group."""
    flows, groups = corpus(n)
    with bench_sandbox("decode") as sb:
        ch = OpenFlowChannel(f"unix:{sb.mgmt_socket}")
        ch.connect(10)
        try:
            ch.bundle([messages.group_add(g) for g in groups]
                      + [messages.flow_add(f) for f in flows])
            parts = ch.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)
            group_parts = ch.dump_group_desc(own.is_lbaffd_group)
        finally:
            ch.close()
    return (flows, groups,
            [(part.raw, off) for part in parts for off, _, _ in iter_entries(part.raw)],
            [(part.raw, off) for part in group_parts
             for off, _, _ in iter_group_entries(part.raw)])


def old(buf: bytes, offset: int) -> FlowSpec:
    return messages.decode_flow_fallback(buf, offset)


def old_group(buf: bytes, offset: int) -> GroupSpec:
    return messages.decode_group_fallback(buf, offset)


def timed(fn: Callable[[bytes, int], object], entries: Sequence[Entry],
          before: Callable[[], object] | None = None) -> float:
    """Seconds for ``fn`` over every entry (GC off, as in a tight loop)."""
    if before is not None:
        before()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for buf, offset in entries:
            fn(buf, offset)
        return time.perf_counter() - start
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    ap.add_argument("--lbs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="best of (default 3)")
    args = ap.parse_args(argv)
    flows, groups, entries, group_entries = dump_entries(args.lbs)
    print(f"{args.lbs} LBs: {len(flows)} flows and {len(groups)} groups installed, "
          f"{len(entries)} and {len(group_entries)} entries dumped")
    want = {f.key: f for f in flows}
    fallbacks = 0
    for buf, offset in entries:
        expected = old(buf, offset)
        fast = messages.decode_fast(buf, offset)
        fallbacks += fast is None
        assert messages.decode_flow(buf, offset) == expected == want[expected.key]
    want_g = {g.group_id: g for g in groups}
    for buf, offset in group_entries:
        expected_g = old_group(buf, offset)
        fallbacks += messages.decode_group_fast(buf, offset) is None
        assert messages.decode_group(buf, offset) == expected_g == want_g[expected_g.group_id]
    print(f"both decoders agree on every entry; {fallbacks} left to os-ken")

    Case = tuple[str, Sequence[Entry], Callable[[bytes, int], object], Callable[[], object] | None]
    cases: list[Case] = [
        ("flow  os-ken (oskenfallback)", entries, old, None),
        ("flow  messages (cold memos)", entries, messages.decode_flow, messages.clear_caches),
        ("flow  messages (warm memos)", entries, messages.decode_flow, None),
        ("group os-ken", group_entries, old_group, None),
        ("group messages (cold memos)", group_entries, messages.decode_group,
         messages.clear_caches),
    ]
    results: dict[str, float] = {}
    for name, items, fn, before in cases:
        best = min(timed(fn, items, before) for _ in range(args.repeat))
        results[name] = best
        print(f"{name:36s} {best / len(items) * 1e6:8.2f} us/entry   "
              f"{best:7.3f} s for {len(items)}")
    for kind, a, b in (("flow", 0, 1), ("group", 3, 4)):
        speedup = results[cases[a][0]] / results[cases[b][0]]
        print(f"{kind} speed-up (cold memos): {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
