"""Putting lbaffd back after ovn-controller clears the bridge (companion mode).

ovn-controller deletes every flow and group when it (re)connects to br-int
(``controller/ofctrl.c``: a fresh connection starts from an empty switch), so a
restart or upgrade of it takes lbaffd's flows, groups and learned affinity
entries with it.  The switch reports each deletion (lbaffd's flows and learned
entries carry ``send_flow_rem``): the managed flows make the next pass an
audit that re-installs them, and the learned entries reported deleted in the
same window are put back as they were (match, backend, cookie) with the idle
time they had left, so every client keeps its backend.

OpenFlow's FLOW_REMOVED carries no idle age, so the time an entry had left is
taken from ``EntryAges``: the idle ages the switch reported in the last poll
of the affinity table, plus the time since (an entry hit after the poll is
given less time than it had; one not in a poll, a full timeout).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lbaffd.openflow.flowspec import Match
from lbaffd.reconcile.longidle import RemovedEntry, Restore

WINDOW = 10.0  # seconds: deletions further apart are not one flush


@dataclass(slots=True)
class EntryAges:
    """Idle age (seconds) of each learned entry at the last poll, and when."""

    ages: dict[Match, int] = field(default_factory=dict)  # an entry's match is unique
    at: float = 0.0

    def update(self, ages: Mapping[Match, int], now: float) -> None:
        self.ages, self.at = dict(ages), now

    def idle(self, match: Match, now: float) -> int:
        age = self.ages.get(match)
        if age is None:
            return 0
        return age + int(now - self.at)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a repair after a flush (wave) puts back: ``seconds`` since the
    flush began; ``first``: the first repair of this flush (count it once)."""

    restores: list[Restore]
    seconds: float
    first: bool


class FlushRecovery:
    """Worker-thread state: a flush noticed, the entries it took, whether
    lbaffd's own flows are back yet."""

    def __init__(self) -> None:
        self.ages = EntryAges()
        self._flush_at: float | None = None
        self._repaired = False
        self._reported = False  # the flush has been counted
        self._answered = True  # the last repair has been reported
        self._held: list[tuple[RemovedEntry, float]] = []

    def noticed(self, now: float | None = None) -> None:
        """lbaffd flows were deleted by someone else (not by lbaffd).  A flush
        comes in waves (ovn-controller deletes all flows, then all groups,
        which takes the flows that point at them): a wave within ``WINDOW`` of
        the first belongs to the same flush and asks for another repair."""
        now = time.monotonic() if now is None else now
        if self._flush_at is None or now - self._flush_at > WINDOW:
            self._flush_at = now
            self._reported = False
        self._repaired = False

    def hold(self, deleted: Iterable[RemovedEntry], now: float | None = None) -> None:
        """Learned entries the switch reported deleted (not idled out)."""
        now = time.monotonic() if now is None else now
        self._held.extend((e, now) for e in deleted)

    def repaired(self) -> None:
        """A pass has put lbaffd's flows and groups back."""
        if self._flush_at is not None and not self._repaired:
            self._repaired = True
            self._answered = False  # this wave's repair is still to be reported

    def take(self, now: float | None = None) -> Recovered | None:
        """Once the flows are back after a wave: the entries to restore and the
        seconds since the flush began; None when nothing is due.  Entries
        deleted while lbaffd's own flows were not (a backend removed:
        ``delete_learned``) are never restored."""
        now = time.monotonic() if now is None else now
        start = self._flush_at
        if start is None or now - start > WINDOW:
            self._flush_at = None
            self._held = []
            return None
        if not self._repaired or (self._answered and not self._held):
            return None
        picked = [Restore(e, self.ages.idle(e.match, now)) for e, _ in self._held]
        self._held = []
        first = not self._reported
        self._reported = self._answered = True
        return Recovered(picked, now - start, first)
