"""GcPause: the collector is paused while any holder is inside, across threads."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from lbaffd.ops.gcpause import Freezer, GcPause


def test_pause_nests_and_restores() -> None:
    pause = GcPause()
    assert gc.isenabled()
    with pause:
        assert not gc.isenabled() and pause.paused
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder is still inside
    assert gc.isenabled() and not pause.paused


def test_pause_held_by_another_thread_outlives_ours() -> None:
    pause = GcPause()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with pause:
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(5)
    with pause:
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread still holds it
    leave.set()
    t.join(5)
    assert gc.isenabled()


def test_pause_keeps_a_disabled_collector_disabled() -> None:
    pause = GcPause()
    gc.disable()
    try:
        with pause:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_exception_inside_resumes_collection() -> None:
    pause = GcPause()
    try:
        with pause:
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _frozen_cycle() -> weakref.ref[_Node]:
    """A cycle frozen while alive, then dropped: garbage only a collection
    that looks at frozen objects can free."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gc.freeze()
    return weakref.ref(a)


def test_frozen_cycles_are_freed_at_the_next_full_sweep() -> None:
    """Every ``interval``, and when asked (after a reconnect,
    ``PassRunner._reconnected``: what the replaced connection held is
    garbage now, not in ten minutes); either restarts the interval."""
    freezer = Freezer(interval=600.0)
    t0 = time.monotonic()
    # (when, sweep asked, a sweep expected)
    steps = [(10, False, False), (700, False, True), (800, False, False),
             (1400, False, True), (1410, False, False), (1420, True, True),
             (2000, False, False), (2020, False, True)]
    try:
        for n, (at, asked, sweeps) in enumerate(steps):
            ref = _frozen_cycle()
            found = freezer.collect_and_freeze(now=t0 + at, sweep=asked)
            # hidden by the freeze: a plain collection misses it
            assert (ref() is None) == sweeps, (n, at)
            assert not sweeps or found >= 2
        assert freezer.full_sweeps == 4
    finally:
        gc.unfreeze()


class _Waiter:
    """As the OpenFlow channel's: keeps the error it is woken with."""

    error: Exception | None = None


class _Inputs:
    """Stands for a pass's inputs (weakly referenceable)."""


def _request(w: _Waiter) -> None:
    w.error = ConnectionError("no echo reply")
    raise w.error  # this frame holds ``w``, ``w`` the error, the error this frame


def _full_pass(inputs: _Inputs) -> None:
    w = _Waiter()
    try:
        _request(w)
    except ConnectionError as exc:
        raise TimeoutError("pass failed") from exc  # chained, as the channel does


def test_a_failed_pass_keeps_its_locals_only_until_its_frames_are_released() -> None:
    """The worker catches a pass's failure and logs it; the frames of the
    traceback (and of the chained one) hold the pass's inputs through a
    cycle, which ``release_frames`` undoes without any collection."""
    from lbaffd.ops.gcpause import release_frames

    gc.disable()
    try:
        for release, alive in ((False, True), (True, False)):
            inputs = _Inputs()
            ref = weakref.ref(inputs)
            try:
                _full_pass(inputs)
            except TimeoutError as exc:
                if release:
                    release_frames(exc)
            del inputs
            assert (ref() is not None) is alive
    finally:
        gc.enable()
        gc.collect()
