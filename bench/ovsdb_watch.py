"""A minimal OVSDB ``monitor`` client on a thread: records, with the local
wall-clock time of arrival, every update to a few columns.  Used to see when
the SB got ovn-northd's transaction (``SB_Global.nb_cfg``) and when
ovn-controller reported its flows installed (``Chassis_Private.nb_cfg``)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Update:
    at: float  # time.time() when the notification was read
    table: str
    row: str
    new: dict[str, Any]  # a deleted row: its last content
    deleted: bool = False


@dataclass
class OvsdbWatch:
    path: str  # unix socket of the ovsdb-server
    db: str
    columns: dict[str, list[str]]  # table -> columns
    updates: list[Update] = field(default_factory=list)
    # called on the watch's thread for each update as it is recorded
    on_update: Callable[[Update], None] | None = None
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _buf: str = ""
    _started: float | None = None  # when the first bytes of the message being read came

    def start(self, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(self.path)
        request = {"method": "monitor", "id": "watch",
                   "params": [self.db, None,
                              {t: {"columns": c} for t, c in self.columns.items()}]}
        self._sock.sendall(json.dumps(request).encode())
        self._buf = ""
        got = self._next(timeout)
        reply = got[0] if got is not None else None
        if got is None or reply is None or reply.get("error"):
            raise RuntimeError(f"monitor {self.db} on {self.path}: {reply}")
        self._record(got[1], reply["result"])
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="ovsdb-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> OvsdbWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Update]:
        with self._lock:
            return list(self.updates)

    def mark(self) -> int:
        """A position: ``first_after`` looks only at what arrives after it."""
        with self._lock:
            return len(self.updates)

    def first_after(self, mark: int, table: str, pred: Any) -> Update | None:
        """The first update of ``table`` after ``mark`` that ``pred`` accepts."""
        with self._lock:
            tail = self.updates[mark:]
        return next((u for u in tail if u.table == table and pred(u)), None)

    def first(self, table: str, column: str, pred: Any) -> Update | None:
        """The first update whose ``column`` satisfies ``pred``."""
        for u in self.snapshot():
            if u.table == table and column in u.new and pred(u.new[column]):
                return u
        return None

    # ------------------------------------------------------------ internals

    def _next(self, timeout: float) -> tuple[dict[str, Any], float] | None:
        """The next complete JSON-RPC message and when its first bytes were
        read, or None if none came in time.  The time is the start: a 5000-LB
        update is megabytes and arrives over seconds here, and stamping it
        once complete put it after the pass of a daemon that had already
        read it (the cold phase then waited for a pass forever).  A decode is
        tried only when a read ends with ``}`` (each attempt parses what has
        come so far: trying after every 64 KiB read was quadratic)."""
        assert self._sock is not None
        decoder = json.JSONDecoder()
        deadline = time.monotonic() + timeout
        ready = True
        while True:
            text = self._buf.lstrip()
            if text and ready:
                try:
                    msg, end = decoder.raw_decode(text)
                    self._buf = text[end:]
                    at = self._started
                    # what is left is the next message's start
                    self._started = time.time() if self._buf.strip() else None
                    return dict(msg), at if at is not None else time.time()
                except ValueError:
                    ready = False  # incomplete: read more
            if time.monotonic() > deadline or self._stop.is_set():
                return None
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return None
            if self._started is None:
                self._started = time.time()
            self._buf += chunk.decode()
            ready = chunk.rstrip().endswith(b"}")

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                got = self._next(0.2)
            except OSError:
                return
            if got is None:
                continue
            msg, now = got
            if msg.get("method") == "echo":
                self._sock.sendall(json.dumps({"result": msg["params"], "error": None,
                                               "id": msg["id"]}).encode())
            elif msg.get("method") == "update":
                self._record(now, msg["params"][1])

    def _record(self, at: float, table_updates: dict[str, Any]) -> None:
        got: list[Update] = []
        for table, rows in table_updates.items():
            for row, change in rows.items():
                new = change.get("new")
                if new is not None:
                    got.append(Update(at, table, row, new))
                elif change.get("old") is not None:
                    got.append(Update(at, table, row, change["old"], True))
        with self._lock:
            self.updates += got
        if self.on_update is not None:
            for u in got:
                self.on_update(u)
