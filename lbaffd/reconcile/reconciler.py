"""reconcile(): make the switch match the desired state, touching only the difference.

The switch is the source of truth for what is installed (as in ovn-controller's
ofctrl): every pass reads lbaffd's flows (by cookie magic) and groups (by id
range) back from ovs-vswitchd, diffs, and sends the changes as one atomic,
ordered bundle whose commit returns once a barrier sent after it is
answered (``bundle.Bundle``).  After a daemon restart the diff is
empty, so nothing is removed or re-added and learned affinity entries live on.

This module holds the passes (``Reconciler``: full, incremental, audit of
unchanged inputs); the bundle's message order and ``cleanup`` are
``sending``'s, what a pass reports ``result``'s, and reading the switch back
and bringing its report to the desired state's form is ``readback``'s.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import structlog

from lbaffd.compile import isolation
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.state import (
    Compiled,
    CompiledGroup,
    DesiredState,
    VipCache,
    collect,
    compile_stream,
)
from lbaffd.model import ownership as own
from lbaffd.model.distribution import BALANCED
from lbaffd.model.loadbalancer import MAX_OPENFLOW_IDLE_TIMEOUT, LoadBalancer, ParseIssue
from lbaffd.model.plan import plan_pass
from lbaffd.model.topology import Topology
from lbaffd.openflow import messages, packed
from lbaffd.openflow.flowspec import FlowSpec
from lbaffd.openflow.packed import FlowBody, GroupBody, PackedState
from lbaffd.openflow.replies import OpenFlowError
from lbaffd.reconcile import audit, readback
from lbaffd.reconcile.diff import ChangeSet, DiffStream
from lbaffd.reconcile.incremental import DesiredIndex
from lbaffd.reconcile.prefetch import Prefetch
from lbaffd.reconcile.result import ReconcileResult
from lbaffd.reconcile.sending import BundleWriter, Channel, keyed_messages, to_messages

log = structlog.get_logger("lbaffd.reconcile")


def _replay(items: list[Compiled], desired: DesiredState
            ) -> Generator[Compiled, None, DesiredState]:
    """A compile stream again, from what ``collect`` took of it."""
    items.reverse()
    while items:
        yield items.pop()
    return desired


MAX_REFUSALS_PER_PASS = 8  # VIPs left out, one bundle each, before a pass gives up


class RefusalsExhausted(Exception):
    """The switch refused more VIPs in one pass than a pass retries for
    (those found so far stay out: the next pass goes on from there)."""


class Reconciler:
    """Holds what survives between passes: the VIP -> group id assignment and
    what this process last installed.

    An *audit* pass reads lbaffd's flows and groups back from the switch (the
    switch is the source of truth).  Between audits, a pass triggered by an SB
    change diffs against what the previous successful pass left on the switch:
    any change by someone else is reported by the switch (flow monitor,
    FLOW_REMOVED, REQUESTFORWARD) and makes the next pass an audit, as do a
    new connection, a failed pass and the audit timer."""

    def __init__(self, pipeline: Pipeline, max_idle: int = MAX_OPENFLOW_IDLE_TIMEOUT,
                 distribution: str = BALANCED) -> None:
        self._pipeline = pipeline
        self._max_idle = max_idle
        self._distribution = distribution
        self.min_slots = 1  # set from the switch's OVS version (see distribution)
        self._decoded = readback.DecodeCache()
        self._compiled = VipCache()
        self._group_ids: dict[own.OwnerKey, int] = {}
        self._installed: PackedState | None = None  # valid only after a clean pass
        self._channel: Channel | None = None
        self._index: DesiredIndex | None = None  # for incremental passes, like _installed
        # VIPs the switch refused, out while their row is unchanged (``isolation``)
        self.exclusions = isolation.Exclusions()
        # the bundle being sent, what each of its messages is for, and the
        # desired state it carries (once compiled): to blame a refusal
        self._attempt: tuple[BundleWriter, isolation.BundleLedger, DesiredState | None] | None = (
            None)
        self.on_delete: Callable[[tuple[FlowSpec, ...]], None] | None = None
        # what each change touched, for an audit whose reads it may postdate
        self.ledger = audit.ChangeLedger()
        self._prefetch: Prefetch | None = None

    def prefetch(self, channel: Channel) -> None:
        """Ask the switch for its dumps now; the next full pass on this
        channel reads them instead of asking (``prefetch``)."""
        self._prefetch = Prefetch(channel)

    def _announce(self, deleted: tuple[FlowBody, ...]) -> None:
        if deleted and self.on_delete is not None:
            self.on_delete(tuple(map(packed.unpack_flow, deleted)))

    def _send(self, channel: Channel, changes: ChangeSet) -> None:
        """One atomic bundle; the switch will report each flow we delete
        (send_flow_rem): say which ones first, so they are not taken for
        someone else's doing."""
        self._announce(changes.del_flows)
        channel.bundle(to_messages(changes))

    def _send_keyed(self, channel: Channel, changes: ChangeSet, desired: DesiredState) -> None:
        """``_send``, with a ledger of what each message is for (``_blame``)."""
        self._announce(changes.del_flows)
        ledger = isolation.BundleLedger()
        with channel.open_bundle() as bundle:
            self._attempt = (bundle, ledger, desired)
            for key, msg in keyed_messages(changes):
                ledger.keys.append(key)
                bundle.add(msg)
        self._attempt = None

    @property
    def group_ids(self) -> Mapping[own.OwnerKey, int]:
        return dict(self._group_ids)

    def memory(self) -> dict[str, int]:
        """What the reconciler holds, counted (``memory/show``): compiled VIP
        parts, converted switch entries, the desired flows and groups."""
        index = self._index
        return {"compiled_parts": self._compiled.held(), "decoded_flows": self._decoded.held(),
                "desired_flows": 0 if index is None else len(index.flows),
                "desired_groups": 0 if index is None else len(index.groups)}

    def reconcile(self, channel: Channel, lbs: tuple[LoadBalancer, ...],
                  topo: Topology, audit: bool = True) -> ReconcileResult:
        """A full pass.  When the switch refuses one message of the bundle
        (nothing of it applies), the VIP it was for is left out and the pass
        runs again, at most ``MAX_REFUSALS_PER_PASS`` times; a refusal that no
        VIP can be blamed for fails the pass as before."""
        rows = {lb.uuid: lb for lb in lbs}
        for _ in range(MAX_REFUSALS_PER_PASS):
            kept, excluded = self.exclusions.apply(lbs)
            try:
                result = self._reconcile(channel, kept, topo, audit)
            except OpenFlowError as exc:
                if not self._blame(exc, rows):
                    raise
                continue
            if not excluded:
                return result
            desired = dataclasses.replace(result.desired,
                                          issues=result.desired.issues + excluded)
            if self._index is not None:  # incremental passes go on reporting them
                self._index.issues = desired.issues
            return dataclasses.replace(result, desired=desired)
        raise RefusalsExhausted(f"more than {MAX_REFUSALS_PER_PASS} VIPs refused in one pass")

    def _blame(self, exc: OpenFlowError, rows: Mapping[str, LoadBalancer]) -> bool:
        """Exclude the VIP(s) the failing message of the last bundle was for."""
        attempt = self._attempt
        if attempt is None:
            return False
        bundle, ledger, desired = attempt
        self._attempt = None
        at = bundle.position(exc.xid)
        key = ledger.at(at) if at is not None else None
        if key is None or desired is None:
            return False
        if key <= 0xFFFFFFFF and not own.is_vip_group(key):
            key = isolation.vip_group_of_part(key, desired.state.groups) or key
        users: dict[int, tuple[own.OwnerKey, ...]] = {}
        if key > 0xFFFFFFFF and desired.owners.get(key, ("",))[0] != "vip":
            for fid, owners in desired.shared_refs.items():
                body = desired.state.flows.get(fid)
                if body is not None and packed.cookie(body) == key:
                    users[key] = (*users.get(key, ()), *owners)
        blamed = [o for o in isolation.blamed_owners(key, desired.owners, desired.vips, users)
                  if o[1] in rows and not self.exclusions.known(o)]
        for owner in blamed:
            log.warning("vip_refused_by_switch", lb=rows[owner[1]].name or owner[1],
                        vip=owner[2], error=str(exc))
            self.exclusions.add(owner, rows[owner[1]], str(exc))
        return bool(blamed)

    def _reconcile(self, channel: Channel, lbs: tuple[LoadBalancer, ...],
                   topo: Topology, audit: bool) -> ReconcileResult:
        start = time.monotonic()
        audit = audit or self._installed is None or channel is not self._channel
        self._channel = channel
        prefetched, self._prefetch = self._prefetch, None
        if prefetched is not None and prefetched.channel is not channel:
            prefetched = None
        # with the switch's dumps asked for at start, only the flows are read
        # now; the groups once compiled (``_compile_then_read_groups``)
        early_flows = prefetched.flows() if prefetched is not None else None
        installed: PackedState | None = None
        if early_flows is not None:
            # converted only: decoded after the compile, where they differ
            # from it (``_compile_then_read_groups``)
            flow_bodies = self._decoded.flows(readback.drained(early_flows), defer=True)
            del early_flows
            foreign = 0
            if not flow_bodies and prefetched is not None:
                # a switch without lbaffd's flows (a host's first start, or
                # after ovs-vswitchd lost them): everything is to be sent, so
                # read the (small) group dump now and stream the bundle while
                # compiling, as any full pass does
                installed, foreign_groups = self._read_groups(prefetched, channel, [])
                foreign += foreign_groups
            del flow_bodies  # (the cache holds them until ``settle``)
        elif audit or self._installed is None:
            prefetched = None
            installed, foreign = readback.read_installed(channel, self._decoded)
        else:
            installed, foreign = self._installed, 0
        t_read = time.monotonic()
        self._installed = None  # unknown until this pass has gone through
        self._index = None
        previous = dict(self._group_ids)
        if audit:
            by_cookie = self._decoded.group_ids()
            for candidate in (own.vip_owner(lb.uuid, v.key) for lb in lbs for v in lb.vips):
                gid = by_cookie.get(own.owner_cookie(candidate))
                if gid is not None:
                    previous[candidate] = gid  # the switch wins over memory
        incumbents = frozenset(previous)  # realized already: they keep contested VIPs
        planned = plan_pass(lbs, topo, incumbents)  # once: group ids and compile use it
        self._group_ids = own.allocate_group_ids(planned.owners, previous)
        # Diffed and sent while it compiles: ovs-vswitchd checks the bundle's
        # adds on its own core meanwhile (half of a cold pass at 1000s of LBs).
        canonical = readback.GroupCanonicalizer()
        ledger = isolation.BundleLedger()  # which owner each message is for
        compiled = compile_stream(lbs, topo, self._group_ids, self._pipeline, self._max_idle,
                                  self._distribution, self.min_slots, self._compiled,
                                  incumbents, planned)
        if installed is None:
            assert prefetched is not None
            compiled, installed, foreign_groups = self._compile_then_read_groups(
                compiled, prefetched, channel)
            foreign += foreign_groups
        stream = DiffStream(installed, canonical)
        # one bundle, committed when the block ends, discarded if it raises
        with channel.open_bundle() as bundle:
            self._attempt = (bundle, ledger, None)
            while True:  # sent while the rest compiles
                try:
                    item = next(compiled)
                except StopIteration as done:
                    desired: DesiredState = done.value
                    break
                if isinstance(item, CompiledGroup):
                    change = stream.group(item.group_id, item.body)
                    if change is not None:
                        ledger.group(item.group_id)
                        bundle.add(packed.group_add_message(item.body) if change == "add"
                                   else packed.group_modify_message(item.body))
                else:
                    change = stream.flow(item.flow_id, item.body)
                    if change is not None:
                        ledger.flow(packed.cookie(item.body))
                        bundle.add(packed.add_message(item.body) if change == "add"
                                   else packed.modify_message(item.body))
            changes = stream.finish(desired.state)
            foreign += canonical.foreign
            self._announce(changes.del_flows)
            for f in changes.del_flows:  # flows first: their groups go last
                ledger.flow(packed.cookie(f))
                bundle.add(packed.delete_message(f))
            for gid in changes.del_groups:
                ledger.group(gid)
                bundle.add(messages.group_delete(gid))
            self._attempt = (bundle, ledger, desired)
            t_compiled = time.monotonic()
        t_committed = time.monotonic()  # the commit returned: its barrier is answered
        self._attempt = None  # (its ledger is ~1 MB after a cold pass)
        if audit:
            self._decoded.adopt(desired.state.flows)
        # the index takes the compiled dicts (no copy of 80k entries at 5000
        # LBs) and they are what is installed now
        self._index = DesiredIndex(desired, self._group_ids, adopt=True)
        desired = self._index.desired()
        self._installed = desired.state
        return ReconcileResult(
            changes=changes, desired=desired, installed_flows=len(installed.flows),
            installed_groups=len(installed.groups), seconds=time.monotonic() - start,
            foreign=foreign, audited=audit,
            phases=(("read", t_read - start), ("compile", t_compiled - t_read),
                    ("commit", t_committed - t_compiled)),
        )

    def _compile_then_read_groups(
            self, compiled: Generator[Compiled, None, DesiredState], prefetched: Prefetch,
            channel: Channel
    ) -> tuple[Generator[Compiled, None, DesiredState], PackedState, int]:
        """Compile everything while ovs-vswitchd still builds its group dump
        (~5 s of its CPU at 5000 VIPs), then settle the flows read already
        (``DecodeCache.settle``) and read the groups: the compiled
        items replayed in order (the bundle's order is the compiler's), the
        installed state, and how many of its flows and groups are foreign.  Only the
        first pass after a start has a prefetched dump, and it takes this way
        only when the switch has lbaffd's flows (a restart): it usually sends
        nothing then, so streaming the bundle while compiling gains nothing."""
        items, desired = collect(compiled)
        flows = self._decoded.settle(desired.state.flows)
        installed, foreign = self._read_groups(prefetched, channel, flows, desired.state.groups)
        return _replay(items, desired), installed, foreign + sum(map(packed.is_foreign, flows))

    def _read_groups(self, prefetched: Prefetch, channel: Channel, flows: list[FlowBody],
                     desired: Mapping[int, GroupBody] | None = None) -> tuple[PackedState, int]:
        """The installed state from the flows read already and the prefetched
        group dump (dumped again if that failed), and how many of its groups
        are foreign.  ``desired``: the groups compiled, whose bytes spare
        decoding the entries equal to them."""
        group_parts = prefetched.groups()
        if group_parts is None:
            group_parts = channel.dump_group_desc(own.is_lbaffd_group)
        groups = self._decoded.groups(readback.drained(group_parts), desired=desired)
        return PackedState.build(flows, groups), sum(map(packed.is_foreign, groups))

    def audit_unchanged(self, channel: Channel, between: Callable[[], bool] | None = None,
                        wake: threading.Event | None = None,
                        reader: Channel | None = None) -> ReconcileResult | None:
        """An audit when the inputs have not changed since the last clean pass:
        read the switch back and repair it towards the state already known,
        without recompiling (None: no such state, do a full ``reconcile``).

        The switch is read on another thread (``audit.SwitchReader``: the
        groups, then the flows in ``AUDIT_CHUNKS`` slices of the cookie
        space) and ``between`` runs whenever ``wake`` is set (an input
        changed) while the worker waits for a slice, and between decodes, so
        SB changes are applied while a large audit is under way instead of
        waiting for it; when it returns False the audit stops there (a full
        pass is due anyway).  What a change touched after a slice was read
        is left out of that slice's comparison (the rule: ``audit``).

        ``reader``: a second connection to the same switch for the dumps.
        ovs-vswitchd answers one connection's messages in order and stops
        reading from a connection while 100 replies to it are queued
        (``OFCONN_REPLY_MAX``, ofproto/connmgr.c): on one connection a
        change's bundle waited behind the megabytes of an audit's group
        dump (1.3 s seen at N=1000 under load)."""
        index = self._index
        if index is None or channel is not self._channel:
            return None
        start = time.monotonic()
        stopped = False

        def tick() -> bool:
            nonlocal stopped
            if between is not None and not stopped and self._index is index:
                stopped = not between()
            return not stopped and self._index is index

        source = reader or channel

        def flows_of(chunk: int) -> Callable[[], list[Any]]:
            cookie = own.MANAGED_COOKIE | (chunk << own.CHUNK_SHIFT)
            return lambda: source.dump_flow_desc(cookie, own.MAGIC_MASK | own.CHUNK_MASK)

        jobs = [(audit.GROUPS, lambda: source.dump_group_desc(own.is_lbaffd_group)),
                *((c, flows_of(c)) for c in range(own.AUDIT_CHUNKS))]
        total = ChangeSet()
        foreign = n_flows = 0
        stale_groups: tuple[int, ...] = ()
        group_mark = 0
        have_groups: dict[int, GroupBody] = {}
        ledger = self.ledger
        ledger.listen()
        try:
            with audit.SwitchReader(jobs, ledger, wake) as dumps:
                for dump in dumps.replies(tick):
                    if not tick():
                        return None  # a full pass follows and reads everything again
                    skip_flows, skip_groups = ledger.since(dump.mark)
                    if dump.job == audit.GROUPS:
                        dumped = self._decoded.groups(dump.parts, tick, index.groups)
                        if not tick():
                            return None
                        have_groups = {packed.group_id(g): g for g in dumped}
                        foreign += sum(map(packed.is_foreign, dumped))
                        groups = audit.repair_groups(index.groups, have_groups, skip_groups)
                        foreign += groups.foreign
                        stale_groups, group_mark = groups.stale, dump.mark
                        total = self._apply(channel, index, groups.now, total)
                        continue
                    flows = self._decoded.flows(readback.drained(dump.parts), dump.job, tick,
                                                desired=index.flows)
                    if not tick():
                        return None
                    n_flows += len(flows)
                    foreign += sum(map(packed.is_foreign, flows))
                    have = PackedState.build(flows, []).flows
                    changes = audit.repair_flows(index.chunks[dump.job], have, skip_flows)
                    total = self._apply(channel, index, changes, total)
                    self._decoded.adopt_flows(index.flows, dump.job)
                if stopped or self._index is not index:
                    return None
                _, touched = ledger.since(group_mark)
                gone = audit.stale_groups(stale_groups, index.groups, touched)
                total = self._apply(channel, index, ChangeSet(del_groups=gone), total)
        finally:
            ledger.stop()
        desired = index.desired()
        return ReconcileResult(
            changes=total, desired=desired, installed_flows=n_flows,
            installed_groups=len(have_groups), seconds=time.monotonic() - start,
            foreign=foreign, audited=True, repair=True,
        )

    def _apply(self, channel: Channel, index: DesiredIndex, changes: ChangeSet,
               total: ChangeSet) -> ChangeSet:
        if changes.empty:
            return total
        self._index = self._installed = None  # unknown if the bundle fails
        self._send(channel, changes)  # (its commit returns after a barrier)
        self.ledger.record(changes)
        self._index = index
        self._installed = PackedState(index.flows, index.groups)
        return total + changes

    def reconcile_changed(self, channel: Channel, changed: Mapping[str, LoadBalancer | None],
                          topo: Topology, old_topo: Topology | None = None,
                          ports: bool = False) -> ReconcileResult | None:
        """Apply a change of just these LBs (uuid -> new LB, None: gone) in
        O(change); None when it cannot be done incrementally (no clean last
        pass, a new connection, or the change depends on other LBs): the
        caller then runs ``reconcile``.  With ``old_topo`` the topology moved
        on too (see ``DesiredIndex.apply``); ``ports``: the local ports changed."""
        index = self._index
        if index is None or self._installed is None or channel is not self._channel:
            return None
        start = time.monotonic()
        installed = self._installed
        # VIPs the switch refused stay out while their row is unchanged; a
        # changed row's are tried again (their old reports go)
        kept: dict[str, LoadBalancer | None] = {}
        still: list[ParseIssue] = []
        for uuid, lb in changed.items():
            kept[uuid], excluded = self.exclusions.one(lb)
            still += excluded
        names = {lb.name or lb.uuid for lb in changed.values() if lb is not None}
        self._index = self._installed = None  # unknown until this pass has gone through
        changes = index.apply(kept, topo, self._pipeline, self._compiled, self._max_idle,
                              self._distribution, self.min_slots, old_topo, ports)
        if changes is not None:
            index.issues = (*(i for i in index.issues
                              if not (i.reason in isolation.INSTALL_REASONS and i.lb in names)),
                            *still)
        if changes is None:  # declined before touching anything
            self._installed = installed
            return None
        t_compiled = t_committed = time.monotonic()
        desired = index.desired()  # (a tuple of every plan: made once)
        if not changes.empty:
            try:
                self._send_keyed(channel, changes, desired)
            except OpenFlowError as exc:
                if self._blame(exc, {u: lb for u, lb in changed.items() if lb is not None}):
                    return None  # a full pass runs now, without the refused VIP
                raise
            t_committed = time.monotonic()  # (after the commit's barrier)
            self.ledger.record(changes)
        self._index = index
        self._group_ids = index.group_ids
        self._installed = desired.state  # the index's dicts: in sync by construction
        return ReconcileResult(
            changes=changes, desired=desired, installed_flows=len(desired.state.flows),
            installed_groups=len(desired.state.groups), seconds=time.monotonic() - start,
            foreign=0, audited=False,
            # (named apart from a full pass's: ``compile_ms`` says a full pass ran)
            phases=(("apply", t_compiled - start), ("send", t_committed - t_compiled)),
            replaced=index.replaced, came=index.came,
        )
