"""How evenly a dp_hash select group spreads new connections, and how to do better.

OVS maps a ``dp_hash`` group's buckets onto a table of hash slots
(``group_setup_dp_hash_table`` in ofproto-dpif.c): ``n_hash`` is the smallest
power of two holding ``total_weight / min_weight`` slots (OVS >= 3.5: at least
``4 * n_buckets``), never below 16 or above 256, and slots are dealt to buckets
by Webster's (Sainte-Laguë) method.  With equal weights, 3 backends get 6/5/5
of 16 slots and 7 get 3/3/2/2/2/2/2: up to 50 % more load on one backend.

``balanced`` distribution fills all 256 slots so that no backend has more than
one slot more than another, with one bucket per backend and at most one more:
the backends' buckets weigh ``255 // n`` each and a *filler* bucket (a second
bucket of the last backend) weighs 1, so ``total / min`` exceeds 128 and OVS
sizes the table at 256; Webster then gives each backend ``256 // n`` or one
more, the filler one slot.  (Before, a backend had ``256 // n`` equal buckets:
the same table from up to 256 buckets a group, 1.3M at 5000 VIPs, which OVS
had to install, dump and lbaffd to read back.)  A power of two up to 256
backends divides the table evenly without a filler, and more than 128 equal
buckets already make a 256-slot table.  Pure functions; the compiler and the
gauges use them.
"""

from __future__ import annotations

import functools
import heapq
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
    # Webster: the bucket with the highest weight / (2 * slots + 1) gets the
    # next slot; ties go to the first bucket (OVS takes a strictly greater
    # value only).  A heap of (-value, index): a balanced layout's weights
    # (n equal and a filler) differ for each n, and a scan per slot cost
    # ~10 ms a layout at 100 backends.
    slots = [0] * len(weights)
    heap = [(-float(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    for _ in range(n_hash):
        _, best = heapq.heappop(heap)
        slots[best] += 1
        heapq.heappush(heap, (-(weights[best] / (2 * slots[best] + 1)), best))
    return tuple(slots)


DEFAULT_WEIGHT = 100  # OVN's and ``ovs-ofctl``'s bucket weight
FILLER_WEIGHT = 1


@functools.lru_cache(maxsize=512)
def bucket_layout(n_backends: int, mode: str) -> tuple[tuple[int, int], ...]:
    """(backend index, weight) of each bucket, in order: a bucket per backend
    (index order) and, for ``balanced`` where the table would not divide
    evenly, the filler, a second bucket of the last backend (weight 1).

    The backends' buckets have equal weights, so Webster gives the slots left
    after an even deal to the first ones (ties go to the first bucket); the
    last backend has the fewest and takes the filler's slot."""
    plain = tuple((i, DEFAULT_WEIGHT) for i in range(n_backends))
    if mode != BALANCED or n_backends <= 1 or n_backends & (n_backends - 1) == 0 \
            or n_backends > MAX_SLOTS // 2:
        return plain
    weight = (MAX_SLOTS - 1) // n_backends  # total / min = n * weight + 1 > 128
    return (*((i, weight) for i in range(n_backends)), (n_backends - 1, FILLER_WEIGHT))


def expected_shares(n_backends: int, mode: str, min_slots_per_bucket: int = 1) -> list[float]:
    """Each backend's expected share of new connections in a dp_hash group."""
    if n_backends == 0:
        return []
    layout = bucket_layout(n_backends, mode)
    slots = ovs_slots([w for _, w in layout], min_slots_per_bucket)
    if slots is None:
        return [1.0 / n_backends] * n_backends
    per_backend = [0] * n_backends
    for (backend, _), n in zip(layout, slots, strict=True):
        per_backend[backend] += n
    total = sum(per_backend)
    return [s / total for s in per_backend]


def min_slots_for_version(ovs_version: str) -> int:
    """OVS >= 3.5 gives every bucket at least 4 slots (``4 * n`` hash space)."""
    try:
        major, minor = (int(x) for x in ovs_version.split(".")[:2])
    except ValueError:
        return 1
    return 4 if (major, minor) >= (3, 5) else 1
