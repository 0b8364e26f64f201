"""SIGTERM and SIGINT stop the daemon cleanly (flows stay on the switch);
SIGUSR1 writes every thread's stack to stderr (``faulthandler``, from C, so it
answers even when the interpreter is stuck): where a daemon that does not stop
or does not progress is waiting.

Only the main thread may install handlers (CPython's rule): a daemon run from
another thread (tests, ``bench.memprobe`` drives it the other way round) is
stopped by its caller instead.

A Python signal handler runs on the main thread between two of its
bytecodes, wherever that thread is: inside structlog's ``PrintLogger.msg``
(which holds a non-reentrant lock while it prints), inside a ``Queue.get``
holding the queue's mutex.  A handler that logged, or put on the worker's
queue, then waited forever for a lock its own thread held: the daemon
ignored SIGTERM (seen once in ``make test``: the main thread's stack in the
handler's ``log.info``, called from inside another ``log.info``).  So the
handler only hands the signal to a thread of its own
(``_thread.start_new_thread``: no lock of ``threading``'s is taken), which
logs and stops the daemon like any other thread."""

from __future__ import annotations

import _thread
import faulthandler
import signal
import threading
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("lbaffd")


def install_stop_handlers(stop: Callable[[], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def stop_from_signal(signum: int) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop()

    def handler(signum: int, frame: FrameType | None) -> None:
        _thread.start_new_thread(stop_from_signal, (signum,))  # (see the module doc)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
