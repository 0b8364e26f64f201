"""LB options on real traffic: hairpin, reject / drop without backends, selection_fields.

Beside the demo LB (lb1) the module adds:
- lb-hp: 10.0.0.150:80 -> be1 only, so be1 connecting to it is always balanced
  to itself (hairpin); lb-hp2: 10.0.0.151:80 -> be2, ``hairpin_snat_ip``;
- lb-rej: 10.0.0.160:80 (tcp) and lb-rej-udp 10.0.0.160:53 (udp) without
  backends and ``reject=true``; lb-drop: 10.0.0.161:80 without backends;
- lb-sel: 10.0.0.170:80 over be1..3 with ``selection_fields=ip_src,ip_dst``.
"""

from __future__ import annotations

import re
import time

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import HOSTS, Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, metric, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

ALL = ",".join(f"{HOSTS[b][0]}:8080" for b in ("be1", "be2", "be3"))


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=None)
    dp = [t.datapath_uuid]
    sandbox.add_load_balancer("lb-hp", {"10.0.0.150:80": "10.0.0.21:8080"}, datapaths=dp)
    sandbox.add_load_balancer("lb-hp2", {"10.0.0.151:80": "10.0.0.22:8080"}, datapaths=dp,
                              options={"hairpin_snat_ip": "10.0.0.99"})
    sandbox.add_load_balancer("lb-rej", {"10.0.0.160:80": ""}, datapaths=dp,
                              options={"reject": "true"})
    sandbox.add_load_balancer("lb-rej-udp", {"10.0.0.160:53": ""}, protocol="udp",
                              datapaths=dp, options={"reject": "true"})
    sandbox.add_load_balancer("lb-drop", {"10.0.0.161:80": ""}, datapaths=dp)
    sandbox.add_load_balancer("lb-sel", {"10.0.0.170:80": ALL}, datapaths=dp,
                              options={"selection_fields": "ip_src,ip_dst"})
    # two LBs sharing backends, both with affinity (OVN once leaked entries
    # between them), and one LB with several VIPs
    sandbox.add_load_balancer("share-a", {"10.0.0.180:80": "10.0.0.21:8080"}, datapaths=dp,
                              options={"affinity_timeout": "60"})
    sandbox.add_load_balancer("share-b", {"10.0.0.181:80": "10.0.0.22:8080,10.0.0.23:8080"},
                              datapaths=dp, options={"affinity_timeout": "60"})
    sandbox.add_load_balancer("multi", {"10.0.0.182:80": "10.0.0.21:8080",
                                        "10.0.0.182:81": "10.0.0.22:8080",
                                        "10.0.0.183:80": "10.0.0.23:8080"}, datapaths=dp)
    return t


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology):  # type: ignore[no-untyped-def]
    from tests.integration.lbaffd_proc import free_port
    proc = LbaffdProcess(sandbox, "--metrics-address", f"127.0.0.1:{free_port()}")
    proc.start()
    wait_until(lambda: len(sandbox.dump_groups()) == 12, timeout=10)
    yield proc
    proc.stop()


def test_backend_balanced_to_itself_reaches_itself(sandbox: Sandbox,
                                                   daemon: LbaffdProcess) -> None:
    results = sandbox.connect("be1", "10.0.0.150", 80, count=5)
    assert all(r.ok and r.backend == "be1" for r in results), results
    # the connection was source-NATed to the VIP in the hairpin zone
    ct = sandbox.appctl("dpctl/dump-conntrack", "zone=65520")
    assert re.search(r"src=10\.0\.0\.21,dst=10\.0\.0\.21,.*reply=\(src=10\.0\.0\.21,"
                     r"dst=10\.0\.0\.150", ct), ct
    # and other clients of the same VIP are not affected
    assert all(r.ok and r.backend == "be1" for r in sandbox.connect("cli1", "10.0.0.150", 80,
                                                                     count=3))


def test_hairpin_snat_ip_option(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    results = sandbox.connect("be2", "10.0.0.151", 80, count=3)
    assert all(r.ok and r.backend == "be2" for r in results), results
    ct = sandbox.appctl("dpctl/dump-conntrack", "zone=65520")
    assert re.search(r"src=10\.0\.0\.22,dst=10\.0\.0\.22,.*reply=\(src=10\.0\.0\.22,"
                     r"dst=10\.0\.0\.99", ct), ct


def test_no_backend_with_reject_refuses_tcp_and_udp(sandbox: Sandbox,
                                                    daemon: LbaffdProcess) -> None:
    start = time.monotonic()
    (tcp,) = sandbox.connect("cli1", "10.0.0.160", 80, timeout=3)
    assert not tcp.ok and "ConnectionRefused" in tcp.error, tcp
    (udp,) = sandbox.connect("cli1", "10.0.0.160", 53, proto="udp", timeout=3)
    assert not udp.ok and "ConnectionRefused" in udp.error, udp
    assert time.monotonic() - start < 5  # answered at once, not timed out
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_vip_refusals_total", lb="lb-rej", vip="10.0.0.160:80",
                  kind="tcp_rst") >= 1
    assert metric(text, "lbaffd_vip_refusals_total", lb="lb-rej-udp", vip="10.0.0.160:53",
                  kind="icmp_unreachable") >= 1
    assert metric(text, "lbaffd_vips_without_backends", action="reject") == 2
    assert daemon.count("vip_without_backends") == 3  # logged once per VIP


def test_no_backend_without_reject_drops(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    (r,) = sandbox.connect("cli1", "10.0.0.161", 80, timeout=1.5)
    assert not r.ok and "timed out" in r.error, r
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_vips_without_backends", action="drop") == 1
    flows = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    (drop,) = [f for f in flows if "nw_dst=10.0.0.161" in f and "tp_dst=80" in f]
    assert drop.endswith("actions=drop"), drop


def test_backend_added_to_rejecting_vip_serves_it(sandbox: Sandbox,
                                                  daemon: LbaffdProcess) -> None:
    lb = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Load_Balancer", "name=lb-rej")
    sandbox.set_lb_vips(lb, {"10.0.0.160:80": "10.0.0.23:8080"})
    daemon.wait_event("vip_backends_restored", lb="lb-rej")

    def served() -> bool:
        (r,) = sandbox.connect("cli2", "10.0.0.160", 80)
        return r.ok and r.backend == "be3"
    assert wait_until(served, timeout=10, what="cli2 -> 10.0.0.160:80 answered by be3")


def test_selection_fields_hash_group(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    groups = [g for g in sandbox.dump_groups() if "10.0.0.2" in g and "fields(" in g]
    assert any("selection_method=hash,fields(ip_src,ip_dst)" in g for g in groups), groups
    # a 2-tuple hash: one client reaches one backend whatever its source port ...
    counts = sandbox.connect_counts("cli1", "10.0.0.170", 80, count=10)
    assert len(counts) == 1 and "error" not in counts, counts
    # ... and many clients spread
    extra = [f"10.0.0.{i}" for i in range(200, 212)]
    for ip in extra:
        sandbox.hosts["cli2"].add_address(ip)
    results = sandbox.connect("cli2", "10.0.0.170", 80, count=len(extra), src_ips=extra)
    assert all(r.ok for r in results) and len({r.backend for r in results}) >= 2, results


def test_affinity_never_leaks_between_lbs_sharing_backends(sandbox: Sandbox,
                                                           daemon: LbaffdProcess) -> None:
    a = sandbox.connect("cli1", "10.0.0.180", 80, count=3)
    assert {r.backend for r in a} == {"be1"}, a
    b = sandbox.connect("cli1", "10.0.0.181", 80, count=6)
    assert all(r.ok for r in b) and len({r.backend for r in b}) == 1, b
    assert b[0].backend in ("be2", "be3")  # never share-a's pinned be1
    learned = sandbox.dump_flows("cookie=0x1bae000000000000/0xffff000000000000")
    mine = [f for f in learned if "nw_src=10.0.0.11" in f]
    assert len(mine) == 2 and len({re.search(r"reg6=(0x[0-9a-f]+)", f).group(1)  # type: ignore[union-attr]
                                    for f in mine}) == 2, mine


def test_several_vips_in_one_lb(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    for vip, port, backend in (("10.0.0.182", 80, "be1"), ("10.0.0.182", 81, "be2"),
                               ("10.0.0.183", 80, "be3")):
        got = sandbox.connect("cli2", vip, port, count=2)
        assert {r.backend for r in got} == {backend}, (vip, port, got)
