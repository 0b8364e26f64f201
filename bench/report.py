"""Targets, JSON files and the markdown table (printed, in latest.md and,
for a full run, in README.md between the benchmark markers)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: what it asks, what was measured, met or not
    (None: not measured in this run)."""
    sizes = sorted(int(n) for n in res.get("cold", {}))
    top = str(sizes[-1]) if sizes else ""
    cold = _get(res, "cold", top) or {}
    lb, raw, ovn = cold.get("lbaffd"), cold.get("raw"), cold.get("ovn_controller")
    inc, rst, dp = res.get("incremental"), res.get("restart"), res.get("dataplane")
    out: list[dict[str, Any]] = []

    def add(name: str, want: str, got: str | None, met: bool | None) -> None:
        out.append({"target": name, "want": want, "measured": got or "not measured",
                    "met": met})

    if lb and ovn:
        ratio = lb["converge_s"] / ovn["ovn_controller_s"]
        add(f"cold N={top} vs ovn-controller", "<= 1/3 of ovn-controller",
            f"{lb['converge_s']:.2f} s vs {ovn['ovn_controller_s']:.2f} s ({ratio:.2f}x)",
            ratio <= 1 / 3)
    else:
        add(f"cold N={top} vs ovn-controller", "<= 1/3 of ovn-controller", None, None)
    if lb and raw:
        ratio = lb["converge_s"] / raw["total_s"]
        add(f"cold N={top} vs raw ovs-ofctl --bundle", "<= 1.5x raw",
            f"{lb['converge_s']:.2f} s vs {raw['total_s']:.2f} s ({ratio:.1f}x)", ratio <= 1.5)
    else:
        add(f"cold N={top} vs raw ovs-ofctl --bundle", "<= 1.5x raw", None, None)
    if inc:
        add(f"one-LB change p50, N={inc['n']}", "<= 10 ms", f"{inc['p50_ms']:.1f} ms",
            inc["p50_ms"] <= 10)
        add(f"one-LB change p99, N={inc['n']}", "<= 50 ms", f"{inc['p99_ms']:.1f} ms",
            inc["p99_ms"] <= 50)
        bound = inc.get("o_change_bound")
        add("OpenFlow messages per change", f"O(change): <= {bound} (2 x one LB's entries)",
            f"{inc['of_messages_per_change']:.1f} messages ({inc['of_writes_per_change']:.1f} "
            f"flow/group mods)", bound is not None and inc["of_writes_per_change"] <= bound)
    else:
        add("one-LB change p50 / p99", "<= 10 ms / <= 50 ms", None, None)
    if rst:
        add(f"restart N={rst['n']}: flow mods sent", "0",
            f"{rst['of_writes']} (in sync after {rst['in_sync_s']:.2f} s)",
            rst["of_writes"] == 0)
    else:
        add("restart: flow mods sent", "0", None, None)
    if lb:
        add(f"peak RSS N={top}", "<= 150 MB", f"{lb['rss_peak_mb']:.0f} MB",
            lb["rss_peak_mb"] <= 150)
    if dp:
        add("dataplane: affinity vs none", ">= 90 %",
            f"{dp['affinity_ratio'] * 100:.0f} % ({dp['affinity']['conn_per_s']:.0f} vs "
            f"{dp['no_affinity']['conn_per_s']:.0f} conn/s)", dp["affinity_ratio"] >= 0.9)
    else:
        add("dataplane: affinity vs none", ">= 90 %", None, None)
    return out


def o_change_bound(cold_top: dict[str, Any]) -> int:
    """Twice the flows + groups one LB owns (delete + add of all of it)."""
    lb = cold_top["lbaffd"]
    return 2 * math.ceil(int(lb["flows"] + lb["groups"]) / int(lb["n"]))


def _s(v: Any, unit: str = " s", digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def _scraped(lb: dict[str, Any]) -> str:
    """The peak once a /metrics scrape has read the switch's counters too."""
    after = lb.get("rss_peak_after_scrape_mb")
    return f" ({after:.0f} after a scrape)" if after else ""


def markdown(res: dict[str, Any]) -> str:
    load = f"load average {res['host']['loadavg_start']} at start"
    if res["host"].get("loadavg_end"):
        load += f", {res['host']['loadavg_end']} at end"
    cpu = res["host"].get("cpu_model", "?")
    lines = [f"Run {res['started']} on {res['host']['cpus']} CPUs ({cpu}; {load}), OVS "
             f"{res['host']['ovs_version']}, OVN {res['host']['ovn_version']}, lbaffd at "
             f"{res['host']['commit']}{' (quick)' if res.get('quick') else ''}:", "",
             "**Cold convergence** (N LBs x 5 backends, affinity on, one switch + one router; "
             "one SB/NB transaction):", "",
             "| N | lbaffd: SB commit -> barrier | raw `ovs-ofctl --bundle` (groups + flows) "
             "| ovn-controller: SB -> barrier | ovn-northd: NB -> SB | lbaffd flows / groups "
             "| lbaffd flow+group mods | ovn-controller flows / groups | peak RSS lbaffd "
             "| peak RSS ovn-controller |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(res.get("cold", {}), key=int):
        c = res["cold"][n]
        lb, raw, ovn = c.get("lbaffd") or {}, c.get("raw") or {}, c.get("ovn_controller") or {}
        sent = lb.get("sent", {})
        raw_txt = (f"{raw['total_s']:.2f} s ({raw['add_groups_s']:.2f} + "
                   f"{raw['add_flows_s']:.2f})" if raw else "-")
        lines.append(
            f"| {n} | {_s(lb.get('converge_s'))} | {raw_txt} "
            f"| {_s(ovn.get('ovn_controller_s'))} | {_s(ovn.get('northd_s'))} "
            f"| {lb.get('flows', '-')} / {lb.get('groups', '-')} "
            f"| {sent.get('writes', '-')} "
            f"| {ovn.get('flows', '-')} / {ovn.get('groups', '-')} "
            f"| {_s(lb.get('rss_peak_mb'), ' MB', 0)}{_scraped(lb)} "
            f"| {_s(ovn.get('ovn_controller_rss_peak_mb'), ' MB', 0)} |")
    inc, rst, dp = res.get("incremental"), res.get("restart"), res.get("dataplane")
    lines += ["", "**Incremental, restart, dataplane:**", "", "| measure | result |",
              "|---|---|"]
    if inc:
        lines.append(
            f"| one backend added to one LB, N={inc['n']}, {inc['reps']} reps "
            f"| p50 {inc['p50_ms']:.0f} ms, p99 {inc['p99_ms']:.0f} ms (min {inc['min_ms']:.0f},"
            f" max {inc['max_ms']:.0f}); medians: {inc['p50_wait_ms']:.0f} ms until the "
            f"worker reads the SB ({inc['reps_waiting_over_1s']} of them waited > 1 s behind "
            f"another pass; {inc['passes']} passes for {inc['reps']} changes), "
            f"{inc['p50_read_parse_ms']:.0f} ms SB read + parse, {inc['p50_reconcile_ms']:.0f} ms "
            f"reconcile; per change {inc['of_writes_per_change']:.1f} flow/group mods, "
            f"{inc['of_messages_per_change']:.1f} OpenFlow messages with bundle open/commit + "
            f"barrier |")
    if rst:
        lines.append(
            f"| restart (SIGTERM, start) at N={rst['n']} | in sync {rst['in_sync_s']:.2f} s "
            f"after start (first pass {rst['first_pass_ms'] / 1000:.2f} s); {rst['of_writes']} "
            f"flow/group mods sent; switch unchanged: {rst['switch_unchanged']}; "
            f"exit took {rst['stop_s']:.2f} s; peak RSS {rst['rss_peak_mb']:.0f} MB |")
    if dp:
        a, p = dp["affinity"], dp["no_affinity"]
        lines.append(
            f"| new TCP connections/s ({dp['workers']} clients in parallel, "
            f"{dp['rate_connections']} per run, median of {dp['runs']}) | with affinity "
            f"{a['conn_per_s']:.0f}/s, without {p['conn_per_s']:.0f}/s "
            f"({dp['affinity_ratio'] * 100:.0f} %) |")
        lines.append(
            f"| datapath flows after {dp['connections']} connections from {dp['clients']} "
            f"clients | with affinity {a['first_1000']['datapath_flows']}, without "
            f"{p['first_1000']['datapath_flows']} (`dpctl/dump-flows` lines; "
            f"{dp['learned_entries']} learned affinity entries) |")
    lines += ["", "**Targets:**", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in res.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {t['want']} | {t['measured']} | {met} |")
    for err in res.get("errors", []):
        lines.append(f"\nPhase **{err['phase']}** failed: `{err['error']}`")
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], outdir: Path, stamp: str) -> Path:
    """``<stamp>.json`` + ``latest.json`` / ``latest.md``; a quick run writes
    ``tmp-quick-*`` files instead (not kept in git, never the "latest")."""
    outdir.mkdir(parents=True, exist_ok=True)
    prefix = "tmp-quick-" if res.get("quick") else ""
    path = outdir / f"{prefix}{stamp}.json"
    text = json.dumps(res, indent=1, sort_keys=True) + "\n"
    path.write_text(text)
    (outdir / f"{prefix}latest.json").write_text(text)
    (outdir / f"{prefix}latest.md").write_text(markdown(res))
    return path


def update_readme(readme: Path, res: dict[str, Any]) -> None:
    text = readme.read_text()
    block = (f"{README_BEGIN}\n```sh\n{res['command']}\n```\n\n{markdown(res)}{README_END}")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < 0:
        raise ValueError(f"{readme}: no {README_BEGIN} ... {README_END} block")
    readme.write_text(text[:start] + block + text[end + len(README_END):])
