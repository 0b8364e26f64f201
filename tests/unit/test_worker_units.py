"""The worker's pure parts, split out of the daemon: the probes, the retry
backoff, the status a pass leaves and the coalescing of queued tokens (the
conntrack flush after a pass is ``tests/integration/test_ct_flush.py``'s)."""

from __future__ import annotations

import queue

from lbaffd.compile.layout import STANDALONE
from lbaffd.ops.health import Health
from lbaffd.ops.status import Status
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd.worker import bookkeeping
from lbaffd.worker.backoff import CAP, FIRST, Backoff
from lbaffd.worker.tokens import FOREIGN, WAKE, Item, drain
from tests.fakeswitch import FakeSwitch
from tests.unit.test_reconciler_fake import LBS, TOPO


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_health_goes_stale_after_three_audit_intervals_and_never_before_30s() -> None:
    mono, wall = Clock(), Clock(5000.0)
    status = Status()
    health = Health(lambda: 20.0, lambda: status, clock=mono, wall=wall)
    assert health.stale_after() == 60.0
    assert health.live() == (True, "worker loop 0.0s ago")
    mono.now += 61
    assert health.live()[0] is False
    assert health.beat() == mono.now and health.live()[0] is True
    assert health.ready() == (False, "no full sync yet")
    assert Health(lambda: 1.0, lambda: status).stale_after() == 30.0


def test_health_is_ready_while_the_last_sync_is_recent() -> None:
    wall = Clock(5000.0)
    fake = FakeSwitch()
    result = Reconciler(STANDALONE).reconcile(fake, LBS, TOPO)
    status = bookkeeping.after_pass(Status(), result, (), "standalone", (), now=4990.0)
    health = Health(lambda: 5.0, lambda: status, wall=wall)
    assert health.ready() == (True, "in sync 10.0s ago")
    wall.now += 30
    assert health.ready()[0] is False


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff()
    delays = [b.failed(100.0) for _ in range(6)]
    assert delays[0] == FIRST and delays[-1] == CAP
    assert delays == sorted(delays)
    assert b.retry_at == 100.0 + CAP
    b.succeeded()
    assert (b.delay, b.retry_at) == (0.0, 0.0)
    assert b.failed(7.0) == FIRST


def test_status_counts_passes_changes_and_errors() -> None:
    fake = FakeSwitch()
    rec = Reconciler(STANDALONE)
    first = rec.reconcile(fake, LBS, TOPO)
    s1 = bookkeeping.after_pass(Status(), first, (), "standalone", (), now=1.0)
    assert (s1.stats.passes, s1.stats.changes_sent, s1.stats.last_sync) == (
        1, len(first.changes), 1.0)
    assert s1.stats.desired_flows == len(first.desired.state.flows)
    assert s1.plans == first.desired.vips and s1.mode == "standalone"
    s2 = bookkeeping.after_error(s1)
    assert s2.stats.errors == 1 and s2.stats.passes == 1 and s2.plans == s1.plans
    again = rec.reconcile(fake, LBS, TOPO)
    s3 = bookkeeping.after_pass(s2, again, (), "standalone", ("lb-x",), now=2.0)
    assert (s3.stats.passes, s3.stats.errors, s3.stats.last_changes) == (2, 1, 0)
    assert s3.stats.changes_sent == len(first.changes) and s3.left_to_ovn == ("lb-x",)


def test_drain_takes_everything_queued() -> None:
    q: queue.Queue[Item] = queue.Queue()
    for item in (WAKE, FOREIGN, WAKE):
        q.put(item)
    assert drain(q, 0.0) == [WAKE, FOREIGN, WAKE]
    assert drain(q, 0.0) == []


def test_the_sb_monitor_started_aside_reports_its_failures_unless_stopping() -> None:
    """``startup.start_in_background``: a monitor whose start fails (not by
    the daemon stopping) hands the exception to ``failed``, which stops the
    daemon with it; one that fails because the daemon stopped does not."""
    import threading

    from lbaffd.worker.startup import start_in_background

    class Failing:
        schema = "OVN_Southbound"

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def start(self) -> None:
            raise self.exc

    seen: list[Exception] = []
    boom = TimeoutError("no reply within 60 s")
    start_in_background(Failing(boom), threading.Event(), seen.append).join(5)  # type: ignore[arg-type]
    assert seen == [boom]
    stopping = threading.Event()
    stopping.set()
    start_in_background(Failing(RuntimeError("stopped")), stopping, seen.append).join(5)  # type: ignore[arg-type]
    assert seen == [boom]
