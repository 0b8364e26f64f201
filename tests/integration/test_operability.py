"""Operating lbaffd as an OVS/OVN operator would: ovs-appctl, /metrics, probes,
JSON logs, systemd notify/watchdog.  Real daemon, real OVS, real traffic."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, metric, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=120)


@pytest.fixture(scope="module")
def notify_socket(sandbox: Sandbox) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(Path(sandbox.rundir) / "notify.sock"))
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology,
           notify_socket: socket.socket) -> Iterator[LbaffdProcess]:
    port = free_port()
    proc = LbaffdProcess(sandbox, "--metrics-address", f"127.0.0.1:{port}")
    os.environ["NOTIFY_SOCKET"] = notify_socket.getsockname()
    os.environ["WATCHDOG_USEC"] = "400000"
    try:
        proc.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    sandbox.connect("cli1", topo.vip, topo.vip_port, count=5)
    yield proc
    proc.stop()


def appctl(daemon: LbaffdProcess, *args: str, check: bool = True) -> str:
    res = subprocess.run(["ovs-appctl", "-t", daemon.ctl, *args], capture_output=True,
                         text=True, timeout=20)
    if check:
        assert res.returncode == 0, res.stderr
    return res.stdout if check else res.stdout + res.stderr


def test_systemd_ready_after_first_sync_and_watchdog(daemon: LbaffdProcess,
                                                     notify_socket: socket.socket) -> None:
    got: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and got.count("WATCHDOG=1") < 3:
        got += notify_socket.recv(4096).decode().split("\n")
    assert "READY=1" in got and any(x.startswith("STATUS=in sync") for x in got)
    sync_logged = daemon.wait_event("initial_sync_done")
    assert sync_logged  # READY is sent right after the first full sync
    assert got.count("WATCHDOG=1") >= 3  # every WATCHDOG_USEC/2 from the worker loop


def test_control_socket_is_private_and_answers_ovs_appctl(daemon: LbaffdProcess) -> None:
    assert stat.S_IMODE(os.stat(daemon.rundir).st_mode) == 0o700
    assert "lb/show" in appctl(daemon, "help")
    listing = appctl(daemon, "lb/list")
    assert re.search(r"^lb1\s+\S+\s+1\s+120s\s+1$", listing, re.M), listing


def packets_shown(text: str) -> int:
    rows = [r for r in text.splitlines() if r.strip().startswith("backend ")]
    return sum(int(r.split("packets ")[1].split()[0]) for r in rows)


def settled(read, want: int, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    """Datapath stats reach OpenFlow counters via the revalidators (~0.5-1 s)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value[0] != want and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def test_lb_show_has_backends_group_and_counters(daemon: LbaffdProcess) -> None:
    n, text = settled(lambda: (packets_shown(t := appctl(daemon, "lb/show", "lb1")), t), 5)
    assert "vip 10.0.0.100:80 tcp  group 0xb" in text and "(hash(ip_src))" in text
    rows = [r for r in text.splitlines() if r.strip().startswith("backend ")]
    assert [r.split()[1] for r in rows] == ["10.0.0.21:8080", "10.0.0.22:8080",
                                            "10.0.0.23:8080"]
    assert n == 5  # the fixture's 5 new connections: 1 via the group, 4 via hits
    assert "affinity entries 1" in text
    assert "no load balancer" in appctl(daemon, "lb/show", "nope", check=False)


def test_affinity_show_lists_client_backend_idle_remaining(daemon: LbaffdProcess) -> None:
    text = appctl(daemon, "affinity/show", "10.0.0.100:80")
    (row,) = [r for r in text.splitlines() if "10.0.0.11 " in r]
    lb, vip, dp, client, backend, idle, remaining = row.split()
    assert (lb, vip, dp, client) == ("lb1", "10.0.0.100:80", "1", "10.0.0.11")
    assert backend.startswith("10.0.0.2") and idle.endswith("s")
    assert 100 <= float(remaining.rstrip("s")) <= 120


def test_reconcile_stats_recompute_and_log_level(daemon: LbaffdProcess) -> None:
    before = int(re.search(r"passes: (\d+)", appctl(daemon, "reconcile/stats")).group(1))  # type: ignore[union-attr]
    assert "queued" in appctl(daemon, "recompute")

    def passed() -> str | None:
        text = appctl(daemon, "reconcile/stats")
        m = re.search(r"passes: (\d+)", text)
        return text if m and int(m.group(1)) > before else None
    after = wait_until(passed, what="a pass after recompute")
    assert "last pass:" in after and "0 changes" in after
    appctl(daemon, "vlog/set", "ANY:dbg")
    assert "unknown level" in appctl(daemon, "vlog/set", "loud", check=False)
    assert daemon.wait_event("log_level_changed", new_level="debug")


def test_metrics_scrape(daemon: LbaffdProcess) -> None:
    def total(text: str) -> int:
        return int(sum(metric(text, "lbaffd_backend_packets_total", lb="lb1",
                              vip="10.0.0.100:80", backend=b)
                       for b in ("10.0.0.21:8080", "10.0.0.22:8080", "10.0.0.23:8080")))

    n, text = settled(lambda: (total(t := scrape(daemon)[1]), t), 5)
    assert n == 5
    assert metric(text, "lbaffd_connection_up", peer="openflow") == 1
    assert metric(text, "lbaffd_connection_up", peer="ovsdb") == 1
    assert metric(text, "lbaffd_connection_up", peer="sb") == 1
    assert metric(text, "lbaffd_reconcile_total", result="ok") >= 1
    assert metric(text, "lbaffd_reconcile_duration_seconds_count") >= 1
    assert metric(text, "lbaffd_desired_flows") == metric(text, "lbaffd_installed_flows")
    assert metric(text, "lbaffd_openflow_messages_sent_total", type="OFPBundleAddMsg") > 0
    assert metric(text, "lbaffd_affinity_entries", lb="lb1", vip="10.0.0.100:80") == 1
    assert time.time() - metric(text, "lbaffd_last_successful_sync_timestamp_seconds") < 30
    assert "lbaffd_parse_errors_total" in text


def test_parse_errors_metric_and_json_logs(sandbox: Sandbox, topo: Topology,
                                           daemon: LbaffdProcess) -> None:
    bad = sandbox.add_load_balancer("lb-bad", {"10.0.0.99:http": "10.0.0.21:80"},
                                    datapaths=[topo.datapath_uuid])
    event = daemon.wait_event("lb_input_rejected", lb="lb-bad")
    assert event["reason"] == "bad_port" and event["vip"] == "10.0.0.99:http"
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_parse_errors_total", reason="bad_port") == 1
    sandbox.delete_load_balancer(bad)
    assert daemon.log_path is not None
    for line in daemon.log_path.read_text().splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            assert {"event", "level", "timestamp"} <= ev.keys()
        else:  # only stdlib-logged lines from the ovs library may be non-JSON
            assert "Traceback" not in line


def test_probes(daemon: LbaffdProcess) -> None:
    assert scrape(daemon, "/healthz")[0] == 200
    status, body = scrape(daemon, "/readyz")
    assert status == 200 and "in sync" in body


def test_exit_command_stops_cleanly_leaving_flows(sandbox: Sandbox,
                                                  daemon: LbaffdProcess) -> None:
    flows = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    appctl(daemon, "exit")
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=3) == 0
    assert sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000") == flows
    daemon.start()  # for the fixture's teardown


def test_sb_down_at_start_is_waited_for_without_tracebacks(sandbox: Sandbox,
                                                           daemon: LbaffdProcess) -> None:
    daemon.stop()
    sandbox.restart_ovsdb("sb", down_for=0)  # make sure it is ours and running
    from lbaffd_sandbox.sandbox import _kill_pidfile

    _kill_pidfile(Path(sandbox.rundir) / "sb.pid")
    daemon.start(wait_sync=False)
    daemon.wait_event("ovsdb_unreachable", db="OVN_Southbound")
    # the SB is asked for on a thread of its own: the rest started meanwhile
    daemon.wait_event("control_socket")
    appctl(daemon, "sb/rows")  # (no rows yet: answered, not an error)
    appctl(daemon, "reconcile/stats")
    sandbox.restart_ovsdb("sb", down_for=0)
    assert daemon.wait_event("initial_sync_done", timeout=30)["changes"] == 0
    assert daemon.log_path is not None and "Traceback" not in daemon.log_path.read_text()
    assert daemon.stop() < 2.0
    daemon.start()


def memory_show(daemon: LbaffdProcess) -> dict[str, int]:
    line = appctl(daemon, "memory/show").strip()
    return {k: int(v) for k, v in (pair.split(":") for pair in line.split())}


def test_memory_show_counts_what_is_held_and_steps_keep_no_memos(
        sandbox: Sandbox, topo: Topology, daemon: LbaffdProcess) -> None:
    """``memory/show`` counts what the daemon holds, as ovs-vswitchd's does;
    the memos of encoded values are emptied after every pass, an
    incremental one included (kept until the next audit, what a few steps
    encoded pinned pymalloc arenas: issue 19)."""
    # (after its full pass, the daemon freezes what it built: then it is at rest)
    held = wait_until(lambda: (m := memory_show(daemon))["frozen_objects"] > 0 and m,
                      what="the first full pass's objects frozen")
    managed = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
    assert held["desired_flows"] == len(managed) > 0
    assert held["desired_groups"] >= 1 and held["compiled_parts"] >= 1 and held["sb_rows"] > 0
    mark = len(daemon.events())
    uuid = sandbox.add_load_balancer("lb-memory", {"10.0.0.120:81": "10.0.0.21:8080"},
                                     datapaths=[topo.datapath_uuid])
    try:
        ev = daemon.wait_event("reconciled", audit=False, after=mark)
        assert "step_ms" in ev and "compile_ms" not in ev  # a step, not a full pass
        wait_until(lambda: memory_show(daemon)["memo_entries"] == 0, timeout=2,
                   what="the step's memos emptied")
        assert memory_show(daemon)["compiled_parts"] > held["compiled_parts"]
    finally:
        sandbox.delete_load_balancer(uuid)
