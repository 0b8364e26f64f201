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
import time
import traceback
from types import TracebackType

# seconds between two collections that look at frozen objects too
UNFREEZE_INTERVAL = 600.0


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


class Freezer:
    """After a full pass: collect, then ``gc.freeze()`` what survived, so later
    sweeps skip the 100k+ long-lived objects of the desired state.

    A frozen object is never looked at again by the collector: if it later
    becomes part of a garbage cycle, the cycle is never freed.  A reconnect
    does that (the SB IDL's data, closures, namedtuple classes of the old
    connection: 660 objects after two switch and two SB restarts in
    ``bench.memprobe --disrupt``), so the collection after a reconnect
    (``sweep=True``) and one every ``interval`` seconds unfreeze the frozen
    objects and collect them with the rest (one full sweep: ~0.5 s at 5000
    LBs).  Not only at the interval: full passes are rare between reconnects
    (a resync is applied as steps), and each SB restart's garbage, kept
    until one came, pinned pymalloc arenas that were never given back
    (``bench.memprobe`` at N=1000, five SB restarts each followed by audits:
    62 -> 66 arenas, RSS after the audits 96.1 -> 100.1 MB and rising by
    ~1 MB every other restart; with the sweep 62 -> 63 arenas, 96.0 -> 97.6
    at the first restart, 97.7 after the fifth)."""

    def __init__(self, interval: float = UNFREEZE_INTERVAL) -> None:
        self.interval = interval
        self._last = time.monotonic()
        self.full_sweeps = 0

    def collect_and_freeze(self, now: float | None = None, sweep: bool = False) -> int:
        """Returns how many unreachable objects the collection found;
        ``sweep``: look at the frozen objects too, whatever the interval."""
        now = time.monotonic() if now is None else now
        if sweep or now - self._last >= self.interval:
            gc.unfreeze()
            self._last = now
            self.full_sweeps += 1
        found = gc.collect()
        gc.freeze()
        return found


def release_frames(exc: BaseException) -> None:
    """Let go of the frames an exception caught by the worker holds.

    A traceback keeps every frame it passes through, and each frame its
    locals, finished or not: a full pass that fails on the OpenFlow channel
    keeps its inputs, topology and dump replies alive through it.  Where an
    object on the way holds the exception too (the channel's waiter keeps
    the error it raises, and the frame that raised it keeps the waiter), that
    is a cycle, and once ``Freezer`` has frozen it only the next full sweep
    frees it: 240k objects (all the first pass's inputs) at N=5000 after two
    ``ConnectionLost`` at start (``bench.memprobe``, issue 19).  Clears the
    frames of the exception and of those it chains to, and drops the
    tracebacks; call it once the exception is logged and not raised again."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)  # (skips frames still running)
            e.__traceback__ = None
        todo += [e.__cause__, e.__context__]
