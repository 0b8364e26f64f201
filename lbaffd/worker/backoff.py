"""When to try again after a pass failed (the switch or a DB away, a bundle
refused).

Doubling from 0.1 s with a short cap of 1 s: a restarted ovs-vswitchd must
get its flows back within about a second, and a pass that fails at once
costs little.  A pass that completes resets it."""

from __future__ import annotations

FIRST = 0.1
CAP = 1.0


class Backoff:
    def __init__(self) -> None:
        self.delay = 0.0
        self.retry_at = 0.0  # monotonic; 0: no retry pending

    def failed(self, now: float) -> float:
        """A pass failed at ``now``: the delay until the retry."""
        self.delay = min(max(self.delay * 2, FIRST), CAP)
        self.retry_at = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
        self.retry_at = 0.0
