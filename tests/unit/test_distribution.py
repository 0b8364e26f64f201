"""The dp_hash slot model against the figures OVS's own commit quotes
(OVS <= 3.4: up to 50 % difference, average 43 % over 1..64 backends)."""

from __future__ import annotations

from lbaffd.model.distribution import (
    BALANCED,
    OVS_DEFAULT,
    bucket_layout,
    expected_shares,
    min_slots_for_version,
    ovs_slots,
)


def spread(shares: list[float]) -> float:
    return (max(shares) - min(shares)) / max(shares)


def test_known_small_tables() -> None:
    assert ovs_slots([1, 1, 1]) == [6, 5, 5]
    assert ovs_slots([1] * 7) == [3, 3, 2, 2, 2, 2, 2]
    assert ovs_slots([1] * 5) == [4, 3, 3, 3, 3]
    assert ovs_slots([2, 1]) == [11, 5]  # weights: 16 slots by Webster
    assert ovs_slots([1] * 300) is None  # more than 256 slots: no dp_hash table


def test_default_distribution_matches_ovs_commit_figures() -> None:
    diffs = [spread(expected_shares(n, OVS_DEFAULT)) for n in range(1, 65)]
    assert abs(max(diffs) - 0.50) < 0.005
    assert abs(sum(diffs) / 64 - 0.43) < 0.01
    # OVS >= 3.5 (4 slots per bucket at least): up to 20 %
    new = [spread(expected_shares(n, OVS_DEFAULT, 4)) for n in range(1, 65)]
    assert abs(max(new) - 0.20) < 0.005


def test_balanced_is_bounded_by_one_slot() -> None:
    for min_slots in (1, 4):
        for n in range(1, 257):
            shares = expected_shares(n, BALANCED, min_slots)
            assert abs(sum(shares) - 1) < 1e-9
            assert (max(shares) - min(shares)) * 256 <= 1 + 1e-9, n
    avg = sum(spread(expected_shares(n, BALANCED)) for n in range(1, 65)) / 64
    assert avg < 0.12  # ~11 %: the limit of a 256-slot space


def test_balanced_fills_the_table_with_one_bucket_more() -> None:
    """A bucket per backend and at most one filler (weight 1, one slot), which
    makes OVS size the table at 256 slots; a power of two divides its own
    table evenly without one."""
    for n in range(2, 129):
        layout = bucket_layout(n, BALANCED)
        slots = ovs_slots([w for _, w in layout])
        assert slots is not None
        if n & (n - 1) == 0:
            assert len(layout) == n and len({s for s in slots}) == 1, n
            continue
        assert len(layout) == n + 1 and sum(slots) == 256, n
        assert layout[-1] == (n - 1, 1) and slots[-1] == 1, n
    assert bucket_layout(3, BALANCED) == ((0, 85), (1, 85), (2, 85), (2, 1))
    assert bucket_layout(3, OVS_DEFAULT) == ((0, 100), (1, 100), (2, 100))
    assert bucket_layout(1, BALANCED) == ((0, 100),)
    assert len(bucket_layout(200, BALANCED)) == 200  # > 128 equal buckets: 256 slots


def test_version_switch() -> None:
    assert min_slots_for_version("3.1.0") == 1
    assert min_slots_for_version("3.5.1") == 4
    assert min_slots_for_version("") == 1


def _webster(weights: list[int], min_slots: int) -> list[int] | None:
    """OVS's group_setup_dp_hash_table, slot by slot (the reference)."""
    needed = -(-sum(weights) // min(weights))
    if min_slots > 1:
        needed = max(needed, min(min_slots * len(weights), 256))
    n_hash = max(16, 1 << (needed - 1).bit_length())
    if n_hash > 256:
        return None
    slots = [0] * len(weights)
    for _ in range(n_hash):
        best = max(range(len(weights)), key=lambda i: (weights[i] / (2 * slots[i] + 1), -i))
        slots[best] += 1
    return slots


def test_equal_weights_deal_as_webster_does() -> None:
    """The equal-weight shortcut (every bucket count a balanced or default
    group can have) gives OVS's table exactly; unequal weights still deal."""
    for min_slots in (1, 4):
        for n in range(1, 300):
            assert ovs_slots([1] * n, min_slots) == _webster([1] * n, min_slots), n
    assert ovs_slots([1, 2, 3], 1) == _webster([1, 2, 3], 1)
    assert ovs_slots([5, 1, 1, 2], 4) == _webster([5, 1, 1, 2], 4)
    for n in range(2, 129):  # every balanced layout
        weights = [w for _, w in bucket_layout(n, BALANCED)]
        assert ovs_slots(weights) == _webster(weights, 1), n
