"""The daemon: wires the monitors, the pass runner and the OpenFlow channel
around one worker loop.

All decisions happen on the worker (the main thread).  The OVSDB threads and
the OpenFlow reader only put wake-up tokens on its queue (``worker.tokens``),
so there is no shared mutable state to lock beyond the IDL lock used to take
snapshots.  What a pass does is ``worker.passes``; how the switch's own
messages are sorted, ``packetin.router``; the probes, ``ops.health``.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import structlog

from lbaffd.compile.layout import STANDALONE, STANDALONE_MODE, Pipeline
from lbaffd.config import AUTO_MODE, Settings
from lbaffd.model.distribution import min_slots_for_version
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.connect import ChannelKeeper
from lbaffd.openflow.replies import Reply
from lbaffd.ops import memtrim
from lbaffd.ops.control import ControlServer
from lbaffd.ops.daemonize import ProcessHooks
from lbaffd.ops.exposition import live_families
from lbaffd.ops.gcpause import GcPause
from lbaffd.ops.health import Health
from lbaffd.ops.metrics import LiveCollector, Metrics
from lbaffd.ops.report import PassReport
from lbaffd.ops.sdnotify import Notifier
from lbaffd.ops.signals import install_stop_handlers
from lbaffd.ops.status import Status
from lbaffd.packetin.reject import Refuser
from lbaffd.packetin.router import AsyncRouter
from lbaffd.reconcile.entries import EntryKeeper, ExpectedDeletes
from lbaffd.reconcile.longidle import RemovedEntry
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd.reconcile.sending import cleanup
from lbaffd.sb.conditions import SbConditions
from lbaffd.sb.monitor import (
    OVS_COLUMNS,
    OVS_TABLES,
    SB_COLUMNS,
    SB_TABLES,
    DbMonitor,
)
from lbaffd.worker import startup
from lbaffd.worker.passes import PassRunner
from lbaffd.worker.tokens import FLUSHED, FOREIGN, OF_DOWN, RECOMPUTE, STOP, WAKE, Item, drain

log = structlog.get_logger("lbaffd")


class Daemon:
    """Wiring (monitors, channel, control socket, metrics) and the worker
    loop, which decides when a pass runs; ``PassRunner`` runs it."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 process: ProcessHooks | None = None) -> None:
        self.settings = settings.with_defaults()
        self._process = process  # OVS-daemon conventions (ops_daemonize), if any
        self.pipeline: Pipeline = STANDALONE
        self.metrics = metrics or Metrics()
        self._queue: queue.Queue[Item] = queue.Queue()
        # set with every input change: an audit waiting for the switch applies it
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._failed: Exception | None = None  # see _fail
        self._ovs: DbMonitor | None = None
        self._sb: DbMonitor | None = None
        self._runner: PassRunner | None = None  # once started
        self._notifier = Notifier()
        self._control: ControlServer | None = None
        self._health = Health(lambda: self.settings.audit_interval, self.status)
        self._expected_deletes = ExpectedDeletes()
        self._gc_pause = GcPause()  # bulk work (full passes, SB intake) without GC sweeps
        self._report = PassReport(self.metrics)
        self._channels = ChannelKeeper(
            lambda: self.settings.of_target, self._on_async, lambda: self._queue.put(OF_DOWN),
            lambda e: self.metrics.entries_skipped.labels(e.kind).inc(), self._stopping)
        self._refuser = Refuser(self._channels.packet_out,
                                lambda c: self._report.vip_by_cookie.get(c),
                                lambda lb, vip, kind: self.metrics.refusals.labels(
                                    lb, vip, kind).inc())
        self._router = AsyncRouter(self._refuser, self._channels.packet_out,
                                   self._expected_deletes, on_entry=self._queue.put,
                                   on_flushed=lambda: self._queue.put(FLUSHED),
                                   on_foreign=lambda: self._queue.put(FOREIGN))

    # ------------------------------------------------------------ DaemonHandle

    def status(self) -> Status:
        return self._runner.status if self._runner is not None else Status()

    def live_channel(self) -> OpenFlowChannel:
        return self._channels.live()

    def connections(self) -> dict[str, bool]:
        """Live state of each peer: the switch, the SB and the local OVS DB."""
        return {"openflow": self._channels.connected,
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

    def memory(self) -> dict[str, int]:
        """What the daemon holds, counted (``memory/show``, as ovs-vswitchd's
        and ovn-controller's): a count that keeps growing is a leak."""
        runner = self._runner
        out = {} if runner is None else runner.memory()
        out["sb_rows"] = sum(self.sb_rows().values())
        return out

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        install_stop_handlers(self.stop)
        try:
            self._start()
            self._loop()
        except Exception:
            if not self._stopping.is_set():
                raise
            # stopped while still waiting for a database: not a failure
        finally:
            self._shutdown()
        if self._failed is not None:  # on another thread of the start (startup.start_in_background)
            raise self._failed
        return 0

    def _fail(self, exc: Exception) -> None:
        """A failure on another thread of the start: the daemon stops and
        ``run`` raises it (the process exits non-zero, systemd restarts it)."""
        self._failed = exc
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(STOP)

    def _wake(self, _source: str = "") -> None:
        self._queue.put(WAKE)
        self._kick.set()

    def _on_async(self, reply: Reply) -> None:
        self._router.on_async(reply)  # (the router needs the channel keeper first)

    def _start(self) -> None:
        s = self.settings
        # one malloc arena for every thread, before they start (see memtrim)
        if memtrim.limit_arenas(1):
            log.info("malloc_arenas_limited", arenas=1)
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
        external_ids = startup.wait_local_external_ids(self._ovs, s.bridge, self._stopping)
        self.settings = s = s.resolve(external_ids)
        startup.check_settings(s)
        # asked for first: the server builds its reply while the rest starts
        self._sb = DbMonitor(s.sb_db, "OVN_Southbound", SB_TABLES, self._wake, self._stopping,
                             columns=SB_COLUMNS, gc_pause=self._gc_pause)
        startup.start_in_background(self._sb, self._stopping, self._fail)
        self.pipeline, companion = startup.choose_pipeline(
            s, self._channels.wait(), external_ids, self._ovs, self.metrics)
        self._control = ControlServer(ctl, self, self.pipeline)
        self._control.start()
        self.metrics.registry.register(LiveCollector(self))
        self.metrics.serve(s.metrics_address, self._health,
                           live=lambda: live_families(self, self.pipeline))
        if self._process is not None:
            self._process.started(self, self.pipeline)  # ovs-appctl -t lbaffd; --detach returns
        startup.log_settings(s, self.pipeline, external_ids)
        reconciler = Reconciler(self.pipeline, s.max_idle_timeout, s.distribution)
        reconciler.on_delete = self._expected_deletes.expect
        reconciler.min_slots = min_slots_for_version(external_ids.get("ovs_version", ""))
        # the switch builds its dumps for the first pass while the SB syncs
        reconciler.prefetch(self._channels.ensure())
        self._runner = PassRunner(
            s, self.pipeline, self._ovs, self._sb, reconciler, self._channels, self.metrics,
            self._report, self._refuser, self._notifier, companion,
            EntryKeeper(self.metrics, s.max_idle_timeout),
            None if s.monitor_all else SbConditions(self._sb, s.chassis), self._gc_pause,
            self.status(), self._kick)

    def _shutdown(self) -> None:
        # Flows and groups stay on the switch: traffic keeps flowing without us.
        self._notifier.stopping()
        if self._control is not None:
            self._control.stop()
        if self._process is not None:
            self._process.stopped()
        if self.settings.cleanup_on_exit and self._channels.connected:
            try:
                groups = cleanup(self._channels.live())
                log.info("cleaned_up", groups=groups)
            except Exception as exc:
                log.warning("cleanup_failed", error=str(exc))
        self._channels.close()
        for mon in (self._sb, self._ovs):
            if mon is not None:
                mon.stop()
        log.info("stopped")

    # ------------------------------------------------------------ worker

    def _loop(self) -> None:
        run = self._runner
        assert run is not None
        next_audit = time.monotonic()
        beat = self._notifier.watchdog_interval  # 0: no systemd watchdog
        next_beat = 0.0
        while not self._stopping.is_set():
            now = self._health.beat()
            if beat and now >= next_beat:
                self._notifier.watchdog()  # proves the worker loop itself is alive
                next_beat = now + beat
            comp, retry_at = run.companion, run.backoff.retry_at
            if comp is not None and run.synced and now >= comp.ages_due:
                comp.poll_ages(self._channels.channel, now)
            due = min(next_audit, retry_at) if retry_at else next_audit
            if comp is not None:
                due = min(due, comp.retry_at or due, comp.ages_due if run.synced else due)
            try:
                items = [self._queue.get(timeout=max(0.0, min(due, next_beat or due) - now))]
            except queue.Empty:
                if time.monotonic() < due:
                    continue  # woke only for the watchdog
                items = [WAKE]
            items += drain(self._queue, self.settings.debounce)
            run.queued = len(items)  # coalesced into this pass; bounded by its duration
            if STOP in items:
                break
            if FLUSHED in items and comp is not None:
                comp.flush.noticed()
            removed = [i for i in items if isinstance(i, RemovedEntry)]
            if removed:
                run.entries_removed(removed)
                if comp is not None:  # entries reported after the flows were back
                    run.companion_after_pass(False)
            if all(isinstance(i, RemovedEntry) for i in items) and time.monotonic() < due:
                continue  # only entry notifications: no pass needed
            if run.backoff.retry_at and time.monotonic() < run.backoff.retry_at:
                continue
            # read the switch back on the timer and whenever it reported a change
            # by someone else or the connection was new; else trust the last pass
            audit = time.monotonic() >= next_audit or FOREIGN in items or OF_DOWN in items
            if comp is not None and comp.retry_at and time.monotonic() >= comp.retry_at:
                items.append(RECOMPUTE)  # companion: ports ovn-controller had not programmed
            audit = audit or RECOMPUTE in items
            ok = run.run(audit, full=RECOMPUTE in items)
            if comp is not None:  # only a pass that read the switch back repairs a flush
                run.companion_after_pass(ok and audit)
            interval = self.settings.audit_interval
            if not ok:
                # not in sync (a DB resyncing, the switch away, a bundle refused while
                # someone else was emptying the switch): look again soon, as an audit
                # (the retry, if one is due), but not in a tight loop
                next_audit = run.backoff.retry_at or time.monotonic() + min(interval, 0.5)
            elif audit:
                next_audit = time.monotonic() + interval
