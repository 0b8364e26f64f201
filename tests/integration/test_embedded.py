"""``--mode embedded``: lbaffd shares br-int with a controller that owns table 0.

The test plays that controller: its own cookie on table 0 (port -> metadata +
conntrack zone, then ``resubmit(,40)`` into lbaffd) and on table 70, where
lbaffd hands packets back (``--next-table 70``).  cli1 is on the switch ls1
(tunnel key 1), cli2 enters through the router lr1 (tunnel key 2, joined to
ls1 by patch Port_Bindings as ovn-northd writes them).  lb-sw is on the
switch, lb-rt on the router: each must act only on its own datapath, and
lbaffd must never touch the test's flows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import HOSTS, Topology, build_demo_topology, mac_of
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

BASE, NEXT = 40, 70
SW_VIP, RT_VIP, PORT = "10.0.0.100", "10.0.0.200", 80
OWNER = "0xabc"  # the test controller's cookie
OWNER_FILTER = f"cookie={OWNER}/-1"
ZONE = 1  # one conntrack zone for both datapaths: replies leave through ls1


def controller_flows(sb: Sandbox) -> list[str]:
    """The embedding controller: classify, enter lbaffd, and (table 70) route
    for the router datapath, as a router would after lbaffd's DNAT."""
    flows = ["table=0,priority=0,actions=drop"]
    for name, (ip, ofport) in HOSTS.items():
        md = 2 if name == "cli2" else 1
        flows.append(f"table=0,priority=100,in_port={ofport},"
                     f"actions=set_field:{md}->metadata,set_field:{ZONE}->reg13,"
                     f"resubmit(,{BASE})")
        flows.append(f"table={NEXT},priority=100,ip,metadata=2,nw_dst={ip},"
                     f"actions=mod_dl_dst:{mac_of(ip)},NORMAL")
    flows.append(f"table={NEXT},priority=0,actions=NORMAL")
    return [f"cookie={OWNER},{f}" for f in flows]


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=60)
    router = sandbox.add_datapath("lr1", 2, kind="router")
    sandbox.add_patch("ls1-lr1", t.datapath_uuid, 10, "lr1-ls1", router, 1)
    backends = ",".join(f"{HOSTS[b][0]}:8080" for b in ("be1", "be2", "be3"))
    sandbox.add_load_balancer("lb-rt", {f"{RT_VIP}:{PORT}": backends},
                              options={"affinity_timeout": "60"}, datapaths=[router])
    for flow in controller_flows(sandbox):
        sandbox.ofctl("add-flow", "br-int", flow)
    return t


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--mode", "embedded", "--table-base", str(BASE),
                         "--next-table", str(NEXT), "--audit-interval", "1")
    proc.start()
    yield proc
    proc.stop()


def owned(sb: Sandbox) -> list[str]:
    return sb.dump_flows(OWNER_FILTER)


def lbaffd_flows(sb: Sandbox) -> list[str]:
    return sb.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")


def trace(sb: Sandbox, client: str, vip: str) -> str:
    ip, ofport = HOSTS[client]
    flow = (f"in_port={ofport},tcp,dl_src={mac_of(ip)},dl_dst=02:1b:af:00:00:01,"
            f"nw_src={ip},nw_dst={vip},tp_src=40000,tp_dst={PORT}")
    return sb.appctl("ofproto/trace", "br-int", flow, "--ct-next", "trk,new")


def test_lbaffd_stays_in_its_tables_and_leaves_table_0_alone(
        sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    before = owned(sandbox)
    assert len(before) == len(controller_flows(sandbox))
    flows = wait_until(lambda: lbaffd_flows(sandbox), timeout=10)
    tables = {int(m.group(1)) for f in flows if (m := re.search(r"table=(\d+)", f))}
    assert tables <= set(range(BASE, BASE + 7)), tables
    assert not any("NORMAL" in f for f in flows)
    assert any(f"resubmit(,{NEXT})" in f for f in flows)
    # the router LB is scoped to the router's metadata, the switch LB to the switch's
    assert any("metadata=0x2" in f and f"nw_dst={RT_VIP}" in f for f in flows)
    assert any("metadata=0x1" in f and f"nw_dst={SW_VIP}" in f for f in flows)
    assert not any("metadata=0x1" in f and f"nw_dst={RT_VIP}" in f for f in flows)
    # audits (every 1 s) and a recompute never touch a flow without lbaffd's cookie
    daemon.wait_event("reconciled", audit=True)
    assert owned(sandbox) == before


def test_trace_router_vip_from_router_port(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    def balanced() -> str | None:
        out = trace(sandbox, "cli2", RT_VIP)
        return out if "nat(dst=" in out else None
    out = wait_until(balanced, timeout=10)
    assert f"resubmit(,{BASE})" in out and "metadata=0x2" in out
    assert re.search(rf"ct\(commit,zone={ZONE},mark=0xb[0-9a-f]+/0xffffffff,"
                     rf"nat\(dst=10\.0\.0\.2[123]:8080\)\)", out), out
    assert "learn(table=" in out and f"resubmit(,{NEXT})" in out


def test_trace_router_vip_from_switch_port_is_not_balanced(
        sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    out = trace(sandbox, "cli1", RT_VIP)
    assert "metadata=0x1" in out and "nat(dst=" not in out
    assert f"resubmit(,{NEXT})" in out  # handed back untouched


def sticky(sb: Sandbox, client: str, vip: str, n: int = 6) -> set[str]:
    results = sb.connect(client, vip, PORT, count=n)
    assert all(r.ok for r in results), results
    return {r.backend for r in results}


def test_traffic_switch_and_router_vips_are_sticky(
        sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    assert len(sticky(sandbox, "cli1", SW_VIP)) == 1
    assert len(sticky(sandbox, "cli2", RT_VIP)) == 1
    # many clients: the router VIP balances over all three backends
    extra = [f"10.0.0.{i}" for i in range(150, 162)]
    for ip in extra:
        sandbox.hosts["cli2"].add_address(ip)
    results = sandbox.connect("cli2", RT_VIP, PORT, count=len(extra), src_ips=extra)
    assert all(r.ok for r in results), results
    assert len({r.backend for r in results}) >= 2
    # affinity entries were learned for the router datapath
    learned = sandbox.dump_flows("cookie=0x1bae000000000000/0xffff000000000000")
    assert any("metadata=0x2" in f and f"table={BASE + 2}" in f for f in learned), learned


def test_cleanup_removes_only_lbaffd_flows(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    daemon.stop()  # the module's daemon would put its flows back
    before = owned(sandbox)
    proc = LbaffdProcess(sandbox, "--mode", "embedded", "--table-base", str(BASE),
                         "--next-table", str(NEXT), "--cleanup-on-exit")
    proc.start()
    proc.stop()
    assert lbaffd_flows(sandbox) == []
    assert owned(sandbox) == before
