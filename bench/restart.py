"""Restart: SIGTERM the daemon (flows stay on the switch) at N LBs and start
it again.  Time from the new process's start to "in sync" (its
``initial_sync_done``: the first pass, switch read back and diffed, ended), and
what that pass sent: the target is no flow or group mod at all."""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchDaemon, count_groups, count_lbaffd_flows, event_time, wait_for
from lbaffd_sandbox.sandbox import Sandbox


def _state(sb: Sandbox) -> list[str]:
    """lbaffd's flows and groups as the switch has them (no stats)."""
    flows = sb.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    return flows + sb.dump_groups()


def restart(sb: Sandbox, daemon: BenchDaemon, timeout: float) -> dict[str, Any]:
    """``daemon`` runs again (a new process, its next log file) afterwards."""
    state_before = _state(sb)
    stop_s = daemon.stop(timeout=timeout)
    t_start = time.time()
    daemon.start(wait_sync=False)
    ev = wait_for(lambda: next(iter(daemon.events_named("initial_sync_done")), None), timeout,
                  "lbaffd to be in sync after a restart", step=0.02)
    in_sync_s = event_time(ev) - t_start
    rss_peak = daemon.peak_rss_mb()
    # where the start went (debug lines, when the daemon logs them): the
    # process up, the SB synced, the first pass's phases, the switch's dumps
    seen = {("sb_synced" if e.get("db") == "OVN_Southbound" else e.get("event")): e
            for e in reversed(daemon.events())}  # (the first of each)
    steps = {name: round(event_time(seen[name]) - t_start, 3)
             for name in ("openflow_connected", "sb_synced", "prefetched") if name in seen}
    first = next((e for e in daemon.events() if e.get("event") in ("in_sync", "reconciled")),
                 {})
    phases = {k[:-3]: v for k, v in first.items() if k.endswith("_ms") and k != "ms"}
    dumps = {k: v for k, v in seen.get("prefetched", {}).items() if k.endswith("_ms")}
    sent = daemon.counters()  # a new process: its counters start at zero
    same = _state(sb) == state_before
    return {
        "n": count_groups(sb), "stop_s": round(stop_s, 3), "in_sync_s": round(in_sync_s, 3),
        "first_pass_ms": ev["ms"], "first_pass_changes": ev["changes"],
        "flow_mods": sent.flow_mods, "group_mods": sent.group_mods, "of_writes": sent.writes,
        "flows": count_lbaffd_flows(sb), "switch_unchanged": same,
        "rss_peak_mb": round(rss_peak, 1), "sent": sent.as_dict(),
        "steps_s": steps, "first_pass_phases_ms": phases, "prefetch_ms": dumps,
    }
