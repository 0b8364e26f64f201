"""Pure parts of the OVN sandbox: the NB commands of the topology, the client
address pool, and how the scenario results are judged and tabulated."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lbaffd_sandbox.companion_demo import client_line, daemon_command, render, verdict
from lbaffd_sandbox.ovn import OvnSandbox
from lbaffd_sandbox.ovn_topology import (
    AFFINITY_VIP,
    DROP_PORT,
    HOSTS,
    PLAIN_VIP,
    SWITCHES,
    AddressPool,
    OvnTopology,
    _joined,
    backend_list,
    nb_commands,
)
from lbaffd_sandbox.sandbox import ConnResult, member_of
from lbaffd_sandbox.scenarios import ClientRun, FirstConnections, ScenarioReport, format_reports


def ok(backend: str, ms: float = 1.0, src: str = "10.0.0.100") -> ConnResult:
    return ConnResult(src, backend, ms, True)


def lost(src: str = "10.0.0.100") -> ConnResult:
    return ConnResult(src, "", 3000.0, False, "TimeoutError: timed out")


def test_hosts_have_distinct_macs_and_addresses_in_their_switch() -> None:
    assert len({h.mac for h in HOSTS.values()}) == len(HOSTS)
    assert len({h.ofport for h in HOSTS.values()}) == len(HOSTS)
    for spec in HOSTS.values():
        net = ipaddress.ip_network(SWITCHES[spec.switch].cidr)
        assert ipaddress.ip_address(spec.ip) in net
        assert spec.ip != SWITCHES[spec.switch].gateway
    assert HOSTS["be3"].chassis == 2 and HOSTS["rcli1"].switch == "sw1"


def test_vips_lie_outside_both_subnets() -> None:
    """OVN answers no ARP for a switch-LB VIP inside the switch's subnet."""
    for vip in (AFFINITY_VIP, PLAIN_VIP):
        assert not any(ipaddress.ip_address(vip) in ipaddress.ip_network(sw.cidr)
                       for sw in SWITCHES.values())


def test_nb_commands_switch_lbs_by_default() -> None:
    cmds = nb_commands(affinity_timeout=45)
    assert ["ls-lb-add", "sw0", "lb-aff"] in cmds and ["ls-lb-add", "sw1", "lb-aff"] in cmds
    assert not [c for c in cmds if c[0] == "lr-lb-add"]
    assert ["set", "Load_Balancer", "lb-aff", "options:affinity_timeout=45"] in cmds
    assert not [c for c in cmds if c[:3] == ["set", "Load_Balancer", "lb-plain"]]
    assert ["lb-add", "lb-aff", f"{AFFINITY_VIP}:80", backend_list(), "tcp"] in cmds
    assert backend_list() == "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"
    acls = [c for c in cmds if c[0] == "acl-add"]
    assert acls == [["acl-add", "sw0", "to-lport", "1001", "ip4", "allow-related"],
                    ["acl-add", "sw0", "to-lport", "1002", f"ip4 && tcp.dst == {DROP_PORT}",
                     "drop"]]
    # every switch is joined to lr0 through a router-type port
    for sw in SWITCHES.values():
        assert ["lsp-set-options", f"{sw.name}-lr0", f"router-port={sw.router_port}"] in cmds


def test_nb_commands_router_lb_variant() -> None:
    cmds = nb_commands(router_lb=True)
    assert ["lr-lb-add", "lr0", "lb-aff"] in cmds
    assert ["set", "NB_Global", ".", "options:install_ls_lb_from_router=true"] in cmds
    assert ["ls-lb-add", "sw1", "lb-aff"] not in cmds


def test_joined_makes_one_nbctl_transaction() -> None:
    assert _joined([["ls-add", "a"], ["ls-add", "b"], ["lr-add", "r"]]) == [
        "ls-add", "a", "--", "ls-add", "b", "--", "lr-add", "r"]
    assert _joined([]) == []


def test_address_pool_hands_out_each_address_once_per_switch() -> None:
    pool = AddressPool()
    assert pool.allocate("sw0", 2) == ["10.0.0.100", "10.0.0.101"]
    assert pool.allocate("sw1", 1) == ["10.0.1.100"]
    assert pool.allocate("sw0", 1) == ["10.0.0.102"]
    rest = pool.allocate("sw0", 152)
    assert rest[-1] == "10.0.0.254"
    with pytest.raises(RuntimeError, match="no fresh client addresses"):
        pool.allocate("sw0", 1)


def test_address_pool_wraps_when_asked() -> None:
    pool = AddressPool(wrap=True)
    ips = pool.allocate("sw1", 156)
    assert ips[154] == "10.0.1.254" and ips[155] == "10.0.1.100"


def test_client_run_verdicts() -> None:
    sticky = ClientRun("v", "c", False, 3.0, (ok("be1"), ok("be1"), ok("be1")))
    assert sticky.sticky and sticky.distinct == {"be1"} and sticky.failed == 0
    assert sticky.summary() == "be1 be1 be1  (all on one backend)"
    native = ClientRun("v", "c", False, 3.0, (lost(), ok("be2"), ok("be2")))
    assert not native.sticky and native.backends == ("x", "be2", "be2")
    assert native.summary() == "x be2 be2  (1 backend(s), 1 failed)"
    spread = ClientRun("v", "c", True, 3.0, (ok("be1"), ok("be2")))
    assert not spread.sticky and spread.summary() == "be1 be2  (2 backend(s))"
    dead = ClientRun("v", "c", True, 2.0, (lost(), lost()))
    assert dead.summary() == "x x  (none completed within 2 s)"


def test_first_connections_summary() -> None:
    none = FirstConnections("v", 10.0, (lost(), lost()))
    assert none.completed == 0 and none.summary() == "0/2 completed within 10 s"
    some = FirstConnections("v", 3.0, (ok("be1", 2.0), lost(), ok("be2", 4.0), ok("be3", 3.0)))
    assert some.times_ms == [2.0, 3.0, 4.0]
    assert some.summary() == "3/4 completed, p50 3.0 ms, max 4.0 ms"


def test_format_reports_one_column_per_report() -> None:
    run = ClientRun("v", "c", False, 3.0, (ok("be1"),))

    def report(label: str) -> ScenarioReport:
        return ScenarioReport("172.16.0.10", label, FirstConnections("v", 3.0, (lost(),)),
                              run, run, run, run, 1.0)

    table = format_reports([report("OVN"), report("lbaffd")]).splitlines()
    assert table[0] == "| scenario | OVN 172.16.0.10 | lbaffd 172.16.0.10 |"
    assert table[1] == "|---|---|---|"
    assert table[2] == ("| first connection of 1 new clients | 0/1 completed within 3 s "
                        "| 0/1 completed within 3 s |")
    assert len(table) == 2 + 5


def test_companion_command_and_paths_per_chassis(tmp_path: Path) -> None:
    """Chassis 2 lives in ``<rundir>/ch2``: ovs-vswitchd names its management
    socket after ``OVS_RUNDIR``, and ovn-controller connects to the same path."""
    sb = OvnSandbox(tmp_path, prefix="lxunit", chassis_count=2)  # not started: paths only
    assert sb.mgmt_socket_of(1) == tmp_path / "br-int.mgmt"
    assert sb.mgmt_socket_of(2) == tmp_path / "ch2" / "br-int.mgmt"
    assert sb.node(2).env["OVS_RUNDIR"] == sb.node(2).env["OVN_RUNDIR"] == str(tmp_path / "ch2")
    assert sb.node(2).ovs_ns == "lxunit-ovs2" and sb.node(2).encap_ip == "192.168.77.2"
    cmd = daemon_command(sb, "127.0.0.1:0", chassis=2)
    assert cmd[cmd.index("run"):] == [
        "run", "--mode", "companion", "--ovs-db", f"unix:{tmp_path}/ch2/db.sock",
        "--sb-db", f"unix:{tmp_path}/sb.sock", "--bridge", "br-int",
        "--of-target", f"unix:{tmp_path}/ch2/br-int.mgmt", "--rundir", f"{tmp_path}/ch2/lbaffd",
        "--log-format", "json", "--metrics-address", "127.0.0.1:0"]
    with pytest.raises(ValueError):
        OvnSandbox(tmp_path, chassis_count=3)


def test_demo_lines_say_what_happened_to_each_new_client(tmp_path: Path) -> None:
    def run(*results: ConnResult, src: str = "10.0.0.100") -> ClientRun:
        return ClientRun("172.16.0.10", src, False, 2.0, results)

    assert verdict(run(ok("be1"), ok("be1"), ok("be1"))) == "STICKY"
    assert verdict(run(lost(), ok("be2"), ok("be2"))) == "lost 1st, then sticky"
    assert verdict(run(ok("be2"), lost(), ok("be2"))) == "1 lost"
    assert verdict(run(lost(), ok("be1"), ok("be2"))) == "1 lost, spread"
    assert verdict(run(ok("be1"), ok("be3"))) == "spread"
    assert verdict(run(lost(), lost())) == "2 lost"
    native = client_line(run(lost(), ok("be2"), ok("be2"), src="10.0.1.100"))
    assert native.split() == ["new", "client", "10.0.1.100", "(sw1)", "first:", "no", "answer",
                              "in", "2", "s", "x", "be2", "be2", "lost", "1st,", "then",
                              "sticky"]
    fast = client_line(run(ok("be1", 1.25), ok("be1"), ok("be1")))
    assert "first     1.2 ms" in fast and fast.endswith("be1 be1 be1    STICKY")
    topo = OvnTopology(OvnSandbox(tmp_path, chassis_count=2), {}, affinity_timeout=30)
    lines = render(topo, [run(lost(), ok("be2"), ok("be2"))], [], ["be1", "be3"], 1, [])
    assert lines[1] == (" VIP 172.16.0.10:80 (lb-aff, affinity_timeout=30s): "
                        "new clients, 3 connections each")
    assert lines[4:] == ["  lbaffd --mode companion (on chassis 1, next to ovn-controller):",
                         "   (starting)",
                         " VIP 172.16.0.11:80 (lb-plain, no affinity, OVN's): "
                         "client 10.0.0.11 -> be1 be3  spread"]


def test_member_of_finds_the_member_a_process_is_connected_to() -> None:
    """``ss -tnpH state established`` lines (no State column): the member is
    the one whose client port is the *peer* of one of the process's sockets;
    a server's own accepted socket (the port local) and other processes'
    connections do not count."""
    out = "\n".join([
        '0      0      127.0.0.1:40000 127.0.0.1:6641 users:(("ovn-northd",pid=7,fd=9))',
        '0      0      127.0.0.1:6642 127.0.0.1:40002 users:(("ovsdb-server",pid=8,fd=20))',
        '0      0      127.0.0.1:40001 127.0.0.1:6643 users:(("python3",pid=42,fd=11))',
        "garbage",
    ])
    ports = [6641, 6642, 6643]
    assert member_of(out, 42, ports) == 2
    assert member_of(out, 7, ports) == 0
    assert member_of(out, 8, ports) is None  # it is a server: its port is the local one
    assert member_of(out, 4, ports) is None  # pid=4 is no prefix match of pid=42
    assert member_of("", 42, ports) is None
