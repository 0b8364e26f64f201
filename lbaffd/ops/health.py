"""Liveness and readiness for the HTTP probes (``/healthz``, ``/readyz``).

Live: the worker loop turned recently (it wakes at least once an audit
interval, so three intervals without a turn mean it is stuck).  Ready: the
switch was in sync with the SB recently (the last pass that completed).
Both go stale after three audit intervals, and never sooner than 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lbaffd.ops.status import Status


class Health:
    def __init__(self, audit_interval: Callable[[], float], status: Callable[[], Status],
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._interval = audit_interval
        self._status = status
        self._clock = clock
        self._wall = wall
        self.heartbeat = clock()

    def beat(self) -> float:
        """The worker loop turned: now (monotonic), for its own timers."""
        self.heartbeat = now = self._clock()
        return now

    def stale_after(self) -> float:
        return max(3 * self._interval(), 30.0)

    def live(self) -> tuple[bool, str]:
        """The worker loop turned recently (it wakes at least every audit interval)."""
        age = self._clock() - self.heartbeat
        return age < self.stale_after(), f"worker loop {age:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        """The switch was in sync with the SB recently."""
        last = self._status().stats.last_sync
        if not last:
            return False, "no full sync yet"
        age = self._wall() - last
        return age < self.stale_after(), f"in sync {age:.1f}s ago"
