"""Dataplane: new TCP connections per second through the sandbox pipeline
(client namespaces -> netdev br-int -> lbaffd's tables -> backend namespaces),
to a VIP with affinity and to one without (same three backends), and the
datapath flows (``dpctl/dump-flows``) that 1000 connections from 100 clients
leave behind.

Each run: the datapath flows are flushed, then ``workers`` client processes
(the project's ``lbaffd_sandbox.client``, in the two client namespaces) open
new connections, one after another each, from ``clients`` source addresses.
The first run per VIP has 1000 connections (100 clients x 10; the affinity
entries are learned during it) and gives the datapath flow count.  Then
``runs`` rate runs of ``rate_conns`` connections alternate between the VIPs:
rate = successful connections / wall time, less the client processes' own
start-up time (measured with zero connections); the median run is reported."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import bench_sandbox
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import BACKEND_PORT, HOSTS, VIP_PORT, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess

AFFINITY_VIP = "10.0.0.100"  # lb1 of the demo topology
PLAIN_VIP = "10.0.0.101"
FIRST_CLIENT = 130  # client addresses 10.0.0.130 .. 10.0.0.(130 + clients - 1)


def _client_cmd(sb: Sandbox, ns_host: str, vip: str, count: int, srcs: list[str]) -> list[str]:
    cmd = ["ip", "netns", "exec", sb.hosts[ns_host].ns, sys.executable, "-m",
           "lbaffd_sandbox.client", "--dst", vip, "--port", str(VIP_PORT),
           "--count", str(count), "--timeout", "3"]
    for ip in srcs:
        cmd += ["--src-ip", ip]
    return cmd


def _burst(sb: Sandbox, vip: str, conns: int, srcs: dict[str, list[str]],
           workers: int) -> tuple[float, list[dict[str, Any]]]:
    """``conns`` connections from ``workers`` parallel clients; (seconds, results)."""
    hosts = sorted(srcs)
    plan = []
    for w in range(workers):
        host = hosts[w % len(hosts)]
        mine = srcs[host][w // len(hosts)::max(1, workers // len(hosts))]
        plan.append((host, conns // workers + (1 if w < conns % workers else 0), mine))
    start = time.monotonic()
    procs = [subprocess.Popen(_client_cmd(sb, h, vip, c, s), stdout=subprocess.PIPE, text=True)
             for h, c, s in plan]
    outs = [p.communicate(timeout=conns * 3 + 120)[0] for p in procs]
    took = time.monotonic() - start
    results = [json.loads(line) for out in outs for line in out.splitlines() if line.strip()]
    return took, results


def _dp_flows(sb: Sandbox) -> int:
    return sum(1 for line in sb.appctl("dpctl/dump-flows").splitlines() if line.strip())


def _learned(sb: Sandbox) -> int:
    return len(sb.dump_flows("cookie=0x1bae000000000000/0xffff000000000000"))


def _run(sb: Sandbox, vip: str, conns: int, srcs: dict[str, list[str]], workers: int,
         overhead: float) -> dict[str, Any]:
    sb.appctl("dpctl/del-flows")
    took, results = _burst(sb, vip, conns, srcs, workers)
    flows = _dp_flows(sb)
    ok = [r for r in results if r["ok"]]
    per_client: dict[str, set[str]] = {}
    for r in ok:
        per_client.setdefault(r["src"], set()).add(r["backend"])
    return {
        "vip": vip, "connections": len(results), "ok": len(ok), "seconds": round(took, 3),
        "conn_per_s": round(len(ok) / max(took - overhead, 1e-3), 1),
        "connect_ms_p50": round(statistics.median(r["connect_ms"] for r in ok), 2) if ok else 0,
        "datapath_flows": flows, "clients": len(per_client),
        "clients_on_one_backend": sum(1 for b in per_client.values() if len(b) == 1),
    }


def dataplane(conns: int = 1000, clients: int = 100, workers: int = 4, runs: int = 3,
              rate_conns: int = 3000) -> dict[str, Any]:
    with bench_sandbox("dp") as sb:
        topo = build_demo_topology(sb, affinity_timeout=300)
        backends = ",".join(f"{HOSTS[b][0]}:{BACKEND_PORT}" for b in ("be1", "be2", "be3"))
        sb.add_load_balancer("lb-plain", {f"{PLAIN_VIP}:{VIP_PORT}": backends},
                             datapaths=[topo.datapath_uuid])
        srcs: dict[str, list[str]] = {"cli1": [], "cli2": []}
        for k in range(clients):
            host = "cli1" if k % 2 == 0 else "cli2"
            ip = f"10.0.0.{FIRST_CLIENT + k}"
            sb.hosts[host].add_address(ip)
            srcs[host].append(ip)
        daemon = LbaffdProcess(sb, "--log-level", "info")
        daemon.start()
        vips = (AFFINITY_VIP, PLAIN_VIP)
        try:
            overhead, _ = _burst(sb, AFFINITY_VIP, 0, srcs, workers)
            # the datapath flows that exactly `conns` connections leave (first
            # run on each VIP: the affinity entries are learned during it)
            flows = {vip: _run(sb, vip, conns, srcs, workers, overhead) for vip in vips}
            rate: dict[str, list[dict[str, Any]]] = {vip: [] for vip in vips}
            for _ in range(runs):  # alternating, so drift in machine load hits both
                for vip in vips:
                    rate[vip].append(_run(sb, vip, rate_conns, srcs, workers, overhead))
            learned = _learned(sb)
        finally:
            daemon.stop(timeout=30)

    def median_rate(rs: list[dict[str, Any]]) -> float:
        return float(statistics.median(r["conn_per_s"] for r in rs))

    aff, plain = median_rate(rate[AFFINITY_VIP]), median_rate(rate[PLAIN_VIP])
    return {
        "connections": conns, "clients": clients, "workers": workers, "runs": runs,
        "rate_connections": rate_conns, "client_startup_s": round(overhead, 3),
        "affinity": {"conn_per_s": aff, "first_1000": flows[AFFINITY_VIP],
                     "runs": rate[AFFINITY_VIP]},
        "no_affinity": {"conn_per_s": plain, "first_1000": flows[PLAIN_VIP],
                        "runs": rate[PLAIN_VIP]},
        "affinity_ratio": round(aff / plain, 3) if plain else 0.0,
        "learned_entries": learned,
    }
