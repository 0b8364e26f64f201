"""Cold convergence: lbaffd running in sync on an SB without load balancers;
one SB transaction adds N LBs; how long until all of lbaffd's flows and groups
are on the switch (the pass's barrier), what it sent, and its peak RSS.

Then the channel's limit for the very same state: lbaffd's flows and groups
dumped from br-int and loaded into a fresh bridge of the same ovs-vswitchd
with ``ovs-ofctl -O OpenFlow15 --bundle add-groups`` + ``add-flows``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchDaemon,
    PhaseTimeout,
    SbTopology,
    count_groups,
    count_lbaffd_flows,
    event_time,
    lb_specs,
    wait_for,
)
from lbaffd_sandbox.sandbox import Sandbox

LBAFFD_FLOWS = "cookie=0x1baf000000000000/0xffff000000000000"


def converged_event(daemon: BenchDaemon, n: int, since: float) -> dict[str, Any] | None:
    """The first pass after ``since`` (unix time) that left N groups installed."""
    for ev in daemon.events_named("reconciled"):
        if ev.get("groups") == n and float(ev.get("sb_read_at", 0)) >= since:
            return ev
    return None


def lbaffd_cold(sb: Sandbox, topo: SbTopology, daemon: BenchDaemon, n: int,
                timeout: float) -> dict[str, Any]:
    """The daemon is running and in sync on an SB without LBs."""
    before = daemon.counters()
    specs = lb_specs(n)
    t_send = time.time()
    uuids = sb.add_load_balancers(specs, [topo.ls, topo.lr])
    t_commit = time.time()
    ev = wait_for(lambda: converged_event(daemon, n, t_send - 1.0), timeout,
                  f"lbaffd cold convergence at N={n}", step=0.05)
    done = event_time(ev)
    rss_peak = daemon.peak_rss_mb()  # before any scrape: the daemon's own work
    flows, groups = count_lbaffd_flows(sb), count_groups(sb)
    if groups != n or flows != ev["flows"]:
        raise AssertionError(f"N={n}: switch has {flows} lbaffd flows / {groups} groups, the "
                             f"pass reported {ev['flows']} / {ev['groups']}")
    sent = daemon.counters().minus(before)
    return {
        "n": n, "commit_s": round(t_commit - t_send, 3),
        "converge_s": round(done - t_commit, 3),
        "sb_to_read_s": round(float(ev["sb_read_at"]) - t_commit, 3),
        "pass_ms": ev["ms"], "flows": flows, "groups": groups,
        "pass_phases_ms": {k[:-3]: v for k, v in ev.items()
                           if k.endswith("_ms") and k[:-3] in ("inputs", "read", "compile",
                                                               "commit", "barrier")},
        "changes": ev["changes"], "sent": sent.as_dict(),
        "rss_peak_mb": round(rss_peak, 1),
        "rss_peak_after_scrape_mb": round(daemon.peak_rss_mb(), 1),
        "uuids": uuids,  # for the phases that follow on this state (not reported)
    }


def _ofctl(sb: Sandbox, *args: str, timeout: float) -> tuple[str, float]:
    start = time.monotonic()
    try:
        res = subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", *args], capture_output=True,
                             text=True, env=sb.env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PhaseTimeout(f"ovs-ofctl {args[0]} {args[1]}: not within {timeout:.0f}s") from None
    took = time.monotonic() - start
    if res.returncode != 0:
        raise RuntimeError(f"ovs-ofctl {' '.join(args[:3])} failed: {res.stderr.strip()[:500]}")
    return res.stdout, took


def dump_state(sb: Sandbox, target: str, workdir: Path) -> tuple[Path, Path, int, int]:
    """lbaffd's flows (by cookie) and every group of ``target``, in the text
    format ``add-flows`` / ``add-groups`` read back."""
    flows_out, _ = _ofctl(sb, "--no-stats", "dump-flows", target, LBAFFD_FLOWS, timeout=120)
    groups_out, _ = _ofctl(sb, "dump-groups", target, timeout=120)
    flows = [line.strip() for line in flows_out.splitlines() if "actions=" in line]
    groups = [line.strip() for line in groups_out.splitlines() if "group_id=" in line]
    workdir.mkdir(parents=True, exist_ok=True)
    fpath, gpath = workdir / "flows.txt", workdir / "groups.txt"
    fpath.write_text("\n".join(flows) + "\n")
    gpath.write_text("\n".join(groups) + "\n")
    return fpath, gpath, len(flows), len(groups)


def raw_ofctl(sb: Sandbox, n: int, timeout: float) -> dict[str, Any]:
    """Load lbaffd's installed state into a fresh bridge with ovs-ofctl bundles."""
    work = sb.rundir / f"raw-{n}"
    fpath, gpath, nflows, ngroups = dump_state(sb, f"unix:{sb.mgmt_socket}", work)
    bridge = f"br-raw{n}"
    target = sb.add_bridge(bridge)
    try:
        _, t_groups = _ofctl(sb, "--bundle", "add-groups", target, str(gpath), timeout=timeout)
        _, t_flows = _ofctl(sb, "--bundle", "add-flows", target, str(fpath), timeout=timeout)
        got_flows = sum(1 for line in _ofctl(sb, "--no-stats", "dump-flows", target,
                                             timeout=120)[0].splitlines() if "actions=" in line)
        got_groups = count_groups(sb, target)
        if (got_flows, got_groups) != (nflows, ngroups):
            raise AssertionError(f"raw load at N={n}: fresh bridge has {got_flows} flows / "
                                 f"{got_groups} groups, expected {nflows} / {ngroups}")
        same = _same_state(sb, target, work)
    finally:
        sb.vsctl("del-br", bridge)
    return {"n": n, "flows": nflows, "groups": ngroups,
            "add_groups_s": round(t_groups, 3), "add_flows_s": round(t_flows, 3),
            "total_s": round(t_groups + t_flows, 3), "identical_dump": same}


def _same_state(sb: Sandbox, target: str, work: Path) -> bool:
    """The fresh bridge dumps exactly what br-int dumps (the round trip lost
    nothing: learn actions, ct/nat, selection methods, flags)."""
    fpath, gpath, _, _ = dump_state(sb, target, work / "check")
    a = sorted((work / "flows.txt").read_text().splitlines())
    b = sorted(fpath.read_text().splitlines())
    ga = sorted((work / "groups.txt").read_text().splitlines())
    gb = sorted(gpath.read_text().splitlines())
    return a == b and ga == gb
