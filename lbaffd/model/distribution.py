"""How evenly a dp_hash select group spreads new connections, and how to do better.

OVS maps a ``dp_hash`` group's buckets onto a table of hash slots
(``group_setup_dp_hash_table`` in ofproto-dpif.c): ``n_hash`` is the smallest
power of two holding ``total_weight / min_weight`` slots (OVS >= 3.5: at least
``4 * n_buckets``), never below 16 or above 256, and slots are dealt to buckets
by Webster's (Sainte-Laguë) method.  With equal weights, 3 backends get 6/5/5
of 16 slots and 7 get 3/3/2/2/2/2/2: up to 50 % more load on one backend.

``balanced`` distribution gives every backend ``256 // n`` equal buckets,
interleaved, so the table has 256 slots and no backend has more than one slot
more than another.  Pure functions; the compiler and the gauges use them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

MAX_SLOTS = 256
MIN_SLOTS = 16
BALANCED = "balanced"
OVS_DEFAULT = "ovs-default"
MODES = (BALANCED, OVS_DEFAULT)


def _pow2_at_least(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


def ovs_slots(weights: Sequence[int], min_slots_per_bucket: int = 1) -> list[int] | None:
    """Slots each bucket gets in OVS's dp_hash table; None when OVS would not
    use dp_hash for this group (more than 256 slots needed).

    ``min_slots_per_bucket`` is 1 for OVS <= 3.4 and 4 for OVS >= 3.5.
    Memoized: every full pass asks this for each dp_hash VIP (the expected
    share gauge), with a handful of distinct weight lists (n equal buckets),
    and dealing up to 256 slots in Python was most of a full pass (issue 19).
    """
    slots = _ovs_slots(tuple(weights), min_slots_per_bucket)
    return None if slots is None else list(slots)


@functools.lru_cache(maxsize=1024)
def _ovs_slots(weights: tuple[int, ...], min_slots_per_bucket: int) -> tuple[int, ...] | None:
    live = [w for w in weights if w > 0]
    if not live:
        return (0,) * len(weights)
    needed = math.ceil(sum(live) / min(live))
    if min_slots_per_bucket > 1:
        needed = max(needed, min(min_slots_per_bucket * len(weights), MAX_SLOTS))
    n_hash = max(MIN_SLOTS, _pow2_at_least(needed))
    if n_hash > MAX_SLOTS:
        return None
    if len(set(weights)) == 1:
        # equal weights (every caller's case): Webster's picks go round robin
        # from the first bucket, so the first n_hash % n get one slot more.
        # Dealing them one by one took ~30 ms for each distinct bucket count
        # (up to 256 buckets x 256 slots), the first time: 1-2 s of a cold
        # pass or restart at thousands of VIPs with ~100 distinct counts.
        q, r = divmod(n_hash, len(weights))
        return (q + 1,) * r + (q,) * (len(weights) - r)
    slots = [0] * len(weights)
    for _ in range(n_hash):
        # Webster: the bucket with the highest weight / (2 * slots + 1) gets
        # the next slot; ties go to the first bucket.
        best = max(range(len(weights)), key=lambda i: (weights[i] / (2 * slots[i] + 1), -i))
        slots[best] += 1
    return tuple(slots)


def replicas(n_backends: int, mode: str) -> int:
    """Equal buckets per backend: enough to fill the 256-slot space when balanced."""
    if mode != BALANCED or n_backends <= 1:
        return 1
    return max(1, MAX_SLOTS // n_backends)


def bucket_layout(n_backends: int, mode: str) -> list[int]:
    """Backend index of each bucket, interleaved (0,1,2,0,1,2,...), so that the
    slots left over after an even deal go to different backends."""
    return [b for _ in range(replicas(n_backends, mode)) for b in range(n_backends)]


def expected_shares(n_backends: int, mode: str, min_slots_per_bucket: int = 1) -> list[float]:
    """Each backend's expected share of new connections in a dp_hash group."""
    if n_backends == 0:
        return []
    layout = bucket_layout(n_backends, mode)
    slots = ovs_slots([1] * len(layout), min_slots_per_bucket)
    if slots is None:
        return [1.0 / n_backends] * n_backends
    per_backend = [0] * n_backends
    for bucket, backend in enumerate(layout):
        per_backend[backend] += slots[bucket]
    total = sum(per_backend)
    return [s / total for s in per_backend]


def min_slots_for_version(ovs_version: str) -> int:
    """OVS >= 3.5 gives every bucket at least 4 slots (``4 * n`` hash space)."""
    try:
        major, minor = (int(x) for x in ovs_version.split(".")[:2])
    except ValueError:
        return 1
    return 4 if (major, minor) >= (3, 5) else 1
