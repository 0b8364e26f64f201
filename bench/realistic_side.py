"""One daemon (lbaffd or ovn-controller) on the cluster-shaped SB of
``bench.cluster``: setup, cold convergence, event samples, churn, restart.

Both sides get the same logical content the same way: the NB is written
and Debian's real ovn-northd writes the SB (so lbaffd reads exactly the SB
rows northd produced); the other chassis's ovn-controllers are played by
SB writes (their Chassis rows, their pods' ``chassis`` and ``up``).  On
lbaffd's side the local pods are bound the same way (no ovn-controller
runs there); on ovn-controller's side it binds them itself.

How "done" is seen: ``SB_Global.nb_cfg`` is written by ovn-northd in the
transaction that carries an NB change (``t_sb`` = its arrival at an OVSDB
monitor of ours); ovn-controller writes ``Chassis_Private.nb_cfg_timestamp``
once the flows of that nb_cfg are acknowledged by a barrier; lbaffd logs
``reconciled`` (after its bundle commit and barrier) with the time it read
the SB.  A sample ends when the daemon (and ovn-northd) are idle: their CPU
time stops moving (``settle``); the CPU they used meanwhile is the
sample's worker time."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cluster as cl
from bench.common import (
    BenchDaemon,
    PhaseTimeout,
    count_groups,
    count_lbaffd_flows,
    event_time,
    ovsdb_select,
    percentile,
    proc_status_mb,
    wait_for,
)
from bench.ovsdb_watch import OvsdbWatch
from bench.sb_direct import SbDirect, backend_for
from bench.switch_probe import SwitchProbe
from lbaffd_sandbox.sandbox import Sandbox, ovsdb_transact, run

NB = "OVN_Northbound"
SB = "OVN_Southbound"
EVENT_TYPES = ("backend_added", "health_flip", "remote_port_added", "local_port_added",
               "lb_added", "lb_removed")
TICK = os.sysconf("SC_CLK_TCK")
# lbaffd's log lines that carry a pass's or an input step's duration (``ms``);
# the bench runs it with debug logs for the last two
WORKER_EVENTS = ("reconciled", "in_sync", "input_change_no_effect")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class LogTail:
    """lbaffd's JSON log read incrementally (the log grows to 100k lines)."""

    def __init__(self, daemon: BenchDaemon) -> None:
        self.daemon = daemon
        self.events: list[dict[str, Any]] = []
        self._path: Path | None = None
        self._offset = 0

    def poll(self) -> list[dict[str, Any]]:
        path = self.daemon.log_path
        if path != self._path:
            self._path, self._offset = path, 0
        assert path is not None
        with open(path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    continue
        return self.events

    def reconciled_since(self, t0: float) -> list[dict[str, Any]]:
        """Passes that read the SB at or after ``t0`` and changed the switch."""
        return [e for e in self.poll() if e.get("event") == "reconciled"
                and float(e.get("sb_read_at", 0)) >= t0 - 0.002 and e.get("changes", 0) > 0]


@dataclass
class Side:
    kind: str  # "lbaffd" | "ovn-controller"
    sb: Sandbox
    c: cl.Cluster
    watch: OvsdbWatch
    pid: int = 0
    helper_pids: tuple[int, ...] = ()
    daemon: BenchDaemon | None = None
    tail: LogTail | None = None
    pb_uuids: dict[str, str] = field(default_factory=dict)
    chassis_uuids: dict[str, str] = field(default_factory=dict)
    extra_backends: dict[int, list[str]] = field(default_factory=dict)
    next_pod: dict[int, int] = field(default_factory=dict)
    extra_lbs: int = 0
    local_watch: OvsdbWatch | None = None  # the local Open_vSwitch DB's Interface rows
    switch_probe: SwitchProbe | None = None  # ovs-vswitchd's own answer time at an ofport
    event_types: list[str] = field(default_factory=lambda: list(EVENT_TYPES))
    # event samples written to the SB with ovn-northd paused (lbaffd only)
    direct: SbDirect | None = None
    # the pods made ahead for the samples of an event type, taken in order
    pending: dict[str, list[cl.Pod]] = field(default_factory=dict)

    # ------------------------------------------------------------ plumbing

    @property
    def lbaffd(self) -> bool:
        return self.kind == "lbaffd"

    def nb(self, ops: list[dict[str, Any]], timeout: float = 300) -> list[object]:
        return ovsdb_transact(self.sb.nb_remote, NB, ops, timeout)

    def sbt(self, ops: list[dict[str, Any]], timeout: float = 300) -> list[object]:
        return self.sb.transact(ops, timeout=timeout)

    def select(self, remote: str, db: str, table: str, columns: list[str],
               where: list[Any] | None = None) -> list[dict[str, Any]]:
        return ovsdb_select(remote, db, table, columns, where)

    def nb_bump(self, ops: list[dict[str, Any]], timeout: float = 300) -> int:
        """An NB transaction with an nb_cfg bump; the new nb_cfg (read in the
        same transaction: ``ovn-nbctl --wait`` bumps it too)."""
        res = self.nb([*ops, cl.bump_nb_cfg(), {"op": "select", "table": "NB_Global",
                                                "where": [], "columns": ["nb_cfg"]}], timeout)
        last = res[-1]
        assert isinstance(last, dict)
        return int(last["rows"][0]["nb_cfg"])

    def nb_with_cfg(self, ops: list[dict[str, Any]], timeout: float = 300,
                    lb: str | None = None) -> tuple[int, float]:
        """An NB transaction with an nb_cfg bump; (nb_cfg, when the SB got the
        change).  With ``lb`` (a name): the arrival of that Load_Balancer
        row's change (ovn-northd may write ``SB_Global.nb_cfg`` a transaction
        later than the rows), else of ``SB_Global.nb_cfg``."""
        mark = self.watch.mark()
        k = self.nb_bump(ops, timeout)
        up = wait_for(lambda: self.watch.first("SB_Global", "nb_cfg", lambda v: v >= k),
                      timeout, f"northd to write nb_cfg {k}", step=0.005)
        if lb is None:
            return k, up.at
        return k, self._lb_arrival(mark, lb, timeout)

    def reported(self, k: int, timeout: float) -> float:
        """ovn-controller: when the flows of nb_cfg >= k were installed
        (a monitor's "new" carries every monitored column of the row)."""
        u = wait_for(lambda: next((x for x in self.watch.snapshot()
                                   if x.table == "Chassis_Private"
                                   and x.new.get("nb_cfg", 0) >= k), None),
                     timeout, f"ovn-controller to report nb_cfg {k}", step=0.005)
        return float(u.new["nb_cfg_timestamp"]) / 1000.0

    def pids(self) -> list[int]:
        """The daemon and everything that works on a change before or after
        it: the NB and SB ovsdb-servers, ovn-northd, ovs-vswitchd (a bundle
        commit is its work)."""
        return [p for p in (self.pid, *self.helper_pids) if p]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def daemon_cpu(self) -> float:
        return cpu_seconds(self.pid)

    def settle(self, timeout: float = 600.0, quiet: float = 0.15) -> None:
        """Until the daemon, ovn-northd and ovs-vswitchd used < 2 clock ticks
        over ``quiet`` s."""
        deadline = time.monotonic() + timeout
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu()
            if now - last < 2.5 / TICK:
                return
            last = now
        raise PhaseTimeout(f"{self.kind}: still busy after {timeout:.0f}s")

    def changes_sent(self) -> int:
        """lbaffd's flow/group changes so far (``reconcile/stats``)."""
        assert self.daemon is not None
        for line in self.daemon.ctl_text("reconcile/stats").splitlines():
            if line.startswith("changes sent:"):
                return int(line.split(":")[1])
        return 0

    def rss_peak(self) -> float:
        return proc_status_mb(self.pid, "VmHWM")

    # ------------------------------------------------------------ setup

    def setup(self, start_daemon: Callable[[Side], None], timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        self.helper_pids = tuple(int((self.sb.rundir / f"{name}.pid").read_text())
                                 for name in ("northd", "ovs-vswitchd", "sb", "nb"))
        self.nb(cl.nb_topology_ops(self.c, self.sb.chassis), timeout)
        self.sb.nbctl("--wait=sb", "sync", timeout=int(timeout))
        self.sbt(cl.sb_chassis_ops(self.c))
        self.pb_uuids = {r["logical_port"]: r["_uuid"][1] for r in self.select(
            self.sb.sb_remote, SB, "Port_Binding", ["_uuid", "logical_port"])}
        self.chassis_uuids = {r["name"]: r["_uuid"][1] for r in self.select(
            self.sb.sb_remote, SB, "Chassis", ["_uuid", "name"])}
        binds = [(p.name, cl.chassis_name(p.node)) for p in self.c.remote_pods]
        if self.lbaffd:
            binds += [(p.name, self.sb.chassis) for p in self.c.local_pods]
        self.sbt(cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids, binds))
        self.add_ports([p.name for p in self.c.local_pods])
        start_daemon(self)
        self.settle()
        return {"setup_s": round(time.monotonic() - t0, 1)}

    def add_ports(self, names: list[str]) -> None:
        """OVS interfaces for local pods (internal ports named ``lp<i>``)."""
        if names:
            self.sb.vsctl(*cl.local_port_args(names))

    # ------------------------------------------------------------ cold

    def cold(self, timeout: float) -> dict[str, Any]:
        rss_before = self.rss_peak()
        cpu0 = self.daemon_cpu()
        k, t_sb = self.nb_with_cfg(cl.nb_lb_ops(self.c), timeout, lb="*")
        if self.lbaffd:
            assert self.tail is not None
            tail = self.tail
            with contextlib.suppress(PhaseTimeout):
                wait_for(lambda: tail.reconciled_since(t_sb), timeout, "a pass", step=0.05)
            self.settle(timeout)
            passes = self.tail.reconciled_since(t_sb)
            if not passes:
                seen = [(e.get("event"), e.get("sb_read_at"), e.get("changes"))
                        for e in self.tail.poll()[-8:]]
                raise AssertionError(f"lbaffd: no pass installed the load balancers "
                                     f"(SB at {t_sb:.3f}; last log lines {seen})")
            last = passes[-1]
            done = event_time(last)
            flows, groups = count_lbaffd_flows(self.sb), count_groups(self.sb)
            if groups != last["groups"] or flows != last["flows"]:
                raise AssertionError(f"switch has {flows} flows / {groups} groups, the pass "
                                     f"said {last['flows']} / {last['groups']}")
            extra = {"passes": len(passes), "last_pass_ms": last["ms"],
                     "pass_phases_ms": {x[:-3]: v for x, v in last.items()
                                        if x.endswith("_ms") and x != "ms"}}
        else:
            done = self.reported(k, timeout)
            self.settle(timeout)
            flows = len([x for x in self.sb.ofctl("--no-stats", "dump-flows", "br-int")
                         .splitlines() if "actions=" in x])
            groups = count_groups(self.sb)
            extra = {}
        monitors = self.select(self.sb.sb_remote, SB, "Service_Monitor", ["_uuid"])
        return {"converge_s": round(done - t_sb, 3), "flows": flows, "groups": groups,
                "service_monitors": len(monitors),
                "cpu_s": round(self.daemon_cpu() - cpu0, 2),
                "rss_before_lbs_mb": round(rss_before, 1),
                "rss_peak_mb": round(self.rss_peak(), 1), **extra}

    # ------------------------------------------------------------ events

    def northd(self, command: str) -> None:
        """``pause`` or ``resume`` ovn-northd (it keeps its connections;
        paused, it writes nothing)."""
        run("ovn-appctl", "-t", str(self.sb.rundir / "northd.ctl"), command, env=self.sb.env)

    def events(self, samples: int, timeout: float,
               checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Samples of each event type (``checkpoint`` gets what is done after
        each type); with ``direct``, written to the SB while ovn-northd is
        paused, which then takes the SB back to the NB's content (the rows
        written here are not in the NB)."""
        if self.direct is None:
            return self._events(samples, timeout, checkpoint)
        self.northd("pause")
        try:
            self.direct.load(self.c)
            out = self._events(samples, timeout, checkpoint)
        finally:
            self.northd("resume")
            self.extra_backends.clear()
            self.settle(timeout)
        out["sb_direct"] = True
        return out

    def _events(self, samples: int, timeout: float,
                checkpoint: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        monitors = [r["_uuid"][1] for r in self.select(
            self.sb.sb_remote, SB, "Service_Monitor", ["_uuid"])]
        out: dict[str, Any] = {}
        runs: dict[str, Callable[[int], dict[str, Any]]] = {
            "backend_added": self._backend_added,
            "health_flip": lambda i: self._health_flip(monitors, i),
            "remote_port_added": lambda i: self._port_added(1 + i % self.c.nodes),
            "local_port_added": lambda i: self._port_added(0),
            "lb_added": self._lb_added,
            "lb_removed": self._lb_removed,
        }
        for name in self.event_types:
            if name == "health_flip" and not monitors:
                out[name] = {"error": "no Service_Monitor rows"}
                continue
            self._prepare(name, samples, timeout)
            rows = []
            with self._sb_cfg(name == "remote_port_added", timeout):
                for i in range(samples):
                    self.settle(timeout)
                    rows.append(runs[name](i))
            out[name] = summarize(rows)
            if checkpoint is not None:
                checkpoint(dict(out, rss_peak_mb=round(self.rss_peak(), 1)))
        out["rss_peak_mb"] = round(self.rss_peak(), 1)
        return out

    @contextlib.contextmanager
    def _sb_cfg(self, wanted: bool, timeout: float) -> Iterator[None]:
        """ovn-controller's remote-port samples: ovn-northd paused, so that the
        bench's bind can carry an ``SB_Global.nb_cfg`` bump of its own.  A
        remote port's binding needs nothing of ovn-northd (it would only set
        the NB port up) and ovn-controller reports an nb_cfg once the flows of
        the SB contents it came with are installed: the sample is then its
        own time, not ovn-northd's recompute of an NB bump (~2-5 s at
        N=5000).  Afterwards the NB's nb_cfg is raised to the SB's, so that
        ovn-northd, resumed, does not take it back."""
        if not wanted or self.lbaffd:
            yield
            return
        self.northd("pause")
        try:
            yield
        finally:
            res = self.sbt([{"op": "select", "table": "SB_Global", "where": [],
                             "columns": ["nb_cfg"]}])[0]
            assert isinstance(res, dict)
            self.nb([{"op": "update", "table": "NB_Global", "where": [],
                      "row": {"nb_cfg": int(res["rows"][0]["nb_cfg"])}}])
            self.northd("resume")
            self.settle(timeout)

    def _bind_with_cfg(self, pod: cl.Pod) -> int:
        """Bind a remote pod with an ``SB_Global.nb_cfg`` bump in the same
        transaction (``_sb_cfg``); the new nb_cfg."""
        res = self.sbt([*cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids,
                                        [(pod.name, cl.chassis_name(pod.node))]),
                        {"op": "mutate", "table": "SB_Global", "where": [],
                         "mutations": [["nb_cfg", "+=", 1]]},
                        {"op": "select", "table": "SB_Global", "where": [],
                         "columns": ["nb_cfg"]}])
        last = res[-1]
        assert isinstance(last, dict)
        return int(last["rows"][0]["nb_cfg"])

    def _pod_node(self, name: str, i: int) -> int | None:
        """The node of the pod the i-th sample of ``name`` adds (None: no pod)."""
        if name in ("backend_added", "remote_port_added"):
            return 1 + i % self.c.nodes
        return 0 if name == "local_port_added" else None

    def _prepare(self, name: str, samples: int, timeout: float) -> None:
        """The pods the samples of ``name`` take, made before the first one in
        one transaction (and, for backends, bound by their chassis in one
        more): at N=5000 every NB change costs ovn-northd 23.03 a full
        recompute (~5 s on 2 cores), and a pod made and bound per sample
        made ovn-controller's samples ~18 s each.  What a sample measures is
        the same either way: its pod exists (unbound, or bound for a
        backend) and all is quiet before its event."""
        if name == "lb_removed":
            self._make_lbs_to_remove(samples, timeout)
            return
        nodes = [self._pod_node(name, i) for i in range(samples)]
        if not nodes or None in nodes:
            return
        pods = self._new_pods([n for n in nodes if n is not None], timeout)
        if name == "backend_added":
            self._bind(pods)
        self.settle(timeout)
        self.pending[name] = pods

    def _make_lbs_to_remove(self, samples: int, timeout: float) -> None:
        """The LBs the samples of ``lb_removed`` remove are those ``lb_added``
        added; those missing (``--events lb_removed`` alone, or fewer samples
        of ``lb_added``) are made first, in one transaction, and all is quiet
        before the first sample."""
        if self.direct is not None:
            have = {r["name"] for r in self.select(self.sb.sb_remote, SB, "Load_Balancer",
                                                   ["name"])}
        else:
            have = {r["name"] for r in self.select(self.sb.nb_remote, NB, "Load_Balancer",
                                                   ["name"])}
        missing = [i for i in range(samples) if self._extra_lb(i).name not in have]
        if not missing:
            return
        if self.direct is not None:
            self.sbt([self.direct.lb_insert(self._extra_lb(i), self._extra_base(i), self.c.pods)
                      for i in missing], timeout)
        else:
            self.nb_bump(cl.nb_lbs_in_group_ops([self._extra_lb(i) for i in missing],
                                                self.c.pods), timeout)
        self.settle(timeout)

    def _take_pod(self, name: str, node: int) -> tuple[cl.Pod, bool]:
        """The next pod made ahead for ``name`` (True), else a new one."""
        queued = self.pending.get(name)
        if queued:
            return queued.pop(0), True
        return self._new_pod(node), False

    def _finish(self, t0: float, k: int | None, cpu0: float, sent0: int,
                timeout: float = 600.0, t_from: float | None = None) -> dict[str, Any]:
        """Wait for the daemon; the sample's latency from ``t0`` (None: nothing
        changed on the switch), worker CPU and (lbaffd) flow/group changes.
        lbaffd's passes are those that read the SB after ``t_from`` (the
        trigger was sent; all was idle before it), the last one completes."""
        worker: float | None = None
        where: dict[str, Any] = {}
        if self.lbaffd:
            self.settle(timeout)
            assert self.tail is not None
            since = t0 if t_from is None else t_from
            passes = self.tail.reconciled_since(since)
            latency = event_time(passes[-1]) - t0 if passes else None
            sent: int | None = self.changes_sent() - sent0
            # the worker's own time for it: its passes and no-op steps since
            worker = sum(float(e["ms"]) for e in self.tail.poll()
                         if e.get("event") in WORKER_EVENTS and event_time(e) >= since
                         and not e.get("audit"))
            where = attribution(passes, t0)
        else:
            assert k is not None
            latency = self.reported(k, timeout) - t0
            self.settle(timeout)
            sent = None
        return {"latency_ms": None if latency is None else round(latency * 1000, 2),
                "cpu_ms": round((self.daemon_cpu() - cpu0) * 1000, 1), "changes": sent,
                "worker_ms": worker, **where}

    def _start(self) -> tuple[float, int]:
        return self.daemon_cpu(), self.changes_sent() if self.lbaffd else 0

    def _lb_arrival(self, mark: int, name: str, timeout: float = 60.0) -> float:
        """When a change of the LB row ``name`` (``*``: any) written after
        ``mark`` reached our SB monitor."""
        return wait_for(lambda: self.watch.first_after(
            mark, "Load_Balancer", lambda u: name == "*" or u.new.get("name") == name),
            timeout, f"the SB to send LB {name}", step=0.005).at

    def _direct_lb(self, op: dict[str, Any], name: str, cpu0: float,
                   sent0: int) -> dict[str, Any]:
        """An LB event written to the SB: latency from the row's arrival."""
        mark = self.watch.mark()
        t_from = time.time()
        self.sbt([op])
        return self._finish(self._lb_arrival(mark, name), None, cpu0, sent0, t_from=t_from)

    def _backend_added(self, i: int) -> dict[str, Any]:
        s = backend_for(self.c.services, i, unchecked=self.direct is not None)
        svc = self.c.services[s]
        extra = self.extra_backends.setdefault(s, [])
        new, bound = self._take_pod("backend_added", 1 + i % self.c.nodes)
        if not bound:
            self._bind([new])
            self.settle()
        extra.append(new.name)
        cpu0, sent0 = self._start()
        if self.direct is not None:
            return self._direct_lb(SbDirect.lb_vips_update(svc, self.c.pods, extra),
                                   svc.name, cpu0, sent0)
        op = {"op": "update", "table": "Load_Balancer", "where": [["name", "==", svc.name]],
              "row": cl.lb_row(svc, self.c.pods, extra)}
        t_from = time.time()
        k, t_sb = self.nb_with_cfg([op], lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _health_flip(self, monitors: list[str], i: int) -> dict[str, Any]:
        uuid = monitors[(i // 2 * 7919) % len(monitors)]
        status = "offline" if i % 2 == 0 else "online"
        flip = {"op": "update", "table": "Service_Monitor",
                "where": [["_uuid", "==", ["uuid", uuid]]], "row": {"status": status}}
        cpu0, sent0 = self._start()
        if not self.lbaffd:
            return self._health_flip_through_northd(flip, cpu0)
        mark = self.watch.mark()
        t0 = time.time()
        self.sbt([flip])
        out = self._finish(t0, None, cpu0, sent0)
        seen = self.watch.first_after(mark, "Service_Monitor",
                                      lambda u: u.row == uuid and u.new.get("status") == status)
        return self._from_input(out, t0, seen.at if seen is not None else None)

    def _health_flip_through_northd(self, flip: dict[str, Any], cpu0: float) -> dict[str, Any]:
        """ovn-controller's health flip.  It reads no ``Service_Monitor``
        status: ovn-northd rewrites the LB's logical flows from it, so the
        sample is ovn-northd's recompute plus ovn-controller's work.  The flip
        is written while ovn-northd is paused (its IDL takes it in, its engine
        does not run); ``resume`` does not wake it (measured: it then slept
        until the next database update), so the NB nb_cfg bump written next
        wakes it with both at hand and one recompute carries them.  Written
        one after the other with ovn-northd running, the bump could arrive
        during the recompute of the flip and wait for a second one (~3.2 s
        at N=5000, measured), which no real flip waits for.  The latency runs from the
        bump's write; ``northd_ms``: until ovn-northd's ``SB_Global.nb_cfg``
        reached our monitor."""
        mark = self.watch.mark()
        self.northd("pause")
        try:
            self.sbt([flip])
        finally:
            self.northd("resume")
        t0 = time.time()
        k = self.nb_bump([])
        out = self._finish(t0, k, cpu0, 0)
        up = self.watch.first_after(mark, "SB_Global",
                                    lambda u: u.new.get("nb_cfg", 0) >= k)
        if up is not None and out["latency_ms"] is not None:
            out["northd_ms"] = round((up.at - t0) * 1000, 2)
        return out

    @staticmethod
    def _from_input(out: dict[str, Any], t0: float, arrived: float | None) -> dict[str, Any]:
        """The sample's latency also from its input's arrival at a monitor of
        ours (``input_ms``): what the daemon itself takes, without the
        bench's write (or ``ovs-vsctl``) before it."""
        if arrived is not None and out["latency_ms"] is not None:
            out["input_ms"] = round(out["latency_ms"] - (arrived - t0) * 1000, 2)
        return out

    def _new_pod(self, node: int) -> cl.Pod:
        return self._new_pods([node])[0]

    def _new_pods(self, nodes: list[int], timeout: float = 60.0) -> list[cl.Pod]:
        """New pods on ``nodes`` and their (unbound) Port_Bindings: written by
        ovn-northd from their LSPs (one NB transaction), or with ``direct``
        written to the SB as northd would."""
        pods = [self.c.new_pod(node, self.next_pod) for node in nodes]
        if self.direct is not None:
            res = self.sbt([self.direct.port_binding_insert(pod) for pod in pods])
            for pod, r in zip(pods, res, strict=True):
                assert isinstance(r, dict)
                self.pb_uuids[pod.name] = r["uuid"][1]
            return pods
        self.nb(cl.nb_pods_ops(pods))
        selects = [{"op": "select", "table": "Port_Binding", "columns": ["_uuid"],
                    "where": [["logical_port", "==", pod.name]]} for pod in pods]

        def made() -> list[Any] | None:
            res = self.sbt(selects)
            return res if all(isinstance(r, dict) and r["rows"] for r in res) else None

        found = wait_for(made, timeout + len(pods), f"northd to make {len(pods)} ports",
                         step=0.1)
        for pod, r in zip(pods, found, strict=True):
            self.pb_uuids[pod.name] = r["rows"][0]["_uuid"][1]
        return pods

    def _bind(self, pods: list[cl.Pod]) -> None:
        self.sbt(cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids,
                                [(p.name, cl.chassis_name(p.node)) for p in pods]))

    def _port_added(self, node: int) -> dict[str, Any]:
        """A new pod: its LSP (northd makes the Port_Binding) and, once all
        is quiet, the event: bound by its chassis (remote), or its OVS
        interface appearing here (local; on lbaffd's side also bound)."""
        pod, _ = self._take_pod("remote_port_added" if node else "local_port_added", node)
        self.settle()
        cpu0, sent0 = self._start()
        t0 = time.time()
        k = None
        if node:
            if self.lbaffd:
                self._bind([pod])
            else:
                k = self._bind_with_cfg(pod)
        else:
            mark = self.local_watch.mark() if self.local_watch is not None else 0
            if self.lbaffd:
                self.sbt(cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids,
                                        [(pod.name, self.sb.chassis)]))
            self.add_ports([pod.name])
            if not self.lbaffd:
                return self._local_up(pod, t0, cpu0)
            out = self._finish(t0, k, cpu0, sent0)
            port = "lp" + pod.name.rsplit("-", 1)[1]
            seen = None if self.local_watch is None else self.local_watch.first_after(
                mark, "Interface", lambda u: u.new.get("name") == port
                and isinstance(u.new.get("ofport"), int) and u.new["ofport"] > 0)
            if self.switch_probe is not None:
                out["switch_ms"] = self.switch_probe.rtt_ms(port)
            return self._from_input(out, t0, seen.at if seen is not None else None)
        return self._finish(t0, k, cpu0, sent0)

    def _local_up(self, pod: cl.Pod, t0: float, cpu0: float) -> dict[str, Any]:
        """ovn-controller sets ``Port_Binding.up`` once the port's flows are in
        (polled every ~5 ms)."""
        wait_for(lambda: any(r["up"] is True for r in self.select(
            self.sb.sb_remote, SB, "Port_Binding", ["up"],
            [["logical_port", "==", pod.name]])), 120,
                 f"ovn-controller to set {pod.name} up", step=0.003)
        latency = time.time() - t0
        self.settle()
        return {"latency_ms": round(latency * 1000, 2),
                "cpu_ms": round((self.daemon_cpu() - cpu0) * 1000, 1), "changes": None}

    def _lb_added(self, i: int) -> dict[str, Any]:
        cpu0, sent0 = self._start()
        svc = self._extra_lb(i)
        if self.direct is not None:
            return self._direct_lb(self.direct.lb_insert(svc, self._extra_base(i), self.c.pods),
                                   svc.name, cpu0, sent0)
        t_from = time.time()
        k, t_sb = self.nb_with_cfg(cl.nb_lb_in_group_ops(svc, self.c.pods), lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _lb_removed(self, i: int) -> dict[str, Any]:
        svc = self._extra_lb(i)
        if self.direct is not None:
            cpu0, sent0 = self._start()
            return self._direct_lb(SbDirect.lb_delete(svc.name), svc.name, cpu0, sent0)
        rows = self.select(self.sb.nb_remote, NB, "Load_Balancer", ["_uuid"],
                           [["name", "==", svc.name]])
        ref = ["uuid", rows[0]["_uuid"][1]]
        cpu0, sent0 = self._start()
        t_from = time.time()
        k, t_sb = self.nb_with_cfg([
            {"op": "mutate", "table": "Load_Balancer_Group", "where": [["name", "==",
                                                                         "cluster"]],
             "mutations": [["load_balancer", "delete", ["set", [ref]]]]},
            {"op": "delete", "table": "Load_Balancer", "where": [["_uuid", "==", ref]]}],
            lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _extra_base(self, i: int) -> cl.Service:
        return self.c.services[(i * 7919 + 11) % len(self.c.services)]

    def _extra_lb(self, i: int) -> cl.Service:
        """The i-th added LB: shaped like a random service of the cluster."""
        base = self._extra_base(i)
        hi, lo = divmod(i, 250)
        ip = f"fd00:31::{i + 1:x}" if base.ipv6 else f"172.31.{hi}.{lo + 1}"
        return cl.Service(f"extra-{i}", base.protocol, base.ipv6, base.vip_ports, ip,
                          base.backends, base.affinity, base.hairpin_snat, False)

    # ------------------------------------------------------------ churn

    def churn(self, seconds: float, port_rate: float, lb_rate: float,
              timeout: float) -> dict[str, Any]:
        """``port_rate`` remote Port_Binding changes/s (a pod's binding moves to
        another chassis) and ``lb_rate`` LB changes/s (a backend added to or
        removed from a service, with an nb_cfg bump each), for ``seconds``."""
        remote = self.c.remote_pods[: max(1, min(len(self.c.remote_pods), 2000))]
        cpu0 = self.daemon_cpu()
        t_start = time.monotonic()
        step = 1.0 / (port_rate + lb_rate)
        lb_every = max(1, round((port_rate + lb_rate) / lb_rate))
        sent: list[tuple[int, int, str]] = []  # (nb_cfg, watch mark, LB name)
        n = 0
        while time.monotonic() - t_start < seconds:
            due = t_start + n * step
            time.sleep(max(0.0, due - time.monotonic()))
            if n % lb_every == lb_every - 1:
                s = (n * 7919) % len(self.c.services)
                svc = self.c.services[s]
                extra = self.extra_backends.setdefault(s, [])
                if extra:
                    extra.pop()
                else:  # a pod that is no backend of it yet: a real change
                    extra.append(next(p.name for j in range(len(remote))
                                      if (p := remote[(n + j) % len(remote)]).name
                                      not in svc.backends))
                mark = self.watch.mark()
                k = self.nb_bump([{"op": "update", "table": "Load_Balancer",
                                   "where": [["name", "==", svc.name]],
                                   "row": cl.lb_row(svc, self.c.pods, extra)}])
                sent.append((k, mark, svc.name))
            else:
                pod = remote[n % len(remote)]
                node = 1 + (pod.node + n // len(remote)) % self.c.nodes
                self.sbt(cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids,
                                        [(pod.name, cl.chassis_name(node))]))
            n += 1
        elapsed = time.monotonic() - t_start
        lags = []
        for k, mark, name in sent:
            # when the SB got the LB's row change (northd's transaction)
            def northd_wrote(m: int = mark, n: str = name) -> Any:
                return self.watch.first_after(m, "Load_Balancer",
                                              lambda u: u.new.get("name") == n)

            up = wait_for(northd_wrote, timeout, f"northd to write {name}")
            if self.lbaffd:
                assert self.tail is not None
                # our monitor may see the update a little after lbaffd's IDL
                # did (this process is busy sending): allow 20 ms of skew
                def applied(t: float = up.at, tail: Any = self.tail) -> Any:
                    return next(iter(tail.reconciled_since(t - 0.02)), None)

                done = wait_for(applied, min(timeout, 60), f"lbaffd to apply {name}", step=0.05)
                lags.append(event_time(done) - up.at)
            else:
                lags.append(self.reported(k, timeout) - up.at)
        self.settle(timeout)
        ms = [v * 1000 for v in lags]
        return {"seconds": round(elapsed, 1), "port_changes": n - len(sent),
                "lb_changes": len(sent),
                "lb_lag_p50_ms": round(percentile(ms, 50), 1) if ms else None,
                "lb_lag_p99_ms": round(percentile(ms, 99), 1) if ms else None,
                "lb_lag_max_ms": round(max(ms), 1) if ms else None,
                "cpu_s": round(self.daemon_cpu() - cpu0, 2),
                "cpus_used": round((self.daemon_cpu() - cpu0) / elapsed, 2),
                "rss_peak_mb": round(self.rss_peak(), 1)}


def attribution(passes: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Where an lbaffd sample's time went, from its passes' log lines: how
    many passes changed the switch and how many of them were audits (the
    latency runs to the last one), when lbaffd's IDL had the change
    (``arrived_ms``, from ``t0``: the SB server's delivery to lbaffd) and
    how long it then waited for the worker (``wait_ms``), both of the first."""
    out: dict[str, Any] = {"passes": len(passes),
                           "audit_passes": sum(1 for e in passes if e.get("audit"))}
    first = passes[0] if passes else {}
    if "arrived_at" in first:
        out["arrived_ms"] = round((float(first["arrived_at"]) - t0) * 1000, 2)
        out["wait_ms"] = first.get("wait_ms")
    if len(passes) > 1:
        out["first_ms"] = round((event_time(first) - t0) * 1000, 2)
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p99 of latency and worker CPU over a sample set."""
    lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    cpu = [r["cpu_ms"] for r in rows]
    worker = [r["worker_ms"] for r in rows if r.get("worker_ms") is not None]
    inputs = [r["input_ms"] for r in rows if r.get("input_ms") is not None]
    switch = [r["switch_ms"] for r in rows if r.get("switch_ms") is not None]
    northd = [r["northd_ms"] for r in rows if r.get("northd_ms") is not None]
    changes = [r["changes"] for r in rows if r["changes"] is not None]
    out: dict[str, Any] = {"samples": len(rows), "with_switch_changes": len(lat)}
    if lat:
        out.update(p50_ms=round(percentile(lat, 50), 1), p99_ms=round(percentile(lat, 99), 1),
                   max_ms=round(max(lat), 1))
    out.update(cpu_p50_ms=round(percentile(cpu, 50), 1), cpu_p99_ms=round(percentile(cpu, 99), 1))
    if inputs:
        out.update(input_p50_ms=round(percentile(inputs, 50), 1),
                   input_p99_ms=round(percentile(inputs, 99), 1))
    if switch:  # ovs-vswitchd's answer to a barrier sent as the input arrived
        out.update(switch_p50_ms=round(percentile(switch, 50), 1),
                   switch_p99_ms=round(percentile(switch, 99), 1))
    if northd:  # ovn-controller's health flip: ovn-northd's part of it
        out.update(northd_p50_ms=round(percentile(northd, 50), 1),
                   northd_p99_ms=round(percentile(northd, 99), 1))
    if worker:
        out.update(worker_p50_ms=round(percentile(worker, 50), 2),
                   worker_p99_ms=round(percentile(worker, 99), 2))
    if changes:
        out.update(changes_mean=round(sum(changes) / len(changes), 2), changes_max=max(changes))
    # every sample, in order, kept in the results: a p99 of 50 samples is one
    # of them, and an outlier is explained by its own figures (e.g. a health
    # flip 6.95 s from the SB write but 24 ms from the update's arrival)
    out["rows"] = rows
    return out


def ovn_controller_start(side: Side) -> None:
    sb = side.sb
    sb.vsctl("set", "Open_vSwitch", ".", "external_ids:ovn-encap-type=geneve",
             "external_ids:ovn-encap-ip=127.0.0.1")
    pidfile = sb.spawn_daemon("ovn-controller", "ovn-controller", sb.ovs_db_remote,
                              unixctl=False)
    side.pid = int(pidfile.read_text().strip())
    k, _ = side.nb_with_cfg([])
    side.reported(k, 300)


def lbaffd_start(side: Side) -> None:
    daemon = BenchDaemon(side.sb, "--log-level", "debug")
    daemon.start(timeout=300)
    side.daemon, side.pid, side.tail = daemon, daemon.pid, LogTail(daemon)


def lbaffd_restart(side: Side, timeout: float, *extra: str) -> dict[str, Any]:
    """SIGTERM, start again (with ``extra`` flags): start -> in sync, and what
    that first pass sent."""
    from bench.restart import restart

    d = side.daemon
    assert d is not None
    d.extra = (*d.extra, *extra)
    res = restart(side.sb, d, timeout=timeout)
    side.pid = d.pid
    side.settle(timeout)
    return res


def ovn_controller_restart(side: Side, timeout: float) -> dict[str, Any]:
    """Stop ovn-controller (``exit``) and start it: start -> it reports the
    current nb_cfg again (its flows recomputed and installed)."""
    sb = side.sb
    ctls = list(sb.rundir.glob(f"ovn-controller.{side.pid}.ctl"))
    if ctls:
        run("ovs-appctl", "-t", str(ctls[0]), "exit", env=sb.env)
    wait_for(lambda: not Path(f"/proc/{side.pid}").exists(), 60, "ovn-controller to exit")
    t0 = time.time()
    pidfile = sb.spawn_daemon("ovn-controller", "ovn-controller", sb.ovs_db_remote,
                              unixctl=False)
    side.pid = int(pidfile.read_text().strip())
    k, _ = side.nb_with_cfg([])
    done = side.reported(k, timeout)
    side.settle(timeout)
    return {"in_sync_s": round(done - t0, 3), "rss_peak_mb": round(side.rss_peak(), 1)}
