"""v0 end to end: SB rows in, sticky TCP sessions out, through a real ovs-vswitchd.

One sandbox per module: real ovsdb-servers (Open_vSwitch + OVN SB schemas),
ovs-vswitchd with a netdev br-int in its own namespace, client and backend
namespaces on veths, and the real lbaffd daemon as a subprocess.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

TIMEOUT = 3  # affinity_timeout for this module (s): short so expiry is testable
VIP, PORT = "10.0.0.100", 80
MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=TIMEOUT)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--audit-interval", "2")
    proc.start()
    yield proc
    proc.stop()


def backends(sb: Sandbox, client: str, count: int, pause: float = 0.0,
             src_ips: list[str] | None = None) -> list[str]:
    results = sb.connect(client, VIP, PORT, count=count, pause=pause, src_ips=src_ips)
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    return [r.backend for r in results]


def managed_flows(sb: Sandbox) -> list[str]:
    return sorted(sb.ofctl("--no-stats", "dump-flows", "br-int", MANAGED).splitlines()[0:])


def learned_entries(sb: Sandbox) -> list[str]:
    out = sb.ofctl("--no-stats", "dump-flows", "br-int", LEARNED).splitlines()
    return sorted(line.strip() for line in out if "table=" in line)


def wait_idle_expiry(sb: Sandbox) -> None:
    """Learned entries go T..T+~1.5 s after their last hit (OVS expiry runs ~1/s)."""
    assert wait_until(lambda: not learned_entries(sb), timeout=TIMEOUT + 6), learned_entries(sb)


# ------------------------------------------------------------------ tests


def test_pipeline_installed_and_traced(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    flows = managed_flows(sandbox)
    assert any(f"nw_dst={VIP},tp_dst={PORT}" in f for f in flows), flows
    groups = sandbox.ofctl("dump-groups", "br-int")
    assert "selection_method=hash,fields=ip_src" in groups, groups
    for be in ("10.0.0.21:8080", "10.0.0.22:8080", "10.0.0.23:8080"):
        assert f"nat(dst={be})" in groups
    # ofproto/trace of a client SYN: T3 miss -> group (by client hash) -> commit -> learn
    trace = sandbox.appctl(
        "ofproto/trace", "br-int",
        f"in_port=11,tcp,dl_src=02:00:00:00:00:11,dl_dst=02:1b:af:00:00:00,"
        f"nw_src=10.0.0.11,nw_dst={VIP},tp_src=40000,tp_dst={PORT},tcp_flags=syn",
        "--ct-next", "trk,new", "--ct-next", "trk,new")
    assert re.search(r"group:\d+", trace), trace
    assert "ct(commit,table=5,zone=NXM_NX_REG13[0..15],nat(dst=10.0.0.2" in trace, trace
    assert "learn(table=3" in trace, trace
    assert "resubmit(,6)" in trace.split("learn(table=3")[-1], trace  # not dropped after learn


def test_first_connection_has_no_syn_retransmit(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    # A dropped first SYN (OVN's behaviour) costs a 1 s retransmit.
    (first,) = sandbox.connect("cli1", VIP, PORT, count=1)
    assert first.ok, first
    assert first.connect_ms < 300, first


def test_each_client_is_sticky(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    for client in ("cli1", "cli2"):
        seen = backends(sandbox, client, 20)
        assert len(set(seen)) == 1, (client, Counter(seen))
    assert len(learned_entries(sandbox)) >= 2


def test_back_to_back_new_clients_hold(sandbox: Sandbox, topo: Topology,
                                       daemon: LbaffdProcess) -> None:
    """10 connections with no pause from a client never seen before, x8 clients."""
    fresh = [f"10.0.0.{60 + i}" for i in range(8)]
    for ip in fresh:
        topo.hosts["cli2"].add_address(ip)
    for ip in fresh:
        seen = backends(sandbox, "cli2", 10, pause=0.0, src_ips=[ip])
        assert len(set(seen)) == 1, (ip, Counter(seen))


def test_idle_expiry_frees_selection(sandbox: Sandbox, topo: Topology,
                                     daemon: LbaffdProcess) -> None:
    """Pinned clients survive a backend-set change; once idle > timeout their
    entries are gone and the group decides again (some move to the new backend)."""
    vips = {f"{VIP}:{PORT}": "10.0.0.21:8080,10.0.0.22:8080"}
    sandbox.set_lb_vips(topo.lb_uuid, vips)
    assert wait_until(lambda: "10.0.0.23:8080" not in sandbox.ofctl("dump-groups", "br-int"))
    wait_idle_expiry(sandbox)
    clients = [f"10.0.0.{101 + i}" for i in range(40)]
    host = topo.hosts["cli1"]
    for ip in clients:
        host.add_address(ip)
    first = dict(zip(clients, backends(sandbox, "cli1", len(clients), src_ips=clients),
                     strict=True))
    assert set(first.values()) == {"be1", "be2"}  # the client hash spreads clients

    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080,10.0.0.22:8080,"
                                                        "10.0.0.23:8080"})
    assert wait_until(lambda: "10.0.0.23:8080" in sandbox.ofctl("dump-groups", "br-int"))
    pinned = dict(zip(clients, backends(sandbox, "cli1", len(clients), src_ips=clients),
                      strict=True))
    assert pinned == first  # affinity holds across the backend-set change

    wait_idle_expiry(sandbox)
    free = dict(zip(clients, backends(sandbox, "cli1", len(clients), src_ips=clients),
                    strict=True))
    moved = [c for c in clients if free[c] != first[c]]
    assert moved, "after expiry no client was re-balanced"
    assert {free[c] for c in moved} == {"be3"}  # rendezvous hashing: only to the new one


def test_backend_change_touches_only_that_lb(sandbox: Sandbox, topo: Topology,
                                             daemon: LbaffdProcess) -> None:
    other = sandbox.add_load_balancer(
        "lb-other", {"10.0.0.200:80": "10.0.0.21:8080,10.0.0.22:8080"},
        options={"affinity_timeout": "60"}, datapaths=[topo.datapath_uuid])
    assert wait_until(lambda: any("nw_dst=10.0.0.200" in f for f in managed_flows(sandbox)))
    flows_of = {f for f in managed_flows(sandbox) if "10.0.0.200" in f}

    def other_flows() -> set[str]:
        cookies = {m.group(1) for f in flows_of if (m := re.search(r"cookie=(0x[0-9a-f]+)", f))}
        return {f for f in managed_flows(sandbox)
                if (m := re.search(r"cookie=(0x[0-9a-f]+)", f)) and m.group(1) in cookies}

    before_other = other_flows()
    backends(sandbox, "cli1", 3)  # pin cli1 on lb1
    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080"})
    assert wait_until(lambda: "10.0.0.22:8080" not in _group_of(sandbox, VIP))
    assert other_flows() == before_other
    assert set(backends(sandbox, "cli1", 5)) == {"be1"}
    # entries learned for removed backends are gone (delete_learned per backend)
    assert all("0xa000016" not in e and "0xa000017" not in e for e in learned_entries(sandbox))
    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080,10.0.0.22:8080"})
    assert wait_until(lambda: "10.0.0.22:8080" in _group_of(sandbox, VIP))
    assert other_flows() == before_other
    sandbox.delete_load_balancer(other)
    assert wait_until(lambda: not any("10.0.0.200" in f for f in managed_flows(sandbox)))


def _group_of(sb: Sandbox, vip: str) -> str:
    flows = managed_flows(sb)
    gid = None
    for f in flows:
        if f"nw_dst={vip}," in f and (m := re.search(r"set_field:(0x[0-9a-f]+)->reg6", f)):
            gid = int(m.group(1), 16)
    assert gid is not None, flows
    for line in sb.ofctl("dump-groups", "br-int").splitlines():
        if f"group_id={gid}," in line:
            return line
    return ""


def test_restart_leaves_flows_groups_and_entries(sandbox: Sandbox, topo: Topology,
                                                  daemon: LbaffdProcess) -> None:
    """SIGTERM and SIGKILL: nothing is re-sent and learned entries live on."""
    long_lived = "idle_timeout=300"
    sandbox.set_lb_options(topo.lb_uuid, {"affinity_timeout": "300"})
    assert wait_until(lambda: any("learn(table=3,idle_timeout=300" in f
                                  for f in managed_flows(sandbox)))
    clients = [f"10.0.0.{150 + i}" for i in range(5)]
    for ip in clients:
        topo.hosts["cli1"].add_address(ip)
    pinned = backends(sandbox, "cli1", len(clients), src_ips=clients)

    def entries() -> list[str]:
        return [e for e in learned_entries(sandbox) if long_lived in e]

    before = (managed_flows(sandbox), sandbox.ofctl("dump-groups", "br-int"), entries())
    assert len(before[2]) == len(clients)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        took = daemon.stop(sig)
        if sig == signal.SIGTERM:
            assert took < 2.0
        # traffic keeps flowing, and stays sticky, while lbaffd is down
        assert backends(sandbox, "cli1", len(clients), src_ips=clients) == pinned
        daemon.start()
        sync = daemon.wait_event("initial_sync_done")
        assert sync["changes"] == 0, sync
        after = (managed_flows(sandbox), sandbox.ofctl("dump-groups", "br-int"), entries())
        assert after == before
    assert backends(sandbox, "cli1", len(clients), src_ips=clients) == pinned


def test_bad_input_is_reported_once_and_isolated(sandbox: Sandbox, topo: Topology,
                                                 daemon: LbaffdProcess) -> None:
    before = managed_flows(sandbox)
    bad = sandbox.add_load_balancer(
        "lb-bad", {"10.0.0.210:80": "10.0.0.21:8080", "10.0.0.211:99999": "10.0.0.21:8080",
                   "10.0.0.212:80": "10.0.0.21"}, datapaths=[topo.datapath_uuid])
    assert wait_until(lambda: any("nw_dst=10.0.0.210" in f for f in managed_flows(sandbox)))
    daemon.wait_pass(daemon.mark())  # one periodic audit pass more: nothing said twice
    rejected = [e for e in daemon.events() if e.get("event") == "lb_input_rejected"]
    assert sorted((e["lb"], e["vip"], e["reason"]) for e in rejected) == [
        ("lb-bad", "10.0.0.211:99999", "bad_port"), ("lb-bad", "10.0.0.212:80", "port_mismatch")]
    assert all(e["level"] == "error" and e["detail"] for e in rejected)
    added = set(managed_flows(sandbox)) - set(before)
    assert added and all("10.0.0.210" in f for f in added)  # only the good VIP's flows
    assert set(before) <= set(managed_flows(sandbox))  # other LBs untouched
    sandbox.delete_load_balancer(bad)
    assert wait_until(lambda: managed_flows(sandbox) == before)
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_sb_restart_and_reconnect(sandbox: Sandbox, topo: Topology,
                                  daemon: LbaffdProcess) -> None:
    """The SB goes away for 2 s: flows and learned entries stay, then updates
    flow again."""
    before = managed_flows(sandbox)
    entries = [e for e in learned_entries(sandbox) if "idle_timeout=300" in e]
    assert entries  # from the restart test
    mark = daemon.mark()
    sandbox.restart_ovsdb("sb", down_for=2.0)
    assert managed_flows(sandbox) == before
    # the IDL reconnects (backoff ~1 s) and resyncs; the pass that read the
    # resynced SB may have started before it, so the next audit pass is the proof
    synced = daemon.wait_event("ovsdb_synced", db="OVN_Southbound", after=mark, timeout=15)
    daemon.wait_pass(daemon.wait_pass(synced["_index"], audit=False)["_index"])
    assert managed_flows(sandbox) == before
    assert [e for e in learned_entries(sandbox) if "idle_timeout=300" in e] == entries
    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080"})
    assert wait_until(lambda: "10.0.0.22:8080" not in _group_of(sandbox, VIP), timeout=15)
    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080,10.0.0.22:8080,"
                                                        "10.0.0.23:8080"})
    assert wait_until(lambda: "10.0.0.23:8080" in _group_of(sandbox, VIP), timeout=15)


def test_settings_come_from_the_local_open_vswitch_row(sandbox: Sandbox,
                                                       daemon: LbaffdProcess) -> None:
    """Only --ovs-rundir: DB socket, SB remote (external_ids:ovn-remote), bridge
    (ovn-bridge), chassis (system-id) and the br-int.mgmt target are derived."""
    daemon.stop()
    minimal = LbaffdProcess(sandbox, minimal=True)
    minimal.start()
    settings = minimal.wait_event("settings")
    assert settings["sb_db"] == sandbox.sb_remote and settings["bridge"] == "br-int"
    assert settings["chassis"] == sandbox.chassis
    assert settings["of_target"] == f"unix:{sandbox.mgmt_socket}"
    assert minimal.wait_event("initial_sync_done")["changes"] == 0
    minimal.stop()
    daemon.start()


def test_without_affinity_connections_spread(sandbox: Sandbox, topo: Topology,
                                             daemon: LbaffdProcess) -> None:
    sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:{PORT}": "10.0.0.21:8080,10.0.0.22:8080,"
                                                        "10.0.0.23:8080"})
    sandbox.set_lb_options(topo.lb_uuid, {})
    assert wait_until(lambda: "selection_method=dp_hash" in sandbox.ofctl("dump-groups", "br-int"))
    assert wait_until(lambda: not learned_entries(sandbox))  # learn flows gone -> entries gone
    seen = backends(sandbox, "cli1", 30)
    assert len(set(seen)) >= 2, Counter(seen)
