"""The daemon: wires the monitors, the reconciler and the OpenFlow channel
around one worker loop.

All decisions happen on the worker (the main thread).  The OVSDB threads and
the OpenFlow reader only put wake-up tokens on its queue, so there is no
shared mutable state to lock beyond the IDL lock used to take snapshots.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import replace
from types import FrameType

import structlog

from lbaffd.compile.layout import COMPANION_MODE, STANDALONE, STANDALONE_MODE, Pipeline
from lbaffd.compile.stages import vip_mac
from lbaffd.config import AUTO_MODE, Settings
from lbaffd.model import loadbalancer as model
from lbaffd.model import ownership as own
from lbaffd.model.distribution import MODES, min_slots_for_version
from lbaffd.model.plan import VipPlan
from lbaffd.model.topology import Topology, build_topology
from lbaffd.openflow.channel import ConnectionLost, OpenFlowChannel, Reply
from lbaffd.openflow.flowdesc import monitor_update_cookies
from lbaffd.ops import memtrim
from lbaffd.ops.control import ControlServer
from lbaffd.ops.daemonize import ProcessHooks
from lbaffd.ops.exposition import live_families
from lbaffd.ops.gcpause import Freezer, GcPause, release_frames
from lbaffd.ops.metrics import LiveCollector, Metrics
from lbaffd.ops.report import PassReport
from lbaffd.ops.sdnotify import Notifier
from lbaffd.ops.status import ReconcileStats, Status
from lbaffd.ovn import chassis as ovnchassis
from lbaffd.ovn.runtime import CompanionRuntime
from lbaffd.packetin.neighbor import neighbor_advert
from lbaffd.packetin.reject import Refuser, TokenBucket
from lbaffd.reconcile import ctflush
from lbaffd.reconcile.changes import ChangeTracker
from lbaffd.reconcile.entries import (
    EntryKeeper,
    ExpectedDeletes,
    removed_entry,
    removed_managed_flow,
)
from lbaffd.reconcile.longidle import RemovedEntry
from lbaffd.reconcile.reconciler import Reconciler, ReconcileResult, cleanup
from lbaffd.sb.conditions import SbConditions
from lbaffd.sb.delta import Delta, read_delta
from lbaffd.sb.inputs import Inputs, read_all
from lbaffd.sb.monitor import (
    OVS_COLUMNS,
    OVS_TABLES,
    SB_COLUMNS,
    SB_TABLES,
    DbMonitor,
    configure_ssl,
    read_bridge_external_ids,
    read_local,
)

log = structlog.get_logger("lbaffd")

WAKE = "wake"
STOP = "stop"
OF_DOWN = "openflow-down"
FOREIGN = "switch-changed"
FLUSHED = "flows-deleted"  # lbaffd flows deleted by someone else (ovn-controller's flush)
RECOMPUTE = "recompute"  # operator asked: read everything, compile everything
OFPT_PACKET_IN = 10
OFPT_FLOW_REMOVED = 11
OFPT_REQUESTFORWARD = 32


class Daemon:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 process: ProcessHooks | None = None) -> None:
        self.settings = settings.with_defaults()
        self._process = process  # OVS-daemon conventions (ops_daemonize), if any
        self.pipeline: Pipeline = STANDALONE
        self.metrics = metrics or Metrics()
        self._queue: queue.Queue[str | RemovedEntry] = queue.Queue()
        self._stopping = threading.Event()
        self._ovs: DbMonitor | None = None
        self._sb: DbMonitor | None = None
        self._channel: OpenFlowChannel | None = None
        self._reconciler: Reconciler | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._synced = False
        self._status = Status()
        self._notifier = Notifier()
        self._control: ControlServer | None = None
        self._heartbeat = time.monotonic()
        self._queued = 0
        self._sb_read_at = 0.0
        # the last full read, kept up to date by incremental passes
        self._inputs: Inputs | None = None
        self._topo: Topology | None = None
        self._companion: CompanionRuntime | None = None  # companion mode's state
        # follows every input between full passes (None: a full pass is due)
        self._changes: ChangeTracker | None = None
        self._sbcond: SbConditions | None = None  # None: --monitor-all
        self._expected_deletes = ExpectedDeletes()
        self._gc_pause = GcPause()  # bulk work (full passes, SB intake) without GC sweeps
        self._freezer = Freezer()
        self._nd_bucket = TokenBucket(rate=200.0, burst=400.0)
        self._report = PassReport(self.metrics)
        self._refuser = Refuser(self._packet_out, lambda c: self._report.vip_by_cookie.get(c),
                                lambda lb, vip, kind: self.metrics.refusals.labels(
                                    lb, vip, kind).inc())

    # ------------------------------------------------------------ DaemonHandle

    def status(self) -> Status:
        return self._status  # replaced whole by the worker: always consistent

    def live_channel(self) -> OpenFlowChannel:
        ch = self._channel
        if ch is None or not ch.connected:
            raise ConnectionLost("OpenFlow channel is down")
        return ch

    def connections(self) -> dict[str, bool]:
        """Live state of each peer: the switch, the SB and the local OVS DB."""
        ch = self._channel
        return {"openflow": ch is not None and ch.connected,
                "sb": self._sb is not None and self._sb.connected,
                "ovsdb": self._ovs is not None and self._ovs.connected}

    def request_recompute(self) -> None:
        self._queue.put(RECOMPUTE)

    def sb_rows(self) -> dict[str, int]:
        """Rows of each SB table this daemon holds (``sb/rows``)."""
        sb = self._sb
        if sb is None or sb.idl is None:
            return {}
        with sb.conn.lock:
            return {name: len(t.rows) for name, t in sb.idl.tables.items()}

    # ------------------------------------------------------------ health (HTTP probes)

    def _stale_after(self) -> float:
        return max(3 * self.settings.audit_interval, 30.0)

    def live(self) -> tuple[bool, str]:
        """The worker loop turned recently (it wakes at least every audit interval)."""
        age = time.monotonic() - self._heartbeat
        return age < self._stale_after(), f"worker loop {age:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        """The switch was in sync with the SB recently."""
        last = self._status.stats.last_sync
        if not last:
            return False, "no full sync yet"
        age = time.time() - last
        return age < self._stale_after(), f"in sync {age:.1f}s ago"

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        self._install_signal_handlers()
        try:
            self._start()
            self._loop()
        except Exception:
            if not self._stopping.is_set():
                raise
            # stopped while still waiting for a database: not a failure
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(STOP)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _wake(self, _source: str = "") -> None:
        self._queue.put(WAKE)

    def _start(self) -> None:
        s = self.settings
        os.makedirs(s.rundir, mode=0o700, exist_ok=True)
        os.chmod(s.rundir, 0o700)  # the control socket is local-only by default
        ctl = os.path.join(s.rundir, "lbaffd.ctl")
        if os.path.exists(ctl):
            os.unlink(ctl)  # left by a killed predecessor
        try:
            s.pipeline(STANDALONE_MODE if s.mode == AUTO_MODE else s.mode)  # flags sane?
        except ValueError as exc:
            raise SystemExit(f"lbaffd: {exc}") from None
        self._ovs = DbMonitor(s.ovs_db, "Open_vSwitch", OVS_TABLES, self._wake, self._stopping,
                              columns=OVS_COLUMNS)
        self._ovs.start()
        external_ids = self._wait_local_external_ids()
        self.settings = s = s.resolve(external_ids)
        self.pipeline = self._choose_pipeline(external_ids)
        self._control = ControlServer(ctl, self, self.pipeline)
        self._control.start()
        self.metrics.registry.register(LiveCollector(self))
        self.metrics.serve(s.metrics_address, self,
                           live=lambda: live_families(self, self.pipeline))
        if self._process is not None:
            self._process.started(self, self.pipeline)  # ovs-appctl -t lbaffd; --detach returns
        if not s.sb_db:
            raise SystemExit("no SB remote: pass --sb-db or set external_ids:ovn-remote")
        if s.distribution not in MODES:
            raise SystemExit(f"--distribution must be one of {', '.join(MODES)}")
        if "ssl:" in s.sb_db or "ssl:" in s.ovs_db:
            try:
                configure_ssl(s.ssl_private_key, s.ssl_certificate, s.ssl_ca_cert)
            except ValueError as exc:
                raise SystemExit(f"lbaffd: {exc}") from None
        log.info("settings", sb_db=s.sb_db, bridge=s.bridge, of_target=s.of_target,
                 chassis=s.chassis or "-", ovs_version=external_ids.get("ovs_version", "?"),
                 distribution=s.distribution, mode=self.pipeline.mode,
                 tables=f"{self.pipeline.base}..{self.pipeline.base + self.pipeline.stages - 1}",
                 next_table=self.pipeline.next_table if self.pipeline.embedded else "-")
        self._sb = DbMonitor(s.sb_db, "OVN_Southbound", SB_TABLES, self._wake, self._stopping,
                             columns=SB_COLUMNS, gc_pause=self._gc_pause)
        self._sb.start()
        self._sbcond = None if s.monitor_all else SbConditions(self._sb, s.chassis)
        self._reconciler = Reconciler(self.pipeline, s.max_idle_timeout, s.distribution)
        self._reconciler.on_delete = self._expected_deletes.expect
        self._reconciler.min_slots = min_slots_for_version(external_ids.get("ovs_version", ""))
        self._entries = EntryKeeper(self.metrics, s.max_idle_timeout)

    def _choose_pipeline(self, external_ids: dict[str, str]) -> Pipeline:
        """The mode (``auto``: companion when ovn-controller manages the bridge),
        and the start-up refusals that keep lbaffd from damaging a bridge
        another controller manages."""
        s = self.settings
        channel = self._wait_channel()
        mode = s.mode
        if mode == AUTO_MODE:
            table0 = ovnchassis.foreign_in_tables(channel, [0]).get(0, 0)
            ovn, why = ovnchassis.managed_by_ovn(external_ids, table0, s.ovn_rundir)
            mode = COMPANION_MODE if ovn else STANDALONE_MODE
            log.info("mode_chosen", mode=mode, reason=why)
        try:
            pipeline = s.pipeline(mode)
        except ValueError as exc:
            raise SystemExit(f"lbaffd: {exc}") from None
        busy = ovnchassis.foreign_in_tables(channel, pipeline.tables)
        if busy and (pipeline.companion or not s.force):
            log.error("tables_in_use", mode=mode, tables=",".join(map(str, sorted(busy))),
                      flows=sum(busy.values()),
                      hint=("choose another --table-base" if pipeline.companion else
                            "another controller manages this bridge: use --mode companion "
                            "next to ovn-controller, or --force"))
            raise SystemExit(2)
        if pipeline.companion:
            self._companion = CompanionRuntime(pipeline, s.take_over, self.metrics)
            clash = self._zone_clash()
            if clash:
                log.error("ct_zone_in_use", zone=pipeline.ct_zone, ports=",".join(clash),
                          hint="choose another --ct-zone")
                raise SystemExit(2)
        return pipeline

    def _zone_clash(self) -> list[str]:
        """Companion: ports to which ovn-controller gave lbaffd's zones."""
        assert self._ovs is not None and self._companion is not None
        with self._ovs.conn.lock:
            ext = read_bridge_external_ids(self._ovs, self.settings.bridge)
        return self._companion.zone_clash(ext)

    def _wait_channel(self) -> OpenFlowChannel:
        """The switch, waited for (a daemon may start before ovs-vswitchd)."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                return self._ensure_channel()
            except Exception as exc:
                log.warning("openflow_unreachable", target=self.settings.of_target,
                            error=str(exc), retry_in=delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        raise SystemExit(0)

    def _wait_local_external_ids(self) -> dict[str, str]:
        assert self._ovs is not None
        while not self._stopping.is_set():
            idl = self._ovs.idl
            if idl is not None and idl.in_sync:
                with self._ovs.conn.lock:
                    ext, _ = read_local(self._ovs, self.settings.bridge or "br-int")
                return ext
            time.sleep(0.05)
        raise SystemExit(0)

    def _packet_out(self, port: int, data: bytes) -> None:
        ch = self._channel
        if ch is not None and ch.connected:
            ch.packet_out(port, data)

    def _on_async(self, reply: Reply) -> None:
        """Reader thread: only translate and queue (the worker acts).  A learned
        entry's removal is handled on its own; anything else that touched the
        switch (one of our flows removed, a group changed by someone else)
        triggers a pass, so foreign interference is repaired at once.  A
        reject flow's packet-in is answered here (bounded by a token bucket)."""
        if reply.msg_type == OFPT_PACKET_IN:
            msg = reply.parse()
            if msg is not None and own.is_managed(msg.cookie):
                port, frame = int(msg.match["in_port"]), bytes(msg.data)
                if (self._refuser.handle(msg.cookie, port, frame) == "unknown"
                        and self._nd_bucket.take()):
                    answer = neighbor_advert(frame, vip_mac)
                    if answer is not None:
                        self._packet_out(port, answer)
            return
        own_delete = removed_managed_flow(reply)
        if own_delete is not None:
            if self._expected_deletes.take(*own_delete):
                return  # a flow this daemon deleted itself
            self._queue.put(FLUSHED)
        entry = removed_entry(reply)
        if entry is not None:
            self._queue.put(entry)
        elif reply.msg_type in (OFPT_FLOW_REMOVED, OFPT_REQUESTFORWARD) or any(
                own.is_managed(c) for c in monitor_update_cookies(reply.raw)):
            self._queue.put(FOREIGN)

    def _on_of_down(self) -> None:
        self._queue.put(OF_DOWN)

    def _shutdown(self) -> None:
        # Flows and groups stay on the switch: traffic keeps flowing without us.
        self._notifier.stopping()
        if self._control is not None:
            self._control.stop()
        if self._process is not None:
            self._process.stopped()
        if self.settings.cleanup_on_exit and self._channel is not None and self._channel.connected:
            try:
                groups = cleanup(self._channel)
                log.info("cleaned_up", groups=groups)
            except Exception as exc:
                log.warning("cleanup_failed", error=str(exc))
        if self._channel is not None:
            self._channel.close()
        for mon in (self._sb, self._ovs):
            if mon is not None:
                mon.stop()
        log.info("stopped")

    # ------------------------------------------------------------ worker

    def _loop(self) -> None:
        next_audit = time.monotonic()
        beat = self._notifier.watchdog_interval  # 0: no systemd watchdog
        next_beat = 0.0
        while not self._stopping.is_set():
            now = self._heartbeat = time.monotonic()
            if beat and now >= next_beat:
                self._notifier.watchdog()  # proves the worker loop itself is alive
                next_beat = now + beat
            comp = self._companion
            if comp is not None and self._synced and now >= comp.ages_due:
                comp.poll_ages(self._channel, now)
            due = min(next_audit, self._retry_at) if self._retry_at else next_audit
            if comp is not None:
                due = min(due, comp.retry_at or due, comp.ages_due if self._synced else due)
            try:
                items = [self._queue.get(timeout=max(0.0, min(due, next_beat or due) - now))]
            except queue.Empty:
                if time.monotonic() < due:
                    continue  # woke only for the watchdog
                items = [WAKE]
            items += self._drain()
            self._queued = len(items)  # coalesced into this pass; bounded by its duration
            if STOP in items:
                break
            if FLUSHED in items and comp is not None:
                comp.flush.noticed()
            removed = [i for i in items if isinstance(i, RemovedEntry)]
            if removed:
                self._handle_removed(removed)
                if comp is not None:  # entries reported after the flows were back
                    self._after_pass(False)
            if all(isinstance(i, RemovedEntry) for i in items) and time.monotonic() < due:
                continue  # only entry notifications: no pass needed
            if self._retry_at and time.monotonic() < self._retry_at:
                continue
            # read the switch back on the timer and whenever it reported a change
            # by someone else or the connection was new; else trust the last pass
            audit = time.monotonic() >= next_audit or FOREIGN in items or OF_DOWN in items
            if comp is not None and comp.retry_at and time.monotonic() >= comp.retry_at:
                items.append(RECOMPUTE)  # companion: ports ovn-controller had not programmed
            audit = audit or RECOMPUTE in items
            ok = self._pass(audit, full=RECOMPUTE in items)
            if comp is not None:  # only a pass that read the switch back repairs a flush
                self._after_pass(ok and audit)
            interval = self.settings.audit_interval
            if not ok:
                # not in sync (a DB resyncing, the switch away, a bundle refused while
                # someone else was emptying the switch): look again soon, as an audit
                # (the retry, if one is due), but not in a tight loop
                next_audit = self._retry_at or time.monotonic() + min(interval, 0.5)
            elif audit:
                next_audit = time.monotonic() + interval

    def _drain(self) -> list[str | RemovedEntry]:
        """Coalesce a burst of changes into one pass."""
        time.sleep(self.settings.debounce)
        items: list[str | RemovedEntry] = []
        try:
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            return items

    def _handle_removed(self, removed: list[RemovedEntry]) -> None:
        if self._companion is not None:  # maybe ovn-controller's flush: kept to be put back
            self._companion.deleted(removed)
        try:
            self._entries.handle(removed, self._status.plans, self.live_channel())
        except Exception as exc:  # the switch went away: those entries are gone anyway
            log.warning("affinity_entries_not_extended", count=len(removed), error=str(exc))

    def _after_pass(self, ok: bool) -> None:
        assert self._companion is not None
        ch = self._channel
        if ch is not None and ch.connected:
            self._companion.after_pass(ok, self._entries, self._status.plans, ch)

    def _pass(self, audit: bool = True, full: bool = False) -> bool:
        """One reconcile pass; False when it could not run (retried later).

        Between audits, a change of any input is applied incrementally
        (O(what it affects), see ``changes``) unless it reshapes the local
        datapaths or is a bulk change: then a full pass runs."""
        try:
            with self._gc_pause:  # an audit decodes every flow on the switch
                if not full and self._incremental_pass(audit):
                    if audit:  # its dump of the switch, back to the system (see memtrim)
                        memtrim.trim()
                    return True
        except Exception as exc:
            return self._failed(exc)
        assert self._ovs is not None and self._sb is not None
        self._sb_read_at = time.time()
        # the last pass's inputs and tracker go before this pass reads its
        # own (a full pass makes a new tracker; one that fails leaves the
        # next pass a full one): held through the pass they were its peak
        self._changes = None
        self._inputs = self._topo = None
        with self._gc_pause:
            inputs = read_all(self._ovs, self._sb, self.settings.bridge, self.settings.chassis)
            if inputs is None:
                return False
            try:
                topo = build_topology(inputs.snapshot)
                channel = self._ensure_channel()
                assert self._reconciler is not None
                lbs = inputs.lbs
                raw_topo = topo
                if self._companion is not None:
                    lbs, topo = self._companion.view(inputs.snapshot, lbs, topo, channel)
                    if self._zone_clash():
                        log.error("ct_zone_in_use", zone=self.pipeline.ct_zone,
                                  hint="ovn-controller assigned lbaffd's zone to a port; "
                                  "restart lbaffd with another --ct-zone")
                result = self._reconciler.reconcile(channel, lbs, topo, audit)
            except Exception as exc:
                return self._failed(exc)
            self._inputs, self._topo = inputs, topo
            self._done(result, inputs.issues + result.desired.issues)
            # for the changes that follow (the switch is in sync already); it
            # follows the SB's topology, companion mode's view is made from it
            self._changes = ChangeTracker(inputs, raw_topo)
            if self._sbcond is not None:  # narrow (or widen) to what is local now
                self._sbcond.update(inputs.snapshot, raw_topo)
        # The desired state is 100k+ long-lived, acyclic objects at 1000s of
        # LBs: a cyclic-GC sweep over them stalls the worker for ~1 s at
        # random.  Move what this full pass built out of the collector's way
        # (refcounting still frees it); later passes collect only new objects.
        self._freezer.collect_and_freeze()  # frozen cycles swept now and then
        memtrim.trim()  # what the pass freed, back to the system (see memtrim)
        return True

    def _incremental_pass(self, audit: bool) -> bool:
        """True when the pending change was applied incrementally (or there
        was none, or, for an audit, the switch was checked against the state
        already compiled); False when a full pass must run.

        For an audit a pending change is applied first, incrementally, and the
        switch is then audited against the state it leaves: on a busy cluster
        some input is always changing, and declining here made nearly every
        audit a full recompile (16 s at 5000 LBs, issue 19)."""
        ovs, sb, rec, tracker = self._ovs, self._sb, self._reconciler, self._changes
        assert ovs is not None and sb is not None and rec is not None
        if tracker is None:
            return False
        read_at = time.time()
        delta = read_delta(ovs, sb, self.settings.bridge)
        if delta is None:
            log.debug("full_pass_needed", reason="resync")
            return False  # the full pass reads everything again
        if not delta.empty and not self._apply_step(tracker, delta, read_at):
            return False
        if not audit:
            return True
        tracker = self._changes
        assert tracker is not None
        # SB changes that arrive meanwhile are applied between the audit's slices
        result = rec.audit_unchanged(self._ensure_channel(),
                                     lambda: self._incremental_pass(False))
        if result is None:
            return False
        self._done(result, tracker.inputs.issues + result.desired.issues)
        return True

    def _apply_step(self, tracker: ChangeTracker, delta: Delta, read_at: float) -> bool:
        """One change of inputs applied in O(what it affects); False when it
        needs a full pass (then the tracker is dropped: the full pass makes a
        new one)."""
        rec = self._reconciler
        assert rec is not None
        self._sb_read_at = read_at
        self._changes = None  # until the step is on the switch (see changes.ChangeTracker)
        step = tracker.step(delta)
        if step is None:
            log.debug("full_pass_needed", reason="changed",
                      port_bindings=len(delta.port_bindings), lbs=len(delta.lbs))
            return False
        if step.no_effect:  # e.g. a pod on another chassis that is no backend here
            log.debug("input_change_no_effect", port_bindings=len(delta.port_bindings),
                      monitors=len(delta.monitors), lbs=len(delta.lbs),
                      ms=round((time.time() - self._sb_read_at) * 1000, 2))
        changed, topo, old_topo = step.changed, step.topo, step.old_topo
        if self._companion is not None:
            # next to ovn-controller: a change of the local ports or of which
            # datapaths a port reaches moves interceptions, reply hooks and
            # take-overs (a full pass); else the change as lbaffd realizes it,
            # on the view of OVN's layout the last full pass read
            seen = self._companion.incremental(step, self._topo)
            if seen is None:
                log.debug("full_pass_needed", reason="companion_topology")
                return False
            changed, topo, old_topo = seen
        if not step.no_effect:
            result = rec.reconcile_changed(self._ensure_channel(), changed, topo, old_topo,
                                           step.ports)
            if result is None:
                return False
            self._done(result, step.issues + result.desired.issues)
        tracker.commit(step)
        self._changes = tracker
        if self._sbcond is not None:
            self._sbcond.update(step.inputs.snapshot, step.topo)
        self._inputs, self._topo = step.inputs, topo
        if self._companion is not None:
            self._companion.after_change(step.inputs.lbs)
        return True

    def _failed(self, exc: Exception) -> bool:
        """The switch or channel failed: retry with backoff (short cap: a
        restarted ovs-vswitchd must get its flows back within ~1 s)."""
        self._backoff = min(max(self._backoff * 2, 0.1), 1.0)
        self._retry_at = time.monotonic() + self._backoff
        self.metrics.reconciles.labels("error").inc()
        st = self._status.stats
        self._status = replace(self._status, stats=replace(st, errors=st.errors + 1))
        log.warning("reconcile_failed", error=str(exc), error_type=type(exc).__name__,
                    retry_in=round(self._backoff, 2))
        release_frames(exc)  # the failed pass's locals, not kept by a cycle (gcpause)
        return False

    def _done(self, result: ReconcileResult, issues: tuple[model.ParseIssue, ...]) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0
        # before the pass is reported: its "reconciled" line means the flush is done
        self._flush_departed(self._status.plans, result)
        self._report.issues(issues)
        self._report.result(result, self._queued, self._sb_read_at)
        self._publish(result, issues)
        if not self._synced:
            self._synced = True
            self._notifier.ready(f"in sync: {len(result.desired.state.flows)} flows")
            log.info("initial_sync_done", changes=len(result.changes),
                     flows=len(result.desired.state.flows),
                     groups=len(result.desired.state.groups),
                     ms=round(result.seconds * 1000, 1))

    def _flush_departed(self, before: tuple[VipPlan, ...], result: ReconcileResult) -> None:
        """Flush the conntrack entries of backends that left a VIP in this pass
        (``lbaffd.reconcile.ctflush``), now that the pass is on the switch.  Only looked
        for when the pass changed or deleted a group or deleted flows."""
        c = result.changes
        if not before or not (c.mod_groups or c.del_groups or c.del_flows):
            return
        gone = ctflush.departures(before, result.desired.vips, self.pipeline)
        if not gone:
            return
        try:
            self.live_channel().send_checked([f.message() for d in gone for f in d.flushes])
        except Exception as exc:  # e.g. an OVS without NXT_CT_FLUSH (< 3.1)
            log.warning("conntrack_flush_failed", error=str(exc), backends=len(gone))
            return
        for d in gone:
            self.metrics.conntrack_flushes.labels(d.reason).inc()
            log.info("conntrack_flushed", lb=d.lb, vip=d.vip, backend=str(d.backend),
                     reason=d.reason, zones=[f.zone for f in d.flushes])

    def _ensure_channel(self) -> OpenFlowChannel:
        if self._channel is not None and self._channel.connected:
            return self._channel
        if self._channel is not None:
            self._channel.close()
        self._channel = OpenFlowChannel(
            self.settings.of_target, on_async=self._on_async, on_disconnect=self._on_of_down,
            on_skipped=lambda e: self.metrics.entries_skipped.labels(e.kind).inc())
        self._channel.connect(timeout=2.0)
        self._channel.enable_async()
        self._channel.monitor_flows()
        log.info("openflow_connected", target=self.settings.of_target)
        return self._channel

    def _publish(self, r: ReconcileResult, issues: tuple[model.ParseIssue, ...]) -> None:
        old = self._status.stats
        stats = ReconcileStats(
            passes=old.passes + 1, errors=old.errors, last_seconds=r.seconds,
            last_changes=len(r.changes), changes_sent=old.changes_sent + len(r.changes),
            desired_flows=len(r.desired.state.flows), desired_groups=len(r.desired.state.groups),
            installed_flows=r.installed_flows, installed_groups=r.installed_groups,
            last_sync=time.time())
        left = self._companion.left_to_ovn if self._companion is not None else ()
        self._status = Status(plans=r.desired.vips, issues=issues, stats=stats,
                              mode=self.pipeline.mode, left_to_ovn=left)
        self._report.empty_vips(r.desired.vips)
        self._refuser.keep_only(self._report.forget_gone_vips(r.desired.vips))
