"""SIGTERM and SIGINT stop the daemon cleanly (flows stay on the switch);
SIGUSR1 writes every thread's stack to stderr and goes on: where a daemon that
does not stop or does not progress is waiting.  A fatal signal (SIGSEGV,
SIGABRT, ...) writes the same before the process dies (``faulthandler.enable``).

SIGUSR1's dump runs in a Python handler, with the GIL held, not from
``faulthandler.register``'s C handler: that one walks the other threads'
frames while they run (CPython 3.11, ``_Py_DumpTracebackThreads`` from a
signal handler, without the GIL) and reads frames being popped.  It printed
impossible stacks (``threading.wait`` called from a function that calls no
wait) and stopped in the middle of a frame, one thread of several written, in
a CI run; a process with two threads recursing 400 deep died of SIGSEGV on 30
of 30 runs within 30 signals (``tests/unit/test_signals.py``).  The
price: the dump waits for the main thread's next bytecode (lock waits and
sleeps are interrupted on POSIX), so an interpreter stuck in C with the GIL
held does not answer; ``py-spy dump`` or gdb read that one from outside.

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
    signal.signal(signal.SIGUSR1, _dump_stacks)
    faulthandler.enable(all_threads=True)


def _dump_stacks(signum: int, frame: FrameType | None) -> None:
    """Every thread's stack, written to fd 2 from C while this thread holds
    the GIL (no other thread's frames move).  An fd, not ``sys.stderr``: a
    file object would be flushed first, taking its buffer's lock, which this
    thread may hold where the signal interrupted it."""
    faulthandler.dump_traceback(2, all_threads=True)
