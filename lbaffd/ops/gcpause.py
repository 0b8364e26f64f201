"""Pause Python's cyclic garbage collector during bulk work.

A full pass at 1000s of LBs, and the IDL taking in a large SB update, build
hundreds of thousands of long-lived objects that are not cycles.  Every 700
allocations the collector scans the young ones, and each time the heap grows
by a quarter it scans everything: at 5000 LBs that is ~1.5 s of a 3.3 s
compile spent finding no garbage.  Refcounting still frees everything while
the collector is paused; the daemon collects (and freezes what survived)
after each full pass.
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType


class GcPause:
    """A context manager shared by the threads doing bulk work: the collector
    is paused while any of them is inside, and resumes (if it was enabled)
    when the last one leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> GcPause:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()

    @property
    def paused(self) -> bool:
        return self._depth > 0
