"""An audit that never holds a change back.

An audit reads lbaffd's groups and flows back from the switch and repairs
what differs from the desired state.  At 1000s of LBs the group dump alone
takes the switch and the connection hundreds of milliseconds; when the
worker waited for it, every SB change that arrived meanwhile waited too
(p99 576 ms for a local port during audits every second).  So the dumps run
on their own thread (``SwitchReader``: the group-desc dump, then the flow
dump in ``AUDIT_CHUNKS`` cookie slices, a few slices ahead of the worker),
and the worker applies input changes while it waits for each one and between
the decodes.

The rule that keeps this correct.  A dump shows the switch as it was when
ovs-vswitchd processed the request; OVS handles one connection's messages in
order and answers a flow-desc or group-desc request from one walk of its
tables (``handle_flow_stats_request``/``handle_group_desc_stats_request`` in
ofproto/ofproto.c, sent with ``ofconn_send_replies``), so a change whose
barrier was answered before the request was sent is in the dump, and a later
one may or may not be.  ``ChangeLedger`` numbers the worker's changes in the
order their barriers return and remembers which flows and groups each
touched; each dump carries the number of the last change that was complete
when its request went out.  When the dump is compared, every flow and group a
later change touched is left out on both sides: the switch holds what that
change sent (its barrier was answered: a bundle applies whole or not at all)
and the dump may predate it, so a "difference" there is the dump's age, not
damage.  Everything else is compared with the desired state as it is now,
which for an untouched key is the desired state at the time of the read.
Without the rule an audit would send a group add for a group a change had
just added (OFPGMFC_GROUP_EXISTS: the bundle fails, the next pass is a full
one), delete a flow a change had just deleted (the switch reports no
FLOW_REMOVED for it, so the daemon's ledger of expected deletions is left
with an entry that can hide a later foreign deletion of the same flow), or
re-add flows a change had just added.  Someone else's edit of a left-out
key is not lost: the switch reports it (flow monitor, FLOW_REMOVED,
REQUESTFORWARD) and the next pass is an audit.

It is ovn-controller's own notion of "installed" (``controller/ofctrl.c``:
a change counts as installed once the barrier sent after it is answered,
its ``flow_updates`` queue), applied to a read of the switch that is already
old by the time it is compared.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lbaffd.openflow.packed import FlowBody, FlowId, GroupBody, PackedState, flow_id, group_id
from lbaffd.reconcile.diff import ChangeSet, diff
from lbaffd.reconcile.readback import GroupCanonicalizer

_K = TypeVar("_K")
_V = TypeVar("_V")

AHEAD = 4  # dumps read ahead of the worker (memory: 4 slices of the flows)
POLL = 0.05  # seconds between the worker's looks at its inputs while it waits
# seconds between a dump's last reply and the next request.  ovs-vswitchd
# reads up to 50 messages of one connection before it turns to the next
# (``ofconn_run``, ofproto/connmgr.c): a request that is already there when
# it has sent a reply is served at once, so back-to-back slices (~9 ms of
# its main thread each at 50k flows) kept it on the audits' connection and
# a change's bundle on the other one waited 33-52 ms for its reply (realistic
# SB, N=5000, audits every 1 s: the commit read by ovs-vswitchd only after
# 4-5 slices, seen with ``perf trace``).  A pause longer than its turnaround
# (~0.2 ms) makes it find that connection empty and serve the others.
BREATH = 0.001


@dataclass(slots=True)
class ChangeLedger:
    """The flows and groups each of the worker's changes touched, numbered in
    the order their barriers were answered.  Remembered only while an audit
    listens (``listen``/``stop``): between audits it keeps only the count."""

    done: int = 0  # changes whose barrier has been answered
    _log: list[tuple[int, frozenset[FlowId], frozenset[int]]] = field(default_factory=list)
    _listening: int = 0

    def record(self, changes: ChangeSet) -> None:
        """A change is on the switch (call after its barrier)."""
        if changes.empty:
            return
        self.done += 1
        if self._listening:
            flows = frozenset(flow_id(f) for fs in (changes.add_flows, changes.mod_flows,
                                                    changes.del_flows) for f in fs)
            groups = frozenset((*map(group_id, changes.add_groups),
                                *map(group_id, changes.mod_groups), *changes.del_groups))
            self._log.append((self.done, flows, groups))

    def listen(self) -> None:
        self._listening += 1

    def stop(self) -> None:
        self._listening = max(0, self._listening - 1)
        if not self._listening:
            self._log.clear()

    def since(self, mark: int) -> tuple[frozenset[FlowId], frozenset[int]]:
        """What changes after ``mark`` (a ``done`` read earlier) touched."""
        flows: set[FlowId] = set()
        groups: set[int] = set()
        for n, f, g in self._log:
            if n > mark:
                flows |= f
                groups |= g
        return frozenset(flows), frozenset(groups)


@dataclass(frozen=True, slots=True)
class Dump:
    """One dump's reply: ``job`` (-1: the groups, else a flow slice), its
    parts, and ``mark``: the last change complete when it was asked for."""

    job: int
    parts: list[Any]
    mark: int


GROUPS = -1


class SwitchReader:
    """Runs the dumps (``jobs``: job number -> the dump call) in order on its
    own thread; the worker takes each reply with ``next``, applying its
    inputs (``between``) while it waits."""

    def __init__(self, jobs: Sequence[tuple[int, Callable[[], list[Any]]]],
                 ledger: ChangeLedger, wake: threading.Event | None = None,
                 breath: float = BREATH) -> None:
        self._jobs = jobs
        self._breath = breath
        self._ledger = ledger
        self._wake = wake or threading.Event()
        self._out: queue.Queue[Dump | BaseException] = queue.Queue(maxsize=AHEAD)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lbaffd-audit-read",
                                        daemon=True)

    def __enter__(self) -> SwitchReader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # not joined: a dump under way ends on its own (its reply is dropped)
        # and must not hold the worker up
        self._cancel.set()

    def _put(self, item: Dump | BaseException) -> bool:
        while not self._cancel.is_set():
            try:
                self._out.put(item, timeout=POLL)
            except queue.Full:
                continue
            self._wake.set()
            return True
        return False

    def _run(self) -> None:
        for n, (job, dump) in enumerate(self._jobs):
            if n:  # a pause before each request but the first (see BREATH)
                self._cancel.wait(self._breath)
            if self._cancel.is_set():
                return
            mark = self._ledger.done  # before the request goes out (see the module doc)
            try:
                parts = dump()
            except BaseException as exc:  # handed to the worker, which raises it
                self._put(exc)
                return
            if not self._put(Dump(job, parts, mark)):
                return

    def replies(self, between: Callable[[], bool]) -> Iterator[Dump]:
        """Each dump in order; ``between`` (apply pending inputs; False: stop)
        runs whenever the worker is woken while it waits.  Ends early when
        ``between`` says stop."""
        for _ in self._jobs:
            while True:
                try:
                    item = self._out.get_nowait()
                    break
                except queue.Empty:
                    pass
                self._wake.wait(POLL)
                self._wake.clear()
                if not between():
                    return
            if isinstance(item, BaseException):
                raise item
            yield item


# ------------------------------------------------------------ comparisons
# What one dump asks to repair, by the rule of the module doc: whatever a
# change touched after the dump was asked for is left out on both sides.


def without(m: Mapping[_K, _V], keys: frozenset[_K]) -> Mapping[_K, _V]:
    """``m`` without ``keys`` (``m`` itself when there are none to leave out)."""
    if not keys:
        return m
    return {k: v for k, v in m.items() if k not in keys}


@dataclass(frozen=True, slots=True)
class GroupRepair:
    """The groups' dump compared: adds and modifications to send now (flows
    of later slices may name them); ``stale`` groups, deleted only at the
    audit's end (a flow still naming one is deleted first, in its slice);
    how many ``foreign`` entries (actions lbaffd never writes) were met."""

    now: ChangeSet
    stale: tuple[int, ...]
    foreign: int


def repair_groups(desired: Mapping[int, GroupBody], dumped: Mapping[int, GroupBody],
                  skip: frozenset[int]) -> GroupRepair:
    canonical = GroupCanonicalizer()
    found = diff(PackedState({}, without(desired, skip)),
                 PackedState({}, without(dumped, skip)), canonical)
    return GroupRepair(ChangeSet(add_groups=found.add_groups, mod_groups=found.mod_groups),
                       found.del_groups, canonical.foreign)


def repair_flows(desired: Mapping[FlowId, FlowBody], dumped: Mapping[FlowId, FlowBody],
                 skip: frozenset[FlowId]) -> ChangeSet:
    """One slice's dump compared with the same slice of the desired flows."""
    return diff(PackedState(without(desired, skip), {}), PackedState(without(dumped, skip), {}))


def stale_groups(stale: Sequence[int], desired: Mapping[int, GroupBody],
                 touched: frozenset[int]) -> tuple[int, ...]:
    """The groups stale when read that are still to delete at the audit's
    end: not desired now and not touched by a change since (a group a change
    added meanwhile is desired)."""
    return tuple(g for g in stale if g not in desired and g not in touched)
