"""OVN's own affinity vs lbaffd in companion mode, the same client scenarios,
one run: ``python -m bench.companion`` (or ``make bench-companion``).

A fresh two-chassis OVN sandbox (real ovn-northd, two ovn-controllers, Geneve,
``lbaffd_sandbox.ovn_topology``).  First the scenarios of
``lbaffd_sandbox.scenarios`` run against the affinity VIP with lbaffd not
running (OVN 23.03's own ``affinity_timeout``), then lbaffd starts with default
flags (``--mode auto`` picks companion) and the same scenarios run again with
new clients; then ovn-controller is restarted under lbaffd: how long until
lbaffd's flows, groups and learned entries are back, and whether the clients
learned before keep their backends.  Results go to
``bench/results/companion-<time>.json`` and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BenchDaemon
from lbaffd_sandbox.ovn import started_ovn_sandbox
from lbaffd_sandbox.ovn_topology import HOSTS, VIP_PORT, build_ovn_topology
from lbaffd_sandbox.scenarios import ScenarioReport, format_reports, measure, open_connections

RESULTS = Path(__file__).resolve().parent / "results"


def restart_under_lbaffd(topo, daemon: BenchDaemon, clients: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Pin ``clients`` new clients, restart ovn-controller, measure recovery."""
    sb = topo.sandbox
    ips = topo.new_clients("cli1", clients)
    before = {r.src: r.backend for r in open_connections(topo, "cli1", topo.affinity_vip,
                                                         VIP_PORT, clients, ips)}
    seen = len(daemon.events_named("flush_recovered"))
    start = time.monotonic()
    sb.stop_ovn_controller(1)
    sb.start_ovn_controller(1, wait=False)
    while len(daemon.events_named("flush_recovered")) == seen:
        if time.monotonic() - start > 30:
            raise RuntimeError("lbaffd did not recover from ovn-controller's flush in 30 s")
        time.sleep(0.02)
    event = daemon.events_named("flush_recovered")[-1]
    sb.wait_programmed()
    after = {r.src: r.backend for r in open_connections(topo, "cli1", topo.affinity_vip,
                                                        VIP_PORT, clients, ips)}
    moved = sum(1 for ip, be in before.items() if after.get(ip) != be)
    return {"recovery_ms": event["ms"], "entries_restored": event["entries_restored"],
            "clients": clients, "moved": moved}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=12, help="new clients of the first scenario")
    p.add_argument("--connections", type=int, default=8, help="K of the other scenarios")
    p.add_argument("--timeout", type=float, default=3.0, help="TCP connect timeout (s)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    with started_ovn_sandbox(chassis_count=2) as sb:
        topo = build_ovn_topology(sb)
        # the first cross-chassis packet is lost while OVS resolves the underlay
        open_connections(topo, "cli1", HOSTS["be3"].ip, 8080, 1, [], 2.0)
        reports: list[ScenarioReport] = [measure(
            topo, topo.affinity_vip, f"OVN native (affinity_timeout={topo.affinity_timeout})",
            args.clients, args.connections, args.timeout)]
        daemon = BenchDaemon(sb)
        daemon.start()
        try:
            reports.append(measure(topo, topo.affinity_vip, "lbaffd companion", args.clients,
                                   args.connections, args.timeout))
            restart = restart_under_lbaffd(topo, daemon, args.clients)
        finally:
            daemon.stop()
    stamp = datetime.now(UTC)
    print(f"Run {stamp:%Y-%m-%d %H:%M} UTC, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; OVN 23.03 + OVS 3.1 netdev, two chassis (be3 on chassis 2), "
          f"TCP connect timeout {args.timeout:g} s")
    print(format_reports(reports))
    print(f"\novn-controller restarted under lbaffd: flows, groups and "
          f"{restart['entries_restored']} learned entries back {restart['recovery_ms']} ms "
          f"after the flush; {restart['moved']} of {restart['clients']} pinned clients moved")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"companion-{stamp:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "time": stamp.isoformat(), "load": load, "timeout_s": args.timeout,
        "rows": {r.label: dict(r.rows()) for r in reports},
        "first_ms": {r.label: r.first.times_ms for r in reports},
        "restart": restart}, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
