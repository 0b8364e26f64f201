"""IPv6 VIPs on real traffic: ND for the VIP, sticky affinity keyed on the
IPv6 client, hairpin and reject, through a real ovs-vswitchd.

The demo hosts get IPv6 addresses (fd00::<n>) and backends serve on 8086
over both families; the Port_Bindings list both addresses, as northd writes
them for a dual-stack port.
"""

from __future__ import annotations

import pytest

from lbaffd.compile.stages import vip_mac
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import HOSTS, Topology, build_demo_topology, mac_of
from tests.integration.lbaffd_proc import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

VIP6 = "fd00::100"
PORT6 = 8086
BACKENDS6 = ",".join(f"[fd00::{n}]:{PORT6}" for n in (21, 22, 23))


def v6(name: str) -> str:
    return "fd00::" + HOSTS[name][0].rsplit(".", 1)[1]


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=60)
    for name, host in t.hosts.items():
        host.enable_ipv6(v6(name))
        pb = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Port_Binding",
                           f"logical_port={name}")
        sandbox.sbctl("set", "Port_Binding", pb,
                      f'mac="{mac_of(host.ip)} {host.ip} {v6(name)}"')
        if name.startswith("be"):
            sandbox.start_server(host, PORT6, ipv6=True)
    dp = [t.datapath_uuid]
    sandbox.add_load_balancer("lb6", {f"[{VIP6}]:80": BACKENDS6}, datapaths=dp,
                              options={"affinity_timeout": "60"})
    sandbox.add_load_balancer("lb6-hairpin", {"[fd00::150]:80": f"[fd00::21]:{PORT6}"},
                              datapaths=dp)
    sandbox.add_load_balancer("lb6-reject", {"[fd00::160]:80": ""}, datapaths=dp,
                              options={"reject": "true"})
    return t


def test_vip_is_resolved_by_neighbor_discovery(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: any(f"nd_target={VIP6}" in f for f in sandbox.dump_flows()), timeout=10)
    results = sandbox.connect("cli1", VIP6, 80, count=1)
    assert results[0].ok, results
    neigh = sandbox.hosts["cli1"].exec("ip", "-6", "neigh", "show", VIP6)
    assert vip_mac(VIP6) in neigh, neigh


def test_ipv6_affinity_is_sticky_and_keyed_on_the_client(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    counts = sandbox.connect_counts("cli1", VIP6, 80, count=8)
    assert len(counts) == 1 and "error" not in counts, counts
    groups = [g for g in sandbox.dump_groups() if "fd00::21" in g and "ipv6_src" in g]
    assert groups and "selection_method=hash,fields=ipv6_src," in groups[0], groups
    extra = [f"fd00::1:{i}" for i in range(1, 13)]
    for ip in extra:
        sandbox.hosts["cli2"].exec("ip", "-6", "addr", "add", f"{ip}/64", "dev", "eth0",
                                   "nodad")
    first = sandbox.connect("cli2", VIP6, 80, count=len(extra), src_ips=extra)
    assert all(r.ok for r in first), first
    assert len({r.backend for r in first}) >= 2
    again = sandbox.connect("cli2", VIP6, 80, count=len(extra), src_ips=extra)
    assert [r.backend for r in again] == [r.backend for r in first]
    learned = sandbox.dump_flows("cookie=0x1bae000000000000/0xffff000000000000")
    assert sum("ipv6_src=fd00::1:" in f for f in learned) == len(extra), learned


def test_ipv6_hairpin(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    results = sandbox.connect("be1", "fd00::150", 80, count=3)
    assert all(r.ok and r.backend == "be1" for r in results), results


def test_ipv6_reject_sends_rst(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    (r,) = sandbox.connect("cli1", "fd00::160", 80, timeout=3)
    assert not r.ok and "ConnectionRefused" in r.error, r


def test_restart_is_a_no_op_for_ipv6_state(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    """IPv6 NAT ranges, 128-bit learn fields and ipv6 hash fields decode back
    to exactly what lbaffd compiles: a restart changes nothing."""
    before = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    daemon.stop()
    daemon.start()
    assert daemon.wait_event("initial_sync_done")["changes"] == 0
    assert sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000") == before
