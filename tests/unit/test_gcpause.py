"""GcPause: the collector is paused while any holder is inside, across threads."""

from __future__ import annotations

import gc
import threading

from lbaffd.ops.gcpause import GcPause


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
