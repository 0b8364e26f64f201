"""``python -m bench.memprobe``: where memory goes across repeated full passes.

The daemon runs in this process (its worker on a thread) against a sandbox
with the soak's cluster-shaped SB; the probe forces full passes
(``request_recompute``, what ``ovs-appctl ... recompute`` does), and after
each batch diffs ``tracemalloc`` snapshots and counts ``gc.get_objects()``
by type, frozen objects included (``gc.freeze()`` after a full pass moves
them out of the collector's sight: a cycle among them is never freed).
Prints the sites and types that grew; a flat daemon shows none that keep
growing batch after batch.
"""

from __future__ import annotations

import argparse
import collections
import gc
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import bench_sandbox
from bench.soak import AFFINITY_TIMEOUT, add_local_ports, cluster_sb, make_pod, pod_binding
from lbaffd.config import Settings
from lbaffd.daemon import Daemon
from lbaffd.ops import memtrim
from lbaffd.ops.metrics import Metrics
from lbaffd_sandbox.topology import build_demo_topology


def by_type() -> collections.Counter[str]:
    """Every object the collector knows of, frozen ones included, by type."""
    counts: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        counts[type(o).__name__] += 1
    return counts


def wait_passes(daemon: Daemon, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while daemon.status().stats.passes < count:
        if daemon._stopping.is_set():
            raise RuntimeError("the daemon stopped")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} passes not reached")
        time.sleep(0.05)


class Changer:
    """Each call one change that forces a full pass: a pod on another chassis
    added or removed, or a Service_Monitor flipped (in turn)."""

    def __init__(self, sb: Any, state: Any, disrupt: bool = False) -> None:
        self.sb, self.state, self.i, self.disrupt = sb, state, 0, disrupt
        self.added: list[str] = []

    def __call__(self) -> None:
        self.i += 1
        if self.disrupt and self.i % 8 == 4:  # the switch restarts, the SB reconnects
            if self.i % 16 == 4:
                self.sb.restart_vswitchd()
            else:
                self.sb.restart_ovsdb("sb", down_for=1.0)
            return
        if self.i % 2:
            self.sb.transact([{"op": "update", "table": "Service_Monitor",
                               "where": [["_uuid", "==", ["uuid", self.state.monitors[0]]]],
                               "row": {"status": "offline" if self.i % 4 == 1 else "online"}}])
        elif self.i % 4 == 2 or not self.added:
            pod = make_pod(100000 + self.i, True)
            res = self.sb.transact([pod_binding(self.state, pod, self.state.chassis[0])])
            self.added.append(str(res[0]["uuid"][1]))
        else:
            self.sb.transact([{"op": "delete", "table": "Port_Binding",
                               "where": [["_uuid", "==", ["uuid", self.added.pop()]]]}])


def probe(n: int, batches: int, per_batch: int, top: int,
          change: bool = False, disrupt: bool = False) -> dict[str, Any]:
    with bench_sandbox("memprobe") as sb:
        topo = build_demo_topology(sb, affinity_timeout=AFFINITY_TIMEOUT)
        state = cluster_sb(sb, topo.datapath_uuid, n, 1, local_pods=[])
        local = [make_pod(i, False) for i in range(max(8, n // 20))]
        chassis = sb.sbctl("--bare", "--columns=_uuid", "find", "Chassis", f"name={sb.chassis}")
        sb.transact([pod_binding(state, p, chassis) for p in local])
        add_local_ports(sb, local)
        settings = Settings(ovs_db=sb.ovs_db_remote, sb_db=sb.sb_remote, bridge="br-int",
                            ovs_rundir=str(sb.ovs_rundir), ovn_rundir=str(sb.rundir),
                            rundir=str(sb.rundir / "lbaffd"), metrics_address="",
                            audit_interval=3600)
        daemon = Daemon(settings, Metrics())
        out: dict[str, Any] = {"n": n}
        # the daemon's worker must be the main thread (signal handlers, the
        # ovs library's fatal-signal hooks): the probe drives it from a thread
        changer = Changer(sb, state, disrupt) if change or disrupt else None
        driver = threading.Thread(target=_drive, args=(daemon, batches, per_batch, top, out,
                                                       changer),
                                  name="memprobe", daemon=True)
        driver.start()
        daemon.run()
        driver.join(timeout=30)
        return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _drive(daemon: Daemon, batches: int, per_batch: int, top: int,
           out: dict[str, Any], changer: Changer | None = None) -> None:
    """Full passes in batches; after each: RSS, the frozen generation's size
    and the objects the collector sees.  At the end the frozen generation is
    unfrozen and collected: what that frees is cyclic garbage that
    ``gc.freeze()`` had hidden from the collector."""
    try:
        wait_passes(daemon, 1)
        passes = daemon.status().stats.passes
        history: list[dict[str, Any]] = []
        for batch in range(batches):
            t = time.monotonic()
            for _ in range(per_batch):
                if changer is not None:
                    changer()
                else:
                    daemon.request_recompute()
                passes += 1
                wait_passes(daemon, passes)
            row = {"batch": batch, "rss_mb": round(_rss_mb(), 1),
                   "frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                   "s_per_pass": round((time.monotonic() - t) / per_batch, 2)}
            print(row, flush=True)
            history.append(row)
        gc.unfreeze()
        before = by_type()
        found = gc.collect()
        after = by_type()
        freed = {k: before[k] - after.get(k, 0) for k in before if before[k] > after.get(k, 0)}
        print(f"unfrozen + collected: {found} unreachable objects; by type: "
              f"{sorted(freed.items(), key=lambda kv: -kv[1])[:top]}; "
              f"RSS now {_rss_mb():.1f} MB", flush=True)
        out["history"] = history
        out["hidden_garbage"] = found
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memprobe", description=__doc__)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--per-batch", type=int, default=5, help="full passes per batch")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--change", action="store_true",
                   help="each pass follows an SB change (remote pod, health flip), not a recompute")
    p.add_argument("--disrupt", action="store_true",
                   help="every 8th change: restart ovs-vswitchd or the SB ovsdb-server")
    p.add_argument("--no-trim", action="store_true",
                   help="the daemon does not trim the C heap after a full pass (to compare)")
    args = p.parse_args(argv)
    if args.no_trim:
        memtrim.trim = lambda: False
    probe(args.n, args.batches, args.per_batch, args.top, args.change, args.disrupt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
