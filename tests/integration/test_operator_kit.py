"""The operator kit against the real daemon: every metric the Grafana dashboard
and the alert rules query is in a live scrape; lbaffd is found like an OVS
daemon (``ovs-appctl -t lbaffd`` with no path, the real ovs-appctl); and
``--detach``, ``--pidfile``, ``--log-file`` and ``vlog/reopen`` behave as the
OVS daemons' do."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbaffd.ops.manpage import metric_families
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import (
    LbaffdProcess,
    free_port,
    metric,
    scrape,
    wait_until,
)
from tests.operator_kit import (
    dashboard_metric_names,
    exported_families,
    exported_names,
    load_dashboard,
    rule_groups,
    rules_metric_names,
)

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=120)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--metrics-address", f"127.0.0.1:{free_port()}")
    proc.start()
    sandbox.connect("cli1", topo.vip, topo.vip_port, count=3)
    yield proc
    proc.stop()


def appctl(sandbox: Sandbox, *args: str, rundir: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    """The real ``ovs-appctl -t lbaffd``: found through $OVS_RUNDIR/lbaffd.pid."""
    env = {**sandbox.env, "OVS_RUNDIR": str(rundir or sandbox.ovs_rundir)}
    return subprocess.run(["ovs-appctl", "-t", "lbaffd", *args], capture_output=True,
                          text=True, timeout=20, env=env)


def pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return bool(re.search(r"^State:\s+Z", status, re.M))


def test_every_dashboard_and_alert_metric_is_in_a_live_scrape(daemon: LbaffdProcess) -> None:
    status, text = scrape(daemon)
    assert status == 200
    exported = exported_names(text)
    assert "lbaffd_backend_packets_total" in exported and "lbaffd_affinity_entries" in exported
    used = dashboard_metric_names(load_dashboard())
    assert used <= exported, sorted(used - exported)
    assert rules_metric_names(rule_groups()) <= exported
    # lbaffd(8) documents exactly the families the daemon serves
    assert exported_families(text) == {name for name, _, _ in metric_families()}


def test_a_foreign_wipe_is_repaired_and_counted(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    managed = "cookie=0x1baf000000000000/0xffff000000000000"
    flows = sandbox.dump_flows(managed)
    before = metric(scrape(daemon)[1], "lbaffd_switch_repairs_total")
    sandbox.ofctl("del-flows", "br-int", managed)
    assert wait_until(lambda: len(sandbox.dump_flows(managed)) == len(flows), timeout=10)

    def counted() -> str:
        text = scrape(daemon)[1]
        return text if metric(text, "lbaffd_switch_repairs_total") > before else ""

    text = wait_until(counted, timeout=10)
    assert metric(text, "lbaffd_switch_repairs_total") == before + 1
    assert metric(text, "lbaffd_switch_repaired_changes_total") >= len(flows)


def test_ovs_appctl_finds_lbaffd_by_name(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    assert daemon.proc is not None
    pidfile = sandbox.ovs_rundir / "lbaffd.pid"
    assert pid_in(pidfile) == daemon.proc.pid
    ctl = sandbox.ovs_rundir / f"lbaffd.{daemon.proc.pid}.ctl"
    assert stat.S_ISSOCK(os.stat(ctl).st_mode) and stat.S_IMODE(os.stat(ctl).st_mode) == 0o750
    res = appctl(sandbox, "lb/list")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^lb1\s+\S+\s+1\s+120s\s+1$", res.stdout, re.M), res.stdout
    assert "lb/show" in appctl(sandbox, "help").stdout
    # the --rundir socket stays and answers the same
    by_path = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "lb/list"], capture_output=True,
                             text=True, timeout=20)
    assert by_path.returncode == 0 and by_path.stdout == res.stdout
    # looked up elsewhere, there is nothing to find
    elsewhere = appctl(sandbox, "lb/list", rundir=Path(sandbox.rundir) / "nowhere")
    assert elsewhere.returncode != 0 and "lbaffd.pid" in elsewhere.stderr


def test_a_second_lbaffd_is_refused_and_a_killed_ones_leftovers_are_replaced(
        sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    assert daemon.proc is not None
    first = daemon.proc.pid
    second = LbaffdProcess(sandbox)
    second.start(wait_sync=False)
    assert second.proc is not None and second.proc.wait(timeout=20) != 0
    assert f"already running as pid {first}" in second.tail()
    assert appctl(sandbox, "lb/list").returncode == 0  # the first one is untouched

    daemon.stop(signal.SIGKILL)
    pidfile = sandbox.ovs_rundir / "lbaffd.pid"
    stale_ctl = sandbox.ovs_rundir / f"lbaffd.{first}.ctl"
    assert pidfile.exists() and stale_ctl.exists()  # nobody cleaned up after SIGKILL
    daemon.start()
    assert daemon.proc is not None and pid_in(pidfile) == daemon.proc.pid
    assert not stale_ctl.exists()
    assert appctl(sandbox, "lb/list").returncode == 0

    daemon.stop()  # SIGTERM: the pidfile and the socket go with the process
    assert not pidfile.exists() and not list(sandbox.ovs_rundir.glob("lbaffd.*.ctl"))
    daemon.start()


def test_detach_pidfile_log_file_and_reopen(sandbox: Sandbox, daemon: LbaffdProcess,
                                            tmp_path: Path) -> None:
    daemon.stop()  # one lbaffd per bridge
    log_file = tmp_path / "log" / "lbaffd.log"
    pidfile = sandbox.ovs_rundir / "lbaffd.pid"
    cmd = [sys.executable, "-m", "lbaffd", "run", "--ovs-db", sandbox.ovs_db_remote,
           "--sb-db", sandbox.sb_remote, "--bridge", "br-int",
           "--ovs-rundir", str(sandbox.ovs_rundir), "--rundir", str(tmp_path / "run"),
           "--log-format", "json", "--metrics-address", "",
           "--detach", "--pidfile", f"--log-file={log_file}"]
    started = time.monotonic()
    launcher = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    assert launcher.returncode == 0, launcher.stderr
    assert launcher.stdout == "" and launcher.stderr == ""  # the log went to the file
    pid = pid_in(pidfile)
    try:
        assert not gone(pid) and took < 15
        # detached: its own session, cwd /, no terminal fds
        assert os.getsid(pid) == pid
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/2") == str(log_file)
        assert wait_until(lambda: '"initial_sync_done"' in log_file.read_text(), timeout=30)
        res = appctl(sandbox, "lb/list")
        assert res.returncode == 0 and "lb1" in res.stdout, res.stderr

        # logrotate: move the file away, reopen, the next lines go to a new file
        rotated = log_file.with_suffix(".log.1")
        log_file.rename(rotated)
        res = appctl(sandbox, "vlog/reopen")
        assert res.returncode == 0, res.stderr
        assert appctl(sandbox, "recompute").returncode == 0
        assert wait_until(lambda: log_file.exists() and '"log_file_reopened"' in
                          log_file.read_text(), timeout=10)
        assert '"log_file_reopened"' not in rotated.read_text()

        assert appctl(sandbox, "exit").returncode == 0
        assert wait_until(lambda: gone(pid), timeout=10)
        assert wait_until(lambda: not pidfile.exists(), timeout=5)
        assert not (sandbox.ovs_rundir / f"lbaffd.{pid}.ctl").exists()
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
        daemon.start()


def test_detach_reports_a_startup_failure_as_its_exit_status(
        sandbox: Sandbox, daemon: LbaffdProcess, tmp_path: Path) -> None:
    """The launcher waits until the daemon has started: a daemon that cannot
    (its metrics port taken) fails the command, and leaves no pidfile."""
    import socket

    daemon.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "lbaffd", "run", "--ovs-rundir", str(sandbox.ovs_rundir),
               "--rundir", str(tmp_path / "run"), "--metrics-address", f"127.0.0.1:{port}",
               "--detach", f"--log-file={tmp_path / 'lbaffd.log'}"]
        try:
            launcher = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert launcher.returncode != 0
            assert "Address already in use" in (tmp_path / "lbaffd.log").read_text()
            assert not (sandbox.ovs_rundir / "lbaffd.pid").exists()
        finally:
            daemon.start()


def test_vlog_reopen_without_a_log_file_says_so(sandbox: Sandbox, daemon: LbaffdProcess) -> None:
    res = appctl(sandbox, "vlog/reopen")
    assert res.returncode != 0 and "Logging to file not configured" in res.stderr
