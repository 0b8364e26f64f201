"""Wake-up tokens on the worker's queue.

The OVSDB threads, the OpenFlow reader and the control socket only put these
(or a ``RemovedEntry``) on the queue; every decision is the worker's, so
nothing else needs a lock."""

from __future__ import annotations

import queue
import time

from lbaffd.reconcile.longidle import RemovedEntry

WAKE = "wake"
STOP = "stop"
OF_DOWN = "openflow-down"
FOREIGN = "switch-changed"
FLUSHED = "flows-deleted"  # lbaffd flows deleted by someone else (ovn-controller's flush)
RECOMPUTE = "recompute"  # operator asked: read everything, compile everything

Item = str | RemovedEntry


def drain(q: queue.Queue[Item], debounce: float) -> list[Item]:
    """Coalesce a burst of changes into one pass: wait ``debounce``, then
    take everything queued meanwhile."""
    time.sleep(debounce)
    items: list[Item] = []
    try:
        while True:
            items.append(q.get_nowait())
    except queue.Empty:
        return items
