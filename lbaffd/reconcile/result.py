"""What a pass reports: its changes, the desired state it left on the switch
and where its time went; an incremental pass also which plans it replaced."""

from __future__ import annotations

from dataclasses import dataclass

from lbaffd.compile.state import DesiredState
from lbaffd.model.plan import VipPlan
from lbaffd.reconcile.diff import ChangeSet


@dataclass(frozen=True, slots=True)
class VipChange:
    """Which plans an incremental pass replaced: ``out`` went (a successor,
    if any, is in ``came``), ``came`` are the plans it put in."""

    out: tuple[VipPlan, ...]
    came: tuple[VipPlan, ...]


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """One pass: what it sent, what it left on the switch (``desired``), what
    it found there, and how long it took (one log line and the counters of
    ``ops.report``)."""

    changes: ChangeSet
    desired: DesiredState
    installed_flows: int
    installed_groups: int
    seconds: float
    foreign: int  # lbaffd-cookie flows whose actions lbaffd cannot decode (repaired)
    audited: bool = True  # installed state read back from the switch this pass
    # where a full pass spent its time, in seconds: reading the switch back,
    # compiling (and streaming the bundle), committing it (until the barrier
    # after the commit is answered); an incremental one: the step's compile
    # (``apply``), its bundle until that barrier (``send``)
    phases: tuple[tuple[str, float], ...] = ()
    # an audit of unchanged inputs (audit_unchanged): every change it sent put
    # back what someone else removed or changed on the switch
    repair: bool = False
    # an incremental pass: the plans it replaced, each with its successor
    # (None: the VIP went); None: a full pass, any plan may have changed
    replaced: tuple[tuple[VipPlan, VipPlan | None], ...] | None = None
    # an incremental pass: the plans it put in (successors and new VIPs)
    came: tuple[VipPlan, ...] = ()

    def vip_change(self) -> VipChange | None:
        """The plans an incremental pass took out and put in; None for a
        full pass or an audit (any plan may have changed): what keeps the
        per-VIP bookkeeping after a pass O(change) (``report``)."""
        if self.replaced is None:
            return None
        return VipChange(tuple(old for old, _ in self.replaced), self.came)
