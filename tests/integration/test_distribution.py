"""Even backend distribution, measured with real traffic and the switch's own
bucket counters: balanced vs ovs-default for 3, 5 and 7 backends, no affinity.

Each VIP gets N new TCP connections with random source ports (dp_hash hashes
the 5-tuple).  lbaffd's ``lb/show`` reports each backend's count, summed over
its buckets from the group stats; every count must sit within the slot
model's prediction plus sampling error, and balanced must beat ovs-default.
"""

from __future__ import annotations

import math
import re
import subprocess
import time

import pytest

from lbaffd.model.distribution import BALANCED, OVS_DEFAULT, expected_shares
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import BACKEND_PORT, Topology, build_demo_topology, mac_of
from tests.integration.lbaffd_proc import LbaffdProcess

pytestmark = [pytest.mark.integration, pytest.mark.traffic, pytest.mark.slow]

N = 2400
SIZES = (3, 5, 7)
Z = 4.5  # sampling tolerance in standard deviations (binomial), per backend


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=None)
    for i in range(4, 8):  # be4..be7 next to be1..be3
        ip = f"10.0.0.2{i}"
        host = sandbox.add_host(f"be{i}", ip, mac_of(ip), 20 + i, iface_id=f"be{i}")
        sandbox.add_port_binding(f"be{i}", t.datapath_uuid, 10 + i, mac_of(ip), ip,
                                 chassis=sandbox.chassis)
        sandbox.start_server(host, BACKEND_PORT)
    for n in SIZES:
        backends = ",".join(f"10.0.0.2{i}:{BACKEND_PORT}" for i in range(1, n + 1))
        for mode, last in ((BALANCED, 0), (OVS_DEFAULT, 1)):
            sandbox.add_load_balancer(f"lb-{n}-{mode}", {f"10.0.0.1{n}{last}:80": backends},
                                      options={"distribution": mode},
                                      datapaths=[t.datapath_uuid])
    return t


def shown(daemon: LbaffdProcess, lb: str) -> tuple[dict[str, int], dict[str, float]]:
    """Per backend: connections counted by the switch, and the share lbaffd's
    slot model expects (both as ``lb/show`` prints them)."""
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "lb/show", lb], capture_output=True,
                         text=True, check=True).stdout
    rows = list(re.finditer(r"backend (\S+) +up +share +([\d.]+)% .*? packets (\d+)", out))
    return ({m.group(1): int(m.group(3)) for m in rows},
            {m.group(1): float(m.group(2)) / 100 for m in rows})


def test_balanced_beats_ovs_default_within_model(sandbox: Sandbox, topo: Topology,
                                                 daemon: LbaffdProcess) -> None:
    table: list[str] = []
    for n in SIZES:
        l1: dict[str, float] = {}
        for mode, last in ((BALANCED, 0), (OVS_DEFAULT, 1)):
            sandbox.appctl("revalidator/purge")  # count this VIP's datapath flows alone
            answered = sandbox.connect_counts("cli1", f"10.0.0.1{n}{last}", 80, N)
            slot_flows = sum("dp_hash(" in f for f in sandbox.appctl("dpctl/dump-flows")
                             .splitlines())
            assert answered.get("error", 0) == 0, answered
            lb = f"lb-{n}-{mode}"
            deadline = time.monotonic() + 10  # revalidators push datapath stats ~1/s
            counts, model = shown(daemon, lb)
            while sum(counts.values()) != N and time.monotonic() < deadline:
                time.sleep(0.3)
                counts, model = shown(daemon, lb)
            assert sum(counts.values()) == N, counts  # every connection counted once
            # the daemon's model is OVS's table for this exact bucket order
            assert sorted(model.values()) == pytest.approx(sorted(expected_shares(n, mode)),
                                                           abs=1e-3)
            ordered = [counts[b] for b in sorted(counts)]
            shares = [model[b] for b in sorted(counts)]
            for got, p in zip(ordered, shares, strict=True):
                sd = math.sqrt(N * p * (1 - p))
                assert abs(got - N * p) <= Z * sd + 1, (lb, ordered, shares)
            l1[mode] = sum(abs(c - N / n) for c in ordered)
            table.append(f"| {n} | {mode} | {' / '.join(map(str, ordered))} | "
                         f"{max(shares):.1%} / {min(shares):.1%} | "
                         f"{max(ordered) / N:.1%} / {min(ordered) / N:.1%} | {slot_flows} |")
        assert l1[BALANCED] < l1[OVS_DEFAULT], (n, l1)
    print("\n| backends | mode | connections per backend | model max/min share | "
          "measured max/min | dp_hash datapath flows |\n|---|---|---|---|---|---|\n"
          + "\n".join(table))
