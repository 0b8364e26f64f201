"""VIPs with 1000 and 5000 backends: installed in parts group-desc can report,
sticky, evenly spread over both hash levels, and a restart sends nothing.

The backends are addresses: 5000 of them spread over the three backend
hosts (``ip -batch``), each host's Port_Binding ``mac`` listing its share so
lbaffd rewrites ``eth_dst`` to the right host, and a server on each host
that answers with the address the client reached (``NAME@ADDRESS``).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from collections import Counter

import pytest

from lbaffd_sandbox.sandbox import LbSpec, Sandbox, run
from lbaffd_sandbox.topology import Topology, build_demo_topology, mac_of
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic, pytest.mark.slow]

PORT = 9090
N_MAX = 5000
ADDRS = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(N_MAX)]
HOST_OF = {a: f"be{i % 3 + 1}" for i, a in enumerate(ADDRS)}
# name -> (VIP, backends, affinity)
BIG = {"aff1k": ("10.0.0.201", 1000, True), "aff5k": ("10.0.0.202", 5000, True),
       "rr1k": ("10.0.0.203", 1000, False), "rr5k": ("10.0.0.204", 5000, False)}
CLIENTS = [f"10.0.0.{50 + i}" for i in range(8)]
MANY_CLIENTS = [f"10.3.{i // 250}.{i % 250 + 1}" for i in range(1500)]
N_CONN = 3000
Z = 5.0  # tolerance in standard deviations


def backends(n: int) -> str:
    return ",".join(f"{a}:{PORT}" for a in ADDRS[:n])


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=None)
    for name in ("be1", "be2", "be3"):
        host = t.hosts[name]
        mine = [a for a in ADDRS if HOST_OF[a] == name]
        with tempfile.NamedTemporaryFile("w", suffix=".ip") as f:
            f.write("".join(f"addr add {a}/32 dev eth0\n" for a in mine))
            f.flush()
            run("ip", "-n", host.ns, "-batch", f.name)
        pb = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Port_Binding",
                           f"logical_port={name}")
        sandbox.sbctl("set", "Port_Binding", pb,
                      f'mac="{mac_of(host.ip)} {host.ip} {" ".join(mine)}"')
        sandbox.start_server(host, PORT, with_address=True)
    for ip in CLIENTS:
        t.hosts["cli1"].add_address(ip)
    # many more clients, one address each, in 10.3/16: the backends route it via
    # cli1 (one neighbour entry, not one a client: the kernel's neighbour
    # table is shared by every namespace and holds 1024 at most)
    with tempfile.NamedTemporaryFile("w", suffix=".ip") as f:
        f.write("".join(f"addr add {a}/32 dev eth0\n" for a in MANY_CLIENTS))
        f.flush()
        run("ip", "-n", t.hosts["cli1"].ns, "-batch", f.name)
    for name in ("be1", "be2", "be3"):
        run("ip", "-n", t.hosts[name].ns, "route", "add", "10.3.0.0/16", "via",
            t.hosts["cli1"].ip, "dev", "eth0")
    return t


def group_dump(sandbox: Sandbox) -> dict[int, list[str]]:
    """group id -> its buckets' text, as ``ovs-ofctl dump-groups`` (group-desc) reports."""
    out: dict[int, list[str]] = {}
    for line in sandbox.dump_groups():
        gid = int(line.split("group_id=")[1].split(",")[0], 0)
        out[gid] = line.split(",bucket=")[1:]
    return out


@pytest.fixture(scope="module")
def installed(sandbox: Sandbox, topo: Topology, daemon: LbaffdProcess) -> dict[str, float]:
    """The four big LBs, added one SB transaction at a time: name -> seconds
    from the SB commit to the end of the pass that installed it."""
    seconds: dict[str, float] = {}
    for name, (vip, n, affinity) in BIG.items():
        before = daemon.count("reconciled")
        options = {"affinity_timeout": "300"} if affinity else {}
        start = time.monotonic()
        sandbox.add_load_balancers([LbSpec(name, {f"{vip}:80": backends(n)},
                                           options=options)], [topo.datapath_uuid],
                                   group_column=None)
        assert wait_until(lambda b=before: daemon.count("reconciled") > b, timeout=60), \
            daemon.tail()
        seconds[name] = time.monotonic() - start
    return seconds


def test_every_part_is_reported_by_group_desc(sandbox: Sandbox, daemon: LbaffdProcess,
                                              installed: dict[str, float]) -> None:
    groups = group_dump(sandbox)  # group-desc of everything, in one dump
    nat = {gid: [re.search(r"nat\(dst=([\d.]+):", b).group(1)  # type: ignore[union-attr]
                 for b in buckets if "nat(dst=" in b] for gid, buckets in groups.items()}
    tops = {gid: [int(re.search(r"group:(\w+)", b).group(1), 0)  # type: ignore[union-attr]
                  for b in buckets] for gid, buckets in groups.items() if "group:" in buckets[0]}
    assert len(tops) == len(BIG)
    sizes = sorted(sum(len(nat[p]) for p in parts) for parts in tops.values())
    assert sizes == sorted(n for _, n, _ in BIG.values())
    for parts in tops.values():
        n = sum(len(nat[p]) for p in parts)
        assert all(p in groups for p in parts)
        assert sorted(a for p in parts for a in nat[p]) == sorted(ADDRS[:n])
        counts = [len(nat[p]) for p in parts]
        assert max(counts) - min(counts) <= 1
    assert daemon.count("reconcile_failed") == 0
    assert daemon.count("vip_install_failed") == 0
    # lb/show names each VIP's group and its parts as the switch has them
    for name in BIG:
        out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "lb/show", name],
                             capture_output=True, text=True, check=True).stdout
        gid = int(re.search(r"group (0x[0-9a-f]+)", out).group(1), 16)  # type: ignore[union-attr]
        shown = re.search(r"group split in \d+ parts \(group-desc limit\): (.*)", out)
        assert shown is not None and [int(g, 16) for g in shown.group(1).split(", ")] == tops[gid]
    # the switch is alive and still answers (a dump with an oversized group aborts it)
    assert sandbox.appctl("version")
    print("\ninstall seconds (SB commit -> pass end): "
          + ", ".join(f"{k} {v:.2f}" for k, v in installed.items())
          + f"; parts per VIP: {sorted(len(p) for p in tops.values())}")


@pytest.mark.parametrize("name", ["aff1k", "aff5k"])
def test_large_affinity_vip_is_sticky(sandbox: Sandbox, installed: dict[str, float],
                                      name: str) -> None:
    vip, n, _ = BIG[name]
    results = sandbox.connect("cli1", vip, 80, count=6 * len(CLIENTS), src_ips=CLIENTS)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    by_client: dict[str, set[str]] = {}
    for r in results:
        by_client.setdefault(r.src, set()).add(r.backend)
    assert set(by_client) == set(CLIENTS)
    for client, seen in by_client.items():
        assert len(seen) == 1, (client, seen)  # back to back, every one the same
        host, addr = next(iter(seen)).split("@")
        assert addr in ADDRS[:n] and HOST_OF[addr] == host
    assert len({next(iter(s)) for s in by_client.values()}) >= 2  # not all on one backend


@pytest.mark.parametrize("name", ["aff1k", "aff5k"])
def test_large_affinity_vip_spreads_clients_evenly(sandbox: Sandbox, installed: dict[str, float],
                                                   name: str) -> None:
    """1500 clients, one new connection each: the client hash spreads them
    over the parts (1/k each) and, inside them, over the backends."""
    vip, n, _ = BIG[name]
    results = sandbox.connect("cli1", vip, 80, count=len(MANY_CLIENTS), src_ips=MANY_CLIENTS)
    failed = [r for r in results if not r.ok]
    assert not failed, (len(failed), failed[:5])
    per_addr = Counter(r.backend.split("@")[1] for r in results)
    parts = next(p for p in (_parts(group_dump(sandbox), top) for top in group_dump(sandbox))
                 if p and sum(map(len, p)) == n and set(p[0]) & set(per_addr))
    k, total = len(parts), len(results)
    per_part = [sum(per_addr[a] for a in part) for part in parts]
    for c in per_part:
        assert abs(c - total / k) <= Z * math.sqrt(total * (1 / k) * (1 - 1 / k)), (name, per_part)
    expected = {a: total / (k * len(part)) for part in parts for a in part}
    chi2 = sum((per_addr[a] - e) ** 2 / e for a, e in expected.items())
    assert chi2 <= n - 1 + Z * math.sqrt(sum(2 + 1 / e for e in expected.values())), chi2
    print(f"\n{name}: {total} clients over {k} parts {per_part}, chi2 {chi2:.0f} (df {n - 1})")


def _shown_counts(daemon: LbaffdProcess, lb: str) -> dict[str, int]:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "lb/show", lb], capture_output=True,
                         text=True, check=True).stdout
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"backend ([\d.]+):\d+ .*? packets (\d+)", out)}


@pytest.mark.parametrize("name", ["rr1k", "rr5k"])
def test_large_vip_spreads_evenly_over_both_levels(sandbox: Sandbox, daemon: LbaffdProcess,
                                                   installed: dict[str, float],
                                                   name: str) -> None:
    """New connections with random source ports: each part gets 1/k of them
    and, inside the parts, the backends are uniform (chi-square over all
    backends); a second level reusing the first level's hash would leave most
    backends of each part without any."""
    vip, n, _ = BIG[name]
    # distinct source ports: the kernel's own choice repeats ports within a run
    # (136 of 3000 seen), and a repeated 5-tuple hashes to the same backend
    # again, which the chi-square counts as unevenness (CI failed on it once)
    results = sandbox.connect("cli1", vip, 80, count=N_CONN, random_sport=True)
    failed = [r for r in results if not r.ok]
    assert not failed, (len(failed), failed[:5])
    assert len({r.sport for r in results}) == N_CONN
    per_addr = Counter(r.backend.split("@")[1] for r in results)
    assert sum(per_addr.values()) == N_CONN and set(per_addr) <= set(ADDRS[:n])
    groups = group_dump(sandbox)
    parts = next(p for p in (_parts(groups, top) for top in groups) if p and
                 sum(map(len, p)) == n and set(p[0]) & set(per_addr))
    k = len(parts)
    table = []
    for part in parts:
        c = sum(per_addr[a] for a in part)
        sd = math.sqrt(N_CONN * (1 / k) * (1 - 1 / k))
        assert abs(c - N_CONN / k) <= Z * sd, (name, k, c)
        table.append(c)
    expected = {a: N_CONN / (k * len(part)) for part in parts for a in part}
    chi2 = sum((per_addr[a] - e) ** 2 / e for a, e in expected.items())
    # a Poisson cell of mean e adds 1 on average, with variance 2 + 1/e
    var = sum(2 + 1 / e for e in expected.values())
    assert chi2 <= n - 1 + Z * math.sqrt(var), (name, chi2)
    # lbaffd's own per-backend counters (from the part groups' bucket stats) agree
    def counted() -> dict[str, int]:
        return _shown_counts(daemon, name)
    shown = wait_until(lambda: (c := counted()) and sum(c.values()) == N_CONN and c,
                       timeout=15, step=0.5)
    assert shown and {a: v for a, v in shown.items() if v} == dict(per_addr)
    print(f"\n{name}: {k} parts, connections per part {table}, chi2 {chi2:.0f} "
          f"(df {n - 1}), busiest backend {max(per_addr.values())}, "
          f"backends reached {len(per_addr)}/{n}")


def _parts(groups: dict[int, list[str]], top: int) -> list[list[str]]:
    jumps = [int(m.group(1), 0) for b in groups[top] if (m := re.search(r"group:(\w+)", b))]
    return [[m.group(1) for b in groups.get(j, []) if (m := re.search(r"nat\(dst=([\d.]+):", b))]
            for j in jumps]


def test_restart_sends_nothing_and_stays_sticky(sandbox: Sandbox, daemon: LbaffdProcess,
                                                installed: dict[str, float]) -> None:
    vip = BIG["aff5k"][0]
    before = {r.src: r.backend for r in sandbox.connect("cli1", vip, 80, count=len(CLIENTS),
                                                        src_ips=CLIENTS)}
    daemon.stop()
    daemon.start(timeout=60)
    done = daemon.wait_event("initial_sync_done", timeout=60)
    assert done["changes"] == 0, done
    assert daemon.count("reconciled") == 0  # this run's log: not one flow or group mod
    after = {r.src: r.backend for r in sandbox.connect("cli1", vip, 80, count=len(CLIENTS),
                                                       src_ips=CLIENTS)}
    assert after == before

