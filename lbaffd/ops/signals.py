"""SIGTERM and SIGINT stop the daemon cleanly (flows stay on the switch);
SIGUSR1 writes every thread's stack to stderr and goes on: where a daemon that
does not stop or does not progress is waiting.  A fatal signal (SIGSEGV,
SIGABRT, ...) writes the same before the process dies (``faulthandler.enable``).

SIGUSR1's dump is written by a Python thread holding the GIL, not from
``faulthandler.register``'s C handler: that one walks the other threads'
frames while they run (CPython 3.11, ``_Py_DumpTracebackThreads`` from a
signal handler, without the GIL) and reads frames being popped.  It printed
impossible stacks (``threading.wait`` called from a function that calls no
wait) and stopped in the middle of a frame, one thread of several written, in
a CI run; a process with two threads recursing 400 deep died of SIGSEGV on 30
of 30 runs within 30 signals (``tests/unit/test_signals.py``).  The
price: an interpreter stuck in C with the GIL held does not answer;
``py-spy dump`` or gdb read that one from outside.

Only the main thread may install handlers (CPython's rule): a daemon run from
another thread (tests, ``bench.memprobe`` drives it the other way round) is
stopped by its caller instead.

Signals are answered on a thread of their own, never in a Python handler
on the main thread.  CPython runs a Python handler on the main thread only,
between two of its bytecodes, and the kernel delivers a process's signal to
any of its threads that does not block it.  Two failures followed:

- delivered to another thread (an OVSDB or OpenFlow reader), the signal did
  not interrupt the main thread's wait: the worker's ``Queue.get`` with a
  timeout slept on until the next audit, and the daemon ignored SIGTERM for
  as long (seen once in ``make test``: a daemon without the systemd
  watchdog's 0.2 s beat, stopped only when a SIGUSR1 for the stacks happened
  to land on the main thread);
- run inside structlog's ``PrintLogger.msg`` (which holds a non-reentrant
  lock while it prints) or inside a ``Queue.get`` holding the queue's mutex,
  a handler that logged or put on the worker's queue waited forever for a
  lock its own thread held.

So the handlers installed do nothing; ``signal.set_wakeup_fd`` has CPython's
C-level handler, which runs on whichever thread the kernel picked, write the
signal's number to a pipe, and the ``lbaffd-signals`` thread reads it, then
logs and stops the daemon, or writes the stacks, as any other thread would
(``tests/unit/test_signals.py`` aims SIGTERM at each thread in turn with
``tgkill``)."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("lbaffd")


def install_stop_handlers(stop: Callable[[], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    read_end, write_end = os.pipe()  # (both close-on-exec)
    os.set_blocking(write_end, False)  # the C handler must never wait
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in ANSWERED:
        signal.signal(signum, _ignore)  # a Python handler: the C one writes to the pipe
    faulthandler.enable(all_threads=True)
    threading.Thread(target=_answer, args=(read_end, stop), name="lbaffd-signals",
                     daemon=True).start()


ANSWERED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Installed so that CPython catches the signal; ``_answer`` acts on it."""


def _answer(read_end: int, stop: Callable[[], None]) -> None:
    while True:
        try:
            numbers = os.read(read_end, 64)
        except InterruptedError:
            continue
        if not numbers:
            return
        for signum in numbers:
            if signum == signal.SIGUSR1:
                _dump_stacks()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                log.info("signal", signal=signal.Signals(signum).name)
                stop()


def _dump_stacks() -> None:
    """Every thread's stack, written to fd 2 from C while this thread holds
    the GIL (no other thread's frames move).  An fd, not ``sys.stderr``: a
    file object would be flushed first, taking its buffer's lock, which
    another thread may hold while it prints."""
    faulthandler.dump_traceback(2, all_threads=True)
