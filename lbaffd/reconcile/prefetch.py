"""The switch's dumps of lbaffd's flows and groups, asked for ahead of the
first pass so that ovs-vswitchd builds them while the SB syncs.

At N=5000 (the realistic benchmark: 51,943 flows, 5,219 groups) the dumps
take ovs-vswitchd ~0.5 s (flows) and ~0.1 s (groups; ~60 MB and ~5-16 s when
balanced groups had 256 buckets, 1.3M in all); the SB's initial sync and the
compile are lbaffd's own CPU.  Asked for at start, the two overlap on a
machine with two cores instead of following each other.

Why a dump taken before the pass is as good as one taken in it: it is asked
for on the connection the pass uses, after ``enable_async`` and
``monitor_flows``, so every change another controller makes to lbaffd's
flows or groups after OVS built the reply is reported (FLOW_REMOVED,
REQUESTFORWARD, flow monitor) and makes the next pass an audit that reads
the switch again, exactly as for a change made while a pass compiles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from lbaffd.model import ownership as own

log = structlog.get_logger("lbaffd.reconcile")


class Dumper(Protocol):
    def dump_flow_desc(self, cookie: int, cookie_mask: int) -> list[Any]: ...
    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Any]: ...


class Prefetch:
    """Both dumps, requested on a thread of their own (the calls block until
    the whole reply is in; the channel's reader does the reading).  The
    flows come first: a pass needs them before it compiles (the group ids
    the switch's flows name), the groups only to diff, so it compiles while
    ovs-vswitchd still builds the (much larger) group dump."""

    def __init__(self, channel: Dumper) -> None:
        self.channel = channel
        self._flows: list[Any] | None = None
        self._groups: list[Any] | None = None
        self._flows_in = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lbaffd-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        try:
            try:
                self._flows = self.channel.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)
            finally:
                self._flows_in.set()
            t_flows = time.monotonic()
            groups = self.channel.dump_group_desc(own.is_lbaffd_group)
        except Exception as exc:  # the pass dumps again and meets the error itself
            log.debug("prefetch_failed", error=str(exc))
            self._flows = self._groups = None
            return
        self._groups = groups
        log.debug("prefetched", flows_ms=round((t_flows - start) * 1000, 1),
                  groups_ms=round((time.monotonic() - t_flows) * 1000, 1),
                  group_parts=len(groups))

    def flows(self, timeout: float | None = None) -> list[Any] | None:
        """The flow-desc parts, once; None if that dump failed or is not in
        within ``timeout``."""
        if not self._flows_in.wait(timeout):
            return None
        flows, self._flows = self._flows, None
        return flows

    def groups(self, timeout: float | None = None) -> list[Any] | None:
        """The group-desc parts, once; None if a dump failed or is not in
        within ``timeout``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        groups, self._groups = self._groups, None
        return groups
