"""Flush the conntrack entries of backends that left a VIP in a pass
(``reconcile.ctflush`` finds them), once the pass is on the switch: their
connections would otherwise live on, DNATed to a backend that is gone."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from lbaffd.compile.layout import Pipeline
from lbaffd.model.plan import VipPlan
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.ops.metrics import Metrics
from lbaffd.reconcile import ctflush
from lbaffd.reconcile.result import ReconcileResult

log = structlog.get_logger("lbaffd")


def flush_departed(before: tuple[VipPlan, ...], result: ReconcileResult, pipeline: Pipeline,
                   channel: Callable[[], OpenFlowChannel], metrics: Metrics) -> None:
    """Only looked for when the pass changed or deleted a group or deleted
    flows; ``channel`` is asked for only then.  A switch that cannot flush
    (away, or an OVS without NXT_CT_FLUSH, < 3.1) is logged, not retried."""
    c = result.changes
    if not before or not (c.mod_groups or c.del_groups or c.del_flows):
        return
    gone = (ctflush.departures(before, result.desired.vips, pipeline)
            if result.replaced is None else ctflush.replaced_departures(result.replaced, pipeline))
    if not gone:
        return
    try:
        channel().send_checked([f.message() for d in gone for f in d.flushes])
    except Exception as exc:  # e.g. an OVS without NXT_CT_FLUSH (< 3.1)
        log.warning("conntrack_flush_failed", error=str(exc), backends=len(gone))
        return
    for d in gone:
        metrics.conntrack_flushes.labels(d.reason).inc()
        log.info("conntrack_flushed", lb=d.lb, vip=d.vip, backend=str(d.backend),
                 reason=d.reason, zones=[f.zone for f in d.flushes])
