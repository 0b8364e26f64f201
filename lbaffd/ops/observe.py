"""Live state read back from the switch: affinity entries and per-backend counters.

Read on demand (control socket, Prometheus scrape) through the thread-safe
OpenFlow channel; nothing here changes the switch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lbaffd.compile import groupsplit
from lbaffd.compile.layout import (
    PRIO_HIT,
    REG_BACKEND_PORT,
    REG_VIP_ID,
    Pipeline,
    backend_from_regs,
)
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint
from lbaffd.model.plan import VipPlan
from lbaffd.openflow import messages, oskenfallback
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.groupdesc import BUCKET_COUNTER, OFPT_MULTIPART_REPLY, iter_group_stats
from lbaffd.openflow.oskenfallback import RawFlow, decode_entry
from lbaffd.openflow.oxm import canonical_match


class Channel(Protocol):
    def dump_flow_desc(self, cookie: int, cookie_mask: int, table_id: int = ...) -> list[Any]: ...
    def request(self, msg: Any, timeout: float | None = None) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class AffinityEntry:
    vip_id: int
    datapath: int
    client: str
    backend: str
    idle_age: float  # seconds since the entry was last hit
    timeout: int  # the entry's idle timeout

    @property
    def remaining(self) -> float:
        return max(0.0, self.timeout - self.idle_age)


@dataclass(frozen=True, slots=True)
class Counters:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.packets + other.packets, self.bytes + other.bytes)


def _flows(channel: Channel, cookie: int, mask: int, table: int = messages.OFPTT_ALL,
           with_actions: bool = True) -> Iterator[RawFlow]:
    """Decoded one at a time: a scrape at 1000s of VIPs reads 10,000s of
    flows, and holding them all decoded cost ~70 MB at 5000 VIPs."""
    for part in channel.dump_flow_desc(cookie, mask, table):
        for offset, _, _ in iter_entries(part.raw):
            yield decode_entry(part.raw, offset, with_actions)


def _seconds(value: Any) -> float:
    """OXS durations decode as (seconds, nanoseconds)."""
    if isinstance(value, tuple):
        return float(value[0]) + float(value[1]) / 1e9
    return float(value)


def read_affinity_entries(channel: Channel) -> list[AffinityEntry]:
    """Every learned client -> backend entry on the switch."""
    entries: list[AffinityEntry] = []
    for f in _flows(channel, own.LEARNED_COOKIE, own.MAGIC_MASK):
        match = canonical_match(f.match.items()).as_dict()
        loads = oskenfallback.set_fields(f)
        ip = backend_from_regs(loads)
        if ip is None or REG_VIP_ID not in match:
            continue
        port = loads.get(REG_BACKEND_PORT)
        backend = Endpoint(ip, int(port) if port else None)
        entries.append(AffinityEntry(
            vip_id=int(match[REG_VIP_ID]),  # type: ignore[arg-type]
            datapath=int(match.get("metadata", 0)),  # type: ignore[arg-type]
            client=str(match.get("ipv4_src", match.get("ipv6_src", "?"))),
            backend=str(backend),
            idle_age=_seconds(f.stats.get("idle_time", 0)),
            timeout=f.idle_timeout,
        ))
    return sorted(entries, key=lambda e: (e.vip_id, e.datapath, e.client))


def read_backend_counts(channel: Channel, plans: Iterable[VipPlan],
                        pipeline: Pipeline) -> dict[int, list[int]]:
    """group id -> ``[packets, bytes]`` of each backend of the VIP, flat, in
    ``plan.vip.backends`` order: the first packets of the new connections it
    got, through the select group (miss) plus the affinity hit flow (hit).
    A list per VIP, not an object per backend: a scrape at 5000 VIPs counts
    25k backends."""
    by_gid = {p.group_id: p for p in plans}
    counts = {gid: [0] * (2 * len(p.vip.backends)) for gid, p in by_gid.items()}
    where: dict[int, dict[Endpoint, int]] = {}  # group id -> backend -> index, as needed

    def index(plan: VipPlan) -> dict[Endpoint, int]:
        found = where.get(plan.group_id)
        if found is None:
            found = where[plan.group_id] = {be: i for i, be in enumerate(plan.vip.backends)}
        return found

    replies = [r.raw for r in channel.request(oskenfallback.group_stats_request())
               if r.msg_type == OFPT_MULTIPART_REPLY]
    stats = [(raw, entry) for raw in replies for entry in iter_group_stats(raw)]
    # a split VIP's backends are counted in its part groups (``groupsplit``):
    # part j holds slice j of the plan's buckets, in order
    present = {group_id for _, (group_id, _, _) in stats}
    part_of: dict[int, tuple[VipPlan, Sequence[tuple[int, Endpoint]]]] = {}
    for big in by_gid.values():
        if not groupsplit.may_split(len(big.buckets)):
            continue
        ids = [groupsplit.part_group_id(big.group_id, j) for j in range(groupsplit.MAX_PARTS)]
        n = sum(1 for gid in ids if gid in present)
        for gid, (start, end) in zip(ids, groupsplit.part_slices(len(big.buckets), n),
                                     strict=False):
            part_of[gid] = (big, big.buckets[start:end])
    for raw, (group_id, at_bucket, n_buckets) in stats:
        plan = by_gid.get(group_id)
        buckets = plan.buckets if plan is not None else ()
        if group_id in part_of:
            plan, buckets = part_of[group_id]
        elif plan is not None and groupsplit.part_group_id(plan.group_id, 0) in part_of:
            continue  # a split VIP's top group: a bucket per part, not per backend
        if plan is None:
            continue
        c, at = counts[plan.group_id], index(plan)
        # a backend may own many buckets (balanced distribution): add them up
        for k, (_, be) in enumerate(itertools.islice(buckets, n_buckets)):
            i = at.get(be)
            if i is not None:
                packets, nbytes = BUCKET_COUNTER.unpack_from(
                    raw, at_bucket + k * BUCKET_COUNTER.size)
                c[2 * i] += packets
                c[2 * i + 1] += nbytes
    for f in _flows(channel, own.MANAGED_COOKIE, own.MAGIC_MASK, pipeline.lb,
                    with_actions=False):
        if f.priority != PRIO_HIT:
            continue
        m = canonical_match(f.match.items()).as_dict()
        plan = by_gid.get(int(m.get(REG_VIP_ID, 0)))  # type: ignore[arg-type]
        ip = backend_from_regs(m)
        if plan is None or ip is None:
            continue
        port = m.get(REG_BACKEND_PORT)
        i = index(plan).get(Endpoint(ip, int(port) if port is not None else None))  # type: ignore[arg-type]
        if i is not None:
            c = counts[plan.group_id]
            c[2 * i] += int(f.stats.get("packet_count", 0))
            c[2 * i + 1] += int(f.stats.get("byte_count", 0))
    return counts


def backend_rows(plans: Iterable[VipPlan], counts: Mapping[int, list[int]]
                 ) -> Iterator[tuple[tuple[str, str, str], Counters]]:
    """(lb name, vip key, backend) -> counters, sorted by those labels; the
    VIPs of LBs of one name that share a VIP key are added up (one series)."""
    by_label: dict[tuple[str, str], list[VipPlan]] = {}
    for p in plans:
        by_label.setdefault((p.lb.name, p.vip.key), []).append(p)
    for label in sorted(by_label):
        per_backend: dict[str, Counters] = {}
        for p in by_label[label]:
            c = counts.get(p.group_id)
            for i, be in enumerate(p.vip.backends):
                add = Counters(c[2 * i], c[2 * i + 1]) if c is not None else Counters()
                key = str(be)
                have = per_backend.get(key)
                per_backend[key] = add if have is None else have + add
        for name in sorted(per_backend):
            yield (*label, name), per_backend[name]


def read_backend_counters(channel: Channel, plans: Iterable[VipPlan],
                          pipeline: Pipeline) -> dict[tuple[str, str, str], Counters]:
    """(lb name, vip key, backend) -> counters (``read_backend_counts``)."""
    plans = list(plans)
    return dict(backend_rows(plans, read_backend_counts(channel, plans, pipeline)))


def entries_per_vip(entries: Iterable[AffinityEntry],
                    plans: Iterable[VipPlan]) -> Mapping[tuple[str, str], int]:
    by_gid = {p.group_id: p for p in plans}
    out: dict[tuple[str, str], int] = {(p.lb.name, p.vip.key): 0 for p in by_gid.values()}
    for e in entries:
        plan = by_gid.get(e.vip_id)
        if plan is not None:
            out[(plan.lb.name, plan.vip.key)] += 1
    return out
