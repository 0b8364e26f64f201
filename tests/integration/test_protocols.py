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


@pytest.fixture(scope="module")
def more_lbs(sandbox: Sandbox, topo: Topology) -> None:
    dp = [topo.datapath_uuid]
    # IP-only: no ports, every protocol; affinity keyed on (client, VIP)
    sandbox.add_load_balancer("ip-only", {"10.0.0.160": "10.0.0.21,10.0.0.22,10.0.0.23"},
                              options={"affinity_timeout": "60"}, datapaths=dp)
    # SCTP: checked with ofproto/trace only.  OVS 3.1's userspace conntrack
    # (the netdev datapath, the only one here) does not track SCTP: raw SCTP
    # INITs sent through it were neither DNATed nor marked reliably.
    sandbox.add_load_balancer("sctp-sticky", {"10.0.0.171:80": "10.0.0.23:9999"},
                              protocol="sctp", options={"affinity_timeout": "60"}, datapaths=dp)


def test_ip_only_vip_is_sticky_across_protocols(sandbox: Sandbox, more_lbs: None,
                                                daemon: LbaffdProcess) -> None:
    tcp = sandbox.connect("cli1", "10.0.0.160", 8080, count=6)
    assert all(r.ok for r in tcp), tcp
    assert len({r.backend for r in tcp}) == 1
    # UDP from the same client to the same VIP: the same backend (no ports in the key)
    udp = sandbox.connect("cli1", "10.0.0.160", 5353, count=4, proto="udp")
    assert all(r.ok for r in udp) and {r.backend for r in udp} == {tcp[0].backend}, udp
    flows = sandbox.dump_flows("table=2")
    assert any("ip,metadata=0x1,nw_dst=10.0.0.160 " in f for f in flows), flows


def test_sctp_port_translation_in_trace(sandbox: Sandbox, more_lbs: None,
                                        daemon: LbaffdProcess) -> None:
    out = sandbox.appctl(
        "ofproto/trace", "br-int",
        "in_port=11,sctp,dl_src=02:00:00:00:00:0b,dl_dst=02:1b:af:00:00:01,"
        "nw_src=10.0.0.11,nw_dst=10.0.0.171,sctp_src=5000,sctp_dst=80", "--ct-next", "trk,new")
    assert "nat(dst=10.0.0.23:9999)" in out, out
    # affinity on an SCTP VIP: the learn keys on the client, the load on the backend
    assert "learn(table=3" in out and "NXM_OF_IP_SRC[]" in out, out
    assert "sctp,metadata=0x1,nw_dst=10.0.0.171,tp_dst=80" in "\n".join(
        sandbox.dump_flows("table=2"))
