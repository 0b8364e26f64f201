"""Churn: 1000 load balancers, 200 SB transactions/s for 60 s (backends added and
removed, LBs created and deleted).  When it stops, the switch must match the
SB's final state exactly; the coalesced work per pass stays bounded; RSS does
not keep growing.  Lag is SB commit -> end of the first pass that read the SB
after it (from the daemon's log)."""

from __future__ import annotations

import bisect
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from lbaffd_sandbox.churn import Churn
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_LB = 1000
RATE = 200
SECONDS = 60


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=None)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def switch_state(sb: Sandbox) -> dict[str, set[str]]:
    """VIP -> backends, as the switch has them (dispatch flow -> group -> buckets)."""
    groups = {}
    for g in sb.dump_groups():
        gid = int(g.split("group_id=")[1].split(",")[0])
        groups[gid] = set(re.findall(r"nat\(dst=([\d.:]+)\)", g))
    out: dict[str, set[str]] = {}
    for f in sb.dump_flows("table=2"):
        m = re.search(r"nw_dst=([\d.]+),tp_dst=(\d+) actions=.*group:(\d+)", f)
        if m and m.group(1).startswith("172."):
            out[f"{m.group(1)}:{m.group(2)}"] = groups.get(int(m.group(3)), set())
    return out


def test_churn_converges_exactly_with_bounded_queue_and_memory(
        sandbox: Sandbox, topo: Topology) -> None:
    churn = Churn(sandbox.sb_remote, topo.datapath_uuid)
    churn.connect()
    churn.create(N_LB)
    daemon = LbaffdProcess(sandbox)
    daemon.start(timeout=120)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            rss.append(rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        churn.commit_times.clear()
        done = churn.run(RATE, SECONDS)
        stop.set()
        sampler.join()
        assert done >= RATE * SECONDS * 0.95, done
        want = {vip: set(bes) for vip, bes in churn.expected.values()}
        deadline = time.monotonic() + 30
        while switch_state(sandbox) != want:
            assert time.monotonic() < deadline, "switch did not converge to the SB"
            time.sleep(0.5)
        converged = time.monotonic() - deadline + 30

        passes = [e for e in daemon.events() if e.get("event") == "reconciled"
                  and e.get("sb_read_at")]
        reads = [e["sb_read_at"] for e in passes]
        ends = [datetime.fromisoformat(e["timestamp"]).timestamp() for e in passes]
        lags = []
        for t in churn.commit_times:
            i = bisect.bisect_right(reads, t)
            if i < len(ends):
                lags.append(ends[i] - t)
        lags.sort()
        p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99)]
        queued = max(e.get("queued", 0) for e in passes)
        print(f"\nchurn: {done} txns in {SECONDS}s against {N_LB} LBs; {len(passes)} passes; "
              f"lag p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; converged "
              f"{converged:.1f}s after the load stopped; max coalesced wake-ups/pass "
              f"{queued}; RSS first/last/max {rss[0]:.0f}/{rss[-1]:.0f}/{max(rss):.0f} MB")
        assert len(lags) >= len(churn.commit_times) * 0.95
        assert p99 < 5.0
        assert queued < RATE * 10  # coalesced: never more than ~10 s of arrivals per pass
        half = len(rss) // 2
        assert max(rss[half:]) <= max(rss[:half]) * 1.15 + 5  # no growth without bound
        assert max(rss) < 400
    finally:
        stop.set()
        daemon.stop()
        churn.close()

