"""Lifecycle of learned affinity entries reported by the switch.

The learn action sets ``send_flow_rem``, so ovs-vswitchd tells lbaffd about
every entry that goes: idled out (counted as expired, or re-installed for the
rest of a timeout longer than OpenFlow's 16-bit limit, see ``longidle``) or
deleted (flushed: backend removed or down, LB gone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import structlog

from lbaffd.compile.layout import PRIO_LEARNED, REG_AFFINITY_HIT, REG_BACKEND_PORT, backend_regs
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint
from lbaffd.model.plan import VipPlan
from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import FlowKey, FlowSpec, SetField
from lbaffd.openflow.oxm import canonical_match
from lbaffd.openflow.replies import Reply
from lbaffd.reconcile.longidle import LongIdle, RemovedEntry, Restore

log = structlog.get_logger("lbaffd.entries")


class EntryCounters(Protocol):
    """The counters an ``EntryKeeper`` moves (``ops.metrics.Metrics`` has
    them): restored ones, and by (lb, vip) the flushed, expired and
    extended ones."""

    entries_restored: Any
    entries_flushed: Any
    entries_expired: Any
    entries_extended: Any


def removed_entry(reply: Reply) -> RemovedEntry | None:
    """A learned entry's FLOW_REMOVED, or None for anything else."""
    if reply.msg_type != messages.OFPT_FLOW_REMOVED:
        return None
    msg = reply.parse()
    if msg is None or not own.is_learned(msg.cookie):
        return None
    stats = dict(msg.stats.items()) if msg.stats is not None else {}
    return RemovedEntry(cookie=msg.cookie, table=msg.table_id, priority=msg.priority,
                        match=canonical_match(msg.match.items()),
                        idle_timeout=msg.idle_timeout,
                        packets=int(stats.get("packet_count", 0)), reason=msg.reason)


def removed_managed_flow(reply: Reply) -> tuple[int, FlowKey] | None:
    """(cookie, key) of one of lbaffd's own flows reported deleted, else None."""
    if reply.msg_type != messages.OFPT_FLOW_REMOVED:
        return None
    msg = reply.parse()
    if msg is None or not own.is_managed(msg.cookie) or msg.reason != messages.OFPRR_DELETE:
        return None
    return msg.cookie, (msg.table_id, msg.priority, canonical_match(msg.match.items()))


class ExpectedDeletes:
    """Flows lbaffd is about to delete itself (worker thread), matched against
    the FLOW_REMOVED reports (reader thread); an entry not reported within
    ``ttl`` seconds is forgotten."""

    def __init__(self, ttl: float = 10.0) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, FlowKey], float] = {}

    def expect(self, flows: Iterable[FlowSpec]) -> None:
        now = time.monotonic()
        until = now + self._ttl
        with self._lock:
            if self._pending:  # reports lost (channel down, ...): forget stale ones
                self._pending = {k: t for k, t in self._pending.items() if t >= now}
            for f in flows:
                self._pending[(f.cookie, f.key)] = until

    def take(self, cookie: int, key: FlowKey) -> bool:
        with self._lock:
            until = self._pending.pop((cookie, key), None)
        return until is not None and until >= time.monotonic()


def entry_flow(e: RemovedEntry, be: Endpoint, idle_timeout: int) -> messages.RawMessage:
    """The flow-mod that puts a learned entry back: its match and cookie, the
    loads its learn action wrote for ``be``."""
    loads = [SetField(r, v) for r, v in backend_regs(be.ip).items()]
    if be.port is not None:
        loads.append(SetField(REG_BACKEND_PORT, be.port))
    loads.append(SetField(REG_AFFINITY_HIT, 1))
    return messages.flow_add(FlowSpec(
        e.table, PRIO_LEARNED, e.match, tuple(loads), e.cookie, idle_timeout=idle_timeout,
        flags=messages.OFPFF_SEND_FLOW_REM))


def _by_learned_cookie(plans: Iterable[VipPlan]) -> dict[int, tuple[VipPlan, Endpoint]]:
    return {p.learned_cookie(be): (p, be) for p in plans for be in p.vip.backends}


class EntryKeeper:
    def __init__(self, metrics: EntryCounters, max_idle: int) -> None:
        self._metrics = metrics
        self._max_idle = max_idle
        self._long = LongIdle()

    def restore(self, restores: Iterable[Restore], plans: Iterable[VipPlan],
                channel: Any) -> int:
        """Put back entries a flush deleted (one bundle), each with the idle
        time it had left; entries of a backend no longer live are not."""
        owners = _by_learned_cookie(plans)
        msgs: list[Any] = []
        for r in restores:
            found = owners.get(r.entry.cookie)
            if found is None or found[1] not in found[0].live_backends:
                continue
            plan, be = found
            remaining = (plan.lb.affinity_timeout or 0) - r.idle_so_far
            if remaining <= 0:
                continue
            msgs.append(entry_flow(r.entry, be, min(remaining, self._max_idle)))
        if msgs:
            channel.bundle(msgs)
            self._metrics.entries_restored.inc(len(msgs))
        return len(msgs)

    def handle(self, removed: Iterable[RemovedEntry], plans: Iterable[VipPlan],
               channel: Any) -> None:
        """Count, and re-install in one bundle what must live on."""
        owners = _by_learned_cookie(plans)
        self._long.forget(set(owners))
        reinstall: list[Any] = []
        for e in removed:
            found = owners.get(e.cookie)
            if found is None:
                continue  # its VIP or backend is gone already
            plan, be = found
            labels = (plan.lb.name, plan.vip.key)
            if not e.idled_out:
                self._metrics.entries_flushed.labels(*labels).inc()
                continue
            timeout = plan.lb.affinity_timeout or 0
            again = (self._long.on_removed(e, timeout, self._max_idle)
                     if be in plan.live_backends else None)
            if again is None:
                self._metrics.entries_expired.labels(*labels).inc()
                continue
            self._metrics.entries_extended.labels(*labels).inc()
            reinstall.append(entry_flow(e, be, again))
        if reinstall:
            channel.bundle(reinstall)
            log.debug("affinity_entries_extended", count=len(reinstall))
