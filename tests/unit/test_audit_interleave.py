"""An audit and the changes applied while it reads the switch
(``lbaffd/reconcile/audit.py``), against the in-memory switch.

The audit reads on its own thread and the worker applies changes meanwhile;
a read taken before a change is older than the switch.  The rule: what a
change touched after a read was taken is left out of that read's comparison,
so an audit never "repairs" what the worker has just changed (a group add of
a group that exists fails the bundle; a second delete of a flow leaves the
daemon expecting a FLOW_REMOVED that never comes), and still repairs what
someone else changed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from lbaffd.compile.layout import STANDALONE
from lbaffd.model import ownership as own
from lbaffd.openflow import packed
from lbaffd.openflow.flowspec import FlowSpec
from lbaffd.openflow.packed import FlowId
from lbaffd.reconcile import audit
from lbaffd.reconcile.audit import ChangeLedger, SwitchReader
from lbaffd.reconcile.diff import ChangeSet
from lbaffd.reconcile.reconciler import Reconciler
from tests.fakeswitch import FakeSwitch
from tests.unit.test_reconciler_fake import AFF_VIP, LBS, TOPO, installed, with_backends


class Timed(FakeSwitch):
    """The fake switch, with hooks on its dumps: ``after_dump(kind, chunk)``
    runs on the reading thread once a dump's reply is taken (so the reply
    shows the switch as it was before anything the hook lets happen)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_dump: Callable[[str, int], None] = lambda kind, chunk: None

    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Any]:
        parts = super().dump_group_desc(owned)
        self.after_dump("groups", -1)
        return parts

    def dump_flow_desc(self, cookie: int, cookie_mask: int, *args: Any) -> list[Any]:
        parts = super().dump_flow_desc(cookie, cookie_mask, *args)
        chunk = own.audit_chunk(cookie) if cookie_mask & own.CHUNK_MASK else -2
        self.after_dump("flows", chunk)
        return parts


def programmed() -> tuple[Timed, Reconciler]:
    fake = Timed()
    rec = Reconciler(STANDALONE)
    rec.reconcile(fake, LBS, TOPO)
    return fake, rec


def once(action: Callable[[], None], ready: threading.Event) -> Callable[[], bool]:
    """An audit's ``between``: runs ``action`` (an input change the worker
    applies) the first time it is called once ``ready`` is set."""
    done = threading.Event()

    def between() -> bool:
        if ready.is_set() and not done.is_set():
            done.set()
            action()
        return True

    return between


def test_a_change_after_the_group_read_is_not_repaired_back() -> None:
    """The worker adds an LB (a new group and its flows) after the audit read
    the groups and some flow slices: the audit sends nothing for it (a
    second add of the group would fail the whole repair bundle)."""
    fake, rec = programmed()
    new = next(lb for lb in LBS if lb.uuid == "lb-plain")
    rec.reconcile_changed(fake, {new.uuid: None}, TOPO)  # gone; comes back during the audit
    read = threading.Event()
    fake.after_dump = lambda kind, chunk: read.set() if kind == "groups" else None
    applied: list[ChangeSet] = []

    def change() -> None:
        result = rec.reconcile_changed(fake, {new.uuid: new}, TOPO)
        assert result is not None and result.changes.add_groups
        applied.append(result.changes)

    failed = fake.counts["bundle_failed"]
    result = rec.audit_unchanged(fake, once(change, read))
    assert applied, "the change ran while the audit was reading"
    assert result is not None and result.changes.empty
    assert fake.counts["bundle_failed"] == failed
    assert installed(fake) == result.desired.state


def test_a_deletion_after_a_read_is_not_deleted_again() -> None:
    """An LB removed by the worker after its flows were read: the audit does
    not delete them a second time (nothing would report that deletion)."""
    fake, rec = programmed()
    gone = next(lb for lb in LBS if lb.uuid == "lb-plain")
    deleted: list[tuple[FlowSpec, ...]] = []
    rec.on_delete = deleted.append
    # the change comes once the slice holding the LB's VIP flows was read
    chunk = own.audit_chunk(own.owner_cookie(own.vip_owner(gone.uuid, gone.vips[0].key)))
    read = threading.Event()
    fake.after_dump = lambda kind, c: read.set() if c == chunk else None

    def change() -> None:
        result = rec.reconcile_changed(fake, {gone.uuid: None}, TOPO)
        assert result is not None and result.changes.del_flows
        assert any(own.audit_chunk(packed.cookie(f)) == chunk
                   for f in result.changes.del_flows)

    result = rec.audit_unchanged(fake, once(change, read))
    assert result is not None and result.changes.empty
    assert len(deleted) == 1  # the change's own deletions, announced once
    assert installed(fake) == result.desired.state
    assert not any(p.lb.uuid == gone.uuid for p in result.desired.vips)


def test_someone_elses_edit_is_repaired_while_the_worker_changes_another_lb() -> None:
    fake, rec = programmed()
    desired = installed(fake)
    # someone deletes a flow of another VIP than the one the worker changes
    victim_vip = own.vip_owner("lb-plain", next(
        v.key for lb in LBS if lb.uuid == "lb-plain" for v in lb.vips))
    victim = next(body for body in desired.flows.values()
                  if packed.cookie(body) == own.owner_cookie(victim_vip))
    fake.apply(packed.delete_message(victim))
    changed = with_backends(*AFF_VIP, "10.0.0.21:8080,10.0.0.27:8080")
    read = threading.Event()
    fake.after_dump = lambda kind, chunk: read.set() if kind == "groups" else None
    touched: list[frozenset[FlowId]] = []

    def change() -> None:
        result = rec.reconcile_changed(fake, {changed.uuid: changed}, TOPO)
        assert result is not None and not result.changes.empty
        touched.append(frozenset(map(packed.flow_id, (*result.changes.add_flows,
                                                      *result.changes.mod_flows,
                                                      *result.changes.del_flows))))

    result = rec.audit_unchanged(fake, once(change, read))
    assert result is not None and touched
    assert result.changes.add_flows == (victim,)  # the foreign deletion, put back
    assert not touched[0] & {packed.flow_id(f) for f in result.changes.add_flows}
    assert len(result.changes) == 1
    assert installed(fake) == result.desired.state


def test_changes_are_applied_while_a_slow_read_is_under_way() -> None:
    """A flow slice the switch takes long to return does not hold a change
    back: the worker applies it while the read waits, and the audit ends
    with the switch in the new desired state."""
    fake, rec = programmed()
    changed = with_backends(*AFF_VIP, "10.0.0.21:8080,10.0.0.22:8080,10.0.0.27:8080")
    slow = threading.Event()  # the read of slice 5 has started
    release = threading.Event()

    def after_dump(kind: str, chunk: int) -> None:
        if chunk == 5:
            slow.set()
            assert release.wait(10), "the worker never applied the change"

    fake.after_dump = after_dump
    wake = threading.Event()

    def change() -> None:
        assert rec.reconcile_changed(fake, {changed.uuid: changed}, TOPO) is not None
        release.set()

    result = rec.audit_unchanged(fake, once(change, slow), wake)
    assert release.is_set()
    assert result is not None and result.changes.empty
    assert installed(fake) == result.desired.state
    lbs = tuple(changed if x.uuid == changed.uuid else x for x in LBS)
    other = FakeSwitch()
    Reconciler(STANDALONE).reconcile(other, lbs, TOPO)
    assert installed(other) == installed(fake)


def test_ledger_names_what_changed_after_a_mark() -> None:
    ledger = ChangeLedger()
    fake, rec = programmed()
    state = installed(fake)
    flows = list(state.flows.values())
    gid = next(iter(state.groups))
    ledger.record(ChangeSet(add_flows=(flows[0],)))  # nobody listens: only counted
    assert ledger.done == 1 and ledger.since(0) == (frozenset(), frozenset())
    ledger.listen()
    mark = ledger.done
    ledger.record(ChangeSet(del_flows=(flows[1],), del_groups=(gid,)))
    ledger.record(ChangeSet())  # an empty change is no change
    ledger.record(ChangeSet(mod_flows=(flows[2],)))
    assert ledger.done == 3
    assert ledger.since(mark) == (frozenset({packed.flow_id(flows[1]),
                                             packed.flow_id(flows[2])}), frozenset({gid}))
    assert ledger.since(mark + 1) == (frozenset({packed.flow_id(flows[2])}), frozenset())
    ledger.stop()
    assert ledger.since(0) == (frozenset(), frozenset())
    # (the reconciler's own ledger counts every change it puts on the switch)
    before = rec.ledger.done
    rec.reconcile_changed(fake, {"lb-plain": None}, TOPO)
    assert rec.ledger.done == before + 1


class ReadSide:
    """A second connection to the same switch that only reads (the daemon's
    connection for audit dumps)."""

    def __init__(self, fake: FakeSwitch) -> None:
        self.fake = fake
        self.dumps = 0

    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Any]:
        self.dumps += 1
        return self.fake.dump_group_desc(owned)

    def dump_flow_desc(self, cookie: int, cookie_mask: int, *args: Any) -> list[Any]:
        self.dumps += 1
        return self.fake.dump_flow_desc(cookie, cookie_mask, *args)


def test_an_audit_reads_on_its_own_connection_and_repairs_on_the_main_one() -> None:
    fake, rec = programmed()
    desired = installed(fake)
    victim = next(iter(desired.flows.values()))
    fake.apply(packed.delete_message(victim))
    reads = ReadSide(fake)
    dumps, committed = fake.counts["flow_desc"], fake.counts["bundle_committed"]
    result = rec.audit_unchanged(fake, reader=reads)  # type: ignore[arg-type]
    assert result is not None and result.changes.add_flows == (victim,)
    assert reads.dumps == 1 + own.AUDIT_CHUNKS
    assert fake.counts["flow_desc"] - dumps == own.AUDIT_CHUNKS  # all through ReadSide
    assert fake.counts["bundle_committed"] == committed + 1  # the repair, on the main one
    assert installed(fake) == desired


def test_the_reader_leaves_the_switch_a_pause_between_dumps() -> None:
    """ovs-vswitchd serves a connection's next request at once when it is
    already there after a reply (up to 50 of them, ``ofconn_run``), so the
    next slice is asked for only ``BREATH`` after the last one came back:
    the switch then finds the audits' connection empty and serves the main
    one (a change's bundle) in between."""
    asked: list[float] = []

    def dump() -> list[Any]:
        asked.append(time.monotonic())
        return []

    with SwitchReader([(n, dump) for n in range(6)], ChangeLedger(), breath=0.004) as reader:
        assert [d.job for d in reader.replies(lambda: True)] == list(range(6))
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert min(gaps) >= 0.004, gaps
    # an audit that stops (a full pass is due) ends the reader in its pause
    asked.clear()
    with SwitchReader([(0, dump), (1, dump)], ChangeLedger(), breath=30) as reader:
        assert next(reader.replies(lambda: True)).job == 0
    reader._thread.join(2)
    assert not reader._thread.is_alive() and len(asked) == 1


def test_a_dump_is_compared_without_what_changed_after_it() -> None:
    """The comparisons themselves (``audit.repair_groups``/``repair_flows``/
    ``stale_groups``): a key a later change touched is neither repaired nor
    deleted; everything else is brought to the desired state."""
    fake, _ = programmed()
    state = installed(fake)
    gids = sorted(state.groups)
    g_missing, g_changed, g_touched = gids[0], gids[1], gids[2]
    stray = own.GROUP_ID_MIN + own.GROUP_ID_SPACE - 7
    dumped = {g: b for g, b in state.groups.items() if g not in (g_missing, g_touched)}
    dumped[g_changed] = state.groups[gids[3]][:4] + state.groups[g_changed][4:8] \
        + state.groups[gids[3]][8:]  # another group's buckets under this id
    dumped[stray] = state.groups[gids[3]][:4] + stray.to_bytes(4, "big") + state.groups[gids[3]][8:]
    repair = audit.repair_groups(state.groups, dumped, frozenset({g_touched}))
    assert [packed.group_id(g) for g in repair.now.add_groups] == [g_missing]
    assert [packed.group_id(g) for g in repair.now.mod_groups] == [g_changed]
    assert repair.stale == (stray,) and repair.foreign == 0
    assert not (repair.now.del_groups or repair.now.add_flows)
    # stale at the read, deleted at the end unless desired or touched since
    assert audit.stale_groups(repair.stale, state.groups, frozenset()) == (stray,)
    assert audit.stale_groups(repair.stale, state.groups, frozenset({stray})) == ()
    assert audit.stale_groups(repair.stale, {**state.groups, stray: b""}, frozenset()) == ()

    fids = list(state.flows)
    gone, touched = fids[0], fids[1]
    have = {f: b for f, b in state.flows.items() if f not in (gone, touched)}
    changes = audit.repair_flows(state.flows, have, frozenset({touched}))
    assert [packed.flow_id(f) for f in changes.add_flows] == [gone]
    assert not (changes.del_flows or changes.mod_flows or changes.add_groups)
    # a flow the desired state no longer has is deleted, unless a change touched it
    wanted = {f: b for f, b in state.flows.items() if f != gone}
    assert [packed.flow_id(f) for f in
            audit.repair_flows(wanted, state.flows, frozenset()).del_flows] == [gone]
    assert audit.repair_flows(wanted, state.flows, frozenset({gone})).empty
