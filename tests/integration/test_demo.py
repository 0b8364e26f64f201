"""`make demo` smoke tests: the real demo script end to end, then nothing left behind."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import _alive

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


def test_demo_shows_sticky_sessions_and_cleans_up() -> None:
    rundir = Path(tempfile.mkdtemp(prefix="lbx-demo-", dir="/tmp"))
    res = subprocess.run([sys.executable, "-m", "lbaffd_sandbox.demo", "--standalone",
                          "--duration", "4", "--rundir", str(rundir)],
                         capture_output=True, text=True, timeout=120)
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
    shutil.rmtree(rundir)  # (kept for a look when an assertion above fails)


def test_companion_demo_without_daemon_shows_ovn_native_and_the_command() -> None:
    """``make demo``'s default (companion) up to where lbaffd would start:
    the OVN sandbox with two ovn-controllers, OVN's native affinity measured
    for new clients, and the exact companion-mode command; ``--stop`` then
    tears all of it down."""
    rundir = Path(tempfile.mkdtemp(prefix="lbx-demo-", dir="/tmp"))
    demo = [sys.executable, "-m", "lbaffd_sandbox.demo", "--rundir", str(rundir)]
    try:
        # twice: the second run replaces the demo the first left up, in the same run dir
        for _ in range(2):
            res = subprocess.run([*demo, "--no-daemon"], capture_output=True, text=True,
                                 timeout=120)
            assert res.returncode == 0, res.stdout + res.stderr
        clients = [line for line in res.stdout.splitlines() if "new client" in line]
        assert len(clients) == 4, res.stdout
        # OVN 23.03's affinity_timeout: each new client's first connection is lost,
        # the next two complete on one backend
        assert all("lost 1st" in line for line in clients), res.stdout
        cmd = shlex.split(res.stdout.split("run lbaffd yourself:\n", 1)[1].splitlines()[0])
        assert cmd[cmd.index("--mode") + 1] == "companion"
        assert cmd[cmd.index("--of-target") + 1] == f"unix:{rundir}/br-int.mgmt"
        assert cmd[cmd.index("--sb-db") + 1] == f"unix:{rundir}/sb.sock"
        assert cmd[cmd.index("--ovs-db") + 1] == f"unix:{rundir}/db.sock"
        state = json.loads((rundir / "sandbox.json").read_text())
        pids = [int(Path(p).read_text()) for p in state["pidfiles"] if Path(p).exists()]
        assert any("ovs2" in ns for ns in state["namespaces"])  # chassis 2
        assert (rundir / "ch2" / "ovn-controller.pid").exists()
    finally:
        stop = subprocess.run([*demo, "--stop"], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
    assert len(pids) >= 9 and not [p for p in pids if _alive(p)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in state["namespaces"] if ns in netns.split()]
    assert not (rundir / "sandbox.json").exists()
    shutil.rmtree(rundir)


def test_companion_demo_new_clients_ovn_native_then_lbaffd() -> None:
    """``make demo`` end to end: OVN's own affinity loses each new client's
    first connection; under lbaffd --mode companion every new client (sw0 and
    routed from sw1) completes all three on one backend; lb-plain stays OVN's
    and spreads; lb/show says lb-aff is taken over; nothing is left behind."""
    rundir = Path(tempfile.mkdtemp(prefix="lbx-demo-", dir="/tmp"))
    res = subprocess.run([sys.executable, "-m", "lbaffd_sandbox.demo", "--duration", "4",
                          "--rundir", str(rundir), "--metrics-address", ""],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    last = [line for line in res.stdout.splitlines() if "lbaffd --mode companion" in line][-1]
    native, rest = last.split("lbaffd --mode companion", 1)
    companion, plain = rest.split("lb-plain", 1)
    native_clients = native.split("new client ")[1:]
    assert len(native_clients) == 4, last
    assert all("lost 1st, then sticky" in c for c in native_clients), last
    clients = companion.split("new client ")[1:]
    assert len(clients) >= 2 and any("(sw1)" in c for c in clients), last
    assert all("STICKY" in c and " x " not in c for c in clients), last
    assert "spread" in plain.split("|")[0], last
    assert "taken over from OVN" in plain, last
    assert "demo stopped" in res.stdout
    ovs_ns = re.search(r"OVS in netns (\S+)-ovs and", res.stdout)
    assert ovs_ns, res.stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{ovs_ns.group(1)}-" not in netns
    assert not (rundir / "sandbox.json").exists()
    shutil.rmtree(rundir)
