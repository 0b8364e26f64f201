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

from lbaffd import memtrim, model, ovnchassis
from lbaffd import ownership as own
from lbaffd.companion import Scope, TakeOver, ovn_zones, scopes, take_over, zone_clash
from lbaffd.compiler import vip_mac
from lbaffd.config import AUTO_MODE, Settings
from lbaffd.control import ControlServer
from lbaffd.distribution import MODES, min_slots_for_version
from lbaffd.entries import EntryKeeper, ExpectedDeletes, removed_entry, removed_managed_flow
from lbaffd.exposition import live_families
from lbaffd.flushrecovery import FlushRecovery
from lbaffd.gcpause import Freezer, GcPause
from lbaffd.inputs import Inputs, read_all, read_lb_change
from lbaffd.longidle import RemovedEntry
from lbaffd.metrics import LiveCollector, Metrics
from lbaffd.neighbor import neighbor_advert
from lbaffd.openflow.channel import ConnectionLost, OpenFlowChannel, Reply
from lbaffd.openflow.fastdecode import match_and_idle
from lbaffd.openflow.flowdesc import iter_entries, monitor_update_cookies
from lbaffd.ovnlayout import OvnLayout
from lbaffd.ovnlayout import merge as merge_layout
from lbaffd.pipeline import COMPANION_MODE, HAIRPIN_ZONE, STANDALONE, STANDALONE_MODE, Pipeline
from lbaffd.reconciler import Reconciler, ReconcileResult, cleanup
from lbaffd.reject import Refuser, TokenBucket
from lbaffd.report import PassReport
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
from lbaffd.sdnotify import Notifier
from lbaffd.status import ReconcileStats, Status
from lbaffd.topology import Topology, build_topology

log = structlog.get_logger("lbaffd")

WAKE = "wake"
STOP = "stop"
OF_DOWN = "openflow-down"
FOREIGN = "switch-changed"
FLUSHED = "flows-deleted"  # lbaffd flows deleted by someone else (ovn-controller's flush)
RECOMPUTE = "recompute"  # operator asked: read everything, compile everything
ENTRY_AGES_INTERVAL = 5.0  # companion: seconds between polls of learned entries' idle ages
OFPT_PACKET_IN = 10
OFPT_FLOW_REMOVED = 11
OFPT_REQUESTFORWARD = 32


class Daemon:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings.with_defaults()
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
        # companion mode: what the last full pass took over, and for which ports
        self._scope: Scope | None = None
        self._taken: TakeOver | None = None
        self._flush = FlushRecovery()
        self._layout: OvnLayout | None = None  # companion: OVN's output stage, as last seen
        self._layout_retry = 0.0
        self._layout_retry_at = 0.0
        self._ages_due = 0.0  # companion: next poll of the learned entries' idle ages
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
            clash = self._zone_clash(pipeline)
            if clash:
                log.error("ct_zone_in_use", zone=pipeline.ct_zone, ports=",".join(clash),
                          hint="choose another --ct-zone")
                raise SystemExit(2)
        return pipeline

    def _zone_clash(self, pipeline: Pipeline) -> list[str]:
        """Ports to which ovn-controller gave lbaffd's zones (none, normally)."""
        assert self._ovs is not None
        with self._ovs.conn.lock:
            ext = read_bridge_external_ids(self._ovs, self.settings.bridge)
        clash = zone_clash(ovn_zones(ext), (pipeline.ct_zone, HAIRPIN_ZONE))
        self.metrics.ct_zone_clash.set(1 if clash else 0)
        return clash

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
            if self.pipeline.companion and self._synced and now >= self._ages_due:
                self._poll_entry_ages()
                self._ages_due = now + ENTRY_AGES_INTERVAL
            due = min(next_audit, self._retry_at) if self._retry_at else next_audit
            if self._layout_retry_at:
                due = min(due, self._layout_retry_at)
            if self.pipeline.companion and self._synced:
                due = min(due, self._ages_due)
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
            if FLUSHED in items and self.pipeline.companion:
                self._flush.noticed()
            removed = [i for i in items if isinstance(i, RemovedEntry)]
            if removed:
                self._handle_removed(removed)
                if self.pipeline.companion:
                    self._restore_entries()  # entries reported after the flows were back
            if all(isinstance(i, RemovedEntry) for i in items) and time.monotonic() < due:
                continue  # only entry notifications: no pass needed
            if self._retry_at and time.monotonic() < self._retry_at:
                continue
            # read the switch back on the timer and whenever it reported a change
            # by someone else or the connection was new; else trust the last pass
            audit = time.monotonic() >= next_audit or FOREIGN in items or OF_DOWN in items
            if self._layout_retry_at and time.monotonic() >= self._layout_retry_at:
                items.append(RECOMPUTE)  # companion: ports ovn-controller had not programmed
            ok = self._pass(audit or RECOMPUTE in items, full=RECOMPUTE in items)
            if ok and self.pipeline.companion:
                self._flush.repaired()
                self._restore_entries()
            interval = self.settings.audit_interval
            if not ok:
                # not in sync (a DB resyncing, the switch away): look again soon, as
                # an audit, but not in a tight loop; the IDLs and the channel wake us
                next_audit = time.monotonic() + min(interval, 0.5)
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
        if self.pipeline.companion:  # maybe ovn-controller's flush: kept to be put back
            self._flush.hold(e for e in removed if not e.idled_out)
        try:
            self._entries.handle(removed, self._status.plans, self.live_channel())
        except Exception as exc:  # the switch went away: those entries are gone anyway
            log.warning("affinity_entries_not_extended", count=len(removed), error=str(exc))

    def _poll_entry_ages(self) -> None:
        """Companion: how long each learned entry has been idle, so that one
        put back after a flush gets the time it had left (FLOW_REMOVED does
        not say).  One flow-desc dump of the affinity table, matches and
        stats only."""
        ch = self._channel
        if ch is None or not ch.connected:
            return
        try:
            parts = ch.dump_flow_desc(own.LEARNED_COOKIE, own.MAGIC_MASK, self.pipeline.affinity)
        except Exception as exc:
            log.debug("entry_ages_not_read", error=str(exc))
            return
        ages = {}
        for part in parts:
            for offset, _, _ in iter_entries(part.raw):
                got = match_and_idle(part.raw, offset)
                if got is not None:
                    ages[got[0]] = got[1]
        self._flush.ages.update(ages, time.monotonic())

    def _restore_entries(self) -> None:
        """After a flush of lbaffd's flows (ovn-controller (re)connecting), put
        the learned affinity entries it took back once the flows are."""
        due = self._flush.take()
        if due is None:
            return
        restores, elapsed = due
        try:
            n = self._entries.restore(restores, self._status.plans, self.live_channel())
        except Exception as exc:
            log.warning("affinity_entries_not_restored", count=len(restores), error=str(exc))
            return
        if elapsed is not None:
            self.metrics.flush_recoveries.inc()
            self.metrics.flush_recovery_seconds.observe(elapsed)
            log.info("flush_recovered", ms=round(elapsed * 1000, 1), entries_restored=n,
                     entries_reported=len(restores))
        elif n:
            log.info("affinity_entries_restored", count=n)

    def _pass(self, audit: bool = True, full: bool = False) -> bool:
        """One reconcile pass; False when it could not run (retried later).

        Between audits, a change of Load_Balancer rows only is applied
        incrementally (O(change)); anything else is a full pass."""
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
        with self._gc_pause:
            inputs = read_all(self._ovs, self._sb, self.settings.bridge, self.settings.chassis)
            if inputs is None:
                return False
            try:
                channel = self._ensure_channel()
                assert self._reconciler is not None
                topo = build_topology(inputs.snapshot)
                lbs = inputs.lbs
                if self.pipeline.companion:
                    lbs, topo = self._companion_view(inputs, topo, channel)
                result = self._reconciler.reconcile(channel, lbs, topo, audit)
            except Exception as exc:
                return self._failed(exc)
            self._inputs, self._topo = inputs, topo
            self._done(result, inputs.issues + result.desired.issues)
        # The desired state is 100k+ long-lived, acyclic objects at 1000s of
        # LBs: a cyclic-GC sweep over them stalls the worker for ~1 s at
        # random.  Move what this full pass built out of the collector's way
        # (refcounting still frees it); later passes collect only new objects.
        self._freezer.collect_and_freeze()  # frozen cycles swept now and then
        memtrim.trim()  # what the pass freed, back to the system (see memtrim)
        return True

    def _companion_view(self, inputs: Inputs, topo: Topology, channel: OpenFlowChannel
                        ) -> tuple[tuple[model.LoadBalancer, ...], Topology]:
        """Companion mode: the LBs taken over, with the client switches they
        apply to, and the topology reduced to the ports ovn-controller has
        programmed (their output flows found on the switch)."""
        scope = scopes(inputs.snapshot, topo)
        taken = take_over(inputs.lbs, scope, self.settings.take_over)
        ofports = frozenset(p.ofport for p in topo.local_ports)
        layout = self._layout = merge_layout(
            self._layout, ovnchassis.read_layout(channel, sorted(ofports)), ofports)
        known = layout.known_ports if layout is not None else frozenset()
        waiting = [p.logical_port for p in topo.local_ports if p.ofport not in known]
        if waiting:
            # not programmed by ovn-controller yet (or not an OVN port): look again soon
            self._layout_retry = min(max(self._layout_retry * 2, 0.25), 5.0)
            self._layout_retry_at = time.monotonic() + self._layout_retry
            log.info("ports_not_programmed_by_ovn", ports=",".join(sorted(waiting)[:20]),
                     count=len(waiting), retry_in=self._layout_retry)
        else:
            self._layout_retry = 0.0
            self._layout_retry_at = 0.0
        if self._zone_clash(self.pipeline):
            log.error("ct_zone_in_use", zone=self.pipeline.ct_zone,
                      hint="ovn-controller assigned lbaffd's zone to a port; restart lbaffd "
                      "with another --ct-zone")
        self._scope, self._taken = scope, taken
        self.metrics.lbs_left_to_ovn.set(len(taken.left_to_ovn))
        ports = tuple(p for p in topo.local_ports if p.ofport in known)
        shared = [0] + ([layout.output_table] if layout is not None else [])
        return taken.lbs, replace(topo, local_ports=ports, ovn=layout,
                                  foreign=ovnchassis.foreign_ids(channel, shared))

    def _incremental_pass(self, audit: bool) -> bool:
        """True when the pending change was applied incrementally (or there
        was none, or, for an audit, the switch was checked against the state
        already compiled); False when a full pass must run."""
        ovs, sb, rec = self._ovs, self._sb, self._reconciler
        last, topo = self._inputs, self._topo
        assert ovs is not None and sb is not None and rec is not None
        if last is None or topo is None:
            return False
        if audit:
            # A pending change of LBs only is applied first, incrementally, and
            # the switch is then audited against the state it leaves.  On a busy
            # cluster some LB is always changing: declining here made nearly
            # every audit a full recompile (16 s at 5000 LBs, issue 19).
            if not self._incremental_pass(False):
                return False
            # SB changes that arrive meanwhile are applied between the audit's slices
            result = rec.audit_unchanged(self._ensure_channel(),
                                         lambda: self._incremental_pass(False))
            if result is None:
                return False
            last = self._inputs
            assert last is not None
            self._done(result, last.issues + result.desired.issues)
            return True
        rows = read_lb_change(ovs, sb)
        if rows is None:
            return False  # the full pass reads everything again
        if not rows:  # no row lbaffd reads has changed
            return True
        self._sb_read_at = time.time()
        changed, issues = last.parse_change(rows)
        realized = changed
        if self.pipeline.companion:
            if self._scope is None:
                return False
            taken = take_over((lb for lb in changed.values() if lb is not None),
                              self._scope, self.settings.take_over)
            by_uuid = {lb.uuid: lb for lb in taken.lbs}
            realized = {u: by_uuid.get(u) for u in changed}
        result = rec.reconcile_changed(self._ensure_channel(), realized, topo)
        if result is None:
            return False
        self._inputs = last.with_change(rows, changed, issues)
        if self.pipeline.companion and self._scope is not None:
            self._taken = take_over(self._inputs.lbs, self._scope, self.settings.take_over)
            self.metrics.lbs_left_to_ovn.set(len(self._taken.left_to_ovn))
        self._done(result, issues + result.desired.issues)
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
        return False

    def _done(self, result: ReconcileResult, issues: tuple[model.ParseIssue, ...]) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0
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

    def _ensure_channel(self) -> OpenFlowChannel:
        if self._channel is not None and self._channel.connected:
            return self._channel
        if self._channel is not None:
            self._channel.close()
        self._channel = OpenFlowChannel(self.settings.of_target, on_async=self._on_async,
                                        on_disconnect=self._on_of_down)
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
        left = self._taken.left_to_ovn if self._taken is not None else ()
        self._status = Status(plans=r.desired.vips, issues=issues, stats=stats,
                              mode=self.pipeline.mode, left_to_ovn=left)
        self._report.empty_vips(r.desired.vips)
        self._refuser.keep_only(self._report.forget_gone_vips(r.desired.vips))
