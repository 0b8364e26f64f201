"""``python -m bench.memprobe``: where lbaffd's memory goes, per kind of work.

The daemon runs in this process (its worker on the main thread, the probe
on another) against a sandbox with ``bench.cluster``'s realistic SB
(``bench.clusterload``: NB + real ovn-northd).  After the first full pass
the probe runs, phase by phase, batches of one kind of work: audits,
forced full passes (``recompute``), an endpoint replaced, a health flip, a
remote pod, a local pod, a service replaced, a ``/metrics``-like
exposition, an ovs-vswitchd restart, an SB reconnect.  For each phase it
reports:

- RSS at the end and the peak RSS of the phase (``VmHWM``, reset before
  each phase through ``/proc/self/clear_refs``);
- with ``--trace``: the Python heap (``tracemalloc``) at the end and its
  peak, and the allocation sites that grew since the previous phase (by
  size and by count);
- glibc's view (``mallinfo2``): bytes in use, free inside the heap (what
  ``malloc_trim`` could give back) and mmapped; Python's own allocator's
  (``pymalloc``): its arenas, and the bytes in used and in free blocks;
- the objects the collector sees, by type (frozen ones included:
  ``gc.freeze()`` after a full pass moves them out of its sight).

At the end the frozen generation is unfrozen and collected: what that frees
is cyclic garbage ``gc.freeze()`` had hidden.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
import types
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import clusterload
from lbaffd.config import Settings
from lbaffd.daemon import Daemon
from lbaffd.model import ownership
from lbaffd.ops import memtrim
from lbaffd.ops.metrics import Metrics
from lbaffd.worker.tokens import FOREIGN
from lbaffd_sandbox.sandbox import free_port, started_sandbox

# the phases whose action always ends in a pass of the worker's (waited for)
PASSING = ("audit", "recompute", "lb_churn", "service_replace")
PHASES = ("audit", "recompute", "lb_churn", "health_flip", "remote_port", "local_port",
          "service_replace", "scrape", "vswitchd_restart", "sb_reconnect", "audit")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's ``mallinfo2`` in MB: in use, free inside the arenas, mmapped."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = MallInfo2
    m = fn()
    mb = 1024 * 1024
    return {"arena_mb": round(m.arena / mb, 1), "in_use_mb": round(m.uordblks / mb, 1),
            "free_mb": round(m.fordblks / mb, 1), "mmapped_mb": round(m.hblkhd / mb, 1)}


def pymalloc() -> dict[str, float]:
    """Python's small-object allocator (``sys._debugmallocstats``): its 1 MiB
    arenas in use, and MB in allocated and in free blocks inside them.  An
    arena goes back to the system only once every block in it is free: a
    burst of objects of which a few outlive it leaves arenas mostly empty
    but resident (fragmentation, not a leak: later objects fill them)."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out: dict[str, float] = {}
    for key, name, scale in (("arenas allocated current", "py_arenas", 1),
                             ("bytes in allocated blocks", "py_blocks_mb", 2**20),
                             ("bytes in available blocks", "py_free_blocks_mb", 2**20)):
        m = re.search(r"# " + re.escape(key) + r"\s*=\s*([\d,]+)", text)
        if m:
            out[name] = round(int(m.group(1).replace(",", "")) / scale, 1)
    return out


def smaps() -> dict[str, float]:
    """Resident MB by kind of mapping: the brk heap (glibc's main arena),
    1 MiB anonymous maps (pymalloc's arenas), other anonymous maps (glibc's
    thread arenas and large blocks, ovs/ssl buffers), files (code)."""
    out = {"heap_mb": 0.0, "pymalloc_mb": 0.0, "anon_mb": 0.0, "file_mb": 0.0}
    kind, size = "anon_mb", 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            size = hi - lo
            path = head[5] if len(head) > 5 else ""
            kind = ("heap_mb" if path == "[heap]" else "file_mb" if path.startswith("/")
                    else "pymalloc_mb" if size == 1 << 20 and not path else "anon_mb")
        elif head[0] == "Rss:":
            out[kind] += int(head[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def callables() -> dict[str, list[tuple[str, int]]]:
    """What the most numerous functions, bound builtins and weak references
    are (closures made per row or per flow would show here)."""
    funcs: collections.Counter[str] = collections.Counter()
    builtins: collections.Counter[str] = collections.Counter()
    refs: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        t = type(o)
        if t is types.FunctionType:
            funcs[f"{o.__module__}.{o.__qualname__}"] += 1
        elif t is types.BuiltinFunctionType:
            builtins[f"{type(o.__self__).__name__}.{o.__name__}"] += 1
        elif t is weakref.ReferenceType:
            refs[type(o()).__name__] += 1
    return {"functions": funcs.most_common(12), "builtins": builtins.most_common(12),
            "weakrefs": refs.most_common(8)}


def by_type() -> collections.Counter[str]:
    """Every object the collector knows of, frozen ones included, by type."""
    counts: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        counts[type(o).__name__] += 1
    return counts


def memo_caches() -> dict[str, int]:
    """Entries held by each ``functools`` memo of lbaffd's modules (bounded
    ones fill up with every distinct value churn brings, then stay full)."""
    out: dict[str, int] = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("lbaffd.") or mod is None:
            continue
        for attr, fn in list(vars(mod).items()):
            info = getattr(fn, "cache_info", None)
            if callable(info) and getattr(fn, "__module__", None) == name:
                size = info().currsize
                if size:
                    out[f"{name.removeprefix('lbaffd.')}.{attr}"] = size
    out["model.ownership.vip_owner"] = ownership.vip_owners_held()  # interned, not a memo
    return out


def proc_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """VmHWM := VmRSS (``clear_refs`` 5, Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def settle(daemon: Daemon, quiet: float = 0.6, timeout: float = 600.0) -> None:
    """Until the worker has published no new status for ``quiet`` s and its
    queue is empty."""
    deadline = time.monotonic() + timeout
    last, since = daemon.status(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = daemon.status()
        if now is not last or not daemon._queue.empty():
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise TimeoutError("the daemon did not settle")


def wait_synced(daemon: Daemon, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not daemon.status().stats.last_sync:
        if daemon._stopping.is_set() or time.monotonic() > deadline:
            raise RuntimeError("no first sync")
        time.sleep(0.1)


def scrape(address: str) -> int:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=120) as r:
        return len(r.read())


def actions(daemon: Daemon, load: clusterload.ClusterLoad) -> dict[str, Callable[[], Any]]:
    sb = load.sb
    return {
        "audit": lambda: daemon._queue.put(FOREIGN),
        "recompute": daemon.request_recompute,
        "lb_churn": load.lb_churn, "health_flip": load.health_flip,
        "remote_port": load.remote_port, "local_port": load.local_port,
        "service_replace": load.service_replace,
        "scrape": lambda: scrape(daemon.settings.metrics_address),
        "vswitchd_restart": sb.restart_vswitchd,
        "sb_reconnect": lambda: sb.restart_ovsdb("sb", down_for=1.0),
    }


class AuditClock:
    """Where an audit's time goes, in-process: reading the switch (the dump
    requests until their last reply), converting what it returned (the
    decode cache's digest lookups, decoding what is new) and comparing it
    with the compiled state (``reconcile.audit``'s comparisons, which the
    reconciler calls through the module); wall seconds, summed over a phase."""

    def __init__(self) -> None:
        from lbaffd.openflow.channel import OpenFlowChannel
        from lbaffd.reconcile import audit, readback

        self.totals: collections.defaultdict[str, float] = collections.defaultdict(float)
        for owner, name, kind in ((OpenFlowChannel, "dump_flow_desc", "read"),
                                  (OpenFlowChannel, "dump_group_desc", "read"),
                                  (readback.DecodeCache, "flows", "convert"),
                                  (readback.DecodeCache, "groups", "convert"),
                                  (audit, "repair_flows", "compare"),
                                  (audit, "repair_groups", "compare"),
                                  (audit, "stale_groups", "compare")):
            setattr(owner, name, self._timed(getattr(owner, name), kind))

    def _timed(self, fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.totals[kind] += time.perf_counter() - t
        return timed

    def take(self) -> dict[str, float]:
        out = {f"{k}_ms": round(v * 1000, 1) for k, v in self.totals.items()}
        self.totals.clear()
        return out


class Probe:
    def __init__(self, daemon: Daemon, load: clusterload.ClusterLoad, per_phase: int,
                 top: int, trace: bool) -> None:
        self.daemon, self.load, self.per_phase, self.top, self.trace = (
            daemon, load, per_phase, top, trace)
        self.rows: list[dict[str, Any]] = []
        self._snap: tracemalloc.Snapshot | None = None
        self.clock = AuditClock()
        self._cpu = sum(os.times()[:2])

    def record(self, phase: str, seconds: float) -> dict[str, Any]:
        cpu = sum(os.times()[:2])
        row: dict[str, Any] = {"phase": phase, "s": round(seconds, 1),
                               "cpu_s": round(cpu - self._cpu, 2), **self.clock.take(),
                               "rss_mb": round(proc_mb("VmRSS"), 1),
                               "peak_rss_mb": round(proc_mb("VmHWM"), 1),
                               "frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                               **mallinfo(), **smaps(), **pymalloc()}
        self._cpu = cpu
        row["memo_caches"] = memo_caches()
        if self.trace:
            cur, peak = tracemalloc.get_traced_memory()
            row.update(py_mb=round(cur / 2**20, 1), py_peak_mb=round(peak / 2**20, 1))
            snap = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),))
            if self._snap is not None:
                diff = snap.compare_to(self._snap, "lineno")
                row["grew_by_size"] = [_site(d) for d in sorted(
                    diff, key=lambda d: -d.size_diff)[:self.top] if d.size_diff > 0]
                row["grew_by_count"] = [_site(d) for d in sorted(
                    diff, key=lambda d: -d.count_diff)[:self.top] if d.count_diff > 0]
            row["largest"] = [_site(s) for s in snap.statistics("lineno")[:self.top]]
            self._snap = snap
        self.rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
        for key in ("grew_by_size", "grew_by_count"):
            for line in row.get(key, [])[:6]:
                print(f"    {key}: {line}", flush=True)
        return row

    def phase(self, name: str, act: Callable[[], Any]) -> None:
        reset_peak_rss()
        self.clock.take()
        self._cpu = sum(os.times()[:2])
        if self.trace:
            tracemalloc.reset_peak()
        t = time.monotonic()
        count = 1 if name in ("vswitchd_restart", "sb_reconnect") else self.per_phase
        for _ in range(count):
            synced = self.daemon.status().stats.last_sync
            passes = self.daemon.status().stats.passes
            sb = self.daemon._sb
            assert sb is not None and sb.idl is not None
            session = sb.idl._session_seqno
            act()
            deadline = time.monotonic() + 600
            if name == "sb_reconnect":  # until the SB is synced again (a new dump that
                # changed nothing is taken in place: no pass follows it)
                while ((sb.idl._session_seqno == session or sb.idl._resyncing
                        or not sb.connected) and time.monotonic() < deadline):
                    time.sleep(0.05)
            elif name == "vswitchd_restart":  # until in sync again
                while (self.daemon.status().stats.last_sync == synced
                       and time.monotonic() < deadline):
                    time.sleep(0.1)
            elif name in PASSING:  # until the pass it causes is done (a busy switch:
                while (self.daemon.status().stats.passes == passes  # minutes at N=5000)
                       and time.monotonic() < deadline):
                    time.sleep(0.1)
            settle(self.daemon, quiet=1.5)
        self.record(name, time.monotonic() - t)


def _site(s: Any) -> str:
    frame = s.traceback[0]
    name = frame.filename.split("/site-packages/")[-1].split("/wt-memory/")[-1]
    where = f"{name}:{frame.lineno}"
    if hasattr(s, "size_diff"):
        return (f"{where} {s.size_diff / 1024:+.0f} KiB ({s.count_diff:+d}) -> "
                f"{s.size / 1024:.0f} KiB")
    return f"{where} {s.size / 1024:.0f} KiB ({s.count})"


def probe(n: int, per_phase: int, top: int, trace: bool, phases: tuple[str, ...],
          out_path: Path | None) -> dict[str, Any]:
    with started_sandbox("lbbench-memprobe-", nb=True) as sb:
        t = time.monotonic()
        load = clusterload.load(sb, n)
        print(f"cluster N={n} loaded in {time.monotonic() - t:.0f} s: {load.c.stats()}",
              flush=True)
        settings = Settings(ovs_db=sb.ovs_db_remote, sb_db=sb.sb_remote, bridge="br-int",
                            ovs_rundir=str(sb.ovs_rundir), ovn_rundir=str(sb.rundir),
                            rundir=str(sb.rundir / "lbaffd"),
                            metrics_address=f"127.0.0.1:{free_port()}",
                            audit_interval=3600)
        if trace:
            tracemalloc.start(1)
        daemon = Daemon(settings, Metrics())
        probe = Probe(daemon, load, per_phase, top, trace)
        out: dict[str, Any] = {"n": n, "cluster": load.c.stats(), "phases": probe.rows}
        driver = threading.Thread(target=_drive, args=(daemon, probe, phases, out),
                                  name="memprobe", daemon=True)
        driver.start()
        daemon.run()
        driver.join(timeout=30)
        if out_path is not None:
            out_path.write_text(json.dumps(out, indent=1))
        return out


def _drive(daemon: Daemon, probe: Probe, phases: tuple[str, ...], out: dict[str, Any]) -> None:
    try:
        t = time.monotonic()
        wait_synced(daemon)
        settle(daemon)
        probe.record("cold", time.monotonic() - t)
        acts = actions(daemon, probe.load)
        for name in phases:
            probe.phase(name, acts[name])
        gc.unfreeze()
        before = by_type()
        found = gc.collect()
        after = by_type()
        freed = {k: before[k] - after.get(k, 0) for k in before if before[k] > after.get(k, 0)}
        out["hidden_garbage"] = found
        out["hidden_by_type"] = dict(sorted(freed.items(), key=lambda kv: -kv[1])[:probe.top])
        out["types"] = dict(after.most_common(probe.top * 2))
        out["callables"] = callables()
        print(f"callables: {out['callables']}", flush=True)
        print(f"unfrozen + collected: {found} unreachable objects; by type: "
              f"{out['hidden_by_type']}; RSS now {proc_mb('VmRSS'):.1f} MB", flush=True)
        print(f"objects by type: {out['types']}", flush=True)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(out["error"], flush=True)
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memprobe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--per-phase", type=int, default=5, help="changes per phase (default 5)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated, in order (default {','.join(PHASES)})")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--trace", action="store_true",
                   help="tracemalloc (slower, more memory): Python heap and its growing sites")
    p.add_argument("--no-trim", action="store_true",
                   help="the daemon does not trim the C heap (to compare)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.memprobe needs root (network namespaces, ovs-vswitchd)")
        return 1
    if args.no_trim:
        memtrim.trim = lambda: False
    phases = tuple(x for x in args.phases.split(",") if x)
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases: {sorted(unknown)}")
    probe(args.n, args.per_phase, args.top, args.trace, phases, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
