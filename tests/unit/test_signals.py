"""SIGTERM stops a daemon whose main thread is busy logging
(``lbaffd/ops/signals.py``): the handler runs on the main thread between two
bytecodes, possibly inside structlog's printing, which holds a non-reentrant
lock; a handler that logged there waited for that lock forever.  Real
processes and real signals: with the handler logging itself, about a third
of them hung."""

from __future__ import annotations

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
