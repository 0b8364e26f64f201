"""Affinity entry lifecycle on a real switch: timeouts past OpenFlow's 16-bit
limit, health-driven flush, counters, and an ovs-vswitchd restart.

The daemon runs with ``--max-idle-timeout 2``: the same code path that turns
an 86400 s affinity into 65535 s learned entries plus re-installs, scaled down
so that a test takes seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import (
    LbaffdProcess,
    free_port,
    metric,
    scrape,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

T = 6  # affinity_timeout of lb1 here; entries are learned with idle_timeout 2
HVIP = "10.0.0.110"  # lb-health: long timeout, for the health tests
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=T)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    port = free_port()
    proc = LbaffdProcess(sandbox, "--max-idle-timeout", "2", "--audit-interval", "1",
                         "--metrics-address", f"127.0.0.1:{port}")
    proc.start()
    yield proc
    proc.stop()


def entry(sb: Sandbox, client: str, vip_id: str | None = None) -> str | None:
    for line in sb.dump_flows(LEARNED):
        if f"nw_src={client}" in line and (vip_id is None or vip_id in line):
            return line
    return None


def backend_of(sb: Sandbox, host: str, vip: str, src: str) -> str:
    (r,) = sb.connect(host, vip, 80, count=1, src_ips=[src])
    assert r.ok, r
    return r.backend


def test_timeout_beyond_the_idle_cap_is_exact(sandbox: Sandbox, topo: Topology,
                                              daemon: LbaffdProcess) -> None:
    topo.hosts["cli1"].add_address("10.0.0.41")
    first = backend_of(sandbox, "cli1", topo.vip, "10.0.0.41")
    start = time.monotonic()
    learned = entry(sandbox, "10.0.0.41")
    assert learned is not None and "idle_timeout=2," in learned
    seen_reinstalled = False
    while time.monotonic() - start < T - 0.8:
        line = entry(sandbox, "10.0.0.41")
        if line is None:  # between a removal and its re-install: must come back
            assert wait_until(lambda: entry(sandbox, "10.0.0.41") is not None, timeout=0.5), (
                f"entry gone after {time.monotonic() - start:.1f}s < {T}s")
            continue
        seen_reinstalled |= "send_flow_rem" in line and "idle_timeout=2," in line
        time.sleep(0.2)
    assert seen_reinstalled  # re-installed by lbaffd, not learned again
    while entry(sandbox, "10.0.0.41") is not None:
        assert time.monotonic() - start < T + 3.0, "entry outlived the affinity timeout"
        time.sleep(0.2)
    lifetime = time.monotonic() - start
    assert T - 0.8 <= lifetime <= T + 3.0
    assert backend_of(sandbox, "cli1", topo.vip, "10.0.0.41") == first  # (hash: same anyway)
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_affinity_entries_extended_total", lb="lb1",
                  vip=topo.vip_key) >= 2
    assert metric(text, "lbaffd_affinity_entries_expired_total", lb="lb1",
                  vip=topo.vip_key) >= 1


def test_a_hit_restarts_the_long_timeout(sandbox: Sandbox, topo: Topology,
                                         daemon: LbaffdProcess) -> None:
    topo.hosts["cli2"].add_address("10.0.0.42")
    backend_of(sandbox, "cli2", topo.vip, "10.0.0.42")
    start = time.monotonic()
    time.sleep(3.0)  # past the first cap: now a re-installed entry
    line = entry(sandbox, "10.0.0.42")
    assert line is not None and "send_flow_rem" in line
    backend_of(sandbox, "cli2", topo.vip, "10.0.0.42")  # a new connection hits it
    hit = time.monotonic()
    time.sleep(T - 3.0 + 1.5)  # past T from the first use, well within T of the hit
    # (an entry is briefly absent between its removal and lbaffd's re-install)
    assert wait_until(lambda: entry(sandbox, "10.0.0.42") is not None, timeout=0.5), \
        "expired counting from the first use"
    while entry(sandbox, "10.0.0.42") is not None:
        assert time.monotonic() - hit < T + 3.0
        time.sleep(0.2)
    assert time.monotonic() - start > T + 1.5


def _health(sb: Sandbox, ip: str, status: str, uuid: str | None = None) -> str:
    if uuid is None:
        return sb.sbctl("create", "Service_Monitor", f"ip={ip}", "port=8080", "protocol=tcp",
                        f"logical_port=be{ip[-1]}", "src_mac=\"02:00:00:00:00:fe\"",
                        "src_ip=\"10.0.0.254\"", f"status={status}")
    sb.sbctl("set", "Service_Monitor", uuid, f"status={status}")
    return uuid


def test_offline_backend_leaves_now_with_its_entries(sandbox: Sandbox, topo: Topology,
                                                     daemon: LbaffdProcess) -> None:
    lb = sandbox.add_load_balancer(
        "lb-health", {f"{HVIP}:80": "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"},
        options={"affinity_timeout": "3600"}, datapaths=[topo.datapath_uuid])
    assert daemon.wait_event("reconciled") and wait_until(
        lambda: any(f"nw_dst={HVIP}" in f for f in sandbox.dump_flows()))
    clients = [f"10.0.0.{80 + i}" for i in range(6)]
    for ip in clients:
        topo.hosts["cli1"].add_address(ip)
    pinned = {ip: backend_of(sandbox, "cli1", HVIP, ip) for ip in clients}
    victim = pinned[clients[0]]
    victim_ip = f"10.0.0.2{victim[-1]}"
    on_victim = [ip for ip, be in pinned.items() if be == victim]
    mon = _health(sandbox, victim_ip, "offline")
    assert wait_until(lambda: f"nat(dst={victim_ip}:8080)" not in _group(sandbox, HVIP))
    # its entries are gone at once (delete_learned), the others stay
    assert wait_until(lambda: all(entry(sandbox, ip) is None for ip in on_victim))
    assert all(entry(sandbox, ip) is not None for ip in clients if ip not in on_victim)
    moved = {ip: backend_of(sandbox, "cli1", HVIP, ip) for ip in clients}
    assert all(moved[ip] != victim for ip in clients)
    assert all(moved[ip] == pinned[ip] for ip in clients if ip not in on_victim)
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_affinity_entries_flushed_total", lb="lb-health",
                  vip=f"{HVIP}:80") == len(on_victim)
    # back online: back in the group; moved clients stay where they now are
    _health(sandbox, victim_ip, "online", mon)
    assert wait_until(lambda: f"nat(dst={victim_ip}:8080)" in _group(sandbox, HVIP))
    again = {ip: backend_of(sandbox, "cli1", HVIP, ip) for ip in clients}
    assert again == moved
    sandbox.delete_load_balancer(lb)
    assert wait_until(lambda: not any(HVIP in f for f in sandbox.dump_flows()))


def test_vswitchd_restart_restores_flows_and_groups(sandbox: Sandbox,
                                                    daemon: LbaffdProcess) -> None:
    """Learned entries die with ovs-vswitchd by nature; the rest must come back."""
    flows = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    groups = sandbox.dump_groups()
    sandbox.restart_vswitchd()
    back = time.monotonic()
    assert wait_until(lambda: sandbox.dump_groups() == groups and sandbox.dump_flows(
        "cookie=0x1baf000000000000/0xffff000000000000") == flows, timeout=10)
    restored = time.monotonic() - back
    assert restored < 2.0, restored
    assert sandbox.connect("cli1", "10.0.0.100", 80, count=3)[0].ok


def _group(sb: Sandbox, vip: str) -> str:
    for f in sb.dump_flows():
        if f"nw_dst={vip}," in f and (m := re.search(r"set_field:(0x[0-9a-f]+)->reg6", f)):
            gid = int(m.group(1), 16)
            return next((g for g in sb.dump_groups() if f"group_id={gid}," in g), "")
    return ""
