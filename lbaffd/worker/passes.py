"""One reconcile pass as the worker runs it: full, incremental or an audit,
with what follows it (the conntrack flush of departed backends, the report,
the status, the first sync's notice) and, when it fails, the retry.

The daemon's worker loop decides *when* a pass runs (timers, queued
tokens); this decides *which* pass: between audits a change of any input is
applied incrementally (O(what it affects), see ``reconcile.changes``) unless
it reshapes the local datapaths or is a bulk change: then a full pass reads
everything and compiles everything.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import replace

import structlog

from lbaffd.compile import memos
from lbaffd.compile.layout import Pipeline
from lbaffd.config import Settings
from lbaffd.model import loadbalancer as model
from lbaffd.model.topoindex import TopologyIndex
from lbaffd.model.topology import Topology
from lbaffd.openflow.connect import ChannelKeeper
from lbaffd.ops import memtrim
from lbaffd.ops.gcpause import Freezer, GcPause, release_frames
from lbaffd.ops.metrics import Metrics
from lbaffd.ops.report import PassReport
from lbaffd.ops.sdnotify import Notifier
from lbaffd.ops.status import Status
from lbaffd.ovn.runtime import CompanionRuntime
from lbaffd.packetin.reject import Refuser
from lbaffd.reconcile.changes import ChangeTracker
from lbaffd.reconcile.entries import EntryKeeper
from lbaffd.reconcile.longidle import RemovedEntry
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd.reconcile.result import ReconcileResult
from lbaffd.sb.bridge import BridgeReader
from lbaffd.sb.conditions import SbConditions
from lbaffd.sb.delta import Delta, read_delta
from lbaffd.sb.inputs import Inputs, read_all
from lbaffd.sb.monitor import DbMonitor
from lbaffd.worker import bookkeeping, startup
from lbaffd.worker.backoff import Backoff
from lbaffd.worker.departed import flush_departed

log = structlog.get_logger("lbaffd")


class PassRunner:
    """The worker's state between passes: the last inputs and topology, the
    change tracker, the status, the retry."""

    def __init__(self, settings: Settings, pipeline: Pipeline, ovs: DbMonitor, sb: DbMonitor,
                 reconciler: Reconciler, channels: ChannelKeeper, metrics: Metrics,
                 report: PassReport, refuser: Refuser, notifier: Notifier,
                 companion: CompanionRuntime | None, entries: EntryKeeper,
                 sbcond: SbConditions | None,
                 gc_pause: GcPause, status: Status, kick: threading.Event) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._ovs, self._sb = ovs, sb
        self._reconciler = reconciler
        self._channels = channels
        self.metrics = metrics
        self._report = report
        self._refuser = refuser
        self._notifier = notifier
        self.companion = companion  # companion mode's state
        self._entries = entries  # learned affinity entries past OpenFlow's idle limit
        self._sbcond = sbcond  # None: --monitor-all
        self._gc_pause = gc_pause  # bulk work (full passes, SB intake) without GC sweeps
        self._freezer = Freezer()
        self._connections: tuple[int, int, int] | None = None  # see _reconnected
        self.status = status  # replaced whole after each pass: always consistent
        self.backoff = Backoff()
        self.synced = False
        self.queued = 0  # tokens coalesced into the coming pass (set by the loop)
        self._sb_read_at = 0.0
        self._arrived_at: float | None = None  # the IDL took the pass's first change in
        self._read_s = 0.0  # the last delta read took
        self._kick = kick  # set with every input change: an audit's wait applies it
        self._trimming = threading.Lock()  # a trim after an audit is under way
        self._bridge = BridgeReader()  # the bridge's interfaces, read again row by row
        # the last full read, kept up to date by incremental passes
        self._inputs: Inputs | None = None
        self._topo: Topology | None = None
        # follows every input between full passes (None: a full pass is due)
        self._changes: ChangeTracker | None = None
        # a DB away or resyncing (``run``), and a recompute asked meanwhile
        self._deferred = self._full_due = False

    def memory(self) -> dict[str, int]:
        """What the passes hold, counted (``memory/show``): the reconciler's,
        the memos' entries (emptied after every pass) and the objects frozen out of
        the collector's sight (``gcpause.Freezer``)."""
        return {**self._reconciler.memory(), "memo_entries": sum(memos.entries().values()),
                "frozen_objects": gc.get_freeze_count()}

    def entries_removed(self, removed: list[RemovedEntry]) -> None:
        """Learned entries the switch removed (``reconcile.entries``)."""
        if self.companion is not None:  # maybe ovn-controller's flush: kept to be put back
            self.companion.deleted(removed)
        try:
            self._entries.handle(removed, self.status.plans, self._channels.live())
        except Exception as exc:  # the switch went away: those entries are gone anyway
            log.warning("affinity_entries_not_extended", count=len(removed), error=str(exc))

    def companion_after_pass(self, ok: bool) -> None:
        """Companion mode: flush recovery and learned entries after a pass."""
        ch = self._channels.channel
        if self.companion is not None and ch is not None and ch.connected:
            self.companion.after_pass(ok, self._entries, self.status.plans, ch)

    def run(self, audit: bool = True, full: bool = False) -> bool:
        """One reconcile pass; False when it could not run (retried later).

        Between audits, a change of any input is applied incrementally
        (O(what it affects), see ``changes``) unless it reshapes the local
        datapaths or is a bulk change: then a full pass runs.  While a DB is
        away or resyncing nothing runs and the tracker stays: a reconnect
        brings its changes row by row, whether the server answers from its
        history (a clustered SB's other member) or with a new dump (a
        standalone SB restarted: compared with the rows held,
        ``NotifyingIdl._Idl__clear``)."""
        if not (self._ovs.connected and self._sb.connected):
            if not self._deferred and self.synced:  # once per outage (retried every 0.5 s)
                log.info("pass_deferred", reason="db_not_in_sync",
                         ovs=self._ovs.connected, sb=self._sb.connected)
            self._deferred = True
            self._full_due = self._full_due or full  # a recompute asked meanwhile
            return False
        self._deferred = False
        full, self._full_due = full or self._full_due, False
        try:
            with self._gc_pause:  # an audit decodes every flow on the switch
                if not full and self._incremental_pass(audit):
                    swept = self._collect(always=False)  # only after a reconnect
                    memos.forget()  # what the step encoded: not kept until an audit
                    if audit or swept:  # its dump of the switch, back to the system (see memtrim)
                        self._trim_aside()
                    return True
        except Exception as exc:
            return self._failed(exc)
        self._sb_read_at = time.time()
        # the last pass's inputs and tracker go before this pass reads its
        # own (a full pass makes a new tracker; one that fails leaves the
        # next pass a full one): held through the pass they were its peak
        self._changes = None
        self._inputs = self._topo = None
        with self._gc_pause:
            t_read = time.monotonic()
            inputs = read_all(self._ovs, self._sb, self.settings.bridge, self.settings.chassis,
                              self._bridge)
            if inputs is None:
                return False
            try:
                # the change tracker's index, made once: its topology is
                # ``build_topology``'s (each port's mac column parsed once)
                index = TopologyIndex(inputs.snapshot)
                topo = index.topology()
                channel = self._channels.ensure()
                lbs = inputs.lbs
                raw_topo = topo
                if self.companion is not None:
                    lbs, topo = self.companion.view(inputs.snapshot, lbs, topo, channel)
                    if startup.zone_clash(self._ovs, self.settings.bridge, self.companion):
                        log.error("ct_zone_in_use", zone=self.pipeline.ct_zone,
                                  hint="ovn-controller assigned lbaffd's zone to a port; "
                                  "restart lbaffd with another --ct-zone")
                inputs_s = time.monotonic() - t_read
                result = self._reconciler.reconcile(channel, lbs, topo, audit)
            except Exception as exc:
                return self._failed(exc)
            # the worker's whole time for the pass: the inputs read, parsed and
            # made a topology (and, next to ovn-controller, companion mode's view
            # of them: ``inputs``), then the reconcile's own phases
            result = replace(result, seconds=result.seconds + inputs_s,
                             phases=(("inputs", inputs_s), *result.phases))
            self._inputs, self._topo = inputs, topo
            self._done(result, inputs.issues + result.desired.issues)
            # for the changes that follow (the switch is in sync already); it
            # follows the SB's topology, companion mode's view is made from it
            self._changes = ChangeTracker(inputs, raw_topo, index)
            if self._sbcond is not None:  # narrow (or widen) to what is local now
                self._sbcond.update(inputs.snapshot, raw_topo)
        # The desired state is 100k+ long-lived, acyclic objects at 1000s of
        # LBs: a cyclic-GC sweep over them stalls the worker for ~1 s at
        # random.  Move what this full pass built out of the collector's way
        # (refcounting still frees it); later passes collect only new objects.
        self._collect(always=True)  # frozen cycles swept now and then, and after a reconnect
        memos.forget()  # values of the replaced state, not kept until the memos fill
        memtrim.trim()  # what the pass freed, back to the system (see memtrim)
        return True

    def _reconnected(self) -> bool:
        """A connection (SB, local OVSDB, OpenFlow) was made or lost since
        the last look: what the replaced one held, frozen by an earlier full
        pass, may now be cyclic garbage only a sweep of the frozen objects
        frees (``gcpause.Freezer``)."""
        seen = (self._sb.session, self._ovs.session, self._channels.connects)
        changed, self._connections = seen != self._connections, seen
        return changed

    def _collect(self, always: bool) -> bool:
        """Collect and freeze (``gcpause.Freezer``): after every full pass
        (``always``), and after any pass that follows a reconnect, whose
        collection then sweeps the frozen objects too (one full sweep).
        True when it followed a reconnect."""
        reconnected = self._reconnected()
        if not (always or reconnected):
            return False
        t0 = time.monotonic()
        found = self._freezer.collect_and_freeze(sweep=reconnected)
        if reconnected:
            log.debug("frozen_objects_swept", unreachable=found, reason="reconnected",
                      ms=round((time.monotonic() - t0) * 1000, 1))
        return reconnected

    def _trim_aside(self) -> None:
        """``memtrim.trim`` on a thread of its own: malloc_trim takes 10-30 ms
        of madvise calls (the GIL released), and a change that arrived after
        an audit waited for it on the worker.  One at a time."""
        if self._trimming.acquire(blocking=False):
            def run() -> None:
                try:
                    memtrim.trim()
                finally:
                    self._trimming.release()

            threading.Thread(target=run, name="lbaffd-trim", daemon=True).start()

    def _incremental_pass(self, audit: bool) -> bool:
        """True when the pending change was applied incrementally (or there
        was none, or, for an audit, the switch was checked against the state
        already compiled); False when a full pass must run.

        For an audit a pending change is applied first, incrementally, and the
        switch is then audited against the state it leaves: on a busy cluster
        some input is always changing, and declining here made nearly every
        audit a full recompile (16 s at 5000 LBs, issue 19)."""
        ovs, sb, rec, tracker = self._ovs, self._sb, self._reconciler, self._changes
        if tracker is None:
            return False
        read_at = time.time()
        delta = read_delta(ovs, sb, self.settings.bridge, self._bridge, tracker.bulk_limit())
        self._read_s = time.time() - read_at
        if delta is None:
            log.debug("full_pass_needed", reason="resync")  # rows replaced: not known which
            return False  # the full pass reads everything again
        if not delta.empty and not self._apply_step(tracker, delta, read_at):
            return False
        if not audit:
            return True
        tracker = self._changes
        assert tracker is not None
        # SB changes that arrive meanwhile are applied between the audit's slices
        result = rec.audit_unchanged(self._channels.ensure(),
                                     lambda: self._incremental_pass(False), self._kick,
                                     self._channels.reads())
        if result is None:
            return False
        self._done(result, tracker.inputs.issues + result.desired.issues)
        return True

    def _apply_step(self, tracker: ChangeTracker, delta: Delta, read_at: float) -> bool:
        """One change of inputs applied in O(what it affects); False when it
        needs a full pass (then the tracker is dropped: the full pass makes a
        new one)."""
        rec = self._reconciler
        self._sb_read_at, self._arrived_at = read_at, delta.arrived_at
        self._changes = None  # until the step is on the switch (see changes.ChangeTracker)
        t_step = time.monotonic()
        step = tracker.step(delta)
        if step is None:
            log.debug("full_pass_needed", reason="changed",
                      port_bindings=len(delta.port_bindings),
                      lbs=len(delta.lbs) or delta.bulk_lbs, monitors=len(delta.monitors),
                      dp_groups=len(delta.dp_groups), structural=sorted(delta.structural),
                      interfaces=delta.interfaces is not None)
            return False
        if step.no_effect:  # e.g. a pod on another chassis that is no backend here
            log.debug("input_change_no_effect", port_bindings=len(delta.port_bindings),
                      monitors=len(delta.monitors), lbs=len(delta.lbs),
                      ms=round((time.time() - self._sb_read_at) * 1000, 2))
        changed, topo, old_topo = step.changed, step.topo, step.old_topo
        if self.companion is not None:
            # next to ovn-controller: a change of the local ports or of which
            # datapaths a port reaches moves interceptions, reply hooks and
            # take-overs (a full pass); else the change as lbaffd realizes it,
            # on the view of OVN's layout the last full pass read
            seen = self.companion.incremental(step, self._topo)
            if seen is None:
                log.debug("full_pass_needed", reason="companion_topology")
                return False
            changed, topo, old_topo = seen
        if not step.no_effect:
            step_s = time.monotonic() - t_step
            result = rec.reconcile_changed(self._channels.ensure(), changed, topo, old_topo,
                                           step.ports)
            if result is None:
                return False
            # the worker's whole time for the change: read, step, reconcile
            result = replace(result, seconds=result.seconds + self._read_s + step_s,
                             phases=(("delta", self._read_s), ("step", step_s), *result.phases))
            self._done(result, step.issues + result.desired.issues)
        tracker.commit(step)
        self._changes = tracker
        if self._sbcond is not None:
            self._sbcond.update(step.inputs.snapshot, step.topo)
        self._inputs, self._topo = step.inputs, topo
        if self.companion is not None:
            self.companion.after_change(step.changed)
        return True

    def _failed(self, exc: Exception) -> bool:
        """The switch or channel failed: retry with backoff (short cap: a
        restarted ovs-vswitchd must get its flows back within ~1 s)."""
        delay = self.backoff.failed(time.monotonic())
        self.metrics.reconciles.labels("error").inc()
        self.status = bookkeeping.after_error(self.status)
        log.warning("reconcile_failed", error=str(exc), error_type=type(exc).__name__,
                    retry_in=round(delay, 2))
        release_frames(exc)  # the failed pass's locals, not kept by a cycle (gcpause)
        return False

    def _done(self, result: ReconcileResult, issues: tuple[model.ParseIssue, ...]) -> None:
        self.backoff.succeeded()
        # before the pass is reported: its "reconciled" line means the flush is done
        flush_departed(self.status.plans, result, self.pipeline, self._channels.live,
                       self.metrics)
        self._report.issues(issues)
        self._report.result(result, self.queued, self._sb_read_at, self._arrived_at)
        self._arrived_at = None
        self._publish(result, issues)
        if not self.synced:
            self.synced = True
            self._notifier.ready(f"in sync: {len(result.desired.state.flows)} flows")
            log.info("initial_sync_done", changes=len(result.changes),
                     flows=len(result.desired.state.flows),
                     groups=len(result.desired.state.groups),
                     ms=round(result.seconds * 1000, 1))

    def _publish(self, r: ReconcileResult, issues: tuple[model.ParseIssue, ...]) -> None:
        left = self.companion.left_to_ovn if self.companion is not None else ()
        self.status = bookkeeping.after_pass(self.status, r, issues, self.pipeline.mode, left,
                                             time.time())
        change = r.vip_change()  # (None: a full pass or an audit, look at every VIP)
        self._report.empty_vips(r.desired.vips, change)
        self._refuser.forget(self._report.forget_gone_vips(r.desired.vips, change))
