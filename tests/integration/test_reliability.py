"""Foreign interference on br-int is repaired within a second; --cleanup-on-exit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess

pytestmark = pytest.mark.integration

MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=300)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    # a long audit interval: repairs below must come from switch notifications
    proc = LbaffdProcess(sandbox, "--audit-interval", "30")
    proc.start()
    yield proc
    proc.stop()


def state(sb: Sandbox) -> tuple[list[str], list[str]]:
    return sb.dump_flows(MANAGED), sb.dump_groups()


def repaired_within(sb: Sandbox, want: tuple[list[str], list[str]], limit: float) -> float:
    start = time.monotonic()
    while state(sb) != want:
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"not repaired after {elapsed:.2f}s"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("damage", [
    ("del-flows", "br-int"),
    ("del-groups", "br-int"),
    ("--strict", "del-flows", "br-int", "table=2,priority=150,ct_state=+est-rpl+trk"),
    ("mod-flows", "br-int", "table=6,cookie=0x1baf000000000000/0xffff000000000000,"
     "ip,nw_dst=10.0.0.21,actions=drop"),
    ("add-flow", "br-int", "cookie=0x1baf000000000001,table=1,priority=0,actions=drop"),
])
def test_foreign_change_is_repaired_within_a_second(sandbox: Sandbox, daemon: LbaffdProcess,
                                                    damage: tuple[str, ...]) -> None:
    want = state(sandbox)
    sandbox.ofctl(*damage)
    took = repaired_within(sandbox, want, 1.0)
    print(f"{' '.join(damage[:2])}: repaired in {took * 1000:.0f} ms")


def test_group_modified_by_someone_else_is_repaired(sandbox: Sandbox,
                                                    daemon: LbaffdProcess) -> None:
    want = state(sandbox)
    gid = want[1][0].split("group_id=")[1].split(",")[0]
    sandbox.ofctl("mod-group", "br-int", f"group_id={gid},type=select,bucket=actions=drop")
    repaired_within(sandbox, want, 1.0)


def test_sigusr1_writes_every_threads_stack_and_goes_on(sandbox: Sandbox,
                                                       daemon: LbaffdProcess) -> None:
    """SIGUSR1: the stacks of the daemon's threads in its log (stderr), the
    worker's among them, and the daemon still answers and repairs."""
    import signal

    assert daemon.proc is not None and daemon.log_path is not None
    want = state(sandbox)
    daemon.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:  # (the dump is many writes: the file may hold part)
        text = daemon.log_path.read_text()
        if "Current thread 0x" in text and text.count("Thread 0x") >= 3:
            break
        time.sleep(0.1)
    assert daemon.proc.poll() is None, daemon.tail()
    assert "Current thread 0x" in text, daemon.tail()  # the lbaffd-signals thread answers
    assert text.count("Thread 0x") >= 3, text[-3000:]  # SB and OVS monitors, OpenFlow, ...
    assert daemon.proc.poll() is None
    sandbox.ofctl("del-flows", "br-int", MANAGED)
    repaired_within(sandbox, want, 1.0)


def test_cleanup_on_exit_removes_exactly_lbaffds_state(sandbox: Sandbox, topo: Topology,
                                                       daemon: LbaffdProcess) -> None:
    sandbox.connect("cli1", topo.vip, topo.vip_port, count=2)
    assert sandbox.dump_flows(LEARNED)
    foreign = "cookie=0x4242,table=0,priority=1,in_port=99,actions=drop"
    sandbox.ofctl("add-flow", "br-int", foreign)
    daemon.stop()
    cleaner = LbaffdProcess(sandbox, "--cleanup-on-exit")
    cleaner.start()
    assert cleaner.stop() < 2.0
    assert cleaner.wait_event("cleaned_up")
    assert sandbox.dump_flows(MANAGED) == [] and sandbox.dump_flows(LEARNED) == []
    assert sandbox.dump_groups() == []
    assert [f for f in sandbox.dump_flows() if "cookie=0x4242" in f]  # not ours: stays
    daemon.start()
