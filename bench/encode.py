"""Micro benchmark of flow/group mod encoding: os-ken objects vs ``wire``.

Not a test and no switch: compiles the cold benchmark's load balancers
(``N`` LBs, one VIP each, 5 backends, affinity, on a local switch) and times
encoding every flow and group of the desired state the way the channel used
to (os-ken ``OFPFlowMod`` wrapped in ``OFPBundleAddMsg`` and serialized) and
the way it does now (``wire`` bytes, bundle add included).
``python -m bench.encode [--lbs 5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import FlowSpec, GroupSpec
from lbaffd.openflow.packed import unpack_flow, unpack_group
from tests import reference_codec

BACKENDS = 5
XID, BUNDLE_ID = 7, 3
FLAGS = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
LS = DatapathRow("dp-ls", 1, "ls0")
LR = DatapathRow("dp-lr", 2, "lr0", is_router=True)


def corpus(n: int) -> tuple[list[FlowSpec], list[GroupSpec]]:
    """The desired state of ``bench.cold`` at N load balancers."""
    lbs, topo = corpus_inputs(n)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    state = compile_state(lbs, topo, ids, STANDALONE).state
    return ([unpack_flow(b) for b in state.flows.values()],
            [unpack_group(b) for b in state.groups.values()])


def corpus_inputs(n: int) -> tuple[tuple[LoadBalancer, ...], Topology]:
    """The load balancers and topology of ``bench.cold`` at N load balancers."""
    rows = []
    for i in range(n):
        vip = ipaddress.IPv4Address("172.16.0.1") + i
        backends = ",".join(f"{ipaddress.IPv4Address('10.128.0.0') + i * 16 + b}:8080"
                            for b in range(BACKENDS))
        rows.append(LoadBalancerRow(
            uuid=f"lb-{i}", name=f"lb-{i}", vips=MappingProxyType({f"{vip}:80": backends}),
            protocol="tcp", options=MappingProxyType({"affinity_timeout": "300"}),
            datapaths=(LS.uuid, LR.uuid)))
    lbs, _ = parse_all(rows, {LS.uuid: LS, LR.uuid: LR}, {})
    # as in bench.cold: only the switch has a local port (the router is not
    # patched to it, so it is not local)
    return lbs, Topology((LocalPort(11, "cli", LS),), MappingProxyType({}))


def os_ken_add(msg: Any) -> bytes:
    """What ``OpenFlowChannel.bundle`` did per message before ``wire``."""
    add = parser.OFPBundleAddMsg(reference_codec.DP, BUNDLE_ID, FLAGS, msg, [])
    add.xid = XID
    msg.xid = XID
    add.serialize()
    return bytes(add.buf)


def timed(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Seconds for ``fn`` over ``items`` (GC off, as in a tight loop)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for item in items:
            fn(item)
        return time.perf_counter() - start
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__)
    ap.add_argument("--lbs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="best of (default 3)")
    args = ap.parse_args(argv)
    flows, groups = corpus(args.lbs)
    print(f"{args.lbs} LBs: {len(flows)} flows, {len(groups)} groups")

    def raw(encode: Callable[[Any], messages.RawMessage]) -> Callable[[Any], bytes]:
        return lambda spec: encode(spec).bundle_add(XID, BUNDLE_ID, FLAGS)

    def old(encode: Callable[[Any], Any]) -> Callable[[Any], bytes]:
        return lambda spec: os_ken_add(encode(spec))

    # (name, specs, encoder, start every repetition from empty caches as a fresh daemon does)
    cases: list[tuple[str, Sequence[Any], Callable[[Any], bytes], bool]] = [
        ("flow add   os-ken", flows, old(reference_codec.flow_add), False),
        ("flow add   wire (cold caches)", flows, raw(messages.flow_add), True),
        ("flow add   wire", flows, raw(messages.flow_add), False),
        ("flow mod   os-ken", flows, old(reference_codec.flow_modify), False),
        ("flow mod   wire", flows, raw(messages.flow_modify), False),
        ("flow del   os-ken", flows, old(reference_codec.flow_delete), False),
        ("flow del   wire", flows, raw(messages.flow_delete), False),
        ("group add  os-ken", groups, old(reference_codec.group_add), False),
        ("group add  wire (cold caches)", groups, raw(messages.group_add), True),
        ("group del  os-ken", [g.group_id for g in groups], old(reference_codec.group_delete),
         False),
        ("group del  wire", [g.group_id for g in groups], raw(messages.group_delete), False),
    ]
    results: dict[str, float] = {}
    for name, items, fn, cold in cases:
        best = float("inf")
        for _ in range(args.repeat):
            if cold:
                messages.clear_caches()
            best = min(best, timed(fn, items))
        results[name] = best
        print(f"{name:32s} {best / len(items) * 1e6:8.2f} us/msg   "
              f"{best:7.3f} s for {len(items)}")
    before, after = results["flow add   os-ken"], results["flow add   wire (cold caches)"]
    print(f"flow add speed-up (cold caches): {before / after:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
