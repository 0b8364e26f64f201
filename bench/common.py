"""What every phase of the benchmark shares: the LB set, a sandbox in
``/tmp/lbbench-*``, the daemon under test with its metrics, and time bounds."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from lbaffd_sandbox.sandbox import (
    LbSpec,
    Sandbox,
    free_port,
    ovsdb_transact,
    run,
    started_sandbox,
)
from tests.integration.lbaffd_proc import LbaffdProcess

RUNDIR_PREFIX = "lbbench-"
BACKENDS = 5
AFFINITY_TIMEOUT = 300
VIP_PORT = 80
BACKEND_PORT = 8080
LS_KEY, LR_KEY = 1, 2
CLIENT = ("cli", "10.0.0.11", "02:00:00:00:00:0b", 11)  # name, ip, mac, ofport

# the message types that change the switch, and those that frame them
WRITE_TYPES = ("OFPBundleAddMsg", "OFPFlowMod", "OFPGroupMod")
FRAME_TYPES = ("OFPBundleCtrlMsg", "OFPBarrierRequest")

T = TypeVar("T")


class PhaseTimeout(RuntimeError):
    """A phase did not finish within its bound."""


def wait_for(pred: Callable[[], T | None], timeout: float, what: str,
             step: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PhaseTimeout(f"{what}: not within {timeout:.0f}s")
        time.sleep(step)


# ------------------------------------------------------------------ the LB set


def ovsdb_select(remote: str, db: str, table: str, columns: list[str],
                 where: list[Any] | None = None) -> list[dict[str, Any]]:
    """The rows of ``table`` (only ``columns``) that match ``where``."""
    res = ovsdb_transact(remote, db, [{"op": "select", "table": table,
                                       "where": where or [], "columns": columns}])
    first = res[0]
    return list(first["rows"]) if isinstance(first, dict) else []


def vip_ip(i: int) -> str:
    return str(ipaddress.IPv4Address("172.16.0.1") + i)


def backend(i: int, b: int) -> str:
    """Backend ``b`` of LB ``i`` (rows only: nothing is sent to these)."""
    return f"{ipaddress.IPv4Address('10.128.0.0') + i * 16 + b}:{BACKEND_PORT}"


def lb_vips(i: int, backends: int = BACKENDS) -> dict[str, str]:
    return {f"{vip_ip(i)}:{VIP_PORT}": ",".join(backend(i, b) for b in range(backends))}


def lb_specs(n: int, backends: int = BACKENDS,
             affinity: int | None = AFFINITY_TIMEOUT) -> list[LbSpec]:
    options = {"affinity_timeout": str(affinity)} if affinity else {}
    return [LbSpec(f"lb-{i}", lb_vips(i, backends), "tcp", dict(options)) for i in range(n)]


# ------------------------------------------------------------------ sandbox


@contextlib.contextmanager
def bench_sandbox(tag: str) -> Iterator[Sandbox]:
    """A started sandbox in a fresh ``/tmp/lbbench-<tag>-*`` directory,
    stopped by pid and removed afterwards."""
    with started_sandbox(f"{RUNDIR_PREFIX}{tag}-", prefix="lbb" + secrets.token_hex(2)) as sb:
        yield sb


@dataclass
class SbTopology:
    """SB rows written the way ovn-northd lays them out: one switch with a
    port bound on this chassis, one router, both in the LBs' datapath group."""

    ls: str
    lr: str


def sb_base_topology(sb: Sandbox) -> SbTopology:
    ls = sb.add_datapath("ls0", LS_KEY, "switch")
    lr = sb.add_datapath("lr0", LR_KEY, "router")
    name, ip, mac, ofport = CLIENT
    sb.add_host(name, ip, mac, ofport, iface_id=name)
    sb.add_port_binding(name, ls, 1, mac, ip, chassis=sb.chassis)
    return SbTopology(ls, lr)


# ------------------------------------------------------------------ the daemon


class BenchDaemon(LbaffdProcess):
    """The real daemon (``python -m lbaffd run``) with info-level JSON logs
    and metrics on a private loopback port."""

    def __init__(self, sb: Sandbox, *extra: str) -> None:
        self.metrics_port = free_port()
        super().__init__(sb, "--log-level", "info",
                         "--metrics-address", f"127.0.0.1:{self.metrics_port}", *extra)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def scrape(self, timeout: float = 120.0) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode())

    def counters(self) -> Counters:
        return Counters.parse(self.scrape())

    def peak_rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmRSS")

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def ctl_text(self, *args: str) -> str:
        return run("ovs-appctl", "-t", self.ctl, *args)


def event_time(ev: dict[str, Any]) -> float:
    """Unix time of a daemon log line (structlog ISO timestamp, UTC, us)."""
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def proc_status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


_SAMPLE = re.compile(r'^(\w+)\{(\w+)="([^"]*)"\} ([0-9.e+-]+)$')


@dataclass(frozen=True)
class Counters:
    """What lbaffd says it sent: OpenFlow messages by type and flow/group
    changes by kind (``lbaffd_openflow_messages_sent_total`` and
    ``lbaffd_openflow_changes_total``)."""

    messages: dict[str, float]
    changes: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Counters:
        messages: dict[str, float] = {}
        changes: dict[str, float] = {}
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if not m:
                continue
            name, _, label, value = m.groups()
            if name == "lbaffd_openflow_messages_sent_total":
                messages[label] = float(value)
            elif name == "lbaffd_openflow_changes_total":
                changes[label] = float(value)
        return cls(messages, changes)

    def minus(self, before: Counters) -> Counters:
        def sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}

        return Counters(sub(self.messages, before.messages), sub(self.changes, before.changes))

    @property
    def writes(self) -> int:
        """Messages that modify the switch: flow/group mods (bundled or not)."""
        return int(sum(self.messages.get(t, 0) for t in WRITE_TYPES))

    @property
    def sent_for_changes(self) -> int:
        """Writes plus their bundle open/commit and barrier."""
        return self.writes + int(sum(self.messages.get(t, 0) for t in FRAME_TYPES))

    @property
    def flow_mods(self) -> int:
        return int(sum(v for k, v in self.changes.items() if k.startswith("flow_")))

    @property
    def group_mods(self) -> int:
        return int(sum(v for k, v in self.changes.items() if k.startswith("group_")))

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "changes": self.changes, "writes": self.writes,
                "sent_for_changes": self.sent_for_changes, "flow_mods": self.flow_mods,
                "group_mods": self.group_mods}


def count_lbaffd_flows(sb: Sandbox) -> int:
    out = sb.ofctl("--no-stats", "dump-flows", "br-int", "cookie=0x1baf000000000000/"
                   "0xffff000000000000")
    return sum(1 for line in out.splitlines() if "actions=" in line)


def count_groups(sb: Sandbox, target: str = "br-int") -> int:
    out = sb.ofctl("dump-groups", target)
    return sum(1 for line in out.splitlines() if "group_id=" in line)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]
