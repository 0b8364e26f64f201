"""What a daemon running for months keeps must not grow with what it has
seen: services come and go, and only the current ones may stay in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType

from prometheus_client import generate_latest

from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import parse_all
from lbaffd.model.plan import VipPlan, make_plan, plan_vips
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.ops import memtrim
from lbaffd.ops.metrics import Metrics
from lbaffd.ops.report import REFUSAL_KINDS, PassReport
from lbaffd.packetin.reject import Refuser

DP = DatapathRow("dp-1", 1, "ls1")
TOPO = Topology((LocalPort(1, "a", DP),), MappingProxyType({}))


def plans_of(names: range) -> tuple[VipPlan, ...]:
    rows = [LoadBalancerRow(uuid=f"uuid-{i}", name=f"svc-{i}", datapaths=("dp-1",),
                            vips=MappingProxyType({f"10.96.{i // 250}.{i % 250 + 1}:80":
                                                   "10.0.0.21:80,10.0.0.22:80"}),
                            options=MappingProxyType({"affinity_timeout": "60"}))
            for i in names]
    lbs, _ = parse_all(rows, {"dp-1": DP}, {})
    planned, _ = plan_vips(lbs, TOPO)
    ids = own.allocate_group_ids([own.vip_owner(lb.uuid, v.key) for lb, v, _ in planned], {})
    return tuple(make_plan(lb, v, dps, TOPO, ids, "balanced", 1) for lb, v, dps in planned)


def series(metrics: Metrics) -> int:
    """Labelled per-VIP samples in a scrape of the registry."""
    text = generate_latest(metrics.registry).decode()
    return sum(1 for line in text.splitlines()
               if line.startswith(("lbaffd_affinity_entries_", "lbaffd_vip_refusals_total"))
               and 'vip="' in line)


def touch(metrics: Metrics, plans: tuple[VipPlan, ...]) -> None:
    """What entries and refusals do for each VIP they see (a child per label set)."""
    for p in plans:
        labels = (p.lb.name, p.vip.key)
        metrics.entries_expired.labels(*labels).inc()
        metrics.entries_flushed.labels(*labels).inc()
        metrics.entries_extended.labels(*labels).inc()
        for kind in REFUSAL_KINDS:
            metrics.refusals.labels(*labels, kind).inc()


def test_series_of_gone_vips_are_dropped_and_stay_bounded() -> None:
    """100 rounds of 20 services replaced by 20 new ones: the per-VIP series
    are those of the 50 current services, not of the 2050 ever seen."""
    metrics = Metrics()
    report = PassReport(metrics)
    current = range(50)
    plans = plans_of(current)
    touch(metrics, plans)
    report.forget_gone_vips(plans)
    per_round = series(metrics)
    assert per_round > 0
    for r in range(100):
        current = range(20 * (r + 1), 20 * (r + 1) + 50)
        plans = plans_of(current)
        touch(metrics, plans)
        gone = report.forget_gone_vips(plans)
        assert {lb for lb, _ in report.vip_labels} == {f"svc-{i}" for i in current}
        assert {lb for lb, _ in gone} == {f"svc-{i}" for i in range(20 * r, 20 * (r + 1))}
    assert series(metrics) == per_round  # those of the current 50 only


def test_series_of_current_vips_keep_counting() -> None:
    metrics = Metrics()
    report = PassReport(metrics)
    plans = plans_of(range(3))
    touch(metrics, plans)
    report.forget_gone_vips(plans)
    report.forget_gone_vips(plans_of(range(2)))  # svc-2 went
    touch(metrics, plans_of(range(2)))
    text = generate_latest(metrics.registry).decode()
    key = plans[0].vip.key
    assert f'lbaffd_affinity_entries_expired_total{{lb="svc-0",vip="{key}"}} 2.0' in text
    assert 'lb="svc-2"' not in text


def test_refuser_forgets_vips_that_went() -> None:
    """The 'first refusal of a VIP is logged' memory keeps only live VIPs."""
    sent: list[bytes] = []
    vips = {1: ("svc-1", "10.0.0.1:80"), 2: ("svc-2", "10.0.0.2:80")}
    refuser = Refuser(lambda port, data: sent.append(data), vips.get,
                      lambda lb, vip, kind: None)
    syn = bytes.fromhex(
        "020000000001020000000002080045000028000100004006"  # eth + IPv4 (TCP), no checksum
        "0000" "0a00000b" "0a000001" "d43100500000000100000000" "50020200" "00000000")
    for cookie in (1, 2):
        refuser.handle(cookie, 5, syn)
    assert len(refuser._logged) == 2
    refuser.forget(frozenset({vips[2], ("svc-9", "10.0.0.9:80")}))
    assert refuser._logged == {vips[1]}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_trim_returns_what_a_thread_freed_to_the_system() -> None:
    """Memory a thread's malloc arena freed stays resident until trimmed:
    ~200 MB of 2 KB blocks allocated on a thread, one in 64 kept (so no
    arena can shrink from its top), the rest freed."""
    assert memtrim.available()  # glibc (Debian)
    kept: list[bytes] = []

    def work() -> None:
        blocks = [bytes(2048) for _ in range(100_000)]
        kept.extend(blocks[::64])

    t = threading.Thread(target=work)
    t.start()
    t.join()
    before = _rss_mb()
    assert memtrim.trim()
    after = _rss_mb()
    assert before - after > 100, (before, after)  # most of the ~195 MB freed
    assert len(kept) == 1563


_ARENA_PROBE = """
import sys, threading
from lbaffd.ops import memtrim
limited = memtrim.limit_arenas(1) if sys.argv[1] == "limit" else False
kept = []
t = threading.Thread(target=lambda: kept.extend(bytes(2048) for _ in range(30_000)))
t.start(); t.join()
heap = 0
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        lo, hi = line.split()[0].split("-")
        heap += int(hi, 16) - int(lo, 16)
print(limited, heap // 2**20)
"""


def _arena_probe(mode: str, **env: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _ARENA_PROBE, mode], check=True, text=True,
                         capture_output=True, env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


def test_one_malloc_arena_keeps_a_threads_memory_in_the_main_heap() -> None:
    """``limit_arenas(1)``: 60 MB a thread allocates comes from the main heap
    (brk, ``[heap]``), not from an arena of the thread's own; without it the
    heap stays small.  An operator's ``MALLOC_ARENA_MAX`` is left alone."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    limited, heap = _arena_probe("limit", **env)
    assert limited == "True" and heap >= 55, heap
    _, heap = _arena_probe("none", **env)
    assert heap < 20, heap
    assert memtrim.limit_arenas(1, environ={"MALLOC_ARENA_MAX": "4"}) is False


def test_ovs_slots_memo_is_bounded_and_never_shared() -> None:
    """The dp_hash slot table is memoized (a full pass asks it per VIP): the
    memo stays bounded whatever weights come, and a caller changing the list
    it got does not change what the next caller gets."""
    from lbaffd.model import distribution as dist

    first = dist.ovs_slots([1] * 7)
    assert first is not None and sum(first) == 16
    first[0] = 99
    assert dist.ovs_slots([1] * 7) == [3, 3, 2, 2, 2, 2, 2]
    for n in range(1, 3000):
        dist.ovs_slots([1 + n % 5] * (n % 64 + 1) + [n % 3 + 1])
    assert dist._ovs_slots.cache_info().currsize <= 1024


def test_bucket_memo_shares_unchanged_buckets_and_keeps_only_the_last_pass() -> None:
    """A full pass plans every VIP again: an unchanged VIP's plan gets the very
    buckets tuple of the previous pass (not an equal copy held beside it), and
    buckets no pass uses any more are let go at the next pass's end."""
    from lbaffd.model.loadbalancer import Endpoint, parse_endpoint
    from lbaffd.model.plan import BucketMemo, group_buckets

    def backends(i: int, n: int) -> tuple[Endpoint, ...]:
        return tuple(parse_endpoint(f"10.{i}.0.{b + 1}:80") for b in range(n))

    memo = BucketMemo()
    first = {i: memo.buckets(backends(i, 3), "balanced") for i in range(50)}
    assert all(b == group_buckets(backends(i, 3), "balanced") for i, b in first.items())
    assert len(first[0]) > 3  # balanced: a backend holds many of the 256 slots
    memo.end_pass()
    # the next pass: 40 unchanged, 10 with a backend more
    second = {i: memo.buckets(backends(i, 3 if i < 40 else 4), "balanced") for i in range(50)}
    assert all(second[i] is first[i] for i in range(40))
    assert all(second[i] != first[i] for i in range(40, 50))
    memo.end_pass()
    memo.buckets(backends(0, 3), "balanced")
    memo.end_pass()  # a pass that planned one VIP: the others' buckets are gone
    assert len(memo) == 1
    # 200 passes each replacing every VIP: bounded by one pass's VIPs
    for r in range(200):
        for i in range(50):
            memo.buckets(backends(i, 2 + r % 5), "client-hash" if i % 2 else "balanced")
        memo.end_pass()
    assert len(memo) == 50


def test_buckets_are_compact_and_behave_as_the_tuple_of_their_pairs() -> None:
    import sys
    from dataclasses import replace

    from lbaffd.model.loadbalancer import parse_endpoint
    from lbaffd.model.plan import Buckets, group_buckets

    bes = tuple(parse_endpoint(f"10.0.{b // 200}.{b % 200 + 1}:80") for b in range(250))
    pairs = tuple(group_buckets(bes, "ovs-default"))
    b = Buckets(pairs)
    assert len(b) == len(pairs) == 250
    assert list(b) == list(pairs) and b[0] == pairs[0] and b[-1] == pairs[-1]
    assert b[10:20] == pairs[10:20]
    assert b == pairs and pairs == b and hash(b) == hash(pairs)
    assert b == Buckets(pairs) and hash(b) == hash(Buckets(pairs))
    assert b != Buckets(pairs[:-1]) and b != pairs[:-1]
    other = tuple((bid, parse_endpoint("10.9.0.9:80") if be == bes[0] else be)
                  for bid, be in pairs)
    assert b != Buckets(other)  # same ids, another backend
    assert Buckets() == () and len(Buckets()) == 0
    # the ids and backend indexes in arrays: a fraction of the pairs' tuples and ints
    size = sum(sys.getsizeof(x) for x in (b._ids, b._which))
    tuples = sys.getsizeof(pairs) + sum(sys.getsizeof(p) + sys.getsizeof(p[0]) for p in pairs)
    assert size * 5 < tuples, (size, tuples)
    # weights other than the default: equal only to the same weights
    three = group_buckets(bes[:3], "balanced")
    assert list(three.weights()) == [85, 85, 85, 1]
    assert three != tuple(three) and three != Buckets(tuple(three))
    assert three == Buckets(tuple(three), [85, 85, 85, 1])
    assert hash(three) == hash(Buckets(tuple(three), [85, 85, 85, 1]))
    assert Buckets(pairs, [100] * 250) == b  # the default weight given is no weight
    # a plan made with them equals (and hashes as) one made with the tuple
    plan = next(p for p in plans_of(range(20)) if len(p.live_backends) in (1, 2, 4))
    assert isinstance(plan.buckets, Buckets)
    as_tuple = replace(plan, buckets=tuple(plan.buckets))
    assert plan == as_tuple and hash(plan) == hash(as_tuple)
