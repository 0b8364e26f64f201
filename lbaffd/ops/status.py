"""What the daemon knows, published by the worker as one immutable value, and
the text the control socket prints from it (pure formatting, unit-tested)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lbaffd.compile import groupsplit
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.stages import vip_group
from lbaffd.model.loadbalancer import ParseIssue
from lbaffd.model.plan import VipPlan
from lbaffd.ops.observe import AffinityEntry, Counters


@dataclass(frozen=True, slots=True)
class ReconcileStats:
    passes: int = 0
    errors: int = 0
    last_seconds: float = 0.0
    last_changes: int = 0
    changes_sent: int = 0
    desired_flows: int = 0
    desired_groups: int = 0
    installed_flows: int = 0
    installed_groups: int = 0
    last_sync: float = 0.0  # unix time of the last pass that left the switch in sync


@dataclass(frozen=True, slots=True)
class Status:
    plans: tuple[VipPlan, ...] = ()
    issues: tuple[ParseIssue, ...] = ()
    stats: ReconcileStats = field(default_factory=ReconcileStats)
    mode: str = ""
    # companion mode: LBs this chassis sees that lbaffd leaves to OVN (--take-over)
    left_to_ovn: tuple[str, ...] = ()

    def lbs(self) -> dict[str, list[VipPlan]]:
        out: dict[str, list[VipPlan]] = {}
        for p in self.plans:
            out.setdefault(p.lb.name or p.lb.uuid, []).append(p)
        return out


def format_lb_list(status: Status) -> str:
    rows = ["NAME                 UUID                                  VIPS  AFFINITY  DATAPATHS"]
    for name, plans in sorted(status.lbs().items()):
        lb = plans[0].lb
        aff = f"{lb.affinity_timeout}s" if lb.affinity_timeout else "-"
        dps = sorted({tk for p in plans for tk in p.datapaths})
        rows.append(f"{name:<20} {lb.uuid:<37} {len(plans):>4}  {aff:>8}  "
                    f"{','.join(map(str, dps))}")
    if status.mode == "companion":
        rows.append(f"taken over from OVN: {len(status.lbs())}; left to OVN: "
                    f"{', '.join(status.left_to_ovn) or '-'}")
    return "\n".join(rows) + "\n"


def format_lb_show(status: Status, name: str,
                   counters: Mapping[tuple[str, str, str], Counters],
                   entries_per_vip: Mapping[tuple[str, str], int]) -> str | None:
    plans = status.lbs().get(name)
    if plans is None:
        matches = [ps for ps in status.lbs().values() if ps[0].lb.uuid == name]
        if not matches:
            if name in status.left_to_ovn:
                return (f"load balancer {name}: left to OVN (not taken over: see "
                        "--take-over); ovn-controller balances it\n")
            # an LB none of whose VIPs is realized still has its reasons
            issues = [i for i in status.issues if i.lb == name]
            if not issues:
                return None
            return "\n".join([f"load balancer {name} (no VIP installed)",
                              *(f"  rejected: {i.vip or '(lb)'} {i.reason}: {i.detail}"
                                for i in issues)]) + "\n"
        plans = matches[0]
    lb = plans[0].lb
    out = [f"load balancer {lb.name} ({lb.uuid})",
           f"  affinity_timeout: {lb.affinity_timeout or 'off'}"]
    if status.mode == "companion":
        out.append("  taken over from OVN: balanced by lbaffd for clients on datapaths "
                   f"{','.join(map(str, sorted({tk for p in plans for tk in p.datapaths})))}")
    for p in plans:
        method = "hash(ip_src)" if lb.affinity_timeout else "dp_hash"
        out.append(f"  vip {p.vip.key} {p.vip.protocol}  group {p.group_id:#x} ({method})  "
                   f"datapaths {','.join(map(str, p.datapaths))}  "
                   f"affinity entries {entries_per_vip.get((lb.name, p.vip.key), 0)}")
        if p.expected_shares:
            out.append(f"    distribution {p.distribution}: {len(p.buckets)} buckets, expected "
                       f"share max {max(p.expected_shares):.1%} min {min(p.expected_shares):.1%}")
        parts = split_parts(p)
        if parts:
            out.append(f"    group split in {len(parts)} parts (group-desc limit): "
                       f"{', '.join(f'{gid:#x}' for gid in parts)}")
        share = dict(zip(p.live_backends, p.expected_shares, strict=True))
        for be in sorted(p.vip.backends, key=str):
            c = counters.get((lb.name, p.vip.key, str(be)), Counters())
            n = sum(1 for _, b in p.buckets if b == be)
            health = f"up   share {share[be]:6.1%}" if be in share else "DOWN share   0.0%"
            out.append(f"    backend {be!s:<22} {health}  buckets {n:>3}  "
                       f"packets {c.packets}  bytes {c.bytes}")
    for issue in status.issues:
        if issue.lb in (lb.name, lb.uuid):
            out.append(f"  rejected: {issue.vip or '(lb)'} {issue.reason}: {issue.detail}")
    return "\n".join(out) + "\n"


def split_parts(plan: VipPlan) -> tuple[int, ...]:
    """The part group ids of a VIP whose group is split (``groupsplit``),
    recomputed from its plan (bucket sizes do not depend on the pipeline's
    tables): empty for the usual one group."""
    if not groupsplit.may_split(len(plan.buckets)):
        return ()
    *parts, _ = groupsplit.vip_groups(plan, vip_group(STANDALONE, plan))
    return tuple(g.group_id for g in parts)


def format_affinity(status: Status, entries: Iterable[AffinityEntry], vip: str | None) -> str:
    by_gid = {p.group_id: p for p in status.plans}
    rows = ["LB                   VIP                    DATAPATH  CLIENT           BACKEND"
            "                IDLE  REMAINING"]
    for e in entries:
        plan = by_gid.get(e.vip_id)
        if plan is None or (vip and vip not in (plan.vip.key, str(plan.vip.endpoint.ip))):
            continue
        rows.append(f"{plan.lb.name:<20} {plan.vip.key:<22} {e.datapath:>8}  {e.client:<16} "
                    f"{e.backend:<22} {e.idle_age:>4.0f}s {e.remaining:>9.0f}s")
    return "\n".join(rows) + "\n"


def format_reconcile_stats(s: ReconcileStats, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = f"{now - s.last_sync:.1f}s ago" if s.last_sync else "never"
    return (f"passes: {s.passes}\nerrors: {s.errors}\n"
            f"last pass: {s.last_seconds * 1000:.1f} ms, {s.last_changes} changes\n"
            f"changes sent: {s.changes_sent}\n"
            f"desired: {s.desired_flows} flows, {s.desired_groups} groups\n"
            f"installed (before last pass): {s.installed_flows} flows, "
            f"{s.installed_groups} groups\n"
            f"last in sync: {age}\n")
