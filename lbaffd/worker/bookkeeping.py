"""What a pass leaves for the operator: the status the control socket and
the metrics read (``ops.status.Status``), counted per pass and per error.

Pure: the worker replaces its ``Status`` whole with what these return, so
readers on other threads always see one consistent pass."""

from __future__ import annotations

from dataclasses import replace

from lbaffd.model.loadbalancer import ParseIssue
from lbaffd.ops.status import ReconcileStats, Status
from lbaffd.reconcile.result import ReconcileResult


def after_pass(old: Status, r: ReconcileResult, issues: tuple[ParseIssue, ...], mode: str,
               left_to_ovn: tuple[str, ...], now: float) -> Status:
    """The status once pass ``r`` is on the switch (``now``: wall clock)."""
    was = old.stats
    stats = ReconcileStats(
        passes=was.passes + 1, errors=was.errors, last_seconds=r.seconds,
        last_changes=len(r.changes), changes_sent=was.changes_sent + len(r.changes),
        desired_flows=len(r.desired.state.flows), desired_groups=len(r.desired.state.groups),
        installed_flows=r.installed_flows, installed_groups=r.installed_groups,
        last_sync=now)
    return Status(plans=r.desired.vips, issues=issues, stats=stats, mode=mode,
                  left_to_ovn=left_to_ovn)


def after_error(old: Status) -> Status:
    """The status once a pass failed: one more error, the rest as it was."""
    return replace(old, stats=replace(old.stats, errors=old.stats.errors + 1))
