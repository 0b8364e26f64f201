"""Nothing changes -> nothing is compiled: an audit reads the switch and
compares it with the state already compiled, whether the SB is quiet or
its load balancers keep changing (on a busy cluster some always are)."""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bench.common import lb_specs, vip_ip
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration]

N_LB = 40
AUDIT_INTERVAL = 1.0


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=30)


@pytest.fixture(scope="module")
def lbs(sandbox: Sandbox, topo: Topology) -> list[str]:
    return sandbox.add_load_balancers(lb_specs(N_LB), [topo.datapath_uuid])


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology, lbs: list[str]) -> Iterator[LbaffdProcess]:
    # a pass waits for more changes (as one waits behind a long pass on a
    # busy chassis), so an audit falls due while an LB change is pending;
    # ``debounce`` has no flag, only its LBAFFD_ variable
    os.environ["LBAFFD_DEBOUNCE"] = "0.3"
    try:
        proc = LbaffdProcess(sandbox, "--audit-interval", str(AUDIT_INTERVAL))
        proc.start(timeout=60)
    finally:
        del os.environ["LBAFFD_DEBOUNCE"]
    yield proc
    proc.stop()


def _ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def passes_since(daemon: LbaffdProcess, since: float) -> list[dict[str, Any]]:
    """The daemon's passes (``in_sync``/``reconciled``) logged after ``since``."""
    return [e for e in daemon.events() if e.get("event") in ("in_sync", "reconciled")
            and _ts(e) >= since]


def test_quiet_audits_never_recompile(daemon: LbaffdProcess) -> None:
    since = time.time()
    wait_until(lambda: len([e for e in passes_since(daemon, since) if e["audit"]]) >= 4,
               timeout=30, step=0.2)
    passes = passes_since(daemon, since)
    audits = [e for e in passes if e["audit"]]
    assert len(audits) >= 4, passes
    # a full pass logs its phases (read, compile, commit, barrier); an audit of
    # unchanged inputs has none, and sent nothing
    assert [e for e in passes if "compile_ms" in e] == []
    assert all(e["event"] == "in_sync" for e in passes), passes


def test_audits_during_lb_churn_apply_the_change_and_never_recompile(
        sandbox: Sandbox, daemon: LbaffdProcess, lbs: list[str]) -> None:
    rng = random.Random(3)
    since = time.time()
    final: dict[str, str] = {}
    end = time.monotonic() + 6 * AUDIT_INTERVAL
    k = 0
    while time.monotonic() < end:  # an LB changes every ~50 ms, audits every second
        k += 1
        i = rng.randrange(N_LB)
        vip = f"{vip_ip(i)}:80"
        backends = f"10.200.{k // 250}.{k % 250 + 1}:8080,10.128.0.{i % 200 + 1}:8080"
        sandbox.set_lb_vips(lbs[i], {vip: backends})
        final[vip] = backends
        time.sleep(0.05)
    time.sleep(1.0)
    passes = passes_since(daemon, since)
    audits = [e for e in passes if e["audit"]]
    assert len(audits) >= 4, passes
    assert [e for e in passes if "compile_ms" in e] == []  # no full pass at all
    assert any(not e["audit"] and e.get("changes") for e in passes)  # incremental ones
    # and the switch has every LB's last backends
    groups = "\n".join(sandbox.dump_groups())
    for backends in final.values():
        for be in backends.split(","):
            assert re.search(rf"nat\(dst={re.escape(be)}\)", groups), be
