"""Client scenarios of issue 14, measured with real TCP against one VIP.

The same functions measure OVN's own load balancing (lbaffd not running) and
lbaffd's companion mode, so the two columns of the README table come from the
same code:

- ``first_connections``: N *new* clients (fresh source addresses) each open
  one connection; how long each took to complete, or that it did not within
  the timeout.  OVN 23.03's ``affinity_timeout`` drops the first packet of
  every new client->VIP session after learning (``commit_lb_aff(...); /* drop
  */`` in northd's ``ls_in_lb_aff_learn``) and the retransmitted SYN, already
  DNATed by conntrack, misses the learned entry again.
- ``stickiness``: one new client, K connections one after another: which
  backends answered.
- ``burst``: one new client, K connections opened at the same time (the
  back-to-back race an affinity implementation must not lose).
- ``routed``: a new client on the other switch (sw1, through lr0), K
  connections one after another.
- ``hairpin``: a backend (be1, from its own address) to the VIP it serves, K
  connections: the ones balanced to be1 itself need hairpin handling (OVN
  SNATs them to the VIP).  Not from a secondary address: OVN's hairpin flows
  match ``ip.src == ip.dst == backend``, so a packet from another address of
  be1 balanced to be1 is an ordinary one with outport == inport, which OVN
  drops (measured: such connections time out).  So be1 is a *new* client of
  a VIP only the first time it is measured against that VIP in a sandbox.

Every function takes the topology (its sandbox and address pool) and a VIP,
and returns a small frozen dataclass; ``measure`` runs them all.
``python -m lbaffd_sandbox.scenarios`` builds a fresh OVN sandbox and prints
the OVN-native figures of both VIPs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

from lbaffd_sandbox.ovn_topology import OvnTopology, build_ovn_topology
from lbaffd_sandbox.sandbox import ConnResult

DEFAULT_TIMEOUT = 3.0  # s: covers the SYN and two retransmissions (1 s, 2 s later)


def open_connections(topo: OvnTopology, host: str, vip: str, port: int, count: int,
                     src_ips: list[str], timeout: float = DEFAULT_TIMEOUT,
                     parallel: bool = False) -> tuple[ConnResult, ...]:
    """``count`` new TCP connections from ``host`` (connection i from
    ``src_ips[i % len]``) with ``lbaffd_sandbox.client``, one after another or
    all at once; each result says which backend answered, or the error."""
    h = topo.hosts[host]
    cmd = [sys.executable, "-m", "lbaffd_sandbox.client", "--dst", vip, "--port", str(port),
           "--count", str(count), "--timeout", str(timeout)]
    for ip in src_ips:
        cmd += ["--src-ip", ip]
    if parallel:
        cmd.append("--parallel")
    out = h.exec(*cmd, timeout=count * timeout + 30)
    return tuple(ConnResult(**json.loads(line)) for line in out.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class FirstConnections:
    """One connection from each of N new clients."""

    vip: str
    timeout_s: float
    results: tuple[ConnResult, ...]

    @property
    def completed(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def times_ms(self) -> list[float]:
        return sorted(r.connect_ms for r in self.results if r.ok)

    def summary(self) -> str:
        n = len(self.results)
        if not self.completed:
            return f"0/{n} completed within {self.timeout_s:g} s"
        t = self.times_ms
        return (f"{self.completed}/{n} completed, p50 {statistics.median(t):.1f} ms, "
                f"max {t[-1]:.1f} ms")


@dataclass(frozen=True, slots=True)
class ClientRun:
    """K connections of one new client (``client`` its source address)."""

    vip: str
    client: str
    parallel: bool
    timeout_s: float
    results: tuple[ConnResult, ...]

    @property
    def backends(self) -> tuple[str, ...]:
        """Who answered, in connection order ("x": failed)."""
        return tuple(r.backend if r.ok else "x" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    @property
    def distinct(self) -> frozenset[str]:
        return frozenset(r.backend for r in self.results if r.ok)

    @property
    def sticky(self) -> bool:
        """Every connection completed, all on one backend."""
        return not self.failed and len(self.distinct) == 1

    def summary(self) -> str:
        seq = " ".join(self.backends)
        if self.sticky:
            verdict = "all on one backend"
        elif not self.distinct:
            verdict = f"none completed within {self.timeout_s:g} s"
        else:
            verdict = (f"{len(self.distinct)} backend(s)"
                       + (f", {self.failed} failed" if self.failed else ""))
        return f"{seq}  ({verdict})"


def first_connections(topo: OvnTopology, vip: str, n: int = 8, host: str = "cli1",
                      timeout: float = DEFAULT_TIMEOUT,
                      parallel: bool = True) -> FirstConnections:
    """N new clients on ``host``, one connection each.  ``parallel`` starts
    them together (the run then costs one timeout, not N); each time is still
    that connection's own, from its ``connect()`` to the backend's answer."""
    ips = topo.new_clients(host, n)
    res = open_connections(topo, host, vip, topo.vip_port, n, ips, timeout, parallel)
    return FirstConnections(vip, timeout, res)


def stickiness(topo: OvnTopology, vip: str, k: int = 6, host: str = "cli1",
               timeout: float = DEFAULT_TIMEOUT) -> ClientRun:
    """One new client, K connections one after another."""
    ip = topo.new_clients(host, 1)
    return ClientRun(vip, ip[0], False, timeout,
                     open_connections(topo, host, vip, topo.vip_port, k, ip, timeout))


def burst(topo: OvnTopology, vip: str, k: int = 6, host: str = "cli1",
          timeout: float = DEFAULT_TIMEOUT) -> ClientRun:
    """One new client, K connections opened at the same moment."""
    ip = topo.new_clients(host, 1)
    return ClientRun(vip, ip[0], True, timeout,
                     open_connections(topo, host, vip, topo.vip_port, k, ip, timeout,
                                      parallel=True))


def routed(topo: OvnTopology, vip: str, k: int = 6, host: str = "rcli1",
           timeout: float = DEFAULT_TIMEOUT) -> ClientRun:
    """A new client on sw1 (reaching sw0's backends through lr0), K
    connections one after another."""
    return stickiness(topo, vip, k, host, timeout)


def hairpin(topo: OvnTopology, vip: str, k: int = 6, host: str = "be1",
            timeout: float = DEFAULT_TIMEOUT) -> ClientRun:
    """A backend as a client of its own VIP (its own address), K connections
    in a row."""
    h = topo.hosts[host]
    return ClientRun(vip, h.ip, False, timeout,
                     open_connections(topo, host, vip, topo.vip_port, k, [h.ip], timeout))


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    vip: str
    label: str
    first: FirstConnections
    sticky: ClientRun
    burst: ClientRun
    routed: ClientRun
    hairpin: ClientRun
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        return [
            (f"first connection of {len(self.first.results)} new clients", self.first.summary()),
            (f"one new client, {len(self.sticky.results)} connections in a row",
             self.sticky.summary()),
            (f"one new client, {len(self.burst.results)} connections at once",
             self.burst.summary()),
            (f"routed client (sw1), {len(self.routed.results)} connections",
             self.routed.summary()),
            (f"backend be1 to its own VIP, {len(self.hairpin.results)} connections",
             self.hairpin.summary()),
        ]


def measure(topo: OvnTopology, vip: str, label: str = "", n: int = 8, k: int = 6,
            timeout: float = DEFAULT_TIMEOUT) -> ScenarioReport:
    """Every scenario against ``vip``, each with fresh clients."""
    start = time.monotonic()
    first = first_connections(topo, vip, n, timeout=timeout)
    sticky = stickiness(topo, vip, k, timeout=timeout)
    par = burst(topo, vip, k, timeout=timeout)
    rout = routed(topo, vip, k, timeout=timeout)
    hair = hairpin(topo, vip, k, timeout=timeout)
    return ScenarioReport(vip, label, first, sticky, par, rout, hair,
                          time.monotonic() - start)


def format_reports(reports: list[ScenarioReport]) -> str:
    """A markdown table: one row per scenario, one column per report."""
    head = "| scenario | " + " | ".join(f"{r.label} {r.vip}" for r in reports) + " |"
    lines = [head, "|---" * (len(reports) + 1) + "|"]
    for i, (name, _) in enumerate(reports[0].rows()):
        lines.append(f"| {name} | " + " | ".join(r.rows()[i][1] for r in reports) + " |")
    return "\n".join(lines)


def main() -> int:
    from lbaffd_sandbox.ovn import started_ovn_sandbox

    p = argparse.ArgumentParser(description="OVN-native figures of the client scenarios")
    p.add_argument("--chassis", type=int, choices=(1, 2), default=2)
    p.add_argument("--clients", type=int, default=8, help="new clients of the first scenario")
    p.add_argument("--connections", type=int, default=6, help="K of the other scenarios")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = p.parse_args()
    with started_ovn_sandbox(args.chassis) as sb:
        topo = build_ovn_topology(sb)
        reports = [measure(topo, vip, label, args.clients, args.connections, args.timeout)
                   for vip, label in ((topo.affinity_vip,
                                       f"OVN native, affinity_timeout={topo.affinity_timeout}"),
                                      (topo.plain_vip, "OVN native, no affinity"))]
    print(f"OVN 23.03 + OVS 3.1 netdev, {args.chassis} chassis (be3 on chassis "
          f"{2 if args.chassis == 2 else 1}), TCP connect timeout {args.timeout:g} s")
    print(format_reports(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
