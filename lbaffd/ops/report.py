"""What a pass tells the operator: logs and metrics, each bad input and each
VIP without backends said once (not every pass), and when it clears."""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Any

import structlog

from lbaffd.compile import isolation
from lbaffd.model import loadbalancer as model
from lbaffd.model import ownership as own
from lbaffd.model.plan import VipPlan
from lbaffd.ops.metrics import Metrics
from lbaffd.reconcile.result import ReconcileResult, VipChange

log = structlog.get_logger("lbaffd")


class PassReport:
    """Remembers what was already said; one per daemon, used by its worker."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._reported: set[model.ParseIssue] = set()
        self._empty_vips: set[tuple[str, str]] = set()
        self._empty: dict[own.OwnerKey, VipPlan] = {}  # the VIPs without a live backend
        # reject flows' cookie -> (lb, vip); replaced whole, read by the reader thread
        self.vip_by_cookie: dict[int, tuple[str, str]] = {}
        # the (lb, vip) label pairs of the VIPs realized by the last pass, by
        # how many of them carry each
        self._vip_labels: collections.Counter[tuple[str, str]] = collections.Counter()

    def issues(self, issues: tuple[model.ParseIssue, ...]) -> None:
        """Log each bad input once (not every pass), and its clearing."""
        current = set(issues)
        for issue in sorted(current - self._reported, key=lambda i: (i.lb, i.vip, i.reason)):
            if issue.reason in isolation.INSTALL_REASONS:  # well formed, not installable
                log.error("vip_install_failed", lb=issue.lb, vip=issue.vip or None,
                          reason=issue.reason, detail=issue.detail)
                self.metrics.install_failures.labels(issue.reason).inc()
                continue
            emit = log.error if issue.fatal else log.warning
            emit("lb_input_rejected" if issue.fatal else "lb_input_warning", lb=issue.lb,
                 vip=issue.vip or None, reason=issue.reason, detail=issue.detail)
            self.metrics.parse_errors.labels(issue.reason).inc()
        for issue in self._reported - current:
            log.info("lb_input_fixed", lb=issue.lb, vip=issue.vip or None, reason=issue.reason)
        self._reported = current

    def empty_vips(self, plans: tuple[VipPlan, ...], change: VipChange | None = None) -> None:
        """Log once when a VIP loses its last live backend (and when it gets
        one back); count them by action; map reject cookies to their VIP.

        ``change``: an incremental pass's plans out and in, the only ones
        looked at; None: every plan (a full pass).  Looking at all 5,219 VIPs
        after each health flip was ~1.9 ms of a ~18 ms pass at N=5000."""
        if change is None:
            self._empty = {p.owner: p for p in plans if not p.live_backends}
        else:
            for p in change.out:
                self._empty.pop(p.owner, None)
            for p in change.came:
                if not p.live_backends:
                    self._empty[p.owner] = p
        empty = {(p.lb.name or p.lb.uuid, p.vip.key): p for p in self._empty.values()}
        for key in sorted(empty.keys() - self._empty_vips):
            p = empty[key]
            log.warning("vip_without_backends", lb=key[0], vip=key[1],
                        action="reject" if p.lb.reject else "drop",
                        backends=len(p.vip.backends))
        for key in sorted(self._empty_vips - empty.keys()):
            log.info("vip_backends_restored", lb=key[0], vip=key[1])
        self._empty_vips = set(empty)
        for action in ("drop", "reject"):
            self.metrics.vips_without_backends.labels(action).set(
                sum((p.lb.reject) == (action == "reject") for p in empty.values()))
        # replaced whole: the reader thread sees the old or the new map, never half
        self.vip_by_cookie = {own.owner_cookie(p.owner): key
                               for key, p in empty.items() if p.lb.reject}

    def result(self, r: ReconcileResult, queued: int, sb_read_at: float,
               arrived_at: float | None = None) -> None:
        """``arrived_at``: when the SB (or local DB) IDL took the pass's first
        change in; the line then says how long it waited for the worker."""
        m = self.metrics
        c = r.changes
        m.reconciles.labels("ok").inc()
        if r.repair and not c.empty:
            m.repairs.inc()
            m.repaired.inc(len(c))
        m.reconcile_seconds.observe(r.seconds)
        for kind, n in (("group_add", len(c.add_groups)), ("group_modify", len(c.mod_groups)),
                        ("group_delete", len(c.del_groups)), ("flow_add", len(c.add_flows)),
                        ("flow_modify", len(c.mod_flows)), ("flow_delete", len(c.del_flows))):
            if n:
                m.changes.labels(kind).inc(n)
        m.desired_flows.set(len(r.desired.state.flows))
        m.desired_groups.set(len(r.desired.state.groups))
        m.installed_flows.set(r.installed_flows)
        m.installed_groups.set(r.installed_groups)
        m.last_sync.set(time.time())
        m.queue_depth.set(queued)
        if c.empty and not r.foreign:
            # the phases say a full pass ran (an audit of unchanged inputs has none)
            log.debug("in_sync", ms=round(r.seconds * 1000, 1), audit=r.audited,
                      flows=len(r.desired.state.flows),
                      **{f"{name}_ms": round(sec * 1000, 1) for name, sec in r.phases})
        else:
            log.info("reconciled", changes=len(c), flows=len(r.desired.state.flows),
                     groups=len(r.desired.state.groups), foreign_repaired=r.foreign,
                     ms=round(r.seconds * 1000, 1), queued=queued, audit=r.audited,
                     sb_read_at=round(sb_read_at, 3),
                     **({} if arrived_at is None else {
                         "arrived_at": round(arrived_at, 4),
                         "wait_ms": round((sb_read_at - arrived_at) * 1000, 1)}),
                     **{f"{name}_ms": round(sec * 1000, 1) for name, sec in r.phases})

    def forget_gone_vips(self, plans: tuple[VipPlan, ...], change: VipChange | None = None
                         ) -> frozenset[tuple[str, str]]:
        """Drop the per-VIP series of VIPs that no pass realizes any more;
        returns the label pairs that went.

        prometheus_client keeps a labelled child for as long as the process
        lives: on a chassis where services come and go for months, every VIP
        ever seen would stay in memory and in every scrape (three counters,
        plus one per refusal kind).  The label pairs are counted by the plans
        that carry them (two LBs may share a name); ``change`` as in
        ``empty_vips``: rebuilding them from all plans after each LB change
        was ~13 ms of the pass at N=5000."""
        counts = self._vip_labels
        if change is None:
            self._vip_labels = collections.Counter(
                label for p in plans for label in _vip_labels(p))
            gone = frozenset(counts.keys() - self._vip_labels.keys())
        else:
            for p in change.came:
                counts.update(_vip_labels(p))
            left: list[tuple[str, str]] = []
            for p in change.out:
                for label in _vip_labels(p):
                    counts[label] -= 1
                    if counts[label] <= 0:
                        del counts[label]
                        left.append(label)
            gone = frozenset(left)
        m = self.metrics
        for labels in gone:
            for counter in (m.entries_expired, m.entries_flushed, m.entries_extended):
                _remove(counter, *labels)
            for kind in REFUSAL_KINDS:
                _remove(m.refusals, *labels, kind)
        return gone

    @property
    def vip_labels(self) -> frozenset[tuple[str, str]]:
        """The (lb, vip) label pairs of the VIPs realized now."""
        return frozenset(self._vip_labels)


def _vip_labels(p: VipPlan) -> frozenset[tuple[str, str]]:
    """The label pairs a VIP's series may carry: its LB's name, and its
    uuid where the LB has no name."""
    return frozenset((name, p.vip.key) for name in {p.lb.name, p.lb.name or p.lb.uuid})


REFUSAL_KINDS = ("tcp_rst", "icmp_unreachable", "rate_limited", "ignored")


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never had that child
        metric.remove(*labels)
