"""One VIP that cannot be installed never stops the rest of a pass.

Two ways a VIP can fail, and how each is contained:

- *While it compiles* (an encoding error, a group that does not fit even in
  ``groupsplit.MAX_PARTS`` parts, a part group id another VIP holds):
  ``compile_part`` catches it before anything of the VIP reaches the bundle
  and leaves that VIP out of the desired state.  This is stateless: the
  next pass compiles it again (the compile cache keeps only successes), so a
  fixed row heals by itself and an unchanged one fails again, quietly
  (``report`` logs an issue once).
- *On the switch* (an ``OFPT_ERROR`` for one message of the bundle: a match
  this OVS does not support, a group it refuses, a table limit): OVS applies
  a bundle atomically (``do_bundle_commit`` in ofproto.c reverts every
  message when one fails) and answers the failing message with an error
  carrying its xid.  ``BundleLedger`` remembers which owner each message of
  the bundle was for, the reconciler maps the error's xid to it and runs the
  pass again without that VIP.  ``Exclusions`` keeps the VIP out while its
  Load_Balancer row is the one that failed: any change to the row retries
  it, and an unchanged row is never sent again (no loop on one failure).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Protocol

from lbaffd.compile import groupsplit
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, ParseIssue
from lbaffd.openflow.packed import GroupBody

if TYPE_CHECKING:
    from lbaffd.compile.layout import Pipeline
    from lbaffd.compile.vip import VipPart
    from lbaffd.model.plan import VipPlan
    from lbaffd.model.topology import Topology

# ``ParseIssue.reason`` of a VIP that is well formed but could not be installed
GROUP_TOO_LARGE: Final = "group_too_large"
ENCODE_ERROR: Final = "encode_error"
GROUP_ID_CLASH: Final = "group_id_clash"
SWITCH_ERROR: Final = "switch_error"
OFPAT_GROUP_HEADER: Final = bytes((0, 22, 0, 8))  # OFPAT_GROUP, length 8
INSTALL_REASONS: Final = frozenset({GROUP_TOO_LARGE, ENCODE_ERROR, GROUP_ID_CLASH,
                                    SWITCH_ERROR})


class PartSource(Protocol):
    """Where a VIP's part comes from (``compile.state.VipCache``): raises
    when the VIP cannot be compiled."""

    def get(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart: ...


def failed(plan_lb: LoadBalancer, vip_key: str, reason: str, detail: str) -> ParseIssue:
    return ParseIssue(plan_lb.name or plan_lb.uuid, reason, detail, vip=vip_key)


def compile_part(cache: PartSource, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology,
                 groups: Mapping[int, GroupBody], issues: list[ParseIssue]) -> VipPart | None:
    """The VIP's part, or None (and an issue) when it cannot be installed.
    Nothing of the VIP has been handed on when this returns None."""
    try:
        part = cache.get(plan, p, max_idle, topo)
    except groupsplit.GroupTooLarge as exc:
        issues.append(failed(plan.lb, plan.vip.key, GROUP_TOO_LARGE, str(exc)))
        return None
    except Exception as exc:
        issues.append(failed(plan.lb, plan.vip.key, ENCODE_ERROR,
                             f"{type(exc).__name__}: {exc}"))
        return None
    clash = [gid for gid, _ in part.parts if gid in groups]
    if clash:
        issues.append(failed(plan.lb, plan.vip.key, GROUP_ID_CLASH,
                             f"part group {clash[0]:#x} is another VIP's"))
        return None
    return part


class BundleLedger:
    """Which owner each message of one bundle was for, by position.

    One 64-bit slot a message (~0.7 MB for a cold pass of 85k messages): a
    flow's cookie, or a group's id (below 2^32, so never a managed cookie),
    with a part group recorded under its VIP's own group id."""

    def __init__(self) -> None:
        self.keys = array("Q")

    def flow(self, cookie: int) -> None:
        self.keys.append(cookie)

    def group(self, group_id: int, vip_group: int | None = None) -> None:
        self.keys.append(vip_group if vip_group is not None else group_id)

    def at(self, position: int) -> int | None:
        return self.keys[position] if 0 <= position < len(self.keys) else None


def blamed_owners(key: int, owners: Mapping[int, own.OwnerKey], plans: Iterable[VipPlan],
                  users: Mapping[int, tuple[own.OwnerKey, ...]]) -> tuple[own.OwnerKey, ...]:
    """The VIPs a failing message's ledger key stands for: the VIP that owns
    the flow or group, or every VIP that needs a failing shared flow
    (``users``: shared cookie -> VIP owners).  Empty: not a VIP's (the static
    pipeline, a port): nothing to leave out."""
    if key <= 0xFFFFFFFF:
        return tuple(p.owner for p in plans if p.group_id == key)
    owner = owners.get(key)
    if owner is None:
        return ()
    if owner[0] == "vip":
        return (owner,)
    return users.get(key, ())


def vip_group_of_part(part_id: int, groups: Mapping[int, GroupBody]) -> int | None:
    """The VIP group whose buckets jump to part group ``part_id`` (searched
    only when a part failed: a top group's body holds an OFPAT_GROUP action
    naming each of its parts)."""
    action = OFPAT_GROUP_HEADER + part_id.to_bytes(4, "big")
    for gid, body in groups.items():
        if own.is_vip_group(gid) and action in body:
            return gid
    return None


@dataclass(frozen=True, slots=True)
class Excluded:
    lb: LoadBalancer  # the row as it was when the VIP failed
    issue: ParseIssue


class Exclusions:
    """VIPs the switch refused, kept out while their LB row is unchanged."""

    def __init__(self) -> None:
        self._by_owner: dict[own.OwnerKey, Excluded] = {}

    def __len__(self) -> int:
        return len(self._by_owner)

    def add(self, owner: own.OwnerKey, lb: LoadBalancer, detail: str) -> None:
        self._by_owner[owner] = Excluded(lb, failed(lb, owner[2], SWITCH_ERROR, detail))

    def known(self, owner: own.OwnerKey) -> bool:
        return owner in self._by_owner

    def apply(self, lbs: Iterable[LoadBalancer]
              ) -> tuple[tuple[LoadBalancer, ...], tuple[ParseIssue, ...]]:
        """``lbs`` without the excluded VIPs of unchanged rows, and their
        issues; exclusions of rows that changed or went are forgotten."""
        out: list[LoadBalancer] = []
        issues: list[ParseIssue] = []
        keep: dict[own.OwnerKey, Excluded] = {}
        for lb in lbs:
            gone = []
            for vip in lb.vips:
                ex = self._by_owner.get(own.vip_owner(lb.uuid, vip.key))
                if ex is not None and ex.lb == lb:
                    gone.append(vip)
                    keep[own.vip_owner(lb.uuid, vip.key)] = ex
                    issues.append(ex.issue)
            out.append(replace(lb, vips=tuple(v for v in lb.vips if v not in gone))
                       if gone else lb)
        self._by_owner = keep
        return tuple(out), tuple(issues)

    def one(self, lb: LoadBalancer | None) -> tuple[LoadBalancer | None, tuple[ParseIssue, ...]]:
        """``apply`` for one changed LB of an incremental pass (exclusions of
        other LBs are kept)."""
        if lb is None:
            return None, ()
        issues: list[ParseIssue] = []
        gone = []
        for vip in lb.vips:
            owner = own.vip_owner(lb.uuid, vip.key)
            ex = self._by_owner.get(owner)
            if ex is None:
                continue
            if ex.lb == lb:
                gone.append(vip)
                issues.append(ex.issue)
            else:
                del self._by_owner[owner]
        if not gone:
            return lb, ()
        return replace(lb, vips=tuple(v for v in lb.vips if v not in gone)), tuple(issues)
