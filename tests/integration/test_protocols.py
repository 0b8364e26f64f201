"""Beyond TCP: a UDP VIP with affinity and one without, on real traffic."""

from __future__ import annotations

from collections import Counter

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

BACKENDS = "10.0.0.21:5353,10.0.0.22:5353,10.0.0.23:5353"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=None)
    for name in ("be1", "be2", "be3"):
        sandbox.start_server(t.hosts[name], 5353, proto="udp")
    sandbox.add_load_balancer("udp-sticky", {"10.0.0.150:53": BACKENDS}, protocol="udp",
                              options={"affinity_timeout": "60"}, datapaths=[t.datapath_uuid])
    sandbox.add_load_balancer("udp-plain", {"10.0.0.151:53": BACKENDS}, protocol="udp",
                              datapaths=[t.datapath_uuid])
    return t


def test_udp_affinity_and_spread(sandbox: Sandbox, topo: Topology,
                                 daemon: LbaffdProcess) -> None:
    flows = sandbox.dump_flows("table=2")
    assert any("udp,metadata=0x1,nw_dst=10.0.0.150,tp_dst=53" in f for f in flows), flows
    for client in ("cli1", "cli2"):
        got = sandbox.connect(client, "10.0.0.150", 53, count=15, proto="udp")
        assert all(r.ok for r in got), got
        assert len({r.backend for r in got}) == 1, Counter(r.backend for r in got)
    learned = sandbox.dump_flows("cookie=0x1bae000000000000/0xffff000000000000")
    assert len(learned) == 2
    spread = sandbox.connect("cli1", "10.0.0.151", 53, count=30, proto="udp")
    assert all(r.ok for r in spread)
    assert len({r.backend for r in spread}) >= 2
