"""SIGTERM and SIGINT stop the daemon cleanly (flows stay on the switch);
SIGUSR1 writes every thread's stack to stderr (``faulthandler``, from C, so it
answers even when the interpreter is stuck): where a daemon that does not stop
or does not progress is waiting.

Only the main thread may install handlers (CPython's rule): a daemon run from
another thread (tests, ``bench.memprobe`` drives it the other way round) is
stopped by its caller instead."""

from __future__ import annotations

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

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
