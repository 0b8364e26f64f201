"""`make demo` smoke test: the real demo script end to end, then nothing left behind."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


def test_demo_shows_sticky_sessions_and_cleans_up() -> None:
    rundir = Path(tempfile.mkdtemp(prefix="lbx-demo-", dir="/tmp"))
    res = subprocess.run([sys.executable, "-m", "lbaffd_sandbox.demo", "--duration", "4",
                          "--rundir", str(rundir)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = res.stdout.splitlines()[-2].split(" VIP ")  # the last full round
    assert "backend 10.0.0.21:8080" in rows[-1] and "packets" in rows[-1]  # counters
    affinity, plain = rows[1], rows[2]
    assert affinity.count("STICKY") == 4, res.stdout  # every client stays on one backend
    assert "spread" in plain.split(" learned")[0], res.stdout  # the VIP without affinity does not
    assert re.search(r"learned affinity entries on br-int: 4", res.stdout), res.stdout
    assert "demo stopped" in res.stdout
    ovs_ns = re.search(r"OVS in netns (\S+)-ovs\)", res.stdout)
    assert ovs_ns, res.stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{ovs_ns.group(1)}-" not in netns
    assert not (rundir / "sandbox.json").exists()
