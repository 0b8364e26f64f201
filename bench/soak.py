"""``python -m bench.soak``: lbaffd for a long time on a cluster-shaped SB
under a mix of events, its RSS, CPU, open fds and threads sampled
throughout.  The question: does a daemon meant to run for months stay flat?

The SB is the realistic one of ``bench.realistic`` (``bench.cluster``,
seeded; loaded by ``bench.clusterload``): an NB written as a Kubernetes
cluster's (ovn-kubernetes) and the SB the real ovn-northd makes of it, N
services with skewed backends (most 1-3, some 10-50, a few 100+), UDP, IPv6,
two-port, affinity, ``hairpin_snat_ip`` and health-checked ones, ~3.3 N pods
on 50 other chassis and N/20 here, this chassis's switch and gateway router
local.  Beside it real hosts (a client and three backends in namespaces) on
this chassis's switch behind a VIP with a short ``affinity_timeout``, so
entries are learned and expire under real traffic all along.

Events (periods scale with nothing: a shorter run sees fewer of them):
forced full passes (``recompute``) every 10 s (``--recompute-every``; 0: none,
the daemon's own rhythm of steps and audits), audits (``--audit-interval``),
``/metrics`` scrapes every 15 s, an endpoint of a service replaced (NB),
a service replaced by another (NB), Service_Monitor health flips (SB), a
pod started or stopped on another chassis (NB port, SB binding), a pod
plugged or unplugged here (NB port, SB binding, OVS port), new connections
from the client, an ovs-vswitchd restart at 40 % of the run (+15 s) and an SB
ovsdb-server restart (the daemon reconnects; with ``--sb-cluster 3`` the SB
is a Raft cluster and the member the daemon is connected to is stopped
instead) at 60 % (+15 s: between two local port changes).  After the run, an
idle window with no event at all measures what nothing costs.

Output: ``bench/results/soak-<time>.json`` and, with matplotlib (the
``bench`` extra), ``soak-<time>.png``; ``--readme`` also puts the graph and
the figures in README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import clusterload
from bench.common import RUNDIR_PREFIX, BenchDaemon
from bench.run import cpu_model
from lbaffd_sandbox.sandbox import started_sandbox

ROOT = Path(__file__).resolve().parent.parent
OTHER_CHASSIS = 50
SAMPLE_EVERY = 5.0
PERIODS = {  # event -> seconds between two of them
    "recompute": 10.0, "scrape": 15.0, "lb_churn": 2.0, "health_flip": 20.0,
    "remote_port": 5.0, "local_port": 30.0, "traffic": 3.0, "service_replace": 20.0,
}
DISRUPTIONS = (("vswitchd_restart", 0.4), ("sb_reconnect", 0.6))  # at this share of the run
# ... moved half a local port period on: at 0.6 of 1800 s the SB member died in
# the same second as a local port was plugged, whose condition change was still
# in flight, and python-ovs then drops its place in the history (``Idl.
# sync_conditions`` zeroes ``last_id``) and asks for everything: a coincidence
# the fixed schedule made certain, not the reconnect a cluster's failover makes
DISRUPTION_OFFSET = PERIODS["local_port"] / 2
TARGET_SLOPE_PCT_PER_10MIN = 1.0
IDLE_SETTLE = 10.0  # seconds between the last event and the idle window
# seconds after a disruption during which the daemon may hold one socket
# less (the connection it lost) or one thread more (the reconnect)
RECONNECT_GRACE = 15.0
MAX_FAILURES_KEPT = 20  # failed connections recorded with their error


# ------------------------------------------------------------------ sampling


@dataclass
class Sample:
    t: float  # seconds since the soak started
    rss_mb: float
    cpu_s: float  # user + system, cumulative
    fds: int
    threads: int
    peak_mb: float = 0.0  # the highest RSS since the previous sample (VmHWM)
    # RSS's two parts: the heap (Python's arenas, glibc's heap: what the daemon
    # allocates) and the mapped files (the libraries' pages, touched as code
    # runs for the first time); a creep in the second is no leak
    anon_mb: float = 0.0
    file_mb: float = 0.0


def read_sample(pid: int, t0: float, reset_peak: bool = True) -> Sample:
    """One sample; with ``reset_peak`` the process's VmHWM is set back to its
    RSS (``/proc/<pid>/clear_refs`` 5), so the next sample's peak is that of
    the interval between the two."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(after[11]) + int(after[12])) / ticks  # utime, stime (fields 14, 15)
    if reset_peak:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    def mb(name: str) -> float:
        return int(fields[name].split()[0]) / 1024

    return Sample(round(time.monotonic() - t0, 2), mb("VmRSS"),
                  cpu, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]),
                  mb("VmHWM"), mb("RssAnon"), mb("RssFile"))


class Sampler(threading.Thread):
    def __init__(self, pid: Callable[[], int], t0: float, every: float = SAMPLE_EVERY) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self._pid, self._t0, self._every = pid, t0, every
        self.samples: list[Sample] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # (OSError etc.: between two processes, or a racing exit)
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append(read_sample(self._pid(), self._t0))
            self.done.wait(self._every)


# ------------------------------------------------------------------ analysis (pure)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (y per x); 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def rss_steps(samples: list[Sample], events: list[tuple[float, str]], before: float = 60.0,
              settle: float = 60.0, window: float = 60.0, tolerance_mb: float = 3.0,
              tolerance_pct: float = 2.0) -> list[dict[str, Any]]:
    """For each event at time t: RSS median over [t-before, t) against the
    median over [t+settle, t+settle+window); ``came_back`` when the latter
    is within the tolerance (an event may cost memory while it runs, not
    after).  Events too close to the end to judge are marked so."""
    out = []
    end = samples[-1].t if samples else 0.0
    for t, kind in events:
        pre = [s.rss_mb for s in samples if t - before <= s.t < t]
        post = [s.rss_mb for s in samples if t + settle <= s.t < t + settle + window]
        peak = max((s.rss_mb for s in samples if t <= s.t < t + settle), default=0.0)
        if not pre or not post or t + settle + window > end + SAMPLE_EVERY:
            out.append({"event": kind, "t": round(t, 1), "judged": False})
            continue
        b, a = _median(pre), _median(post)
        out.append({"event": kind, "t": round(t, 1), "judged": True,
                    "rss_before_mb": round(b, 1), "rss_peak_mb": round(peak, 1),
                    "rss_after_mb": round(a, 1),
                    "came_back": a <= b + max(tolerance_mb, b * tolerance_pct / 100)})
    return out


def analyse(samples: list[Sample], warmup: float,
            disruptions: list[tuple[float, str]]) -> dict[str, Any]:
    """Slopes and ranges after ``warmup`` seconds (what the targets judge)."""
    steady = [s for s in samples if s.t >= warmup]
    if len(steady) < 2:
        return {"samples_after_warmup": len(steady), "judged": False}
    rss = [(s.t, s.rss_mb) for s in steady]
    mean_rss = sum(r for _, r in rss) / len(rss)
    per_s = slope(rss)
    pct_10min = per_s * 600 / mean_rss * 100
    span = steady[-1].t - steady[0].t
    cpu = (steady[-1].cpu_s - steady[0].cpu_s) / span if span else 0.0
    last_quarter = [s for s in steady if s.t >= steady[0].t + span * 0.75]
    first_quarter = [s for s in steady if s.t < steady[0].t + span * 0.25]
    fds = sorted({s.fds for s in steady})
    threads = sorted({s.threads for s in steady})
    # a scrape, a control command or a reconnect holds a thread or a socket
    # while it runs (a scrape at N=1000 takes seconds: samples often meet one):
    # what must not drift is the baseline, the least seen early against late
    # (and a disruption closes a connection until the daemon is back: samples
    # taken within RECONNECT_GRACE of one do not set the baseline)
    def settled(quarter: list[Sample]) -> list[Sample]:
        kept = [s for s in quarter
                if not any(t <= s.t < t + RECONNECT_GRACE for t, _ in disruptions)]
        return kept or quarter
    early, late = settled(first_quarter), settled(last_quarter)
    fds_early = min(s.fds for s in early)
    fds_late = min(s.fds for s in late)
    threads_early = min(s.threads for s in early)
    threads_late = min(s.threads for s in late)
    steps = rss_steps(samples, disruptions)
    peaks = [s.peak_mb for s in steady if s.peak_mb]
    return {
        "judged": True, "samples_after_warmup": len(steady), "warmup_s": warmup,
        "window_s": round(span, 1),
        "rss_mean_mb": round(mean_rss, 1), "rss_min_mb": round(min(r for _, r in rss), 1),
        "rss_max_mb": round(max(r for _, r in rss), 1),
        # the highest RSS between any two samples (VmHWM, reset at each sample)
        "rss_peak_max_mb": round(max(peaks), 1) if peaks else None,
        "rss_first_quarter_median_mb": round(_median([s.rss_mb for s in first_quarter]), 1),
        "rss_last_quarter_median_mb": round(_median([s.rss_mb for s in last_quarter]), 1),
        # where a difference between the quarters is: heap or mapped files
        "anon_first_last_quarter_median_mb": [
            round(_median([s.anon_mb for s in q]), 1) for q in (first_quarter, last_quarter)],
        "file_first_last_quarter_median_mb": [
            round(_median([s.file_mb for s in q]), 1) for q in (first_quarter, last_quarter)],
        "rss_slope_mb_per_10min": round(per_s * 600, 3),
        "rss_slope_pct_per_10min": round(pct_10min, 3),
        "cpu_mean_cores": round(cpu, 4),
        "fds_seen": fds, "threads_seen": threads,
        "fds_early_late": [fds_early, fds_late],
        "threads_early_late": [threads_early, threads_late],
        "steps": steps,
        "targets": {
            "rss_slope_lt_1pct_per_10min": pct_10min < TARGET_SLOPE_PCT_PER_10MIN,
            "fds_constant": fds_early == fds_late,
            "threads_constant": threads_early == threads_late,
            "every_step_came_back": all(s.get("came_back", True) for s in steps),
        },
    }


# ------------------------------------------------------------------ the run


class Soak:
    """The events of the soak, each one change (see ``bench.clusterload``)."""

    def __init__(self, load: clusterload.ClusterLoad, daemon: BenchDaemon) -> None:
        self.load, self.sb, self.daemon = load, load.sb, daemon
        self.counts: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.events: list[tuple[float, str]] = []
        self.traffic = {"ok": 0, "failed": 0}
        self.traffic_failures: list[dict[str, Any]] = []  # the first ones, with why
        self.at = 0.0  # seconds into the soak of the event being done
        self.stopped_members: list[int] = []  # clustered SB: whom sb_reconnect stopped

    def do(self, kind: str, t: float) -> None:
        try:
            self.at = t
            getattr(self, f"_{kind}")()
            self.counts[kind] = self.counts.get(kind, 0) + 1
        except Exception as exc:  # recorded: a stuck event must not stop the soak
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if self.failures[kind] <= 3:
                print(f"  {kind} failed at {t:.0f}s: {str(exc)[:200]}", flush=True)
        if kind in dict(DISRUPTIONS):
            self.events.append((t, kind))

    def _recompute(self) -> None:
        self.daemon.ctl_text("recompute")

    def _scrape(self) -> None:
        self.daemon.scrape(timeout=60)

    def _lb_churn(self) -> None:
        self.load.lb_churn()

    def _service_replace(self) -> None:
        self.load.service_replace()

    def _health_flip(self) -> None:
        self.load.health_flip()

    def _remote_port(self) -> None:
        self.load.remote_port()

    def _local_port(self) -> None:
        self.load.local_port()

    def _traffic(self) -> None:
        for r in self.load.traffic():
            self.traffic["ok" if r.ok else "failed"] += 1
            if not r.ok and len(self.traffic_failures) < MAX_FAILURES_KEPT:
                self.traffic_failures.append({"t": round(self.at, 1), "src": r.src,
                                              "error": r.error[:200]})

    def _vswitchd_restart(self) -> None:
        self.sb.restart_vswitchd()

    def _sb_reconnect(self) -> None:
        """Standalone SB: its ovsdb-server restarted (no transaction history
        survives: the IDL takes the whole local SB again).  Clustered SB: the
        member the daemon is connected to killed for as long, then started
        again; the daemon reconnects to another member, as it would in
        production (``monitor_cond_since`` there has the history)."""
        if not self.sb.sb_cluster:
            self.sb.restart_ovsdb("sb", down_for=2.0)
            return
        member = self.sb.sb_member_of(self.daemon.pid)
        if member is None:
            raise RuntimeError("the daemon holds no connection to an SB member")
        self.sb.stop_sb_member(member)
        self.stopped_members.append(member)
        time.sleep(2.0)
        self.sb.start_sb_member(member)


def idle_window(daemon: BenchDaemon, seconds: float, t0: float) -> dict[str, Any]:
    """No SB change, no switch change, no scrape: what the daemon spends,
    and what each audit costs (its ``in_sync``/``reconciled`` lines)."""
    time.sleep(IDLE_SETTLE)  # the last events' passes end first
    since = time.time()
    a = read_sample(daemon.pid, t0)
    time.sleep(seconds)
    b = read_sample(daemon.pid, t0)
    logged = daemon.events()
    passes = [e for e in logged if e.get("event") in ("in_sync", "reconciled")
              and _ts(e) >= since]
    # what the daemon was doing meanwhile (a window with no audit is suspect)
    during = [{"event": e.get("event"), "t": round(_ts(e) - since, 1),
               **{k: v for k, v in e.items() if k.endswith("ms") or k == "audit"}}
              for e in logged if _ts(e) >= since - IDLE_SETTLE][-12:]
    audits = [e for e in passes if e.get("audit")]
    recompiled = [e for e in passes if "compile_ms" in e]
    cpu = b.cpu_s - a.cpu_s
    return {
        "seconds": round(b.t - a.t, 1), "cpu_s": round(cpu, 3),
        "cpu_s_per_hour_extrapolated": round(cpu * 3600 / (b.t - a.t), 1),
        "passes": len(passes), "audits": len(audits), "recompiles": len(recompiled),
        "audit_ms": [e.get("ms") for e in audits],
        "cpu_s_per_audit": round(cpu / len(audits), 3) if audits else None,
        "rss_mb": round(b.rss_mb, 1), "log_tail": during,
        "pass_log": [{k: v for k, v in e.items() if k.endswith("ms") or k in (
            "event", "audit", "changes", "flows", "timestamp")} for e in passes],
    }


def _ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def pass_costs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Full passes (``compile_ms`` present) and audits from the daemon's log."""
    passes = [e for e in events if e.get("event") in ("in_sync", "reconciled")]
    full = [float(e["ms"]) for e in passes if "compile_ms" in e]
    audits = [float(e["ms"]) for e in passes if e.get("audit") and "compile_ms" not in e]
    inc = [float(e["ms"]) for e in passes if not e.get("audit")]

    def summary(v: list[float]) -> dict[str, float | int]:
        return {"count": len(v), "p50_ms": round(_median(v), 1),
                "max_ms": round(max(v), 1) if v else 0.0}

    causes: dict[str, int] = {}
    for e in events:
        if e.get("event") == "full_pass_needed":
            what = f"{e.get('reason')} sb={e.get('sb', '')} local={e.get('local', '')}"
            causes[what] = causes.get(what, 0) + 1
    return {"full": summary(full), "audit_without_recompile": summary(audits),
            "incremental": summary(inc), "full_pass_causes": causes}


def soak(n: int, duration: float, warmup: float, idle: float, seed: int,
         audit_interval: float, nodes: int = OTHER_CHASSIS, sb_cluster: int = 0,
         recompute_every: float = PERIODS["recompute"]) -> dict[str, Any]:
    periods = {**PERIODS, "recompute": recompute_every}
    if recompute_every <= 0:
        del periods["recompute"]
    with started_sandbox(f"{RUNDIR_PREFIX}soak-", nb=True, sb_cluster=sb_cluster,
                         prefix="lbs" + secrets.token_hex(2)) as sb:
        t_gen = time.monotonic()
        load = clusterload.load(sb, n, seed, nodes)
        stats = load.c.stats()
        gen_s = time.monotonic() - t_gen
        print(f"SB (bench.cluster, seed {seed}): {n} services, {stats['vips']} VIPs, "
              f"{stats['backend_slots']} backend slots, {len(load.monitors)} Service_Monitors, "
              f"{stats['remote_pods']} remote pods on {nodes} chassis, "
              f"{len(load.c.local_pods) - len(load.local_spare)} local pods plugged "
              f"({gen_s:.1f} s)", flush=True)
        daemon = BenchDaemon(sb, "--audit-interval", str(audit_interval), "--log-level", "debug")
        t_start = time.monotonic()
        daemon.start(wait_sync=True, timeout=600)
        first_sync_s = time.monotonic() - t_start
        t0 = time.monotonic()
        sampler = Sampler(lambda: daemon.pid, t0)
        sampler.start()
        s = Soak(load, daemon)
        due = {k: t0 + p for k, p in periods.items()}
        offset = min(DISRUPTION_OFFSET, duration / 20)  # (a short smoke run: a little)
        disruptions = [(t0 + duration * share + offset, kind) for kind, share in DISRUPTIONS]
        next_report = t0 + 60
        try:
            while (now := time.monotonic()) < t0 + duration:
                for kind, at in list(due.items()):
                    if now >= at:
                        s.do(kind, now - t0)
                        due[kind] = max(at + periods[kind], time.monotonic())
                for at, kind in list(disruptions):
                    if now >= at:
                        disruptions.remove((at, kind))
                        print(f"  {now - t0:.0f}s: {kind}", flush=True)
                        s.do(kind, now - t0)
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise RuntimeError(f"lbaffd exited: {daemon.tail()}")
                if now >= next_report and sampler.samples:
                    last = sampler.samples[-1]
                    print(f"  {last.t:.0f}s: RSS {last.rss_mb:.1f} MB, CPU {last.cpu_s:.1f} s, "
                          f"fds {last.fds}, threads {last.threads}", flush=True)
                    next_report = now + 60
                time.sleep(0.05)
            soak_samples = list(sampler.samples)
            quiet = idle_window(daemon, idle, t0) if idle else None
        finally:
            sampler.done.set()
            sampler.join()
        events = daemon.events()
        result = {
            "n": n, "vips": stats["vips"], "backend_slots": stats["backend_slots"],
            "service_monitors": len(load.monitors),
            "local_pods": len(load.c.local_pods) - len(load.local_spare),
            "remote_pods": stats["remote_pods"], "other_chassis": nodes, "cluster": stats,
            "sb": "bench.cluster (NB + ovn-northd)" + (
                f", SB a {sb_cluster}-server Raft cluster" if sb_cluster else ""),
            "sb_cluster": sb_cluster, "sb_members_stopped": s.stopped_members,
            "duration_s": duration, "audit_interval_s": audit_interval, "seed": seed,
            "first_sync_s": round(first_sync_s, 2),
            "event_counts": s.counts, "event_failures": s.failures, "traffic": s.traffic,
            "traffic_failures": s.traffic_failures,
            "disruptions": [{"t": round(t, 1), "event": k} for t, k in s.events],
            "analysis": analyse(soak_samples, warmup, s.events),
            "idle": quiet,
            "passes": pass_costs(events),
            "reconcile_failed": sum(1 for e in events if e.get("event") == "reconcile_failed"),
            "samples": [vars(x) for x in sampler.samples],
            "period_s": periods,
        }
        daemon.stop(timeout=30)
        return result


def plot(result: dict[str, Any], path: Path) -> bool:
    """RSS and CPU over the soak; False when matplotlib is not installed
    (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    rss = [s["rss_mb"] for s in samples]
    cpu = [0.0] + [(b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9) * 100
                   for a, b in itertools.pairwise(samples)]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    peak = [s.get("peak_mb") or s["rss_mb"] for s in samples]
    ax1.plot(t, peak, color="tab:blue", linewidth=0.6, alpha=0.35, label="peak between samples")
    ax1.plot(t, rss, color="tab:blue", linewidth=1, label="RSS")
    ax1.legend(loc="lower right", fontsize=7)
    ax1.set_ylabel("RSS (MB)")
    ax1.set_ylim(0, max(peak) * 1.15)
    ax2.plot(t, cpu, color="tab:red", linewidth=0.8)
    ax2.set_ylabel("CPU (% of a core)")
    ax2.set_xlabel("minutes")
    for d in result["disruptions"]:
        for ax in (ax1, ax2):
            ax.axvline(d["t"] / 60, color="gray", linestyle="--", linewidth=0.8)
        ax1.annotate(d["event"].replace("_", " "), (d["t"] / 60, max(rss) * 1.02), fontsize=7)
    warm = result["analysis"].get("warmup_s", 0) / 60
    ax1.axvspan(0, warm, color="0.9")
    if result.get("idle") and t:  # no event at all from the end of the soak on
        for ax in (ax1, ax2):
            ax.axvspan(result["duration_s"] / 60, t[-1], color="#e3f2e3")
        ax2.annotate("idle", (result["duration_s"] / 60, max(cpu) * 0.9 if cpu else 0),
                     fontsize=7)
    a = result["analysis"]
    ax1.set_title(f"lbaffd soak, N={result['n']} ({result['vips']} VIPs): RSS slope "
                  f"{a.get('rss_slope_pct_per_10min', 0):+.2f} %/10 min after warm-up",
                  fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def render(result: dict[str, Any], png: str | None) -> str:
    """The README section (markdown) for one soak result."""
    a, idle = result["analysis"], result["idle"]
    label = "" if result["duration_s"] >= 1800 else (
        f" — **a shorter run ({result['duration_s'] / 60:.0f} min), not the 30-minute default**")
    lines = [f"Run {result['when']} on {result['cpus']} CPUs ({result.get('cpu_model', '?')}; "
             f"load average {result['load']}), "
             f"lbaffd at {result['commit']}{label}: {result.get('sb', 'soak generator')} "
             f"SB, seed {result['seed']}: N={result['n']} services, {result['vips']} "
             f"VIPs, {result['backend_slots']} backend slots, {result['service_monitors']} "
             f"Service_Monitors, {result['remote_pods']} pods on {result['other_chassis']} other "
             f"chassis, {result['local_pods']} local pods.", ""]
    if png:
        lines += [f"![RSS and CPU over the soak]({png})", ""]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["event_counts"].items()))
    failures = result.get("traffic_failures") or []
    why = "; ".join(f"{f['error'] or 'no error text'} at {f['t']:.0f} s" for f in failures[:5])
    lines += [f"Events: {counts or 'none'}; traffic {result['traffic']['ok']} connections ok, "
              f"{result['traffic']['failed']} failed" + (f" ({why})" if why else "") + ".", "",
              "| measure | wanted | measured |", "|---|---|---|"]
    if a.get("judged"):
        lines += _soak_rows(result)
    if idle:
        lines.append(f"| audit, nothing changed | read + compare, no recompile | "
                     f"{idle['audits']} audits, {idle['recompiles']} recompiles; "
                     f"{idle['cpu_s_per_audit']} CPU s per audit; audit_ms "
                     f"{idle['audit_ms']} |")
        lines.append(f"| idle CPU | ~0 between audits | {idle['cpu_s']} CPU s in "
                     f"{idle['seconds']:.0f} s with audits every {result['audit_interval_s']:.0f} "
                     f"s, i.e. {idle['cpu_s_per_hour_extrapolated']} CPU s per idle hour "
                     "(extrapolated) |")
    return "\n".join(lines)


def _parts(a: dict[str, Any]) -> str:
    """The first and last quarters' heap and mapped files (runs that sampled them)."""
    anon = a.get("anon_first_last_quarter_median_mb")
    files = a.get("file_first_last_quarter_median_mb")
    if not anon or not files or not anon[0]:
        return ""
    return f": heap {anon[0]} / {anon[1]}, mapped files {files[0]} / {files[1]} MB"


def _soak_rows(result: dict[str, Any]) -> list[str]:
    a, p = result["analysis"], result["passes"]
    lines = [f"| RSS slope after {a['warmup_s']:.0f} s warm-up | < 1 % per 10 min | "
              f"{a['rss_slope_pct_per_10min']:+.2f} % per 10 min "
              f"({a['rss_slope_mb_per_10min']:+.2f} MB; mean {a['rss_mean_mb']} MB, first/last "
              f"quarter {a['rss_first_quarter_median_mb']} / {a['rss_last_quarter_median_mb']} "
              f"MB{_parts(a)}) |",
              *([f"| peak RSS after warm-up | <= 150 MB (issue 17) | {a['rss_peak_max_mb']} MB "
                 "(the highest VmHWM between two samples) |"] if a.get("rss_peak_max_mb")
                else []),
              f"| open fds | constant | {a['fds_early_late'][0]:.0f} early, "
              f"{a['fds_early_late'][1]:.0f} late (least seen in the first and last quarter; "
              f"seen {a['fds_seen']}) |",
              f"| threads | constant | {a['threads_early_late'][0]:.0f} early, "
              f"{a['threads_early_late'][1]:.0f} late (seen {a['threads_seen']}: a scrape "
              "runs on a thread of its own) |"]
    for st in a["steps"]:
        if st.get("judged"):
            lines.append(f"| RSS around {st['event'].replace('_', ' ')} | back after it | "
                         f"{st['rss_before_mb']} -> peak {st['rss_peak_mb']} -> "
                         f"{st['rss_after_mb']} MB (came back: {st['came_back']}) |")
    lines.append(f"| CPU over the soak | — | {a['cpu_mean_cores'] * 100:.0f} % of a core |")
    lines.append(f"| full passes | — | {p['full']['count']}, p50 {p['full']['p50_ms']:.0f} ms |")
    lines.append(f"| audits | no recompile of their own | "
                 f"{p['audit_without_recompile']['count']} without one, p50 "
                 f"{p['audit_without_recompile']['p50_ms']:.0f} ms (an audit that meets a "
                 "change of another table is that change's full pass) |")
    return lines


def readme_section(text: str, readme: Path = ROOT / "README.md") -> None:
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    content = readme.read_text()
    if begin not in content:
        raise SystemExit("README.md has no soak markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, timeout=10).stdout.strip() or "?"
    except OSError:
        return "?"


def _render_saved(path: Path, readme: bool) -> int:
    result = json.loads(path.read_text())
    if result["analysis"].get("judged"):  # judged again, by this version's analysis
        soaked = [Sample(**x) for x in result["samples"] if x["t"] <= result["duration_s"]]
        result["analysis"] = analyse(soaked, result["analysis"]["warmup_s"],
                                     [(d["t"], d["event"]) for d in result["disruptions"]])
    png = path.with_suffix(".png")
    if readme:
        shown = ROOT / "bench" / "results" / "soak-latest.png"
        have = png.exists() or plot(result, png)
        if have:
            shutil.copyfile(png, shown)
        readme_section(render(result, "bench/results/soak-latest.png" if have else None))
    print(render(result, str(png) if png.exists() else None))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="services (default 1000)")
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds not judged (default: 1/6 of the run, at most 300)")
    p.add_argument("--idle", type=float, default=300.0,
                   help="seconds of no events after the soak (default 300: CPU per idle "
                        "hour is extrapolated from it; 0: none)")
    p.add_argument("--audit-interval", type=float, default=30.0)
    p.add_argument("--recompute-every", type=float, default=PERIODS["recompute"],
                   metavar="SECONDS",
                   help=f"a forced full pass this often (default {PERIODS['recompute']:.0f}, "
                        "the issue's; 0: none, only the steps and audits a daemon runs on "
                        "its own, where anything kept until the next full pass would pile up)")
    p.add_argument("--seed", type=int, default=17, help="bench.cluster's seed (default 17, "
                   "as bench.realistic)")
    p.add_argument("--nodes", type=int, default=OTHER_CHASSIS,
                   help=f"other chassis (default {OTHER_CHASSIS})")
    p.add_argument("--sb-cluster", type=int, default=0, metavar="SERVERS",
                   help="the SB as a Raft cluster of this many servers (default 0: one "
                        "standalone ovsdb-server); its sb_reconnect then stops the member "
                        "the daemon is connected to")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--readme", action="store_true", help="put graph and figures in README.md")
    p.add_argument("--render", type=Path, metavar="SOAK_JSON",
                   help="measure nothing: print (with --readme: put in README.md) an earlier "
                        "result, its PNG beside it")
    args = p.parse_args(argv)
    if args.render:
        return _render_saved(args.render, args.readme)
    if os.geteuid() != 0:
        print("bench.soak needs root (network namespaces, ovs-vswitchd)", file=sys.stderr)
        return 1
    warmup = args.warmup if args.warmup is not None else min(300.0, args.duration / 6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = _commit()  # what runs (the tree may move on during 30 minutes)
    result = soak(args.n, args.duration, warmup, args.idle, args.seed, args.audit_interval,
                  args.nodes, args.sb_cluster, args.recompute_every)
    result.update(when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), cpus=os.cpu_count(),
                  cpu_model=cpu_model(), load=load, commit=commit)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    png = args.out / f"soak-{stamp}.png"
    have_png = plot(result, png)
    print(render(result, str(png.relative_to(ROOT)) if have_png and png.is_relative_to(ROOT)
                 else None))
    print(f"\nresults: {out}" + (f", graph: {png}" if have_png else " (no graph: matplotlib "
                                                              "not installed)"))
    if args.readme:
        readme_png = ROOT / "bench" / "results" / "soak-latest.png"
        if have_png:
            shutil.copyfile(png, readme_png)
        readme_section(render(result, "bench/results/soak-latest.png" if have_png else None))
    targets = result["analysis"].get("targets", {})
    return 0 if targets and all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
