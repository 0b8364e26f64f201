"""One daemon (lbaffd or ovn-controller) on the cluster-shaped SB of
``bench.cluster``: setup, cold convergence, churn, restart, and what its
event samples (``bench.realistic_events``) write and wait with.

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
from collections.abc import Callable
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
from lbaffd_sandbox.sandbox import Sandbox, ovsdb_transact, run

NB = "OVN_Northbound"
SB = "OVN_Southbound"
TICK = os.sysconf("SC_CLK_TCK")


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
        return k, self.lb_arrival(mark, lb, timeout)

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

    # ------------------------------------------------------------ what the event samples use

    def northd(self, command: str) -> None:
        """``pause`` or ``resume`` ovn-northd (it keeps its connections;
        paused, it writes nothing)."""
        run("ovn-appctl", "-t", str(self.sb.rundir / "northd.ctl"), command, env=self.sb.env)

    def lb_arrival(self, mark: int, name: str, timeout: float = 60.0) -> float:
        """When a change of the LB row ``name`` (``*``: any) written after
        ``mark`` reached our SB monitor."""
        return wait_for(lambda: self.watch.first_after(
            mark, "Load_Balancer", lambda u: name == "*" or u.new.get("name") == name),
            timeout, f"the SB to send LB {name}", step=0.005).at

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
