"""reconcile(): make the switch match the desired state, touching only the difference.

The switch is the source of truth for what is installed (as in ovn-controller's
ofctrl): every pass reads lbaffd's flows (by cookie magic) and groups (by id
range) back from ovs-vswitchd, diffs, and sends the changes as one atomic,
ordered bundle followed by a barrier.  After a daemon restart the diff is
empty, so nothing is removed or re-added and learned affinity entries live on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from lbaffd.compile import isolation
from lbaffd.compile.layout import REG_VIP_ID, Pipeline
from lbaffd.compile.state import CompiledGroup, DesiredState, VipCache, compile_stream
from lbaffd.model import ownership as own
from lbaffd.model.distribution import BALANCED
from lbaffd.model.loadbalancer import MAX_OPENFLOW_IDLE_TIMEOUT, LoadBalancer, ParseIssue
from lbaffd.model.plan import plan_pass
from lbaffd.model.topology import Topology
from lbaffd.openflow import codec, fastdecode, packed, wire
from lbaffd.openflow.channel import OpenFlowError
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import FlowSpec, Group, SetField
from lbaffd.openflow.groupdesc import iter_group_entries
from lbaffd.openflow.packed import FlowBody, FlowId, GroupBody, PackedState
from lbaffd.reconcile.diff import ChangeSet, DiffStream, diff
from lbaffd.reconcile.incremental import DesiredIndex

log = structlog.get_logger("lbaffd.reconcile")


class BundleWriter(Protocol):
    """An atomic bundle written while it is built (``channel.Bundle``); as a
    context manager it commits when its block ends and discards on an error."""

    count: int

    def add(self, msg: Any) -> None: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...
    def position(self, xid: int) -> int | None: ...
    def __enter__(self) -> BundleWriter: ...
    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None: ...


class Channel(Protocol):
    """What the reconciler needs from the OpenFlow channel."""

    def dump_flow_desc(self, cookie: int, cookie_mask: int) -> list[Any]: ...
    def dump_group_desc(self) -> list[Any]: ...
    def bundle(self, msgs: list[Any]) -> None: ...
    def open_bundle(self) -> BundleWriter: ...
    def barrier(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    changes: ChangeSet
    desired: DesiredState
    installed_flows: int
    installed_groups: int
    seconds: float
    foreign: int  # lbaffd-cookie flows whose actions lbaffd cannot decode (repaired)
    audited: bool = True  # installed state read back from the switch this pass
    # where a full pass spent its time, in seconds: reading the switch back,
    # compiling (and streaming the bundle), committing it, the barrier
    phases: tuple[tuple[str, float], ...] = ()
    # an audit of unchanged inputs (audit_unchanged): every change it sent put
    # back what someone else removed or changed on the switch
    repair: bool = False


def _group_ref(spec: FlowSpec) -> int:
    """The lbaffd group a flow dispatches to or names as its VIP id (0: none)."""
    for a in spec.actions:
        if isinstance(a, Group) and own.is_vip_group(a.group_id):
            return a.group_id
        if (isinstance(a, SetField) and a.field == REG_VIP_ID and isinstance(a.value, int)
                and own.is_vip_group(a.value)):
            return a.value
    return 0


def _digest(entry: bytes) -> bytes:
    return hashlib.blake2b(entry, digest_size=16).digest()


def _drained(parts: list[Any]) -> Iterator[Any]:
    """``parts`` in order, each let go of once taken: the replies of a dump
    of 80k flows are ~20 MB, and decoding them all takes a while."""
    parts.reverse()
    while parts:
        yield parts.pop()


class DecodeCache:
    """Installed flows and groups by their wire bytes (stats excluded), in the
    desired state's form (``packed``: decoded, then encoded as lbaffd would).

    An unchanged flow comes back from OVS byte-identical on every dump, so each
    distinct entry is converted once; decoding dominates an audit otherwise
    (~0.2 ms per flow with os-ken; ``fastdecode`` decodes lbaffd's own flows
    straight from the bytes and leaves only foreign ones to os-ken).  Holds
    only what the last dump contained, and which lbaffd group each flow
    points at (to recover the VIP -> group assignment after a restart).
    Flow entries are known by a 128-bit digest of their bytes: the bytes
    themselves (~230 each) were ~18 MB at 80k flows for as long as the daemon
    ran after its first audit.
    """

    def __init__(self) -> None:
        self._flows: dict[int | None, dict[bytes, FlowBody]] = {}
        self._refs: dict[bytes, int] = {}  # entry digest -> group id, for flows naming one
        self._groups: dict[bytes, GroupBody] = {}

    def flows(self, parts: Iterable[Any], chunk: int | None = None,
              tick: Callable[[], object] | None = None) -> list[FlowBody]:
        """Convert a dump of all lbaffd flows (``chunk`` None) or of one cookie
        chunk; each kind of dump keeps its own cache.  ``tick`` runs every
        ``TICK_DECODES`` decodes (decoding is the slow part of a first audit)."""
        if chunk is None:
            self._flows = {k: v for k, v in self._flows.items() if k is None}
        else:
            self._flows.pop(None, None)
        known = self._flows.get(chunk, {})
        refs = self._refs
        seen: dict[bytes, FlowBody] = {}
        decoded = 0
        for part in parts:
            for offset, _, entry in iter_entries(part.raw):
                identity = _digest(entry)
                body = known.get(identity) or seen.get(identity)
                if body is None:
                    spec = fastdecode.decode_flow(part.raw, offset)
                    body = packed.installed_flow(spec)
                    gid = _group_ref(spec)
                    if gid and chunk is None:  # (only a full dump recovers group ids)
                        refs[identity] = gid
                    decoded += 1
                    if tick is not None and decoded % TICK_DECODES == 0:
                        tick()
                seen[identity] = body
        self._flows[chunk] = seen
        if chunk is None:
            self._refs = {k: v for k, v in refs.items() if k in seen}
        return list(seen.values())

    def group_ids(self) -> dict[int, int]:
        """cookie -> lbaffd group id, from the last dump of all flows."""
        found: dict[int, int] = {}
        for identity, body in self._flows.get(None, {}).items():
            gid = self._refs.get(identity)
            if gid:
                found.setdefault(packed.cookie(body), gid)
        return found

    def adopt(self, flows: Mapping[FlowId, FlowBody], groups: Mapping[int, GroupBody]) -> None:
        """Where a converted entry equals the desired one, keep the desired
        bytes instead: the cache then costs its keys, not a second copy of
        the state, and the next audit's diff finds the very same objects
        (``is``) without comparing them."""
        for cached in self._flows.values():
            for identity, body in cached.items():
                want = flows.get(packed.flow_id(body))
                if want is not None and want is not body and want == body:
                    cached[identity] = want
        for identity, g in self._groups.items():
            want_g = groups.get(packed.group_id(g))
            if want_g is not None and want_g is not g and want_g == g:
                self._groups[identity] = want_g

    def groups(self, parts: Iterable[Any],
               tick: Callable[[], object] | None = None) -> list[GroupBody]:
        """As ``flows``: groups known by a digest of their entry, not by the
        entry (a group's entry is ~11 KB at 100 backends: keyed by its bytes,
        12 MB stayed resident at N=1000 after the first audit, issue 19)."""
        seen: dict[bytes, GroupBody] = {}
        decoded = 0
        for part in parts:
            for offset, group_id, entry in iter_group_entries(part.raw):
                if not own.is_lbaffd_group(group_id):
                    continue
                identity = _digest(entry)
                body = self._groups.get(identity) or seen.get(identity)
                if body is None:
                    body = packed.installed_group(fastdecode.decode_group(part.raw, offset))
                    decoded += 1
                    if tick is not None and decoded % TICK_DECODES == 0:
                        tick()
                seen[identity] = body
        self._groups = seen
        return list(seen.values())


def read_installed(channel: Channel, cache: DecodeCache | None = None
                   ) -> tuple[PackedState, int]:
    """lbaffd's flows and groups as the switch reports them now, and how many
    of them hold actions lbaffd never writes (foreign edits, to be repaired)."""
    cache = cache or DecodeCache()
    flows = cache.flows(_drained(channel.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)))
    groups = cache.groups(channel.dump_group_desc())
    foreign = sum(map(packed.is_foreign, flows)) + sum(map(packed.is_foreign, groups))
    return PackedState.build(flows, groups), foreign


TICK_DECODES = 50
MAX_REFUSALS_PER_PASS = 8  # VIPs left out, one bundle each, before a pass gives up


class RefusalsExhausted(Exception):
    """The switch refused more VIPs in one pass than a pass retries for
    (those found so far stay out: the next pass goes on from there)."""
CLEAR_ENCODER_CACHES_AFTER = 10_000  # bundle messages


def to_messages(cs: ChangeSet) -> list[wire.RawMessage]:
    """Order matters inside the bundle: groups must exist before flows point
    at them, and flows must be gone before their group is deleted."""
    return [msg for _, msg in keyed_messages(cs)]


def keyed_messages(cs: ChangeSet) -> list[tuple[int, wire.RawMessage]]:
    """``to_messages``, each with its ledger key (``isolation.BundleLedger``:
    a group's id or a flow's cookie)."""
    msgs: list[tuple[int, wire.RawMessage]] = []
    msgs += [(packed.group_id(g), packed.group_add_message(g)) for g in cs.add_groups]
    msgs += [(packed.group_id(g), packed.group_modify_message(g)) for g in cs.mod_groups]
    msgs += [(packed.cookie(f), packed.delete_message(f)) for f in cs.del_flows]
    msgs += [(packed.cookie(f), packed.add_message(f)) for f in cs.add_flows]
    msgs += [(packed.cookie(f), packed.modify_message(f)) for f in cs.mod_flows]
    msgs += [(gid, wire.group_delete(gid)) for gid in cs.del_groups]
    return msgs


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
        self._decoded = DecodeCache()
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
        if audit or self._installed is None:
            installed, foreign = read_installed(channel, self._decoded)
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
        stream = DiffStream(installed)
        ledger = isolation.BundleLedger()  # which owner each message is for
        compiled = compile_stream(lbs, topo, self._group_ids, self._pipeline, self._max_idle,
                                  self._distribution, self.min_slots, self._compiled,
                                  incumbents, planned)
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
            self._announce(changes.del_flows)
            for f in changes.del_flows:  # flows first: their groups go last
                ledger.flow(packed.cookie(f))
                bundle.add(packed.delete_message(f))
            for gid in changes.del_groups:
                ledger.group(gid)
                bundle.add(wire.group_delete(gid))
            self._attempt = (bundle, ledger, desired)
            t_compiled = time.monotonic()
        t_committed = time.monotonic()
        if bundle.count:
            channel.barrier()
        self._attempt = None  # (its ledger is ~1 MB after a cold pass)
        t_end = time.monotonic()
        if audit:
            self._decoded.adopt(desired.state.flows, desired.state.groups)
        # the index takes the compiled dicts (no copy of 80k entries at 5000
        # LBs) and they are what is installed now
        self._index = DesiredIndex(desired, self._group_ids, adopt=True)
        desired = self._index.desired()
        self._installed = desired.state
        if bundle.count > CLEAR_ENCODER_CACHES_AFTER:
            wire.clear_caches()  # a big pass filled them with VIPs it will not encode again
        return ReconcileResult(
            changes=changes, desired=desired, installed_flows=len(installed.flows),
            installed_groups=len(installed.groups), seconds=time.monotonic() - start,
            foreign=foreign, audited=audit,
            phases=(("read", t_read - start), ("compile", t_compiled - t_read),
                    ("commit", t_committed - t_compiled), ("barrier", t_end - t_committed)),
        )

    def audit_unchanged(self, channel: Channel,
                        between: Callable[[], bool] | None = None) -> ReconcileResult | None:
        """An audit when the inputs have not changed since the last clean pass:
        read the switch back and repair it towards the state already known,
        without recompiling (None: no such state, do a full ``reconcile``).

        The flows are read in ``AUDIT_CHUNKS`` slices of the cookie space and
        ``between`` runs after each slice, so SB changes are applied while a
        large audit is under way instead of waiting seconds for it; when it
        returns False the audit stops there (a full pass is due anyway)."""
        index = self._index
        if index is None or channel is not self._channel:
            return None
        start = time.monotonic()
        stopped = False

        def tick() -> None:
            nonlocal stopped
            if between is not None and not stopped and self._index is index:
                stopped = not between()

        dumped = self._decoded.groups(channel.dump_group_desc(), tick)
        if stopped or self._index is not index:
            return None
        have_groups = {packed.group_id(g): g for g in dumped}
        total = ChangeSet()
        foreign = sum(map(packed.is_foreign, dumped))
        n_flows = 0
        first = diff(PackedState({}, index.groups), PackedState({}, have_groups))
        stale_groups = first.del_groups
        total = self._apply(channel, index, ChangeSet(add_groups=first.add_groups,
                                                      mod_groups=first.mod_groups), total)
        for chunk in range(own.AUDIT_CHUNKS):
            cookie = own.MANAGED_COOKIE | (chunk << own.CHUNK_SHIFT)
            flows = self._decoded.flows(_drained(
                channel.dump_flow_desc(cookie, own.MAGIC_MASK | own.CHUNK_MASK)), chunk, tick)
            if stopped or self._index is not index:
                return None  # a full pass follows and reads everything again
            n_flows += len(flows)
            foreign += sum(map(packed.is_foreign, flows))
            changes = diff(PackedState(index.chunks[chunk], {}), PackedState.build(flows, []))
            total = self._apply(channel, index, changes, total)
            tick()
            if stopped or self._index is not index:
                return None  # a full pass follows and reads everything again
        gone = tuple(g for g in stale_groups if g not in index.groups)
        total = self._apply(channel, index, ChangeSet(del_groups=gone), total)
        self._decoded.adopt(index.flows, index.groups)
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
        self._send(channel, changes)
        channel.barrier()
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
        if not changes.empty:
            try:
                self._send_keyed(channel, changes, index.desired())
            except OpenFlowError as exc:
                if self._blame(exc, {u: lb for u, lb in changed.items() if lb is not None}):
                    return None  # a full pass runs now, without the refused VIP
                raise
            channel.barrier()
        self._index = index
        self._group_ids = index.group_ids
        desired = index.desired()
        self._installed = desired.state  # the index's dicts: in sync by construction
        return ReconcileResult(
            changes=changes, desired=desired, installed_flows=len(desired.state.flows),
            installed_groups=len(desired.state.groups), seconds=time.monotonic() - start,
            foreign=0, audited=False,
        )


def cleanup(channel: Channel) -> int:
    """Remove exactly lbaffd's flows (managed and learned, by cookie magic) and
    groups (by id range) in one bundle; returns how many groups went."""
    installed, _ = read_installed(channel)
    msgs: list[Any] = [codec.flow_delete_by_cookie(own.MANAGED_COOKIE, own.MAGIC_MASK),
                       codec.flow_delete_by_cookie(own.LEARNED_COOKIE, own.MAGIC_MASK)]
    msgs += [wire.group_delete(gid) for gid in sorted(installed.groups)]
    channel.bundle(msgs)
    channel.barrier()
    return len(installed.groups)
