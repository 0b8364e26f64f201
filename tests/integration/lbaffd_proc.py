"""Run the real lbaffd daemon as a subprocess against a sandbox."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from lbaffd_sandbox.sandbox import Sandbox, started_sandbox


class LbaffdProcess:
    """``python -m lbaffd run ...`` with JSON logs in ``rundir/lbaffd-N.log``."""

    def __init__(self, sb: Sandbox, *extra: str, minimal: bool = False) -> None:
        self.sb = sb
        self.extra = extra
        self.minimal = minimal
        self.rundir = Path(sb.rundir) / "lbaffd"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._runs = 0

    def start(self, wait_sync: bool = True, timeout: float = 30.0) -> None:
        self._runs += 1
        self.log_path = Path(self.sb.rundir) / f"lbaffd-{self._runs}.log"
        where = (["--ovs-rundir", str(self.sb.ovs_rundir)] if self.minimal else
                 ["--ovs-db", self.sb.ovs_db_remote, "--sb-db", self.sb.sb_remote,
                  "--bridge", "br-int", "--ovs-rundir", str(self.sb.ovs_rundir),
                  "--ovn-rundir", str(self.sb.rundir)])
        cmd = [sys.executable, "-m", "lbaffd", "run", *where,
               "--rundir", str(self.rundir), "--log-format", "json", "--log-level", "debug",
               *(() if "--metrics-address" in self.extra else ("--metrics-address", "")),
               *self.extra]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if wait_sync:
            self.wait_event("initial_sync_done", timeout=timeout)

    def events(self) -> list[dict[str, Any]]:
        assert self.log_path is not None
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    @property
    def metrics_url(self) -> str:
        """``http://host:port`` of ``--metrics-address`` (given in ``extra``)."""
        args = list(self.extra)
        return "http://" + args[args.index("--metrics-address") + 1]

    @property
    def ctl(self) -> str:
        return str(self.rundir / "lbaffd.ctl")

    def mark(self) -> int:
        """How many log events there are now: pass it as ``after`` to wait for
        an event that happens from here on."""
        return len(self.events())

    def wait_event(self, name: str, timeout: float = 20.0, after: int = 0,
                   **fields: Any) -> dict[str, Any]:
        """The first ``name`` event (with ``fields``) among the events past the
        first ``after`` ones; raises if none comes within ``timeout``.  The
        event's index is in its ``_index`` key (a ``mark`` for the next wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, ev in enumerate(self.events()[after:], start=after):
                if ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items()):
                    return {**ev, "_index": i + 1}
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"lbaffd exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no {name} {fields} after event {after} within {timeout}s: "
                             f"{self.tail()}")

    def wait_pass(self, after: int, timeout: float = 20.0, audit: bool = True) -> dict[str, Any]:
        """The first reconcile pass that ends after event ``after``: ``in_sync``
        (nothing to change) or ``reconciled`` (changes sent), with the switch
        read back when ``audit``.  Proof that a pass ran, instead of a sleep."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, ev in enumerate(self.events()[after:], start=after):
                if (ev.get("event") in ("in_sync", "reconciled")
                        and (not audit or ev.get("audit") is True)):
                    return {**ev, "_index": i + 1}
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"lbaffd exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no pass (audit={audit}) after event {after} within {timeout}s: "
                             f"{self.tail()}")

    def count(self, name: str) -> int:
        return sum(1 for ev in self.events() if ev.get("event") == name)

    def tail(self, n: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> float:
        """Stop by pid; returns how long the daemon took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # every thread's stack into the log
            time.sleep(0.5)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"lbaffd ignored {sig} for {timeout}s; its log ends:\n"
                                 f"{self.tail(80)}") from None
        return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(daemon: LbaffdProcess, path: str = "/metrics") -> tuple[int, str]:
    url = daemon.metrics_url + path
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in scrape")


T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 10.0, step: float = 0.05,
               what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy and return that; after
    ``timeout`` seconds raise ``AssertionError`` naming what was awaited
    (``what``, else the predicate's name) and the last value it returned.

    It can only fail loudly: a bare ``wait_until(...)`` is an assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(pred, "__qualname__", repr(pred))
            raise AssertionError(f"waited {timeout}s for {name}; last value {value!r}")
        time.sleep(step)


def sandbox_in_tmp(prefix: str = "lbx-", **kwargs: Any) -> AbstractContextManager[Sandbox]:
    """See ``lbaffd_sandbox.sandbox.started_sandbox``."""
    return started_sandbox(prefix, **kwargs)
