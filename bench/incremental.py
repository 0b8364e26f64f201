"""Incremental: at N LBs in sync, one backend added to one LB per SB
transaction, one at a time.  Latency = SB commit -> end of the daemon's pass
that applied it (its ``reconciled`` log line, written after the barrier),
checked on the switch; OpenFlow messages are lbaffd's own counters."""

from __future__ import annotations

import re
import time
from functools import partial
from typing import Any

from bench.common import (
    BACKENDS,
    BenchDaemon,
    event_time,
    lb_vips,
    percentile,
    wait_for,
)
from lbaffd_sandbox.sandbox import Sandbox

STRIDE = 7919  # a prime: rep r changes LB (r * STRIDE) % N, all distinct for N coprime


def _applied_event(daemon: BenchDaemon, since: float) -> dict[str, Any] | None:
    """The first pass that read the SB at or after ``since`` and changed the switch."""
    for ev in daemon.events_named("reconciled"):
        if float(ev.get("sb_read_at", 0)) >= since and ev.get("changes", 0) > 0:
            return ev
    return None


def _group_of(sb: Sandbox, backend: str) -> str:
    """The switch's group line holding ``backend`` (``nat(dst=ip:port)``)."""
    for line in sb.ofctl("dump-groups", "br-int").splitlines():
        if f"nat(dst={backend})" in line:
            return line
    return ""


def _passes(daemon: BenchDaemon) -> int:
    """Reconcile passes so far (``reconcile/stats``), silent ones included."""
    m = re.search(r"^passes: (\d+)", daemon.ctl_text("reconcile/stats"), re.M)
    return int(m.group(1)) if m else 0


def incremental(sb: Sandbox, daemon: BenchDaemon, uuids: list[str], reps: int,
                timeout: float, pause: float = 0.3) -> dict[str, Any]:
    n = len(uuids)
    before = daemon.counters()
    passes_before = _passes(daemon)
    latencies: list[float] = []
    per_rep: list[dict[str, Any]] = []
    for r in range(reps):
        i = (r * STRIDE + 1) % n
        vips = lb_vips(i, BACKENDS + 1)
        new_backend = next(iter(vips.values())).split(",")[-1]
        op: dict[str, object] = {"op": "update", "table": "Load_Balancer",
              "where": [["_uuid", "==", ["uuid", uuids[i]]]],
              "row": {"vips": ["map", [[k, v] for k, v in vips.items()]]}}
        # a pass that read the SB before the send cannot have the change
        t_send = time.time()
        sb.transact([op])
        t_commit = time.time()
        since = t_send - 0.001  # sb_read_at is rounded to the millisecond
        ev = wait_for(partial(_applied_event, daemon, since), timeout,
                      f"incremental change {r} at N={n}", step=0.005)
        latency = event_time(ev) - t_commit
        group = _group_of(sb, new_backend)
        if group.count("bucket=") != BACKENDS + 1:
            raise AssertionError(f"change {r}: LB {i}'s group on the switch is {group!r}")
        latencies.append(latency)
        wait_ms = (float(ev["sb_read_at"]) - t_commit) * 1000
        per_rep.append({"lb": i, "latency_ms": round(latency * 1000, 1),
                        "pass_ms": ev["ms"], "changes": ev["changes"], "audit": ev["audit"],
                        "sb_to_read_ms": round(wait_ms, 1),
                        # SB read + parse and the rest of the pass outside reconcile()
                        "read_parse_ms": round(latency * 1000 - wait_ms - ev["ms"], 1)})
        time.sleep(pause)  # one change at a time: no coalescing between reps
    sent = daemon.counters().minus(before)
    passes = _passes(daemon) - passes_before
    ms = [v * 1000 for v in latencies]
    return {
        "n": n, "reps": reps,
        "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1), "min_ms": round(min(ms), 1),
        "changes_per_rep": _mean(p["changes"] for p in per_rep),
        # where the time goes (medians): waiting for the worker to read the SB
        # (busy with an earlier pass, e.g. the periodic audit), reading and
        # parsing the SB, and reconcile() itself (compile, diff, bundle, barrier)
        "p50_wait_ms": _median(p["sb_to_read_ms"] for p in per_rep),
        "p50_read_parse_ms": _median(p["read_parse_ms"] for p in per_rep),
        "p50_reconcile_ms": _median(p["pass_ms"] for p in per_rep),
        "reps_waiting_over_1s": sum(1 for p in per_rep if p["sb_to_read_ms"] > 1000),
        "passes": passes,  # every pass in the phase, the silent audits too
        "of_writes_per_change": round(sent.writes / reps, 2),
        "of_messages_per_change": round(sent.sent_for_changes / reps, 2),
        "flow_mods_per_change": round(sent.flow_mods / reps, 2),
        "group_mods_per_change": round(sent.group_mods / reps, 2),
        "sent": sent.as_dict(), "reps_detail": per_rep,
    }


def _median(values: Any) -> float:
    return round(percentile(list(values), 50), 1)


def _mean(values: Any) -> float:
    vals = list(values)
    return round(sum(vals) / len(vals), 2) if vals else 0.0
