"""Micro benchmark of compiling the cold benchmark's desired state: through
the pipeline stages (FlowSpecs, then ``wire``) and with templates (``templates``).

Not a test and no switch: ``N`` LBs, one VIP each, 5 backends, affinity, on a
local switch and a router (``bench.encode.corpus_inputs``); best of
``--repeat`` full compiles each way, from a fresh compile cache (as a cold
pass), and a check that both give the same state.  ``--cluster``: the
services of ``bench.cluster`` (the realistic benchmark's: 1-120 endpoints,
pods of this node among them, affinity, UDP, IPv6, ``hairpin_snat_ip``) on
its node switch and gateway router, with the templates' counts.
``python -m bench.compile [--lbs 5000] [--repeat 3] [--cluster]``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import time
from types import MappingProxyType

from bench import cluster
from bench.encode import corpus_inputs
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import DesiredState, VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import IPAddress, LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology

NODE_SWITCH = DatapathRow("dp-ls0", 1, "ls0")
GATEWAY = DatapathRow("dp-gr0", 2, "gr0", is_router=True)


def cluster_inputs(n: int, seed: int = 17) -> tuple[tuple[LoadBalancer, ...], Topology]:
    """``bench.cluster``'s services as lbaffd's model sees them on this node:
    every LB on its switch and gateway router, its pods local with their MACs
    on the switch (what ovn-northd and the SB give the daemon, without them)."""
    c = cluster.generate(n, seed)
    rows = [LoadBalancerRow(uuid=f"lb-{i}", name=s.name, vips=MappingProxyType(s.vips(c.pods)),
                            protocol=s.protocol, options=MappingProxyType(s.options()),
                            datapaths=(NODE_SWITCH.uuid, GATEWAY.uuid))
            for i, s in enumerate(c.services)]
    lbs, _ = parse_all(rows, {d.uuid: d for d in (NODE_SWITCH, GATEWAY)}, {})
    ports: list[LocalPort] = []
    macs: dict[tuple[int, IPAddress], str] = {}
    local: set[IPAddress] = set()
    for k, pod in enumerate(c.local_pods):
        ips = (ipaddress.ip_address(pod.ip4), ipaddress.ip_address(pod.ip6))
        ports.append(LocalPort(10 + k, pod.name, NODE_SWITCH, frozenset(ips)))
        macs.update({(NODE_SWITCH.tunnel_key, a): pod.mac for a in ips})
        local.update(ips)
    return lbs, Topology(tuple(ports), MappingProxyType(macs),
                         attached=frozenset({GATEWAY.tunnel_key}), local_ips=frozenset(local))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__)
    ap.add_argument("--lbs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="best of (default 3)")
    ap.add_argument("--cluster", action="store_true", help="bench.cluster's services")
    args = ap.parse_args(argv)
    lbs, topo = cluster_inputs(args.lbs) if args.cluster else corpus_inputs(args.lbs)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    states: dict[bool, DesiredState] = {}
    for templates in (False, True):
        best = float("inf")
        for _ in range(args.repeat):
            cache = VipCache(templates=templates)
            gc.collect()
            gc.disable()  # as the daemon's full pass (GcPause)
            try:
                start = time.perf_counter()
                states[templates] = compile_state(lbs, topo, ids, STANDALONE, cache=cache)
                best = min(best, time.perf_counter() - start)
            finally:
                gc.enable()
        flows = len(states[templates].state.flows)
        vips = len(states[templates].vips)
        print(f"{'templates' if templates else 'stages':10s} {best:6.3f} s for {args.lbs} LBs "
              f"({vips} VIPs, {flows} flows): {best / vips * 1e6:6.1f} us per VIP")
        if cache.templates is not None:
            t = cache.templates
            print(f"           templates made {t.made}, refused {t.refused}; "
                  f"VIPs filled in {t.filled} of {vips}")
    same = states[False] == states[True]
    print(f"same state both ways: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
