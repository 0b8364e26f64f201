"""Micro benchmark of flow-desc decoding: os-ken objects vs ``fastdecode``.

Installs the cold benchmark's desired state (``bench.encode.corpus``: N LBs,
one VIP each, 5 backends, affinity) on a private ovs-vswitchd, dumps lbaffd's
flows back as OF1.5 flow-desc replies, checks both decoders agree on every
entry, and times decoding each entry the old way
(``codec.decode_flow(flowdesc.decode_entry(...))``) and the new way
(``fastdecode.decode_flow``: from cold memos, as a restarted daemon, and warm).
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
from lbaffd import ownership as own
from lbaffd.openflow import codec, fastdecode, wire
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.flowdesc import decode_entry, iter_entries
from lbaffd.openflow.flowspec import FlowSpec

Entry = tuple[bytes, int]


def dump_entries(n: int) -> tuple[list[FlowSpec], list[Entry]]:
    """The corpus at ``n`` LBs as OVS reports it: (reply, offset) per flow."""
    flows, groups = corpus(n)
    with bench_sandbox("decode") as sb:
        ch = OpenFlowChannel(f"unix:{sb.mgmt_socket}")
        ch.connect(10)
        try:
            ch.bundle([wire.group_add(g) for g in groups] + [wire.flow_add(f) for f in flows])
            parts = ch.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)
        finally:
            ch.close()
    return flows, [(part.raw, off) for part in parts for off, _, _ in iter_entries(part.raw)]


def old(buf: bytes, offset: int) -> FlowSpec:
    return codec.decode_flow(decode_entry(buf, offset))


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
    flows, entries = dump_entries(args.lbs)
    print(f"{args.lbs} LBs: {len(flows)} flows installed, {len(entries)} entries dumped")
    want = {f.key: f for f in flows}
    fallbacks = 0
    for buf, offset in entries:
        expected = old(buf, offset)
        fast = fastdecode.decode_fast(buf, offset)
        fallbacks += fast is None
        assert fastdecode.decode_flow(buf, offset) == expected == want[expected.key]
    print(f"both decoders agree on every entry; {fallbacks} left to os-ken")

    cases: list[tuple[str, Callable[[bytes, int], object], Callable[[], object] | None]] = [
        ("os-ken (decode_entry + codec)", old, None),
        ("fastdecode (cold memos)", fastdecode.decode_flow, fastdecode.clear_memos),
        ("fastdecode (warm memos)", fastdecode.decode_flow, None),
    ]
    results: dict[str, float] = {}
    for name, fn, before in cases:
        best = min(timed(fn, entries, before) for _ in range(args.repeat))
        results[name] = best
        print(f"{name:32s} {best / len(entries) * 1e6:8.2f} us/flow   "
              f"{best:7.3f} s for {len(entries)}")
    speedup = results[cases[0][0]] / results[cases[1][0]]
    print(f"speed-up (cold memos): {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
