"""Exact affinity timeouts beyond OpenFlow's 16-bit idle timeout.

Learned entries carry ``idle_timeout = min(T, cap)`` (cap 65535) and the
``send_flow_rem`` flag.  When one idles out, the switch reports how long it was
installed without a hit; if the client has not yet been idle for the real
timeout ``T``, the entry is re-installed for the remainder (at most ``cap``
again).  A re-installed entry that was hit meanwhile has been idle only for its
own timeout; one that was not adds its idle time to what came before.  That
"idle before" value is the only state kept, per entry, in memory: after a
daemon restart an extended entry may live up to one cap longer than ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbaffd.openflow.flowspec import Match

OFPRR_IDLE_TIMEOUT = 0


@dataclass(frozen=True, slots=True)
class RemovedEntry:
    """A learned affinity entry the switch reported removed (OFPT_FLOW_REMOVED)."""

    cookie: int
    table: int
    priority: int
    match: Match
    idle_timeout: int
    packets: int
    reason: int

    @property
    def idled_out(self) -> bool:
        return self.reason == OFPRR_IDLE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Restore:
    """A learned entry to put back after someone else deleted it (companion
    mode: ovn-controller's flush), with the idle time it had used."""

    entry: RemovedEntry
    idle_so_far: int


class LongIdle:
    """Decides re-installs; holds per-entry idle time accumulated before install."""

    def __init__(self) -> None:
        self._idle_before: dict[tuple[int, Match], int] = {}

    def __len__(self) -> int:
        return len(self._idle_before)

    def on_removed(self, entry: RemovedEntry, timeout: int, cap: int) -> int | None:
        """The idle timeout to re-install ``entry`` with, or None when it is done."""
        key = (entry.cookie, entry.match)
        before = self._idle_before.pop(key, 0)
        if not entry.idled_out:
            return None  # deleted (backend gone, flush): never resurrect
        idle = entry.idle_timeout + (before if entry.packets == 0 else 0)
        remaining = timeout - idle
        if remaining <= 0:
            return None
        self._idle_before[key] = idle
        return min(remaining, cap)

    def forget(self, cookies: set[int]) -> None:
        """Drop state of entries whose VIP/backend no longer exists."""
        for key in [k for k in self._idle_before if k[0] not in cookies]:
            del self._idle_before[key]
