"""``python -m bench.realistic``: lbaffd and ovn-controller side by side on a
cluster-shaped Southbound (``bench.cluster``), repeated; median and spread.

Each run builds, per daemon, a fresh sandbox with an NB, a real ovn-northd and
the seeded cluster, then measures one phase at a time (never two daemons at
once): cold convergence and peak RSS; event samples per type (backend added,
health flip, remote port added, local port added, LB added, LB removed); a
churn of remote-port and LB changes with the LB changes' lag; a restart; for
lbaffd, the raw ``ovs-ofctl --bundle`` replay of its set and the events again
while audits run (restarted with ``--audit-interval 1``).  The existing
``python -m bench`` (uniform LBs) is unchanged."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cluster as cl
from bench.run import ROOT, _loadavg, host_facts

SIDES = ("lbaffd", "ovn-controller")
# what runs after setup and cold (raw and events_audit: lbaffd only)
PHASES = ("raw", "events", "churn", "restart", "events_audit")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.realistic", description=__doc__)
    p.add_argument("--n", type=int, default=5000, help="services (load balancers), default 5000")
    p.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--samples", type=int, default=200, help="samples per event type (200)")
    p.add_argument("--churn-seconds", type=float, default=60.0)
    p.add_argument("--port-rate", type=float, default=20.0, help="remote port changes/s")
    p.add_argument("--lb-rate", type=float, default=5.0, help="LB changes/s")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--nodes", type=int, default=50, help="other chassis (default 50)")
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--events", default="",
                   help="event types to sample (comma-separated; default all)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"phases after cold (default {','.join(PHASES)}; events_audit "
                        "restarts lbaffd with --audit-interval 1)")
    p.add_argument("--sb-direct", action="store_true",
                   help="lbaffd's event samples written to the SB as ovn-northd would, with "
                        "ovn-northd paused (bench/sb_direct.py): ~0.5 s a sample at N=5000 "
                        "instead of ~5 s; ovn-controller's stay NB-driven")
    p.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                   help="measure nothing: join the runs of these results files (the same "
                        "content and sampling) into one, medians over all their runs")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=30, 1 run, 3 samples, 3 s churn, 5 other chassis")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.runs, args.samples = min(args.n, 30), 1, min(args.samples, 3)
        args.churn_seconds, args.nodes = min(args.churn_seconds, 3.0), min(args.nodes, 5)
    args.side_list = [s for s in args.sides.split(",") if s]
    if set(args.side_list) - set(SIDES):
        p.error(f"--sides: {', '.join(SIDES)}")
    from bench.realistic_events import EVENT_TYPES

    args.event_list = [e for e in args.events.split(",") if e] or list(EVENT_TYPES)
    if set(args.event_list) - set(EVENT_TYPES):
        p.error(f"--events: {', '.join(EVENT_TYPES)}")
    args.phase_list = [x for x in args.phases.split(",") if x]
    if set(args.phase_list) - set(PHASES):
        p.error(f"--phases: {', '.join(PHASES)}")
    return args


class Runner:
    def __init__(self, args: argparse.Namespace, command: str) -> None:
        self.args = args
        c = cl.generate(args.n, args.seed, args.nodes)
        self.res: dict[str, Any] = {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "quick": args.quick, "n": args.n, "runs_wanted": args.runs,
            "phases": args.phase_list,
            "samples": args.samples, "sb_direct": args.sb_direct,
            "churn": {"seconds": args.churn_seconds, "port_rate": args.port_rate,
                      "lb_rate": args.lb_rate},
            "cluster": c.stats(),
            "host": host_facts(),
            "runs": [], "errors": [],
        }
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def checkpoint(self, run: dict[str, Any], side: str, out: dict[str, Any],
                   key: str) -> Callable[[dict[str, Any]], None]:
        """Writes the results so far with ``key``'s event samples as they
        are: hours of ovn-controller samples are not lost to a stopped run."""
        def save(events: dict[str, Any]) -> None:
            part = {**run, side: {**out, key: events}}
            res = dict(self.res, runs=[*self.res["runs"], part])
            try:
                res["summary"], res["targets"] = summary(res), targets(res)
            except (KeyError, TypeError, ValueError) as exc:
                res["summary_error"] = f"{type(exc).__name__}: {exc}"
            write(res, self.args.out, self.stamp)
        return save

    def phase(self, run: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        print(f"[realistic] {name} ...", flush=True)
        try:
            value = fn()
        except Exception as exc:
            traceback.print_exc()
            self.res["errors"].append({"phase": name, "error": f"{type(exc).__name__}: {exc}"})
            value = None
        took = time.monotonic() - start
        run.setdefault("phase_seconds", {})[name] = round(took, 1)
        # the phase's wall time, setup included (a cold phase's NB transaction and
        # ovn-northd): not the daemon's figure, which the table reports
        print(f"[realistic] phase {name} done, {took:.1f} s wall (load {_loadavg()})",
              flush=True)
        return value

    def run(self) -> int:
        # written again after every run and every event type: a bench stopped
        # half way keeps what it finished (``--merge`` joins files of the
        # same content)
        stamp = self.stamp
        for r in range(self.args.runs):
            run: dict[str, Any] = {"loadavg_start": _loadavg()}
            for side in self.args.side_list:
                run[side] = self._side(run, side, r)
            run["loadavg_end"] = _loadavg()
            self.res["runs"].append(run)
            self.res["summary"] = summary(self.res)
            self.res["targets"] = targets(self.res)
            self.res["host"]["loadavg_end"] = _loadavg()
            path = write(self.res, self.args.out, stamp)
        print()
        print(markdown(self.res))
        print(f"results: {path}")
        return 1 if self.res["errors"] else 0

    def _side(self, run: dict[str, Any], side: str, r: int) -> dict[str, Any]:
        from bench import realistic_side as rs
        from bench.cold import raw_ofctl
        from bench.common import RUNDIR_PREFIX
        from bench.ovsdb_watch import OvsdbWatch
        from bench.realistic_events import EventSamples
        from bench.sb_direct import SbDirect
        from bench.switch_probe import SwitchProbe
        from lbaffd_sandbox.sandbox import started_sandbox

        a = self.args
        n = a.n
        timeout = 300 + n * 0.5
        out: dict[str, Any] = {}
        c = cl.generate(n, a.seed, a.nodes)  # a fresh copy: events add pods to it
        tag = "lb" if side == "lbaffd" else "ovn"
        with started_sandbox(f"{RUNDIR_PREFIX}real{tag}-", nb=True,
                             prefix="lbr" + secrets.token_hex(2)) as sb:
            watch = OvsdbWatch(sb.sb_remote.removeprefix("unix:"), "OVN_Southbound", {
                "SB_Global": ["nb_cfg"], "Chassis_Private": ["nb_cfg", "nb_cfg_timestamp"],
                "Load_Balancer": ["name", "vips"], "Service_Monitor": ["status"]})
            watch.start()
            # when the local DB got a new interface's ofport (local_port_added's input)
            # and, at that moment, how long ovs-vswitchd takes to answer a barrier
            probe = SwitchProbe(str(sb.mgmt_socket))
            probe.start()
            local = OvsdbWatch(sb.ovs_db_remote.removeprefix("unix:"), "Open_vSwitch",
                               {"Interface": ["name", "ofport"]}, on_update=probe.on_update)
            local.start()
            s = rs.Side(side, sb, c, watch)
            direct = SbDirect(sb.transact) if a.sb_direct and side == "lbaffd" else None
            sampler = EventSamples(s, a.event_list, local_watch=local, switch_probe=probe,
                                   direct=direct)
            try:
                start = rs.lbaffd_start if side == "lbaffd" else rs.ovn_controller_start
                label = f"run {r + 1} {side}"
                if self.phase(run, f"{label} setup", lambda: s.setup(start, timeout)) is None:
                    return out
                out["cold"] = self.phase(run, f"{label} cold", lambda: s.cold(timeout))
                if out["cold"] is None:
                    return out
                want = set(a.phase_list)
                if side == "lbaffd" and "raw" in want:
                    out["raw"] = self.phase(run, f"{label} raw ovs-ofctl",
                                            lambda: raw_ofctl(sb, n, timeout=600))
                if "events" in want:
                    out["events"] = self.phase(run, f"{label} events", lambda: sampler.run(
                        a.samples, timeout, self.checkpoint(run, side, out, "events")))
                if "churn" in want:
                    out["churn"] = self.phase(run, f"{label} churn", lambda: s.churn(
                        a.churn_seconds, a.port_rate, a.lb_rate, timeout))
                if side == "lbaffd":
                    if "restart" in want or "events_audit" in want:
                        # (audits every second for the events that follow)
                        audits = ("--audit-interval", "1") if "events_audit" in want else ()
                        out["restart"] = self.phase(run, f"{label} restart",
                                                    lambda: rs.lbaffd_restart(
                                                        s, timeout, *audits))
                    if "events_audit" in want:
                        out["events_audit"] = self.phase(
                            run, f"{label} events during audits",
                            lambda: sampler.run(a.samples, timeout, self.checkpoint(
                                run, side, out, "events_audit")))
                elif "restart" in want:
                    out["restart"] = self.phase(run, f"{label} restart",
                                                lambda: rs.ovn_controller_restart(s, timeout))
            finally:
                watch.stop()
                local.stop()
                probe.stop()
                if s.daemon is not None:
                    s.daemon.stop(timeout=300)
        return out


# ------------------------------------------------------------------ results


def _stat(values: list[float]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 2), "min": round(min(vals), 2),
            "max": round(max(vals), 2), "runs": len(vals)}


def _path(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


METRICS: dict[str, tuple[str, ...]] = {
    "cold_s": ("cold", "converge_s"), "cold_rss_mb": ("cold", "rss_peak_mb"),
    "rss_before_lbs_mb": ("cold", "rss_before_lbs_mb"), "flows": ("cold", "flows"),
    "groups": ("cold", "groups"), "raw_s": ("raw", "total_s"),
    "churn_lag_p50_ms": ("churn", "lb_lag_p50_ms"), "churn_lag_p99_ms": ("churn", "lb_lag_p99_ms"),
    "churn_cpus": ("churn", "cpus_used"), "churn_rss_mb": ("churn", "rss_peak_mb"),
    "restart_s": ("restart", "in_sync_s"), "restart_writes": ("restart", "of_writes"),
    "restart_rss_mb": ("restart", "rss_peak_mb"), "events_rss_mb": ("events", "rss_peak_mb"),
    # the switch's own share of a restart: ovs-vswitchd building lbaffd's
    # group dump (asked for at start, beside the SB sync and the compile)
    "restart_group_dump_ms": ("restart", "prefetch_ms", "groups_ms"),
    "events_audit_rss_mb": ("events_audit", "rss_peak_mb"),
}
EVENT_FIELDS = ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms", "changes_max",
                "worker_p50_ms", "worker_p99_ms", "input_p50_ms", "input_p99_ms",
                "switch_p50_ms", "switch_p99_ms", "northd_p50_ms", "northd_p99_ms",
                "after_northd_p50_ms", "after_northd_p99_ms", "samples")


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Median and spread over the runs, per side."""
    out: dict[str, Any] = {}
    for side in SIDES:
        runs = [r[side] for r in res["runs"] if r.get(side)]
        if not runs:
            continue
        s: dict[str, Any] = {}
        for name, path in METRICS.items():
            st = _stat([_path(r, *path) for r in runs])
            if st is not None:
                s[name] = st
        from bench.realistic_events import EVENT_TYPES

        for block in ("events", "events_audit"):
            for ev in EVENT_TYPES:
                for f in EVENT_FIELDS:
                    st = _stat([_path(r, block, ev, f) for r in runs])
                    if st is not None:
                        s[f"{block}.{ev}.{f}"] = st
        out[side] = s
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 17, met or not (None: not measured), on medians."""
    sm = res.get("summary", {})
    lb, ovn = sm.get("lbaffd", {}), sm.get("ovn-controller", {})
    n = res["n"]
    out: list[dict[str, Any]] = []

    def med(d: dict[str, Any], key: str) -> float | None:
        v = d.get(key)
        return None if v is None else float(v["median"])

    def add(name: str, want: str, got: str | None, met: bool | None) -> None:
        out.append({"target": name, "want": want, "measured": got or "not measured",
                    "met": met})

    cold, ocold, raw = med(lb, "cold_s"), med(ovn, "cold_s"), med(lb, "raw_s")
    add(f"cold N={n} vs ovn-controller", "<= 1/3 of ovn-controller",
        f"{cold:.2f} s vs {ocold:.2f} s ({cold / ocold:.2f}x)" if cold and ocold else None,
        cold / ocold <= 1 / 3 if cold and ocold else None)
    add(f"cold N={n} vs raw ovs-ofctl --bundle", "<= 1.5x raw",
        f"{cold:.2f} s vs {raw:.2f} s ({cold / raw:.2f}x)" if cold and raw else None,
        cold / raw <= 1.5 if cold and raw else None)
    ch = med(lb, "events.remote_port_added.changes_max")
    add("remote-port change: OpenFlow changes", "0",
        None if ch is None else f"{ch:.0f} (max over samples)", None if ch is None else ch == 0)
    wk = med(lb, "events.remote_port_added.worker_p99_ms")
    add("remote-port change: worker time p99", "<= 5 ms",
        None if wk is None else f"{wk:.2f} ms", None if wk is None else wk <= 5)
    for block, when in (("events", ""), ("events_audit", " during audits")):
        for ev in ("local_port_added", "health_flip", "backend_added"):
            # from the input's arrival (the SB row, or the local interface's
            # ofport) where the bench saw it, else from the bench's write
            src = "input" if med(lb, f"{block}.{ev}.input_p50_ms") is not None else ""
            key = f"{block}.{ev}.{src}_" if src else f"{block}.{ev}."
            p50, p99 = med(lb, key + "p50_ms"), med(lb, key + "p99_ms")
            tag = " (from its input's arrival)" if src else ""
            add(f"{ev}{when} p50{tag}", "<= 10 ms", None if p50 is None else f"{p50:.1f} ms",
                None if p50 is None else p50 <= 10)
            add(f"{ev}{when} p99{tag}", "<= 50 ms", None if p99 is None else f"{p99:.1f} ms",
                None if p99 is None else p99 <= 50)
    lag = med(lb, "churn_lag_p99_ms")
    add("churn: LB change lag p99", "<= 100 ms", None if lag is None else f"{lag:.0f} ms",
        None if lag is None else lag <= 100)
    rs, rw = med(lb, "restart_s"), med(lb, "restart_writes")
    dump = med(lb, "restart_group_dump_ms")
    floor = "" if dump is None else f" (the switch's group dump alone: {dump / 1000:.2f} s)"
    add("restart: in sync", "<= 2 s", None if rs is None else f"{rs:.2f} s{floor}",
        None if rs is None else rs <= 2)
    add("restart: flow/group mods", "0", None if rw is None else f"{rw:.0f}",
        None if rw is None else rw == 0)
    for key, phase in (("cold_rss_mb", "cold"), ("events_rss_mb", "events"),
                       ("churn_rss_mb", "churn"), ("restart_rss_mb", "restart"),
                       ("events_audit_rss_mb", "events during audits")):
        v = med(lb, key)
        add(f"peak RSS ({phase})", "<= 150 MB", None if v is None else f"{v:.0f} MB",
            None if v is None else v <= 150)
    return out


def _fmt(st: dict[str, float] | None, unit: str = "") -> str:
    if not st:
        return "-"
    if st["runs"] == 1:
        return f"{st['median']:g}{unit}"
    return f"{st['median']:g}{unit} ({st['min']:g}-{st['max']:g})"


def markdown(res: dict[str, Any]) -> str:
    h = res["host"]
    runs = len(res["runs"])
    cs = res["cluster"]
    lines = [
        f"Run {res['started']} on {h['cpus']} CPUs ({h.get('cpu_model', '?')}; load average "
        f"{h['loadavg_start']} at start, {h.get('loadavg_end', '?')} at end), "
        f"OVS {h['ovs_version']}, OVN {h['ovn_version']}, "
        f"lbaffd at {h['commit']}{' (quick)' if res.get('quick') else ''}; N={res['n']}, "
        f"{runs} run(s), {res['samples']} samples per event type; median (min-max) over runs.",
        *([("lbaffd's event samples were written to the SB as ovn-northd would have written "
            "them, with ovn-northd paused (`--sb-direct`, `bench/sb_direct.py`).")]
          if res.get("sb_direct") else []),
        *([f"Runs joined from {', '.join(res['merged_from'])} (`--merge`)."]
          if res.get("merged_from") else []),
        "",
        f"Cluster (seed {cs['seed']}): {cs['services']} services, {cs['vips']} VIPs, "
        f"{cs['backend_slots']} backend slots ({cs['local_backend_slots']} local pods), up to "
        f"{cs['backends_per_vip_max']} backends a VIP, {cs['udp']} UDP / {cs['ipv6']} IPv6 / "
        f"{cs['two_port']} two-port / {cs['affinity']} affinity / {cs['hairpin_snat_ip']} "
        f"hairpin_snat_ip, {cs['service_monitors']} health-checked backend slots, "
        f"{cs['remote_pods']} pods on {cs['remote_chassis']} other chassis, "
        f"{cs['local_pods']} local pods.", "",
        "| measure | lbaffd | ovn-controller |", "|---|---|---|"]
    sm = res.get("summary", {})
    lb, ovn = sm.get("lbaffd", {}), sm.get("ovn-controller", {})
    rows = [("cold: SB -> installed", "cold_s", " s"), ("raw ovs-ofctl --bundle", "raw_s", " s"),
            ("flows", "flows", ""), ("groups", "groups", ""),
            ("peak RSS before LBs", "rss_before_lbs_mb", " MB"),
            ("peak RSS after cold", "cold_rss_mb", " MB"),
            ("churn LB lag p50", "churn_lag_p50_ms", " ms"),
            ("churn LB lag p99", "churn_lag_p99_ms", " ms"), ("churn CPUs", "churn_cpus", ""),
            ("restart -> in sync", "restart_s", " s"),
            ("restart: the switch's group dump", "restart_group_dump_ms", " ms"),
            ("restart flow/group mods", "restart_writes", ""),
            ("peak RSS after restart", "restart_rss_mb", " MB")]
    for label, key, unit in rows:
        lines.append(f"| {label} | {_fmt(lb.get(key), unit)} | {_fmt(ovn.get(key), unit)} |")
    from bench.realistic_events import EVENT_TYPES

    for block, when in (("events", ""), ("events_audit", " (audit every 1 s)")):
        for ev in EVENT_TYPES:
            def cell(d: dict[str, Any], block: str = block, ev: str = ev) -> str:
                p = f"{block}.{ev}."
                if not any(k.startswith(p) for k in d):
                    return "-"
                return (f"p50 {_fmt(d.get(p + 'p50_ms'), ' ms')}, p99 "
                        f"{_fmt(d.get(p + 'p99_ms'), ' ms')}"
                        + (f" (from the input's arrival p50 "
                           f"{_fmt(d.get(p + 'input_p50_ms'), ' ms')}, p99 "
                           f"{_fmt(d.get(p + 'input_p99_ms'), ' ms')})"
                           if p + "input_p99_ms" in d else "")
                        + (f"; ovs-vswitchd's own answer to a barrier sent then p50 "
                           f"{_fmt(d.get(p + 'switch_p50_ms'), ' ms')}, p99 "
                           f"{_fmt(d.get(p + 'switch_p99_ms'), ' ms')}"
                           if p + "switch_p99_ms" in d else "")
                        + (f"; ovn-northd's part (until its nb_cfg reached the SB) p50 "
                           f"{_fmt(d.get(p + 'northd_p50_ms'), ' ms')}, p99 "
                           f"{_fmt(d.get(p + 'northd_p99_ms'), ' ms')}, ovn-controller's after it "
                           f"p50 {_fmt(d.get(p + 'after_northd_p50_ms'), ' ms')}, p99 "
                           f"{_fmt(d.get(p + 'after_northd_p99_ms'), ' ms')}"
                           if p + "northd_p99_ms" in d else "")
                        + f"; {_fmt(d.get(p + 'samples'))} samples; CPU p99 "
                        f"{_fmt(d.get(p + 'cpu_p99_ms'), ' ms')}"
                        + (f"; worker p50/p99 {_fmt(d.get(p + 'worker_p50_ms'), ' ms')} / "
                           f"{_fmt(d.get(p + 'worker_p99_ms'), ' ms')}"
                           if p + "worker_p99_ms" in d else "")
                        + (f"; max changes {_fmt(d.get(p + 'changes_max'))}"
                           if p + "changes_max" in d else ""))
            if block == "events_audit" and not any(k.startswith(f"{block}.{ev}.") for k in lb):
                continue
            lines.append(f"| {ev}{when} | {cell(lb)} | {cell(ovn)} |")
    lines += ["", "Each change is timed from the SB's arrival of the changed row (a monitor of "
              "ours) to lbaffd's `reconciled` line (after its bundle commit and barrier) or "
              "ovn-controller's `nb_cfg_timestamp`; lbaffd's `local_port_added` from the "
              "bench's SB bind + `ovs-vsctl add-port` (and, *from the input's arrival*, from "
              "the local DB's report of the interface's ofport to a monitor of ours), its "
              "`health_flip` from the SB write (and from the Service_Monitor update's "
              "arrival). ovn-controller's `health_flip` includes ovn-northd's "
              "recompute (OVN's health checks act through ovn-northd's logical flows): the "
              "SB write is made while ovn-northd is paused, and the sample runs from the NB "
              "nb_cfg bump written after its resume (which wakes it: one recompute carries "
              "both) to ovn-controller's report of that nb_cfg; its `remote_port_added` "
              "from the bind, written with an `SB_Global.nb_cfg` bump of its own while "
              "ovn-northd is paused, to its report of that nb_cfg; its `local_port_added` "
              "runs until it sets `Port_Binding.up`. *CPU* is the "
              "daemon's CPU time over the sample (periodic audits included); *worker* is "
              "lbaffd's own duration of the passes and input steps the change caused.",
              "", "| target | wanted | measured (median) | met |", "|---|---|---|---|"]
    for t in res.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {t['want']} | {t['measured']} | {met} |")
    for err in res.get("errors", []):
        lines.append(f"\nPhase **{err['phase']}** failed: `{err['error']}`")
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], outdir: Path, stamp: str | None = None) -> Path:
    """``realistic-<stamp>.{json,md}`` + ``realistic-latest.{json,md}`` (a quick
    run: ``tmp-quick-realistic-*``, not kept; a run of some phases only:
    ``realistic-partial-*``, so ``realistic-latest`` stays a whole run)."""
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    partial = "" if res.get("phases", list(PHASES)) == list(PHASES) else "partial-"
    prefix = ("tmp-quick-" if res.get("quick") else "") + "realistic-" + partial
    path = outdir / f"{prefix}{stamp}.json"
    text = json.dumps(res, indent=1, sort_keys=True) + "\n"
    path.write_text(text)
    md = markdown(res)
    path.with_suffix(".md").write_text(md)
    (outdir / f"{prefix}latest.json").write_text(text)
    (outdir / f"{prefix}latest.md").write_text(md)
    return path


# what results files must share to be merged: the same logical content,
# sampled the same way
SAME_FOR_MERGE = ("n", "samples", "sb_direct", "cluster", "churn", "quick")


def merge(files: list[Path]) -> dict[str, Any]:
    """The runs of several results files of the same content as one: e.g.
    two runs of every phase and a third of some (a bench stopped half way,
    or one of the phases that fit).  Medians and spread over all runs, each
    run's samples summarized again (``resummarize``)."""
    parts = [json.loads(f.read_text()) for f in files]
    first = parts[0]
    for f, other in zip(files[1:], parts[1:], strict=True):
        differ = [k for k in SAME_FOR_MERGE if other.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"{f}: not the same content as {files[0]} ({', '.join(differ)})")
    phases = {p for part in parts for p in part.get("phases", PHASES)}
    res = dict(first)
    res.update({
        "command": [part["command"] for part in parts],
        "merged_from": [f.name for f in files],
        "phases": [p for p in PHASES if p in phases],
        "runs_wanted": sum(part["runs_wanted"] for part in parts),
        "runs": [run for part in parts for run in part["runs"]
                 if any(run.get(side) for side in SIDES)],
        "errors": [dict(e, file=f.name) for f, part in zip(files, parts, strict=True)
                   for e in part["errors"]],
    })
    commits = sorted({part["host"]["commit"] for part in parts})
    # runs from hosts of other CPUs are not comparable: the merge says so
    cpus = sorted({part["host"].get("cpu_model", "?") for part in parts})
    res["host"] = dict(first["host"], commit=" + ".join(commits), cpu_model=" + ".join(cpus),
                       loadavg_end=parts[-1]["host"].get("loadavg_end"))
    for run in res["runs"]:
        resummarize(run)
    res["summary"] = summary(res)
    res["targets"] = targets(res)
    return res


def resummarize(run: dict[str, Any]) -> None:
    """Each event type's figures of a run made again from its samples'
    ``rows``: a file written before a figure was added to ``summarize`` has
    it too once merged, and every run is summarized by the same code."""
    from bench.realistic_events import summarize

    for side in SIDES:
        for block in ("events", "events_audit"):
            evs = (run.get(side) or {}).get(block) or {}
            for ev, d in evs.items():
                if isinstance(d, dict) and d.get("rows"):
                    evs[ev] = summarize(d["rows"])


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    if argv is None:
        argv = sys.argv[1:]
    args = parse_args(argv)
    if args.merge:
        merged = merge(args.merge)
        print(markdown(merged))
        print(f"results: {write(merged, args.out)}")
        return 0
    if os.geteuid() != 0:
        print("bench.realistic: needs root (network namespaces, ovs-vswitchd)", file=sys.stderr)
        return 2
    command = ("python -m bench.realistic " + shlex.join(argv)).strip()
    # SIGTERM (a background run has SIGINT ignored): unwind, so that every
    # sandbox is torn down by its context manager
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Runner(args, command).run()


if __name__ == "__main__":
    sys.exit(main())
