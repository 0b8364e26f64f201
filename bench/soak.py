"""``python -m bench.soak``: lbaffd for a long time on a cluster-shaped SB
under a mix of events, its RSS, CPU, open fds and threads sampled
throughout.  The question: does a daemon meant to run for months stay flat?

The SB (``cluster_sb``, seeded; a function so that a shared generator can
replace it) looks like one node of a Kubernetes cluster under ovn-kubernetes:
N services with 1-100 backends each (skewed), some UDP, some IPv6, some with
two VIPs, session affinity or ``hairpin_snat_ip``, Service_Monitors for part
of them; pods on this chassis and ~3.3 N pods on 50 other chassis, on two
switches joined by a router.  Next to it the demo's real hosts (a client and
three backends in namespaces) behind a VIP with a short ``affinity_timeout``,
so entries are learned and expire under real traffic all along.

Events (periods scale with nothing: a shorter run sees fewer of them):
forced full passes (``recompute``) every 10 s, audits (``--audit-interval``),
``/metrics`` scrapes every 15 s, LB backend churn, Service_Monitor health
flips, remote port churn (a pod on another chassis comes and goes), local
port churn (a veth with an ``iface-id`` and its Port_Binding), new
connections from the client, an ovs-vswitchd restart at 40 % of the run and
an SB ovsdb-server restart (the daemon reconnects) at 60 %.  After the run,
an idle window with no event at all measures what nothing costs.

Output: ``bench/results/soak-<time>.json`` and, with matplotlib (the
``bench`` extra), ``soak-<time>.png``; ``--readme`` also puts the graph and
the figures in README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BenchDaemon, bench_sandbox
from lbaffd_sandbox.sandbox import Sandbox, run
from lbaffd_sandbox.topology import VIP, VIP_PORT, build_demo_topology

ROOT = Path(__file__).resolve().parent.parent
OTHER_CHASSIS = 50
SAMPLE_EVERY = 5.0
CLIENT_IPS = [f"10.0.0.{150 + i}" for i in range(8)]
AFFINITY_TIMEOUT = 8  # seconds: the real VIP's entries are learned and expire all along
PERIODS = {  # event -> seconds between two of them
    "recompute": 10.0, "scrape": 15.0, "lb_churn": 2.0, "health_flip": 20.0,
    "remote_port": 5.0, "local_port": 30.0, "traffic": 3.0, "service_replace": 20.0,
}
DISRUPTIONS = (("vswitchd_restart", 0.4), ("sb_reconnect", 0.6))  # at this share of the run
TARGET_SLOPE_PCT_PER_10MIN = 1.0
IDLE_SETTLE = 10.0  # seconds between the last event and the idle window


# ------------------------------------------------------------------ the cluster-shaped SB


@dataclass
class Pod:
    name: str
    ip4: str
    ip6: str
    mac: str
    remote: bool


@dataclass
class ClusterSb:
    """What ``cluster_sb`` wrote, for the churn that follows."""

    ls_local: str
    ls_remote: str
    lr: str
    chassis: list[str]  # uuids of the other chassis
    pods: list[Pod]
    lbs: dict[str, dict[str, str]]  # uuid -> vips
    monitors: list[str]  # Service_Monitor uuids
    next_key: dict[str, int] = field(default_factory=dict)  # datapath uuid -> next port key
    n_vips: int = 0
    n_backend_slots: int = 0


def _mac(i: int) -> str:
    return "0a:58:" + ":".join(f"{(i >> s) & 0xff:02x}" for s in (24, 16, 8, 0))


def make_pod(i: int, remote: bool) -> Pod:
    net4 = ipaddress.IPv4Address("10.2.0.0" if remote else "10.1.0.0") + i + 2
    net6 = ipaddress.IPv6Address("fd00:2::" if remote else "fd00:1::") + i + 2
    return Pod(f"{'rp' if remote else 'lp'}-{i}", str(net4), str(net6),
               _mac((2 if remote else 1) << 20 | i), remote)


def _backend_count(rng: random.Random) -> int:
    """1..100, most services small (a Pareto tail, ~7 per VIP on average)."""
    return max(1, min(100, int(rng.paretovariate(1.0) * 1.5)))


def lb_rows(n: int, pods: list[Pod], rng: random.Random
            ) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(name, protocol, vips, options) of N services."""
    out = []
    for i in range(n):
        udp = rng.random() < 0.1
        v6 = rng.random() < 0.1
        nvips = 2 if rng.random() < 0.05 else 1
        options: dict[str, str] = {}
        if rng.random() < 0.25:
            options["affinity_timeout"] = str(rng.choice((60, 300, 10800)))
        if rng.random() < 0.1 and not v6:
            options["hairpin_snat_ip"] = f"169.254.169.{5 + i % 200}"
        vips: dict[str, str] = {}
        for k in range(nvips):
            members = rng.sample(pods, _backend_count(rng))
            port = 8080 + k
            if v6:
                vip = f"[fd00:ffff::{i * 2 + k + 1:x}]:{80 + k}"
                bes = ",".join(f"[{p.ip6}]:{port}" for p in members)
            else:
                ip = ipaddress.IPv4Address("172.30.0.0") + i * 2 + k + 1
                vip = f"{ip}:{80 + k}"
                bes = ",".join(f"{p.ip4}:{port}" for p in members)
            vips[vip] = bes
        out.append((f"svc-{i}", "udp" if udp else "tcp", vips, options))
    return out


def _renumber(vip: str, base: int) -> str:
    """``vip`` moved to address number ``base`` + its own (a new service's VIP)."""
    if vip.startswith("["):
        addr, port = vip[1:].split("]:")
        return f"[{ipaddress.IPv6Address(addr) + base}]:{port}"
    addr, port = vip.rsplit(":", 1)
    return f"{ipaddress.IPv4Address(addr) + base}:{port}"


def _named(ops: list[dict[str, object]], results: list[object], name: str) -> str:
    for op, res in zip(ops, results, strict=False):
        if op.get("uuid-name") == name and isinstance(res, dict):
            return str(res["uuid"][1])
    raise KeyError(name)


def cluster_sb(sb: Sandbox, ls_local: str, n: int, seed: int = 1,
               local_pods: list[Pod] | None = None) -> ClusterSb:
    """Write a cluster-shaped SB around the switch ``ls_local`` (which holds
    this chassis' ports): a second switch with the pods of 50 other chassis,
    a router joining both, N services on them."""
    rng = random.Random(seed)
    ops: list[dict[str, object]] = []
    for c in range(OTHER_CHASSIS):
        ops.append({"op": "insert", "table": "Encap", "uuid-name": f"e{c}",
                    "row": {"type": "geneve", "ip": f"192.168.{c // 250}.{c % 250 + 2}",
                            "chassis_name": f"node-{c}"}})
        ops.append({"op": "insert", "table": "Chassis", "uuid-name": f"c{c}",
                    "row": {"name": f"node-{c}", "hostname": f"node-{c}",
                            "encaps": ["named-uuid", f"e{c}"]}})
    for name, key, kind in (("ls-remote", 2, "logical-switch"), ("lr0", 3, "logical-router")):
        ops.append({"op": "insert", "table": "Datapath_Binding",
                    "uuid-name": name.replace("-", "_"),
                    "row": {"tunnel_key": key, "external_ids": ["map", [
                        ["name", name], [kind, f"{key:08x}"]]]}})
    results = sb.transact(ops)
    chassis = [_named(ops, results, f"c{c}") for c in range(OTHER_CHASSIS)]
    ls_remote, lr = _named(ops, results, "ls_remote"), _named(ops, results, "lr0")
    sb.add_patch("ls1-lr0", ls_local, 1000, "lr0-ls1", lr, 1)
    sb.add_patch("ls2-lr0", ls_remote, 30000, "lr0-ls2", lr, 2)
    local = local_pods or []
    remote = [make_pod(i, True) for i in range(int(3.3 * n))]
    state = ClusterSb(ls_local, ls_remote, lr, chassis, local + remote, {}, [],
                      {ls_local: 100 + len(local), ls_remote: 1})
    ops = []
    for pod in remote:
        ops.append(pod_binding(state, pod, rng.choice(chassis)))
    for start in range(0, len(ops), 2000):
        sb.transact(ops[start:start + 2000])
    group_ops: list[dict[str, object]] = [
        {"op": "insert", "table": "Logical_DP_Group", "uuid-name": "cluster",
         "row": {"datapaths": ["set", [["uuid", ls_local], ["uuid", ls_remote], ["uuid", lr]]]}},
        {"op": "insert", "table": "Logical_DP_Group", "uuid-name": "node",
         "row": {"datapaths": ["set", [["uuid", ls_local], ["uuid", lr]]]}}]
    rows = lb_rows(n, state.pods, rng)
    lb_ops: list[dict[str, object]] = list(group_ops)
    monitor_ops: list[dict[str, object]] = []
    by_ip = {ip: p for p in state.pods for ip in (p.ip4, p.ip6)}
    monitored: set[tuple[str, str, int, str]] = set()  # the SB's index on Service_Monitor
    for name, proto, vips, options in rows:
        lb_ops.append({"op": "insert", "table": "Load_Balancer", "row": {
            "name": name, "protocol": proto, "vips": ["map", sorted(vips.items())],
            "options": ["map", sorted(options.items())],
            "datapath_group": ["named-uuid", "cluster" if rng.random() < 0.7 else "node"]}})
        state.n_vips += len(vips)
        state.n_backend_slots += sum(len(b.split(",")) for b in vips.values())
        if proto == "tcp" and rng.random() < 0.3:
            for bes in vips.values():
                for be in bes.split(","):
                    ip, be_port = be.rsplit(":", 1)
                    owner = by_ip.get(ip.strip("[]"))
                    mkey = (owner.name if owner else "", ip.strip("[]"), int(be_port), proto)
                    if owner is not None and mkey not in monitored:
                        monitored.add(mkey)
                        monitor_ops.append({"op": "insert", "table": "Service_Monitor", "row": {
                            "ip": ip.strip("[]"), "port": int(be_port), "protocol": proto,
                            "logical_port": owner.name, "src_mac": "0a:58:0a:00:00:01",
                            "src_ip": "10.1.0.1", "status": "online"}})
    results = sb.transact(lb_ops)
    for op, res in zip(lb_ops, results, strict=True):
        if op["table"] == "Load_Balancer" and isinstance(res, dict):
            row = op["row"]
            assert isinstance(row, dict)
            state.lbs[str(res["uuid"][1])] = dict(row["vips"][1])
    for start in range(0, len(monitor_ops), 2000):
        for res in sb.transact(monitor_ops[start:start + 2000]):
            if isinstance(res, dict) and "uuid" in res:
                state.monitors.append(str(res["uuid"][1]))
    return state


def pod_binding(state: ClusterSb, pod: Pod, chassis: str) -> dict[str, object]:
    """The insert of ``pod``'s Port_Binding, bound to ``chassis``."""
    dp = state.ls_remote if pod.remote else state.ls_local
    key = state.next_key[dp]
    state.next_key[dp] = key + 1
    return {"op": "insert", "table": "Port_Binding", "row": {
        "logical_port": pod.name, "datapath": ["uuid", dp], "tunnel_key": key,
        "mac": ["set", [f"{pod.mac} {pod.ip4} {pod.ip6}"]], "chassis": ["uuid", chassis]}}


# ------------------------------------------------------------------ local ports (veths)


def add_local_ports(sb: Sandbox, pods: list[Pod]) -> None:
    """A veth per pod inside the switch's namespace, its end on br-int with
    the pod's ``iface-id`` (as the CNI would plug it)."""
    if not pods:
        return
    batch = "".join(f"link add {p.name} type veth peer name {p.name}x\n"
                    f"link set {p.name} up\nlink set {p.name}x up\n" for p in pods)
    subprocess.run(["ip", "-n", sb.ovs_ns, "-batch", "-"], input=batch, text=True, check=True)
    args: list[str] = []
    for p in pods:
        args += ["--", "add-port", "br-int", p.name, "--", "set", "Interface", p.name,
                 f"external_ids:iface-id={p.name}"]
    sb.vsctl(*args)


def remove_local_port(sb: Sandbox, pod: Pod) -> None:
    sb.vsctl("del-port", "br-int", pod.name)
    run("ip", "-n", sb.ovs_ns, "link", "del", pod.name, check=False)


# ------------------------------------------------------------------ sampling


@dataclass
class Sample:
    t: float  # seconds since the soak started
    rss_mb: float
    cpu_s: float  # user + system, cumulative
    fds: int
    threads: int


def read_sample(pid: int, t0: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(after[11]) + int(after[12])) / ticks  # utime, stime (fields 14, 15)
    return Sample(round(time.monotonic() - t0, 2), int(fields["VmRSS"].split()[0]) / 1024,
                  cpu, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]))


class Sampler(threading.Thread):
    def __init__(self, pid: Callable[[], int], t0: float, every: float = SAMPLE_EVERY) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self._pid, self._t0, self._every = pid, t0, every
        self.samples: list[Sample] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # (OSError etc.: between two processes, or a racing exit)
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append(read_sample(self._pid(), self._t0))
            self.done.wait(self._every)


# ------------------------------------------------------------------ analysis (pure)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (y per x); 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def rss_steps(samples: list[Sample], events: list[tuple[float, str]], before: float = 60.0,
              settle: float = 60.0, window: float = 60.0, tolerance_mb: float = 3.0,
              tolerance_pct: float = 2.0) -> list[dict[str, Any]]:
    """For each event at time t: RSS median over [t-before, t) against the
    median over [t+settle, t+settle+window); ``came_back`` when the latter
    is within the tolerance (an event may cost memory while it runs, not
    after).  Events too close to the end to judge are marked so."""
    out = []
    end = samples[-1].t if samples else 0.0
    for t, kind in events:
        pre = [s.rss_mb for s in samples if t - before <= s.t < t]
        post = [s.rss_mb for s in samples if t + settle <= s.t < t + settle + window]
        peak = max((s.rss_mb for s in samples if t <= s.t < t + settle), default=0.0)
        if not pre or not post or t + settle + window > end + SAMPLE_EVERY:
            out.append({"event": kind, "t": round(t, 1), "judged": False})
            continue
        b, a = _median(pre), _median(post)
        out.append({"event": kind, "t": round(t, 1), "judged": True,
                    "rss_before_mb": round(b, 1), "rss_peak_mb": round(peak, 1),
                    "rss_after_mb": round(a, 1),
                    "came_back": a <= b + max(tolerance_mb, b * tolerance_pct / 100)})
    return out


def analyse(samples: list[Sample], warmup: float,
            disruptions: list[tuple[float, str]]) -> dict[str, Any]:
    """Slopes and ranges after ``warmup`` seconds (what the targets judge)."""
    steady = [s for s in samples if s.t >= warmup]
    if len(steady) < 2:
        return {"samples_after_warmup": len(steady), "judged": False}
    rss = [(s.t, s.rss_mb) for s in steady]
    mean_rss = sum(r for _, r in rss) / len(rss)
    per_s = slope(rss)
    pct_10min = per_s * 600 / mean_rss * 100
    span = steady[-1].t - steady[0].t
    cpu = (steady[-1].cpu_s - steady[0].cpu_s) / span if span else 0.0
    last_quarter = [s for s in steady if s.t >= steady[0].t + span * 0.75]
    first_quarter = [s for s in steady if s.t < steady[0].t + span * 0.25]
    fds = sorted({s.fds for s in steady})
    threads = sorted({s.threads for s in steady})
    # a scrape, a control command or a reconnect holds a thread or a socket
    # while it runs (a scrape at N=1000 takes seconds: samples often meet one):
    # what must not drift is the baseline, the least seen early against late
    fds_early = min(s.fds for s in first_quarter)
    fds_late = min(s.fds for s in last_quarter)
    threads_early = min(s.threads for s in first_quarter)
    threads_late = min(s.threads for s in last_quarter)
    steps = rss_steps(samples, disruptions)
    return {
        "judged": True, "samples_after_warmup": len(steady), "warmup_s": warmup,
        "window_s": round(span, 1),
        "rss_mean_mb": round(mean_rss, 1), "rss_min_mb": round(min(r for _, r in rss), 1),
        "rss_max_mb": round(max(r for _, r in rss), 1),
        "rss_first_quarter_median_mb": round(_median([s.rss_mb for s in first_quarter]), 1),
        "rss_last_quarter_median_mb": round(_median([s.rss_mb for s in last_quarter]), 1),
        "rss_slope_mb_per_10min": round(per_s * 600, 3),
        "rss_slope_pct_per_10min": round(pct_10min, 3),
        "cpu_mean_cores": round(cpu, 4),
        "fds_seen": fds, "threads_seen": threads,
        "fds_early_late": [fds_early, fds_late],
        "threads_early_late": [threads_early, threads_late],
        "steps": steps,
        "targets": {
            "rss_slope_lt_1pct_per_10min": pct_10min < TARGET_SLOPE_PCT_PER_10MIN,
            "fds_constant": fds_early == fds_late,
            "threads_constant": threads_early == threads_late,
            "every_step_came_back": all(s.get("came_back", True) for s in steps),
        },
    }


# ------------------------------------------------------------------ the run


class Soak:
    def __init__(self, sb: Sandbox, daemon: BenchDaemon, state: ClusterSb, seed: int,
                 local_spare: list[Pod]) -> None:
        self.sb, self.daemon, self.state = sb, daemon, state
        self.rng = random.Random(seed + 1)
        self.spare = local_spare  # local pods not plugged yet
        self.plugged: list[Pod] = []
        self.remote_extra: list[tuple[Pod, str]] = []  # (pod, Port_Binding uuid)
        self.remote_next = len([p for p in state.pods if p.remote])
        self.offline: list[str] = []
        self.counts: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.events: list[tuple[float, str]] = []
        self.traffic = {"ok": 0, "failed": 0}
        self.created = 0

    def do(self, kind: str, t: float) -> None:
        try:
            getattr(self, f"_{kind}")()
            self.counts[kind] = self.counts.get(kind, 0) + 1
        except Exception as exc:  # recorded: a stuck event must not stop the soak
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if self.failures[kind] <= 3:
                print(f"  {kind} failed at {t:.0f}s: {str(exc)[:200]}", flush=True)
        if kind in dict(DISRUPTIONS):
            self.events.append((t, kind))

    def _recompute(self) -> None:
        self.daemon.ctl_text("recompute")

    def _scrape(self) -> None:
        self.daemon.scrape(timeout=60)

    def _lb_churn(self) -> None:
        """One backend of one LB replaced by another pod (as an endpoint
        slice change does)."""
        uuid = self.rng.choice(sorted(self.state.lbs))
        vips = dict(self.state.lbs[uuid])
        vip = self.rng.choice(sorted(vips))
        bes = vips[vip].split(",")
        pod = self.rng.choice(self.state.pods)
        port = bes[0].rsplit(":", 1)[1]
        new = f"[{pod.ip6}]:{port}" if vip.startswith("[") else f"{pod.ip4}:{port}"
        if new not in bes:
            bes[self.rng.randrange(len(bes))] = new
        vips[vip] = ",".join(bes)
        self.sb.set_lb_vips(uuid, vips)
        self.state.lbs[uuid] = vips

    def _service_replace(self) -> None:
        """A service deleted and another created (a new name, new VIPs): the
        daemon must not keep anything of the VIPs that went."""
        uuid = self.rng.choice(sorted(self.state.lbs))
        self.sb.delete_load_balancer(uuid)
        del self.state.lbs[uuid]
        self.created += 1
        _, proto, vips, options = lb_rows(1, self.state.pods, self.rng)[0]
        base = 100000 + self.created * 2  # VIPs of their own (lb_rows numbers from 0)
        vips = {_renumber(v, base): b for v, b in vips.items()}
        new = self.sb.add_load_balancer(f"svc-new-{self.created}", vips, proto, options,
                                        groups={"datapath_group": [self.state.ls_local,
                                                                   self.state.lr]})
        self.state.lbs[new] = vips

    def _health_flip(self) -> None:
        if self.offline and (len(self.offline) > 3 or self.rng.random() < 0.5):
            uuid, status = self.offline.pop(0), "online"
        else:
            uuid, status = self.rng.choice(self.state.monitors), "offline"
            self.offline.append(uuid)
        self.sb.transact([{"op": "update", "table": "Service_Monitor",
                           "where": [["_uuid", "==", ["uuid", uuid]]],
                           "row": {"status": status}}])

    def _remote_port(self) -> None:
        """A pod starts on another node, or one started earlier goes."""
        if self.remote_extra and (len(self.remote_extra) > 20 or self.rng.random() < 0.5):
            _, uuid = self.remote_extra.pop(0)
            self.sb.transact([{"op": "delete", "table": "Port_Binding",
                               "where": [["_uuid", "==", ["uuid", uuid]]]}])
            return
        pod = make_pod(self.remote_next, True)
        self.remote_next += 1
        res = self.sb.transact([pod_binding(self.state, pod, self.rng.choice(self.state.chassis))])
        self.remote_extra.append((pod, str(res[0]["uuid"][1])))  # type: ignore[index]

    def _local_port(self) -> None:
        """A pod plugged on this chassis (veth + Interface + Port_Binding),
        or one plugged earlier unplugged (all three gone)."""
        if self.plugged and (not self.spare or self.rng.random() < 0.5):
            pod = self.plugged.pop(0)
            remove_local_port(self.sb, pod)
            self.sb.transact([{"op": "delete", "table": "Port_Binding",
                               "where": [["logical_port", "==", pod.name]]}])
            self.spare.append(pod)
            return
        pod = self.spare.pop(0)
        chassis = self.sb.sbctl("--bare", "--columns=_uuid", "find", "Chassis",
                                f"name={self.sb.chassis}")
        self.sb.transact([pod_binding(self.state, pod, chassis)])
        add_local_ports(self.sb, [pod])
        self.plugged.append(pod)

    def _traffic(self) -> None:
        """Four new connections from a rotating set of client addresses:
        some entries are refreshed, others idle out (``AFFINITY_TIMEOUT``)."""
        k = self.rng.randrange(len(CLIENT_IPS) - 3)
        res = self.sb.connect("cli1", VIP, VIP_PORT, count=4, src_ips=CLIENT_IPS[k:k + 4],
                              timeout=2.0)
        ok = sum(1 for r in res if r.ok)
        self.traffic["ok"] += ok
        self.traffic["failed"] += len(res) - ok

    def _vswitchd_restart(self) -> None:
        self.sb.restart_vswitchd()

    def _sb_reconnect(self) -> None:
        self.sb.restart_ovsdb("sb", down_for=2.0)


def idle_window(daemon: BenchDaemon, seconds: float, t0: float) -> dict[str, Any]:
    """No SB change, no switch change, no scrape: what the daemon spends,
    and what each audit costs (its ``in_sync``/``reconciled`` lines)."""
    time.sleep(IDLE_SETTLE)  # the last events' passes end first
    since = time.time()
    a = read_sample(daemon.pid, t0)
    time.sleep(seconds)
    b = read_sample(daemon.pid, t0)
    passes = [e for e in daemon.events() if e.get("event") in ("in_sync", "reconciled")
              and _ts(e) >= since]
    audits = [e for e in passes if e.get("audit")]
    recompiled = [e for e in passes if "compile_ms" in e]
    cpu = b.cpu_s - a.cpu_s
    return {
        "seconds": round(b.t - a.t, 1), "cpu_s": round(cpu, 3),
        "cpu_s_per_hour_extrapolated": round(cpu * 3600 / (b.t - a.t), 1),
        "passes": len(passes), "audits": len(audits), "recompiles": len(recompiled),
        "audit_ms": [e.get("ms") for e in audits],
        "cpu_s_per_audit": round(cpu / len(audits), 3) if audits else None,
        "rss_mb": round(b.rss_mb, 1),
        "pass_log": [{k: v for k, v in e.items() if k.endswith("ms") or k in (
            "event", "audit", "changes", "flows", "timestamp")} for e in passes],
    }


def _ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def pass_costs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Full passes (``compile_ms`` present) and audits from the daemon's log."""
    passes = [e for e in events if e.get("event") in ("in_sync", "reconciled")]
    full = [float(e["ms"]) for e in passes if "compile_ms" in e]
    audits = [float(e["ms"]) for e in passes if e.get("audit") and "compile_ms" not in e]
    inc = [float(e["ms"]) for e in passes if not e.get("audit")]

    def summary(v: list[float]) -> dict[str, float | int]:
        return {"count": len(v), "p50_ms": round(_median(v), 1),
                "max_ms": round(max(v), 1) if v else 0.0}

    causes: dict[str, int] = {}
    for e in events:
        if e.get("event") == "full_pass_needed":
            what = f"{e.get('reason')} sb={e.get('sb', '')} local={e.get('local', '')}"
            causes[what] = causes.get(what, 0) + 1
    return {"full": summary(full), "audit_without_recompile": summary(audits),
            "incremental": summary(inc), "full_pass_causes": causes}


def soak(n: int, duration: float, warmup: float, idle: float, seed: int,
         audit_interval: float) -> dict[str, Any]:
    with bench_sandbox("soak") as sb:
        topo = build_demo_topology(sb, affinity_timeout=AFFINITY_TIMEOUT)
        for ip in CLIENT_IPS:
            topo.hosts["cli1"].add_address(ip)
        n_local = max(8, n // 20)
        local = [make_pod(i, False) for i in range(n_local + max(4, n_local // 5))]
        plugged, spare = local[:n_local], local[n_local:]
        t_gen = time.monotonic()
        state = cluster_sb(sb, topo.datapath_uuid, n, seed, local_pods=[])
        chassis = sb.sbctl("--bare", "--columns=_uuid", "find", "Chassis", f"name={sb.chassis}")
        sb.transact([pod_binding(state, p, chassis) for p in plugged])
        state.pods = plugged + state.pods
        add_local_ports(sb, plugged)
        gen_s = time.monotonic() - t_gen
        print(f"SB: {n} services, {state.n_vips} VIPs, {state.n_backend_slots} backend slots, "
              f"{len(state.monitors)} Service_Monitors, {len(state.pods) - n_local} remote pods "
              f"on {OTHER_CHASSIS} chassis, {n_local} local pods ({gen_s:.1f} s)", flush=True)
        daemon = BenchDaemon(sb, "--audit-interval", str(audit_interval), "--log-level", "debug")
        t_start = time.monotonic()
        daemon.start(wait_sync=True, timeout=600)
        first_sync_s = time.monotonic() - t_start
        t0 = time.monotonic()
        sampler = Sampler(lambda: daemon.pid, t0)
        sampler.start()
        s = Soak(sb, daemon, state, seed, spare)
        s.plugged = []  # only pods this run plugged are unplugged again
        due = {k: t0 + p for k, p in PERIODS.items()}
        disruptions = [(t0 + duration * share, kind) for kind, share in DISRUPTIONS]
        next_report = t0 + 60
        try:
            while (now := time.monotonic()) < t0 + duration:
                for kind, at in list(due.items()):
                    if now >= at:
                        s.do(kind, now - t0)
                        due[kind] = max(at + PERIODS[kind], time.monotonic())
                for at, kind in list(disruptions):
                    if now >= at:
                        disruptions.remove((at, kind))
                        print(f"  {now - t0:.0f}s: {kind}", flush=True)
                        s.do(kind, now - t0)
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise RuntimeError(f"lbaffd exited: {daemon.tail()}")
                if now >= next_report and sampler.samples:
                    last = sampler.samples[-1]
                    print(f"  {last.t:.0f}s: RSS {last.rss_mb:.1f} MB, CPU {last.cpu_s:.1f} s, "
                          f"fds {last.fds}, threads {last.threads}", flush=True)
                    next_report = now + 60
                time.sleep(0.05)
            soak_samples = list(sampler.samples)
            quiet = idle_window(daemon, idle, t0) if idle else None
        finally:
            sampler.done.set()
            sampler.join()
        events = daemon.events()
        result = {
            "n": n, "vips": state.n_vips, "backend_slots": state.n_backend_slots,
            "service_monitors": len(state.monitors), "local_pods": n_local,
            "remote_pods": len(state.pods) - n_local, "other_chassis": OTHER_CHASSIS,
            "duration_s": duration, "audit_interval_s": audit_interval, "seed": seed,
            "first_sync_s": round(first_sync_s, 2),
            "event_counts": s.counts, "event_failures": s.failures, "traffic": s.traffic,
            "disruptions": [{"t": round(t, 1), "event": k} for t, k in s.events],
            "analysis": analyse(soak_samples, warmup, s.events),
            "idle": quiet,
            "passes": pass_costs(events),
            "reconcile_failed": sum(1 for e in events if e.get("event") == "reconcile_failed"),
            "samples": [vars(x) for x in sampler.samples],
            "period_s": PERIODS,
        }
        daemon.stop(timeout=30)
        return result


def plot(result: dict[str, Any], path: Path) -> bool:
    """RSS and CPU over the soak; False when matplotlib is not installed
    (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    rss = [s["rss_mb"] for s in samples]
    cpu = [0.0] + [(b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9) * 100
                   for a, b in itertools.pairwise(samples)]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    ax1.plot(t, rss, color="tab:blue", linewidth=1)
    ax1.set_ylabel("RSS (MB)")
    ax1.set_ylim(0, max(rss) * 1.15)
    ax2.plot(t, cpu, color="tab:red", linewidth=0.8)
    ax2.set_ylabel("CPU (% of a core)")
    ax2.set_xlabel("minutes")
    for d in result["disruptions"]:
        for ax in (ax1, ax2):
            ax.axvline(d["t"] / 60, color="gray", linestyle="--", linewidth=0.8)
        ax1.annotate(d["event"].replace("_", " "), (d["t"] / 60, max(rss) * 1.02), fontsize=7)
    warm = result["analysis"].get("warmup_s", 0) / 60
    ax1.axvspan(0, warm, color="0.9")
    if result.get("idle") and t:  # no event at all from the end of the soak on
        for ax in (ax1, ax2):
            ax.axvspan(result["duration_s"] / 60, t[-1], color="#e3f2e3")
        ax2.annotate("idle", (result["duration_s"] / 60, max(cpu) * 0.9 if cpu else 0),
                     fontsize=7)
    a = result["analysis"]
    ax1.set_title(f"lbaffd soak, N={result['n']} ({result['vips']} VIPs): RSS slope "
                  f"{a.get('rss_slope_pct_per_10min', 0):+.2f} %/10 min after warm-up",
                  fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def render(result: dict[str, Any], png: str | None) -> str:
    """The README section (markdown) for one soak result."""
    a, idle = result["analysis"], result["idle"]
    label = "" if result["duration_s"] >= 1800 else (
        f" — **a shorter run ({result['duration_s'] / 60:.0f} min), not the 30-minute default**")
    lines = [f"Run {result['when']} on {result['cpus']} CPUs (load average {result['load']}), "
             f"lbaffd at {result['commit']}{label}: N={result['n']} services, {result['vips']} "
             f"VIPs, {result['backend_slots']} backend slots, {result['service_monitors']} "
             f"Service_Monitors, {result['remote_pods']} pods on {result['other_chassis']} other "
             f"chassis, {result['local_pods']} local pods.", ""]
    if png:
        lines += [f"![RSS and CPU over the soak]({png})", ""]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["event_counts"].items()))
    lines += [f"Events: {counts or 'none'}; traffic {result['traffic']['ok']} connections ok, "
              f"{result['traffic']['failed']} failed.", "",
              "| measure | wanted | measured |", "|---|---|---|"]
    if a.get("judged"):
        lines += _soak_rows(result)
    if idle:
        lines.append(f"| audit, nothing changed | read + compare, no recompile | "
                     f"{idle['audits']} audits, {idle['recompiles']} recompiles; "
                     f"{idle['cpu_s_per_audit']} CPU s per audit; audit_ms "
                     f"{idle['audit_ms']} |")
        lines.append(f"| idle CPU | ~0 between audits | {idle['cpu_s']} CPU s in "
                     f"{idle['seconds']:.0f} s with audits every {result['audit_interval_s']:.0f} "
                     f"s, i.e. {idle['cpu_s_per_hour_extrapolated']} CPU s per idle hour "
                     "(extrapolated) |")
    return "\n".join(lines)


def _soak_rows(result: dict[str, Any]) -> list[str]:
    a, p = result["analysis"], result["passes"]
    lines = [f"| RSS slope after {a['warmup_s']:.0f} s warm-up | < 1 % per 10 min | "
              f"{a['rss_slope_pct_per_10min']:+.2f} % per 10 min "
              f"({a['rss_slope_mb_per_10min']:+.2f} MB; mean {a['rss_mean_mb']} MB, first/last "
              f"quarter {a['rss_first_quarter_median_mb']} / {a['rss_last_quarter_median_mb']} "
              "MB) |",
              f"| open fds | constant | {a['fds_early_late'][0]:.0f} early, "
              f"{a['fds_early_late'][1]:.0f} late (least seen in the first and last quarter; "
              f"seen {a['fds_seen']}) |",
              f"| threads | constant | {a['threads_early_late'][0]:.0f} early, "
              f"{a['threads_early_late'][1]:.0f} late (seen {a['threads_seen']}: a scrape "
              "runs on a thread of its own) |"]
    for st in a["steps"]:
        if st.get("judged"):
            lines.append(f"| RSS around {st['event'].replace('_', ' ')} | back after it | "
                         f"{st['rss_before_mb']} -> peak {st['rss_peak_mb']} -> "
                         f"{st['rss_after_mb']} MB (came back: {st['came_back']}) |")
    lines.append(f"| CPU over the soak | — | {a['cpu_mean_cores'] * 100:.0f} % of a core |")
    lines.append(f"| full passes | — | {p['full']['count']}, p50 {p['full']['p50_ms']:.0f} ms |")
    lines.append(f"| audits | no recompile of their own | "
                 f"{p['audit_without_recompile']['count']} without one, p50 "
                 f"{p['audit_without_recompile']['p50_ms']:.0f} ms (an audit that meets a "
                 "change of another table is that change's full pass) |")
    return lines


def readme_section(text: str, readme: Path = ROOT / "README.md") -> None:
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    content = readme.read_text()
    if begin not in content:
        raise SystemExit("README.md has no soak markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, timeout=10).stdout.strip() or "?"
    except OSError:
        return "?"


def _render_saved(path: Path, readme: bool) -> int:
    result = json.loads(path.read_text())
    if result["analysis"].get("judged"):  # judged again, by this version's analysis
        soaked = [Sample(**x) for x in result["samples"] if x["t"] <= result["duration_s"]]
        result["analysis"] = analyse(soaked, result["analysis"]["warmup_s"],
                                     [(d["t"], d["event"]) for d in result["disruptions"]])
    png = path.with_suffix(".png")
    if readme:
        shown = ROOT / "bench" / "results" / "soak-latest.png"
        have = png.exists() or plot(result, png)
        if have:
            shutil.copyfile(png, shown)
        readme_section(render(result, "bench/results/soak-latest.png" if have else None))
    print(render(result, str(png) if png.exists() else None))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="services (default 1000)")
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds not judged (default: 1/6 of the run, at most 300)")
    p.add_argument("--idle", type=float, default=120.0,
                   help="seconds of no events after the soak (default 120; 0: none)")
    p.add_argument("--audit-interval", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--readme", action="store_true", help="put graph and figures in README.md")
    p.add_argument("--render", type=Path, metavar="SOAK_JSON",
                   help="measure nothing: print (with --readme: put in README.md) an earlier "
                        "result, its PNG beside it")
    args = p.parse_args(argv)
    if args.render:
        return _render_saved(args.render, args.readme)
    if os.geteuid() != 0:
        print("bench.soak needs root (network namespaces, ovs-vswitchd)", file=sys.stderr)
        return 1
    warmup = args.warmup if args.warmup is not None else min(300.0, args.duration / 6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = _commit()  # what runs (the tree may move on during 30 minutes)
    result = soak(args.n, args.duration, warmup, args.idle, args.seed, args.audit_interval)
    result.update(when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), cpus=os.cpu_count(),
                  load=load, commit=commit)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    png = args.out / f"soak-{stamp}.png"
    have_png = plot(result, png)
    print(render(result, str(png.relative_to(ROOT)) if have_png and png.is_relative_to(ROOT)
                 else None))
    print(f"\nresults: {out}" + (f", graph: {png}" if have_png else " (no graph: matplotlib "
                                                              "not installed)"))
    if args.readme:
        readme_png = ROOT / "bench" / "results" / "soak-latest.png"
        if have_png:
            shutil.copyfile(png, readme_png)
        readme_section(render(result, "bench/results/soak-latest.png" if have_png else None))
    targets = result["analysis"].get("targets", {})
    return 0 if targets and all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
