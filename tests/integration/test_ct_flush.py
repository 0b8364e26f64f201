"""A backend that leaves a VIP takes its conntrack entries with it (real
traffic through the netdev datapath's userspace conntrack).

- UDP (always): a client sending from one source port keeps its conntrack
  entry, so without a flush it kept reaching the removed backend for as long
  as it kept sending (issue 15: 36 of 36 answers from the removed be1 over
  3.6 s).  With the flush, the next datagram is balanced again.
- TCP with ``options:ct_flush=true``: the entries of the backend's
  connections through that VIP are gone, others (other backends, other VIPs)
  stay; without the option (TCP's default) nothing is flushed.
- A backend a Service_Monitor reports offline is flushed as "down".
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import HOSTS, Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, metric, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

UDP_VIP, TCP_FLUSH_VIP, TCP_KEEP_VIP, HEALTH_VIP = "10.0.0.190", "10.0.0.191", "10.0.0.192", \
    "10.0.0.193"
BACKENDS = ("be1", "be2", "be3")
ZONE = 1  # the demo switch's tunnel key: lbaffd's conntrack zone for it


def ip_of(name: str) -> str:
    return HOSTS[name][0]


def backends(port: int, names: tuple[str, ...] = BACKENDS) -> str:
    return ",".join(f"{ip_of(b)}:{port}" for b in names)


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=None)
    for name in BACKENDS:
        sandbox.start_server(t.hosts[name], 5353, proto="udp")
    return t


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--metrics-address", f"127.0.0.1:{free_port()}")
    proc.start()
    yield proc
    proc.stop()


def udp_answers(sb: Sandbox, sport: int, count: int) -> list[str]:
    """Who answers ``count`` datagrams sent one by one from cli1:``sport``."""
    out = sb.hosts["cli1"].exec(sys.executable, "-m", "lbaffd_sandbox.client", "--dst", UDP_VIP,
                                "--port", "53", "--proto", "udp", "--count", str(count),
                                "--pause", "0.1", "--sport", str(sport), "--timeout", "2")
    return [str(json.loads(line)["backend"]) for line in out.splitlines() if line.strip()]


def entries(sb: Sandbox, vip: str) -> list[tuple[str, str]]:
    """(protocol, backend ip:port) of each conntrack entry through ``vip`` in the zone."""
    out = sb.appctl("dpctl/dump-conntrack", f"zone={ZONE}")
    found = []
    for line in out.splitlines():
        m = re.match(r"(\w+),orig=\(src=[^,]+,dst=([^,]+),sport=\d+,dport=\d+\),"
                     r"reply=\(src=([^,]+),dst=[^,]+,sport=(\d+),", line)
        if m and m.group(2) == vip:
            found.append((m.group(1), f"{m.group(3)}:{m.group(4)}"))
    return found


def test_udp_client_on_one_port_leaves_a_removed_backend(sandbox: Sandbox, topo: Topology,
                                                         daemon: LbaffdProcess) -> None:
    lb = sandbox.add_load_balancer("udp", {f"{UDP_VIP}:53": backends(5353)}, protocol="udp",
                                   datapaths=[topo.datapath_uuid])
    assert wait_until(lambda: any(f"nw_dst={UDP_VIP}" in f for f in sandbox.dump_flows()),
                      what="the UDP VIP's flows")
    first = udp_answers(sandbox, 40053, 5)
    assert len(set(first)) == 1 and first[0] in BACKENDS, first  # one entry, one backend
    gone = first[0]
    assert ("udp", f"{ip_of(gone)}:5353") in entries(sandbox, UDP_VIP)
    mark = daemon.mark()
    sandbox.set_lb_vips(lb, {f"{UDP_VIP}:53": backends(5353, tuple(
        b for b in BACKENDS if b != gone))})
    # the pass that removed it from the group is over (its log line comes after
    # the flush); without the flush every answer still came from it here
    daemon.wait_event("reconciled", after=mark)
    assert not any(f"{ip_of(gone)}:5353" in g for g in sandbox.dump_groups())
    after = udp_answers(sandbox, 40053, 10)
    assert gone not in after and all(after), after
    assert len(set(after)) == 1, after  # a new entry, sticky again
    flushed = daemon.wait_event("conntrack_flushed", after=mark, lb="udp",
                                backend=f"{ip_of(gone)}:5353")
    assert flushed["reason"] == "removed" and flushed["zones"] == [ZONE]
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_conntrack_flushes_total", reason="removed") >= 1
    # the LB deleted: its live backends leave at once, one flush for the VIP
    assert entries(sandbox, UDP_VIP)
    mark = daemon.mark()
    sandbox.delete_load_balancer(lb)
    daemon.wait_event("conntrack_flushed", after=mark, lb="udp", zones=[ZONE])
    assert entries(sandbox, UDP_VIP) == []


def test_tcp_entries_flushed_only_with_ct_flush(sandbox: Sandbox, topo: Topology,
                                                daemon: LbaffdProcess) -> None:
    flush = sandbox.add_load_balancer("tcp-flush", {f"{TCP_FLUSH_VIP}:80": backends(8080)},
                                      options={"ct_flush": "true"},
                                      datapaths=[topo.datapath_uuid])
    keep = sandbox.add_load_balancer("tcp-keep", {f"{TCP_KEEP_VIP}:80": backends(8080)},
                                     datapaths=[topo.datapath_uuid])
    assert wait_until(lambda: any(f"nw_dst={TCP_KEEP_VIP}" in f for f in sandbox.dump_flows()),
                      what="the TCP VIPs' flows")

    def spread(vip: str) -> set[str]:
        results = sandbox.connect("cli2", vip, 80, count=12)
        assert all(r.ok for r in results), results
        return {r.backend for r in results}
    # closed connections stay in conntrack (TIME_WAIT) long enough to look at
    assert wait_until(lambda: spread(TCP_FLUSH_VIP) & spread(TCP_KEEP_VIP) & {"be1"},
                      what="connections to be1 through both VIPs")
    victim = f"{ip_of('be1')}:8080"
    assert ("tcp", victim) in entries(sandbox, TCP_FLUSH_VIP)
    assert ("tcp", victim) in entries(sandbox, TCP_KEEP_VIP)
    others_before = [e for e in entries(sandbox, TCP_FLUSH_VIP) if e[1] != victim]
    assert others_before
    mark = daemon.mark()
    rest = backends(8080, ("be2", "be3"))
    sandbox.set_lb_vips(keep, {f"{TCP_KEEP_VIP}:80": rest})
    sandbox.set_lb_vips(flush, {f"{TCP_FLUSH_VIP}:80": rest})
    daemon.wait_event("conntrack_flushed", after=mark, lb="tcp-flush", backend=victim,
                      reason="removed")
    assert ("tcp", victim) not in entries(sandbox, TCP_FLUSH_VIP)
    assert set(others_before) <= set(entries(sandbox, TCP_FLUSH_VIP))  # the rest stay
    assert ("tcp", victim) in entries(sandbox, TCP_KEEP_VIP)  # no ct_flush: untouched
    assert not [e for e in daemon.events()[mark:] if e.get("event") == "conntrack_flushed"
                and e.get("lb") == "tcp-keep"]


def test_backend_reported_offline_is_flushed_as_down(sandbox: Sandbox, topo: Topology,
                                                     daemon: LbaffdProcess) -> None:
    sandbox.add_load_balancer("health", {f"{HEALTH_VIP}:80": backends(8080)},
                              options={"ct_flush": "true"}, datapaths=[topo.datapath_uuid])
    assert wait_until(lambda: "be3" in {r.backend for r in sandbox.connect(
        "cli1", HEALTH_VIP, 80, count=9)}, what="a connection to be3 through the VIP")
    victim = f"{ip_of('be3')}:8080"
    assert ("tcp", victim) in entries(sandbox, HEALTH_VIP)
    mark = daemon.mark()
    sandbox.sbctl("create", "Service_Monitor", f"ip={ip_of('be3')}", "port=8080",
                  "protocol=tcp", "logical_port=be3", 'src_mac="02:00:00:00:00:fe"',
                  'src_ip="10.0.0.254"', "status=offline")
    daemon.wait_event("conntrack_flushed", after=mark, lb="health", backend=victim,
                      reason="down")
    assert ("tcp", victim) not in entries(sandbox, HEALTH_VIP)
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_conntrack_flushes_total", reason="down") >= 1
