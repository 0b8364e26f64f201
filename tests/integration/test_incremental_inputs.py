"""Non-Load_Balancer inputs are applied in O(what they affect), counted in
OpenFlow messages on a real switch: a pod bound on another chassis costs
none, a health flip or a backend's MAC change touches only the VIPs using
that backend, a new local VIF only its classifier flow; none of them is a
full pass (a full pass logs its read/compile phases, an incremental one
does not)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import LbSpec, Sandbox
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, scrape, wait_until

pytestmark = pytest.mark.integration

VIP_A, VIP_B = "172.16.1.1", "172.16.1.2"


# what changes the switch and its framing (a /metrics scrape itself sends
# stats requests, and an audit reads the switch: neither counts here)
CHANGE_TYPES = ("OFPBundleAddMsg", "OFPFlowMod", "OFPGroupMod", "OFPBundleCtrlMsg",
                "OFPBarrierRequest")


def messages(daemon: LbaffdProcess) -> float:
    _, text = scrape(daemon)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("lbaffd_openflow_messages_sent_total{")
               and any(f'type="{t}"' in line for t in CHANGE_TYPES))


@pytest.fixture(scope="module")
def setup(sandbox: Sandbox) -> Iterator[tuple[Sandbox, LbaffdProcess, dict[str, str]]]:
    sb = sandbox
    ls1 = sb.add_datapath("ls1", 1)
    ls2 = sb.add_datapath("ls2", 2)
    sb.sbctl("chassis-add", "node-2", "geneve", "127.0.0.2")
    sb.add_host("cli", "10.0.0.11", "02:00:00:00:00:0b", 11, iface_id="cli")
    sb.add_port_binding("cli", ls1, 1, "02:00:00:00:00:0b", "10.0.0.11", chassis=sb.chassis)
    pbs = {f"be{n}": sb.add_port_binding(f"be{n}", ls1, n, f"02:00:00:00:00:{n:02x}",
                                         f"10.0.0.{n}", chassis="node-2") for n in (21, 22, 31)}
    sb.add_load_balancer("lb-a", {f"{VIP_A}:80": "10.0.0.21:8080,10.0.0.22:8080"},
                         options={"affinity_timeout": "300"}, datapaths=[ls1])
    sb.add_load_balancer("lb-b", {f"{VIP_B}:80": "10.0.0.31:8080"}, datapaths=[ls1])
    pbs["ls1"], pbs["ls2"] = ls1, ls2
    # every row received (conditional monitoring would not even send the pods
    # of ls2: see test_sb_conditions), so the no-op path itself is exercised
    daemon = LbaffdProcess(sb, "--metrics-address", f"127.0.0.1:{free_port()}",
                           "--monitor-all")
    daemon.start()
    yield sb, daemon, pbs
    daemon.stop()


def flows_without(sb: Sandbox, text: str) -> list[str]:
    return [f for f in sb.dump_flows() if text not in f]


def incremental_passes(daemon: LbaffdProcess, since: int) -> list[dict[str, object]]:
    return [e for e in daemon.events()[since:] if e.get("event") == "reconciled"]


def test_pod_on_another_chassis_costs_no_message(setup: tuple[Sandbox, LbaffdProcess,
                                                               dict[str, str]]) -> None:
    sb, daemon, pbs = setup
    before, flows, seen = messages(daemon), sb.dump_flows(), len(daemon.events())
    quiet = daemon.count("input_change_no_effect")
    for n in range(5):  # pods on the other switch, and one on ours that is no backend
        dp = pbs["ls2"] if n < 4 else pbs["ls1"]
        sb.add_port_binding(f"pod{n}", dp, 100 + n, f"02:00:00:00:01:{n:02x}",
                            f"10.0.9.{n}", chassis="node-2")
    assert wait_until(lambda: daemon.count("input_change_no_effect") >= quiet + 5)
    time.sleep(0.3)
    assert messages(daemon) == before
    assert sb.dump_flows() == flows
    assert not incremental_passes(daemon, seen)


def test_health_flip_touches_only_its_vip(setup: tuple[Sandbox, LbaffdProcess,
                                                       dict[str, str]]) -> None:
    sb, daemon, _ = setup
    other = flows_without(sb, VIP_A)
    vip_b = [f for f in sb.dump_flows() if VIP_B in f or "10.0.0.31" in f]
    seen, before = len(daemon.events()), messages(daemon)
    mon = sb.sbctl("create", "Service_Monitor", "ip=10.0.0.21", "port=8080", "protocol=tcp",
                   "logical_port=be21", 'src_mac="02:00:00:00:00:fe"', 'src_ip="10.0.0.254"',
                   "status=offline")
    assert wait_until(lambda: "nat(dst=10.0.0.21:8080)" not in "".join(sb.dump_groups()))
    passes = wait_until(lambda: incremental_passes(daemon, seen))
    assert passes and all("compile_ms" not in p for p in passes)
    # the group and the backend's hit/learn flows of VIP A; nothing of VIP B
    assert 0 < messages(daemon) - before <= 12
    assert [f for f in sb.dump_flows() if VIP_B in f or "10.0.0.31" in f] == vip_b
    sb.sbctl("set", "Service_Monitor", mon, "status=online")
    assert wait_until(lambda: "nat(dst=10.0.0.21:8080)" in "".join(sb.dump_groups()))
    assert flows_without(sb, VIP_A) == other


def test_backend_mac_change_touches_only_its_vip(setup: tuple[Sandbox, LbaffdProcess,
                                                              dict[str, str]]) -> None:
    sb, daemon, pbs = setup
    vip_b = [f for f in sb.dump_flows() if VIP_B in f or "10.0.0.31" in f]
    seen, before = len(daemon.events()), messages(daemon)
    sb.sbctl("set", "Port_Binding", pbs["be22"], 'mac="02:00:00:00:aa:22 10.0.0.22"')
    assert wait_until(lambda: any("02:00:00:00:aa:22" in f for f in sb.dump_flows()))
    passes = wait_until(lambda: incremental_passes(daemon, seen))
    assert passes and all("compile_ms" not in p for p in passes)
    assert not any("02:00:00:00:00:16" in f for f in sb.dump_flows())  # the old MAC
    assert [f for f in sb.dump_flows() if VIP_B in f or "10.0.0.31" in f] == vip_b
    assert 0 < messages(daemon) - before <= 12


def test_new_local_vif_adds_only_its_classifier_flow(setup: tuple[Sandbox, LbaffdProcess,
                                                                  dict[str, str]]) -> None:
    sb, daemon, pbs = setup
    flows = sb.dump_flows()
    seen, before = len(daemon.events()), messages(daemon)
    sb.add_port_binding("vif2", pbs["ls1"], 50, "02:00:00:00:00:32", "10.0.0.50",
                        chassis=sb.chassis)
    sb.vsctl("add-port", "br-int", "vif2", "--", "set", "Interface", "vif2", "type=internal",
             "ofport_request=50", "external_ids:iface-id=vif2")
    assert wait_until(lambda: any("in_port=50" in f for f in sb.dump_flows()))
    passes = wait_until(lambda: incremental_passes(daemon, seen))
    assert passes and all("compile_ms" not in p for p in passes)
    assert sum(p["changes"] for p in passes) == 1  # type: ignore[misc]
    new = [f for f in sb.dump_flows() if f not in flows]
    assert len(new) == 1 and "in_port=50" in new[0]
    # one bundle (open, add, commit) and a barrier
    assert messages(daemon) - before == 4
    sb.vsctl("del-port", "br-int", "vif2")
    assert wait_until(lambda: sb.dump_flows() == flows)


def test_datapath_group_membership_moves_only_its_lbs(
        setup: tuple[Sandbox, LbaffdProcess, dict[str, str]]) -> None:
    sb, daemon, pbs = setup
    vip = "172.16.1.9"
    sb.add_load_balancer("lb-g", {f"{vip}:80": "10.0.0.31:8080"},
                         groups={"datapath_group": [pbs["ls1"]]})
    assert wait_until(lambda: any(vip in f for f in sb.dump_flows()))
    group = sb.sbctl("--bare", "--columns=datapath_group", "find", "Load_Balancer",
                     "name=lb-g")
    flows, before, seen = sb.dump_flows(), messages(daemon), len(daemon.events())
    quiet = daemon.count("input_change_no_effect")
    # another node's switch joins the group: nothing moves here
    sb.sbctl("add", "Logical_DP_Group", group, "datapaths", pbs["ls2"])
    assert wait_until(lambda: daemon.count("input_change_no_effect") > quiet)
    assert messages(daemon) == before and sb.dump_flows() == flows
    # the local switch leaves it: that LB's flows go, in an incremental pass
    sb.sbctl("remove", "Logical_DP_Group", group, "datapaths", pbs["ls1"])
    assert wait_until(lambda: not any(vip in f for f in sb.dump_flows()))
    passes = wait_until(lambda: incremental_passes(daemon, seen))
    assert passes and all("compile_ms" not in p for p in passes)
    assert [f for f in sb.dump_flows() if vip not in f] == [f for f in flows if vip not in f]


def test_a_bulk_change_of_load_balancers_is_one_full_pass(
        setup: tuple[Sandbox, LbaffdProcess, dict[str, str]]) -> None:
    """More LBs in one SB transaction than an incremental step takes
    (``changes.BULK_MIN``): the worker reads none of their rows for a step
    and runs one full pass, which streams its bundle while it compiles;
    removing them all again is the same."""
    sb, daemon, pbs = setup
    vips = [f"172.17.{n // 200}.{n % 200 + 1}" for n in range(150)]
    seen = len(daemon.events())
    uuids = sb.add_load_balancers(
        [LbSpec(f"bulk{n}", {f"{vip}:80": "10.0.0.31:8080"}) for n, vip in enumerate(vips)],
        [pbs["ls1"]], group_column=None)
    assert len(uuids) == 150

    def installed() -> int:
        text = "\n".join(sb.dump_flows())
        return sum(1 for vip in vips if f"nw_dst={vip}," in text)

    assert wait_until(lambda: installed() == 150, timeout=60), installed()
    passes = incremental_passes(daemon, seen)
    full = [p for p in passes if "compile_ms" in p]
    assert len(full) == 1 and "inputs_ms" in full[0], passes
    assert all("compile_ms" in p for p in passes if int(p["changes"]) > 0), passes  # type: ignore[call-overload]

    seen = len(daemon.events())
    sb.transact([{"op": "delete", "table": "Load_Balancer",
                  "where": [["_uuid", "==", ["uuid", u]]]} for u in uuids])
    assert wait_until(lambda: installed() == 0, timeout=60)
    full = [p for p in incremental_passes(daemon, seen) if "compile_ms" in p]
    assert len(full) == 1, incremental_passes(daemon, seen)
