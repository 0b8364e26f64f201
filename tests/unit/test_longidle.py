"""Exact idle semantics beyond the 16-bit OpenFlow idle timeout (pure logic)."""

from __future__ import annotations

from lbaffd.openflow.flowspec import Match
from lbaffd.reconcile.longidle import LongIdle, RemovedEntry

M = Match.of(ipv4_src="10.0.0.11", reg6=5, metadata=1)
CAP = 65535
DAY = 86400


def removed(idle: int, packets: int = 0, reason: int = 0) -> RemovedEntry:
    return RemovedEntry(0x1BAE000000000001, 3, 100, M, idle, packets, reason)


def test_idle_for_the_cap_gets_the_remainder_then_expires() -> None:
    li = LongIdle()
    assert li.on_removed(removed(CAP), DAY, CAP) == DAY - CAP
    assert li.on_removed(removed(DAY - CAP), DAY, CAP) is None  # idle DAY in total
    assert len(li) == 0


def test_a_hit_after_reinstall_restarts_the_clock() -> None:
    li = LongIdle()
    assert li.on_removed(removed(CAP), DAY, CAP) == DAY - CAP
    # hit once, then idle for its timeout: idle only DAY-CAP since that hit
    assert li.on_removed(removed(DAY - CAP, packets=3), DAY, CAP) == CAP
    assert li.on_removed(removed(CAP), DAY, CAP) is None  # DAY-CAP + CAP = DAY


def test_scaled_down_cap_same_code_path() -> None:
    li = LongIdle()
    assert li.on_removed(removed(2), 5, 2) == 2
    assert li.on_removed(removed(2), 5, 2) == 1
    assert li.on_removed(removed(1), 5, 2) is None


def test_deleted_entries_are_never_resurrected() -> None:
    li = LongIdle()
    assert li.on_removed(removed(CAP), DAY, CAP) == DAY - CAP
    assert li.on_removed(removed(10, reason=2), DAY, CAP) is None
    assert len(li) == 0


def test_timeouts_within_the_cap_are_not_extended() -> None:
    assert LongIdle().on_removed(removed(300), 300, CAP) is None


def test_forget() -> None:
    li = LongIdle()
    li.on_removed(removed(CAP), DAY, CAP)
    li.forget({0x1BAE000000000002})
    assert len(li) == 0
