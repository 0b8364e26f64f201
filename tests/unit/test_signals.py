"""SIGTERM stops a daemon whose main thread is busy logging, or waiting
while the signal lands on another thread (``lbaffd/ops/signals.py``).  A
handler that logged on the main thread, between two bytecodes inside
structlog's printing (which holds a non-reentrant lock), waited for that lock
forever: about a third of these processes hung.  A handler that waited for
the main thread to run it did not run while that thread slept in a timed
``Queue.get`` and the kernel had given the signal to another thread.  Real
processes and real signals."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUSY = textwrap.dedent("""
    import sys, threading, structlog
    from lbaffd.ops import log as oplog
    from lbaffd.ops.signals import install_stop_handlers
    oplog.configure("json", "info")
    stopped = threading.Event()
    install_stop_handlers(stopped.set)
    log = structlog.get_logger("busy")
    print("ready", flush=True)
    n = 0
    while not stopped.is_set():
        log.info("busy", n=n, pad="x" * 200)
        n += 1
""")


def test_sigterm_stops_a_main_thread_that_is_logging() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(8)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # well inside the logging loop
        for p in procs:
            p.send_signal(signal.SIGTERM)
        hung = []
        for p in procs:
            try:
                assert p.wait(timeout=10) == 0
            except subprocess.TimeoutExpired:
                hung.append(p.pid)
        assert not hung, f"{len(hung)} of {len(procs)} ignored SIGTERM"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


RECURSING = textwrap.dedent("""
    import sys, threading, time
    from lbaffd.ops.signals import install_stop_handlers
    sys.setrecursionlimit(5000)
    stopped = threading.Event()
    install_stop_handlers(stopped.set)

    def down(n):
        return n if n == 0 else down(n - 1)

    def spin():
        while True:
            down(400)  # frames pushed and popped across the data stack's chunks

    def tick():
        while True:
            threading.Event().wait(0.0005)

    for target in (spin, spin, tick, tick, tick):
        threading.Thread(target=target, daemon=True).start()
    print("ready", flush=True)
    stopped.wait()
""")


def test_sigusr1_dumps_every_thread_of_a_busy_process_and_it_goes_on() -> None:
    """SIGUSR1 on a process whose threads push and pop frames all the time:
    it lives through 30 signals, each dump it writes is whole (the main
    thread and the five others), and SIGTERM still stops it.  With
    ``faulthandler.register``'s C handler this process died of SIGSEGV on 30
    of 30 runs."""
    procs = [subprocess.Popen([sys.executable, "-c", RECURSING], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for _ in range(30):
            for p in procs:
                p.send_signal(signal.SIGUSR1)
            time.sleep(0.01)
        time.sleep(0.3)
        assert [p.poll() for p in procs] == [None] * len(procs), "died of a stack dump"
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            _, err = p.communicate(timeout=10)
            assert p.returncode == 0, err[-2000:]
            dumps = err.count("Current thread 0x")  # one per dump, where the others are "Thread 0x"
            assert dumps, err[-2000:]  # (signals that arrive together are answered once)
            # the main thread and its five, every time (the answering thread is "Current")
            assert err.count("Thread 0x") == 6 * dumps, err[-2000:]
            assert err.count("(most recent call first):\n  File ") == 7 * dumps  # none empty
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


WAITING = textwrap.dedent("""
    import queue, threading
    from lbaffd.ops.signals import install_stop_handlers
    work: queue.Queue[str] = queue.Queue()
    install_stop_handlers(lambda: work.put("stop"))
    for _ in range(4):  # readers of their own, as the OVSDB and OpenFlow ones
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    print("ready", flush=True)
    assert work.get(timeout=60) == "stop"  # the worker's wait: no beat, no audit soon
""")


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """The signal to one thread of ``pid`` (``kill`` lets the kernel choose)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def test_sigterm_on_any_thread_wakes_a_main_thread_that_waits() -> None:
    """SIGTERM aimed with ``tgkill`` at each thread of a process whose main
    thread waits 60 s on a queue: it stops within a second whichever thread
    the signal landed on.  Before, a signal on another thread waited for the
    main thread's timeout."""
    slow = []
    for index in range(6):  # main, four readers, the signals thread (if any)
        with subprocess.Popen([sys.executable, "-c", WAITING], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as p:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            tids = sorted(int(t) for t in os.listdir(f"/proc/{p.pid}/task"))
            if index >= len(tids):
                p.kill()
                continue
            started = time.monotonic()
            _tgkill(p.pid, tids[index], signal.SIGTERM)
            try:
                _, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                slow.append((index, tids[index] == p.pid, "over 5 s"))
                continue
            elapsed = time.monotonic() - started
            assert p.returncode == 0, err[-2000:]
            if elapsed > 1.0:
                slow.append((index, tids[index] == p.pid, f"{elapsed:.2f} s"))
    assert not slow, f"(thread index, main?, time to stop): {slow}"
