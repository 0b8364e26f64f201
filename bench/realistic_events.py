"""The event samples of one daemon (a ``realistic_side.Side``): backend
added, health flip, remote port added, local port added, LB added, LB
removed, each timed from its change to the daemon's own word that it is done
(lbaffd's ``reconciled`` line, ovn-controller's ``nb_cfg_timestamp`` or
``Port_Binding.up``), with the daemon's CPU over the sample.

What a sample needs is made before the first sample of its type (the pods of
backend added and port added, the LBs of LB removed) in one transaction, and
every sample starts with all quiet (``Side.settle``): at N=5000 each NB change
costs ovn-northd 23.03 a full recompute, which a sample must neither wait for
nor be timed with."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench import cluster as cl
from bench.common import event_time, percentile, wait_for
from bench.ovsdb_watch import OvsdbWatch
from bench.realistic_side import NB, SB, Side
from bench.sb_direct import SbDirect, backend_for
from bench.switch_probe import SwitchProbe

EVENT_TYPES = ("backend_added", "health_flip", "remote_port_added", "local_port_added",
               "lb_added", "lb_removed")
# lbaffd's log lines that carry a pass's or an input step's duration (``ms``);
# the bench runs it with debug logs for the last two
WORKER_EVENTS = ("reconciled", "in_sync", "input_change_no_effect")


@dataclass
class EventSamples:
    """The samples of ``types`` on ``side``; one per side, run for the
    events phase and again for the events during audits (the pods it made
    are numbered on)."""

    side: Side
    types: list[str] = field(default_factory=lambda: list(EVENT_TYPES))
    local_watch: OvsdbWatch | None = None  # the local Open_vSwitch DB's Interface rows
    switch_probe: SwitchProbe | None = None  # ovs-vswitchd's own answer time at an ofport
    # event samples written to the SB with ovn-northd paused (lbaffd only)
    direct: SbDirect | None = None
    next_pod: dict[int, int] = field(default_factory=dict)
    # the pods made ahead for the samples of an event type, taken in order
    pending: dict[str, list[cl.Pod]] = field(default_factory=dict)

    def run(self, samples: int, timeout: float,
            checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Samples of each event type (``checkpoint`` gets what is done after
        each type); with ``direct``, written to the SB while ovn-northd is
        paused, which then takes the SB back to the NB's content (the rows
        written here are not in the NB)."""
        if self.direct is None:
            return self._events(samples, timeout, checkpoint)
        self.side.northd("pause")
        try:
            self.direct.load(self.side.c)
            out = self._events(samples, timeout, checkpoint)
        finally:
            self.side.northd("resume")
            self.side.extra_backends.clear()
            self.side.settle(timeout)
        out["sb_direct"] = True
        return out

    def _events(self, samples: int, timeout: float,
                checkpoint: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        monitors = [r["_uuid"][1] for r in self.side.select(
            self.side.sb.sb_remote, SB, "Service_Monitor", ["_uuid"])]
        out: dict[str, Any] = {}
        runs: dict[str, Callable[[int], dict[str, Any]]] = {
            "backend_added": self._backend_added,
            "health_flip": lambda i: self._health_flip(monitors, i),
            "remote_port_added": lambda i: self._port_added(1 + i % self.side.c.nodes),
            "local_port_added": lambda i: self._port_added(0),
            "lb_added": self._lb_added,
            "lb_removed": self._lb_removed,
        }
        for name in self.types:
            if name == "health_flip" and not monitors:
                out[name] = {"error": "no Service_Monitor rows"}
                continue
            self._prepare(name, samples, timeout)
            rows = []
            with self._sb_cfg(name == "remote_port_added", timeout):
                for i in range(samples):
                    self.side.settle(timeout)
                    rows.append(runs[name](i))
            out[name] = summarize(rows)
            if checkpoint is not None:
                checkpoint(dict(out, rss_peak_mb=round(self.side.rss_peak(), 1)))
        out["rss_peak_mb"] = round(self.side.rss_peak(), 1)
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
        if not wanted or self.side.lbaffd:
            yield
            return
        self.side.northd("pause")
        try:
            yield
        finally:
            res = self.side.sbt([{"op": "select", "table": "SB_Global", "where": [],
                                  "columns": ["nb_cfg"]}])[0]
            assert isinstance(res, dict)
            self.side.nb([{"op": "update", "table": "NB_Global", "where": [],
                           "row": {"nb_cfg": int(res["rows"][0]["nb_cfg"])}}])
            self.side.northd("resume")
            self.side.settle(timeout)

    def _bind_with_cfg(self, pod: cl.Pod) -> int:
        """Bind a remote pod with an ``SB_Global.nb_cfg`` bump in the same
        transaction (``_sb_cfg``); the new nb_cfg."""
        res = self.side.sbt([*cl.sb_bind_ops(self.side.pb_uuids, self.side.chassis_uuids,
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
            return 1 + i % self.side.c.nodes
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
        self.side.settle(timeout)
        self.pending[name] = pods

    def _make_lbs_to_remove(self, samples: int, timeout: float) -> None:
        """The LBs the samples of ``lb_removed`` remove are those ``lb_added``
        added; those missing (``--events lb_removed`` alone, or fewer samples
        of ``lb_added``) are made first, in one transaction, and all is quiet
        before the first sample."""
        remote, db = ((self.side.sb.sb_remote, SB) if self.direct is not None
                      else (self.side.sb.nb_remote, NB))
        have = {r["name"] for r in self.side.select(remote, db, "Load_Balancer", ["name"])}
        missing = [i for i in range(samples) if self._extra_lb(i).name not in have]
        if not missing:
            return
        if self.direct is not None:
            pods = self.side.c.pods
            self.side.sbt([self.direct.lb_insert(self._extra_lb(i), self._extra_base(i), pods)
                           for i in missing], timeout)
        else:
            self.side.nb_bump(cl.nb_lbs_in_group_ops([self._extra_lb(i) for i in missing],
                                                     self.side.c.pods), timeout)
        self.side.settle(timeout)

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
        if self.side.lbaffd:
            self.side.settle(timeout)
            assert self.side.tail is not None
            since = t0 if t_from is None else t_from
            passes = self.side.tail.reconciled_since(since)
            latency = event_time(passes[-1]) - t0 if passes else None
            sent: int | None = self.side.changes_sent() - sent0
            # the worker's own time for it: its passes and no-op steps since
            worker = sum(float(e["ms"]) for e in self.side.tail.poll()
                         if e.get("event") in WORKER_EVENTS and event_time(e) >= since
                         and not e.get("audit"))
            where = attribution(passes, t0)
        else:
            assert k is not None
            latency = self.side.reported(k, timeout) - t0
            self.side.settle(timeout)
            sent = None
        return {"latency_ms": None if latency is None else round(latency * 1000, 2),
                "cpu_ms": round((self.side.daemon_cpu() - cpu0) * 1000, 1), "changes": sent,
                "worker_ms": worker, **where}

    def _start(self) -> tuple[float, int]:
        return self.side.daemon_cpu(), self.side.changes_sent() if self.side.lbaffd else 0

    def _direct_lb(self, op: dict[str, Any], name: str, cpu0: float,
                   sent0: int) -> dict[str, Any]:
        """An LB event written to the SB: latency from the row's arrival."""
        mark = self.side.watch.mark()
        t_from = time.time()
        self.side.sbt([op])
        return self._finish(self.side.lb_arrival(mark, name), None, cpu0, sent0, t_from=t_from)

    def _backend_added(self, i: int) -> dict[str, Any]:
        s = backend_for(self.side.c.services, i, unchecked=self.direct is not None)
        svc = self.side.c.services[s]
        extra = self.side.extra_backends.setdefault(s, [])
        new, bound = self._take_pod("backend_added", 1 + i % self.side.c.nodes)
        if not bound:
            self._bind([new])
            self.side.settle()
        extra.append(new.name)
        cpu0, sent0 = self._start()
        if self.direct is not None:
            return self._direct_lb(SbDirect.lb_vips_update(svc, self.side.c.pods, extra),
                                   svc.name, cpu0, sent0)
        op = {"op": "update", "table": "Load_Balancer", "where": [["name", "==", svc.name]],
              "row": cl.lb_row(svc, self.side.c.pods, extra)}
        t_from = time.time()
        k, t_sb = self.side.nb_with_cfg([op], lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _health_flip(self, monitors: list[str], i: int) -> dict[str, Any]:
        uuid = monitors[(i // 2 * 7919) % len(monitors)]
        status = "offline" if i % 2 == 0 else "online"
        flip = {"op": "update", "table": "Service_Monitor",
                "where": [["_uuid", "==", ["uuid", uuid]]], "row": {"status": status}}
        cpu0, sent0 = self._start()
        if not self.side.lbaffd:
            return self._health_flip_through_northd(flip, cpu0)
        mark = self.side.watch.mark()
        t0 = time.time()
        self.side.sbt([flip])
        out = self._finish(t0, None, cpu0, sent0)
        seen = self.side.watch.first_after(
            mark, "Service_Monitor", lambda u: u.row == uuid and u.new.get("status") == status)
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
        mark = self.side.watch.mark()
        self.side.northd("pause")
        try:
            self.side.sbt([flip])
        finally:
            self.side.northd("resume")
        t0 = time.time()
        k = self.side.nb_bump([])
        out = self._finish(t0, k, cpu0, 0)
        up = self.side.watch.first_after(mark, "SB_Global",
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
        pods = [self.side.c.new_pod(node, self.next_pod) for node in nodes]
        if self.direct is not None:
            res = self.side.sbt([self.direct.port_binding_insert(pod) for pod in pods])
            for pod, r in zip(pods, res, strict=True):
                assert isinstance(r, dict)
                self.side.pb_uuids[pod.name] = r["uuid"][1]
            return pods
        self.side.nb(cl.nb_pods_ops(pods))
        selects = [{"op": "select", "table": "Port_Binding", "columns": ["_uuid"],
                    "where": [["logical_port", "==", pod.name]]} for pod in pods]

        def made() -> list[Any] | None:
            res = self.side.sbt(selects)
            return res if all(isinstance(r, dict) and r["rows"] for r in res) else None

        found = wait_for(made, timeout + len(pods), f"northd to make {len(pods)} ports",
                         step=0.1)
        for pod, r in zip(pods, found, strict=True):
            self.side.pb_uuids[pod.name] = r["rows"][0]["_uuid"][1]
        return pods

    def _bind(self, pods: list[cl.Pod]) -> None:
        self.side.sbt(cl.sb_bind_ops(self.side.pb_uuids, self.side.chassis_uuids,
                                     [(p.name, cl.chassis_name(p.node)) for p in pods]))

    def _port_added(self, node: int) -> dict[str, Any]:
        """A new pod: its LSP (northd makes the Port_Binding) and, once all
        is quiet, the event: bound by its chassis (remote), or its OVS
        interface appearing here (local; on lbaffd's side also bound)."""
        pod, _ = self._take_pod("remote_port_added" if node else "local_port_added", node)
        self.side.settle()
        cpu0, sent0 = self._start()
        t0 = time.time()
        k = None
        if node:
            if self.side.lbaffd:
                self._bind([pod])
            else:
                k = self._bind_with_cfg(pod)
        else:
            mark = self.local_watch.mark() if self.local_watch is not None else 0
            if self.side.lbaffd:
                self.side.sbt(cl.sb_bind_ops(self.side.pb_uuids, self.side.chassis_uuids,
                                             [(pod.name, self.side.sb.chassis)]))
            self.side.add_ports([pod.name])
            if not self.side.lbaffd:
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
        wait_for(lambda: any(r["up"] is True for r in self.side.select(
            self.side.sb.sb_remote, SB, "Port_Binding", ["up"],
            [["logical_port", "==", pod.name]])), 120,
                 f"ovn-controller to set {pod.name} up", step=0.003)
        latency = time.time() - t0
        self.side.settle()
        return {"latency_ms": round(latency * 1000, 2),
                "cpu_ms": round((self.side.daemon_cpu() - cpu0) * 1000, 1), "changes": None}

    def _lb_added(self, i: int) -> dict[str, Any]:
        cpu0, sent0 = self._start()
        svc = self._extra_lb(i)
        if self.direct is not None:
            op = self.direct.lb_insert(svc, self._extra_base(i), self.side.c.pods)
            return self._direct_lb(op, svc.name, cpu0, sent0)
        t_from = time.time()
        k, t_sb = self.side.nb_with_cfg(cl.nb_lb_in_group_ops(svc, self.side.c.pods), lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _lb_removed(self, i: int) -> dict[str, Any]:
        svc = self._extra_lb(i)
        if self.direct is not None:
            cpu0, sent0 = self._start()
            return self._direct_lb(SbDirect.lb_delete(svc.name), svc.name, cpu0, sent0)
        rows = self.side.select(self.side.sb.nb_remote, NB, "Load_Balancer", ["_uuid"],
                                [["name", "==", svc.name]])
        ref = ["uuid", rows[0]["_uuid"][1]]
        cpu0, sent0 = self._start()
        t_from = time.time()
        k, t_sb = self.side.nb_with_cfg([
            {"op": "mutate", "table": "Load_Balancer_Group",
             "where": [["name", "==", "cluster"]],
             "mutations": [["load_balancer", "delete", ["set", [ref]]]]},
            {"op": "delete", "table": "Load_Balancer", "where": [["_uuid", "==", ref]]}],
            lb=svc.name)
        return self._finish(t_sb, k, cpu0, sent0, t_from=t_from)

    def _extra_base(self, i: int) -> cl.Service:
        return self.side.c.services[(i * 7919 + 11) % len(self.side.c.services)]

    def _extra_lb(self, i: int) -> cl.Service:
        """The i-th added LB: shaped like a random service of the cluster."""
        base = self._extra_base(i)
        hi, lo = divmod(i, 250)
        ip = f"fd00:31::{i + 1:x}" if base.ipv6 else f"172.31.{hi}.{lo + 1}"
        return cl.Service(f"extra-{i}", base.protocol, base.ipv6, base.vip_ports, ip,
                          base.backends, base.affinity, base.hairpin_snat, False)


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
    # and the daemon's part after it: from ovn-northd's nb_cfg at the SB on
    after = [r["latency_ms"] - r["northd_ms"] for r in rows
             if r.get("northd_ms") is not None and r["latency_ms"] is not None]
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
                   northd_p99_ms=round(percentile(northd, 99), 1),
                   after_northd_p50_ms=round(percentile(after, 50), 1),
                   after_northd_p99_ms=round(percentile(after, 99), 1))
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
