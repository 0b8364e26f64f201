"""systemd notification protocol (``Type=notify``, ``WatchdogSec``), without libsystemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("lbaffd")


class Notifier:
    """Sends ``READY=1`` / ``WATCHDOG=1`` / ``STATUS=...`` to ``$NOTIFY_SOCKET``; a
    no-op when the daemon was not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else 0.0
        self.dropped = 0  # notifications the socket did not take (see notify)

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *fields: str) -> None:
        """One datagram, never waited for: the worker's loop sends the
        watchdog, and a blocking send to a socket whose reader lags (its
        queue holds ``net.unix.max_dgram_qlen`` datagrams, 10 by default)
        stopped the worker, SIGTERM included, until someone read.  A
        notification the socket does not take is dropped (the next watchdog
        follows within half the interval); the first drop is logged."""
        if not self._addr:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                sock.sendto("\n".join(fields).encode(), self._addr)
            except OSError as exc:  # full (EAGAIN), or no one listens any more
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("sd_notify_dropped", socket=self._addr, error=str(exc),
                                fields=[f.split("=", 1)[0] for f in fields])

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
