"""The control socket, spoken by the real ``ovs-appctl -t <rundir>/lbaffd.ctl``.

Built on the ``ovs`` library's unixctl server (its command table is that
library's module-level registry; lbaffd registers into it once at start).
Commands run on the control thread and read the worker's last published
``Status`` plus live switch state through the thread-safe OpenFlow channel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import ovs.poller
import ovs.unixctl
import ovs.unixctl.server
import structlog

from lbaffd import __version__
from lbaffd.compile.layout import Pipeline
from lbaffd.ops import observe
from lbaffd.ops.log import set_level
from lbaffd.ops.status import (
    Status,
    format_affinity,
    format_lb_list,
    format_lb_show,
    format_reconcile_stats,
)

log = structlog.get_logger("lbaffd.control")

LEVELS = {"dbg": "debug", "debug": "debug", "info": "info", "warn": "warning",
          "warning": "warning", "err": "error", "error": "error", "emer": "error",
          "off": "critical"}


@dataclass(frozen=True, slots=True)
class Command:
    """One control command: what ``ovs-appctl ... help`` lists and the man
    page's CONTROL COMMANDS section describes (``lbaffd.ops.manpage``)."""

    name: str
    usage: str
    min_args: int
    max_args: int
    method: str  # the ControlServer method that answers it
    doc: str


COMMANDS: tuple[Command, ...] = (
    Command("lb/list", "", 0, 0, "_lb_list",
            "Load balancers: name, UUID, VIP count, affinity timeout, datapaths."),
    Command("lb/show", "NAME|UUID", 1, 1, "_lb_show",
            "One load balancer: its VIPs, group id and selection method, backends with their "
            "bucket ids, expected share, packet counters and health, affinity entries."),
    Command("affinity/show", "[VIP]", 0, 1, "_affinity_show",
            "Learned affinity entries (of one VIP): client, backend, idle age, time left."),
    Command("reconcile/stats", "", 0, 0, "_reconcile_stats",
            "Passes, errors, the last pass and desired vs installed flows and groups."),
    Command("recompute", "", 0, 0, "_recompute",
            "Read everything and compile everything now (a full pass)."),
    Command("sb/rows", "", 0, 0, "_sb_rows",
            "How many rows of each SB table this chassis holds (conditional monitoring)."),
    Command("memory/show", "", 0, 0, "_memory_show",
            "What lbaffd holds, counted, as key:value pairs (as ovs-vswitchd's memory/show): "
            "compiled VIP parts, converted switch entries, desired flows and groups, memo "
            "entries (emptied after every pass), frozen objects, SB rows."),
    Command("vlog/set", "[module:]LEVEL (dbg|info|warn|err)", 1, 1, "_vlog_set",
            "Change the log level at run time."),
    Command("exit", "", 0, 0, "_exit",
            "Stop lbaffd; its flows and groups stay on the switch."),
)


class DaemonHandle(Protocol):
    """What the control socket may ask of the daemon."""

    def status(self) -> Status: ...
    def live_channel(self) -> Any: ...
    def request_recompute(self) -> None: ...
    def stop(self) -> None: ...
    def sb_rows(self) -> dict[str, int]: ...
    def memory(self) -> dict[str, int]: ...


class ControlServer:
    def __init__(self, path: str, daemon: DaemonHandle, pipeline: Pipeline) -> None:
        self.path = path
        self._daemon = daemon
        self._pipeline = pipeline
        self._stop = threading.Event()
        error, self._server = ovs.unixctl.server.UnixctlServer.create(path, version=__version__)
        if error:
            raise OSError(error, f"cannot create control socket {path}")
        self._register()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("control_socket", path=self.path)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._server.run()
            poller = ovs.poller.Poller()
            self._server.wait(poller)
            poller.timer_wait(200)  # wake up to notice stop()
            poller.block()

    # ------------------------------------------------------------ commands

    def _register(self) -> None:
        for cmd in COMMANDS:
            fn: Callable[[Any, list[str]], None] = getattr(self, cmd.method)
            ovs.unixctl.command_register(cmd.name, cmd.usage, cmd.min_args, cmd.max_args,
                                         _guard(fn), None)

    def _sb_rows(self, conn: Any, argv: list[str]) -> None:
        """How much of the SB this chassis holds (conditional monitoring)."""
        rows = self._daemon.sb_rows()
        conn.reply("".join(f"{t}: {n}\n" for t, n in sorted(rows.items())))

    def _memory_show(self, conn: Any, argv: list[str]) -> None:
        """Counts of what the daemon holds, one line of ``key:value``."""
        counts = self._daemon.memory()
        conn.reply(" ".join(f"{k}:{v}" for k, v in sorted(counts.items())) + "\n")

    def _lb_list(self, conn: Any, argv: list[str]) -> None:
        conn.reply(format_lb_list(self._daemon.status()))

    def _lb_show(self, conn: Any, argv: list[str]) -> None:
        status = self._daemon.status()
        ch = self._daemon.live_channel()
        counters = observe.read_backend_counters(ch, status.plans, self._pipeline)
        per_vip = observe.entries_per_vip(observe.read_affinity_entries(ch), status.plans)
        text = format_lb_show(status, argv[0], counters, per_vip)
        if text is None:
            conn.reply_error(f"no load balancer {argv[0]!r}\n")
        else:
            conn.reply(text)

    def _affinity_show(self, conn: Any, argv: list[str]) -> None:
        entries = observe.read_affinity_entries(self._daemon.live_channel())
        conn.reply(format_affinity(self._daemon.status(), entries, argv[0] if argv else None))

    def _reconcile_stats(self, conn: Any, argv: list[str]) -> None:
        conn.reply(format_reconcile_stats(self._daemon.status().stats))

    def _recompute(self, conn: Any, argv: list[str]) -> None:
        self._daemon.request_recompute()
        conn.reply("full recompute queued\n")

    def _vlog_set(self, conn: Any, argv: list[str]) -> None:
        level = LEVELS.get(argv[0].rsplit(":", 1)[-1].lower())
        if level is None:
            conn.reply_error(f"unknown level {argv[0]!r}\n")
            return
        set_level(level)
        log.warning("log_level_changed", new_level=level)
        conn.reply("")

    def _exit(self, conn: Any, argv: list[str]) -> None:
        conn.reply("")
        self._daemon.stop()


def _guard(fn: Callable[[Any, list[str]], None]) -> Callable[[Any, list[str], Any], None]:
    """A failing command answers with an error instead of killing the thread."""

    def run(conn: Any, argv: list[str], aux: Any) -> None:
        try:
            fn(conn, list(argv))
        except Exception as exc:
            log.warning("control_command_failed", error=str(exc), error_type=type(exc).__name__)
            conn.reply_error(f"{type(exc).__name__}: {exc}\n")

    return run
