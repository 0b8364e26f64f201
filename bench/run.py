"""``python -m bench``: every measurement of the benchmark in one run, one
phase at a time (never two daemons competing for the CPUs), each bounded in
time.  A failed phase is recorded with its error and the run goes on; the
exit status is then 1."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import report

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("cold", "raw", "incremental", "restart", "ovn", "dataplane")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sizes", default="100,1000,5000",
                   help="numbers of load balancers for the cold phases (default 100,1000,5000); "
                        "incremental and restart run at the largest")
    p.add_argument("--reps", type=int, default=50, help="incremental changes (default 50)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: sizes 100,1000, 10 incremental reps, short dataplane runs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--readme", action="store_true",
                   help="put the table in README.md (full runs only)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                   help="measure nothing: print the table of an earlier run (with --readme: "
                        "put it in README.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = "100,1000" if args.sizes == "100,1000,5000" else args.sizes
        args.reps = min(args.reps, 10)
    args.size_list = sorted({int(n) for n in args.sizes.split(",") if n})
    args.phase_set = set(args.phases.split(","))
    unknown = args.phase_set - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    return args


def _version(cmd: str) -> str:
    try:
        out = subprocess.run([cmd, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def _commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    dirty = " +uncommitted changes" if git("status", "--porcelain", "--", "lbaffd") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    """The CPU's model name: two hosts both called "2 cores" differed ~1.8x
    in a cold pass at N=5000, so every bench's results record it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def host_facts() -> dict[str, Any]:
    """What the figures of a run depend on besides the code: the CPUs, the
    load at the start, the OVS/OVN versions and the commit."""
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "loadavg_start": _loadavg(),
            "ovs_version": _version("ovs-vswitchd"),
            "ovn_version": _version("ovn-controller"), "commit": _commit()}


class Runner:
    def __init__(self, args: argparse.Namespace, command: str) -> None:
        self.args = args
        self.res: dict[str, Any] = {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command, "quick": args.quick, "sizes": args.size_list,
            "host": host_facts(),
            "cold": {}, "errors": [], "phase_seconds": {},
        }

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one phase; on failure record it and return None."""
        start = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        try:
            value = fn()
        except Exception as exc:
            traceback.print_exc()
            self.res["errors"].append({"phase": name, "error": f"{type(exc).__name__}: {exc}"})
            value = None
        took = time.monotonic() - start
        self.res["phase_seconds"][name] = round(took, 1)
        print(f"[bench] {name}: {took:.1f} s (load {_loadavg()})", flush=True)
        return value

    def cold_slot(self, n: int) -> dict[str, Any]:
        slot: dict[str, Any] = self.res["cold"].setdefault(str(n), {})
        return slot

    def run(self) -> int:
        a = self.args
        lbaffd_phases = {"cold", "raw", "incremental", "restart"} & a.phase_set
        if lbaffd_phases:
            for n in a.size_list:
                self._lbaffd_at(n, last=n == a.size_list[-1])
        if "ovn" in a.phase_set:
            from bench.ovn_controller import ovn_controller_cold

            for n in a.size_list:
                self.cold_slot(n)["ovn_controller"] = self.phase(
                    f"ovn-controller cold N={n}",
                    partial(ovn_controller_cold, n, timeout=120 + n * 0.3))
        if "dataplane" in a.phase_set:
            from bench.dataplane import dataplane

            self.res["dataplane"] = self.phase("dataplane", lambda: dataplane(
                runs=1 if a.quick else 3, rate_conns=1000 if a.quick else 3000))
        top = self.res["cold"].get(str(a.size_list[-1]), {})
        if self.res.get("incremental") and top.get("lbaffd"):
            self.res["incremental"]["o_change_bound"] = report.o_change_bound(top)
        self.res["targets"] = report.targets(self.res)
        self.res["host"]["loadavg_end"] = _loadavg()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = report.write(self.res, a.out, stamp)
        print()
        print(report.markdown(self.res))
        print(f"results: {path}")
        if a.readme and not a.quick:
            report.update_readme(ROOT / "README.md", self.res)
            print("README.md: benchmark section updated")
        return 1 if self.res["errors"] else 0

    def _lbaffd_at(self, n: int, last: bool) -> None:
        """One sandbox per N: cold (+ raw), and at the largest N incremental and
        restart on the converged state."""
        from bench.cold import lbaffd_cold, raw_ofctl
        from bench.common import BenchDaemon, bench_sandbox, sb_base_topology
        from bench.incremental import incremental
        from bench.restart import restart

        a = self.args
        slot = self.cold_slot(n)
        with bench_sandbox(f"lbaffd{n}") as sb:
            topo = sb_base_topology(sb)
            daemon = BenchDaemon(sb)
            daemon.start(timeout=60)
            try:
                cold = self.phase(f"lbaffd cold N={n}", lambda: lbaffd_cold(
                    sb, topo, daemon, n, timeout=120 + n * 0.2))
                slot["lbaffd"] = cold
                if cold is None:
                    return
                uuids = cold.pop("uuids")
                if "raw" in a.phase_set:
                    slot["raw"] = self.phase(f"raw ovs-ofctl N={n}",
                                             lambda: raw_ofctl(sb, n, timeout=600))
                if last and "incremental" in a.phase_set:
                    self.res["incremental"] = self.phase(
                        f"incremental N={n}",
                        lambda: incremental(sb, daemon, uuids, a.reps, timeout=60))
                if last and "restart" in a.phase_set:
                    self.res["restart"] = self.phase(
                        f"restart N={n}", lambda: restart(sb, daemon, timeout=300))
            finally:
                daemon.stop(timeout=300)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    if argv is None:
        argv = sys.argv[1:]
    args = parse_args(argv)
    if args.render:
        res = json.loads(args.render.read_text())
        print(report.markdown(res))
        if args.readme and not res.get("quick"):
            report.update_readme(ROOT / "README.md", res)
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, ovs-vswitchd)", file=sys.stderr)
        return 2
    command = os.environ.get("LBAFFD_BENCH_COMMAND") or (
        "python -m bench " + shlex.join(argv)).strip()
    return Runner(args, command).run()


if __name__ == "__main__":
    sys.exit(main())
