"""The read-back side of a pass: what the switch reports of lbaffd's flows
and groups (``read_installed``), brought to the desired state's form
(``DecodeCache``) without decoding it where the bytes already are lbaffd's.

Flows: each distinct entry (known by a digest of its bytes) is decoded
once and encoded again as lbaffd would (``DecodeCache.flows``).  A restart,
which reads all of them before its desired state exists, only converts them
(``flow_body``: ``messages`` writes a match and its actions as OVS writes
them back, so an unchanged flow's entry *is* its desired body) and decodes
after the compile only those that differ (``DecodeCache.settle``).

Groups: a group-desc entry of a group lbaffd wrote differs from the group-mod body
it sent only in its 16-byte header: OVS parses the buckets and properties and
encodes them again for the reply (``ofputil_append_group_desc_reply``,
lib/ofp-group.c), which for lbaffd's encoding gives back the very bytes
(``tests/integration/test_decode_vs_ovs.py`` holds this against ovs-vswitchd),
so the body of an entry is a byte conversion (``group_body``).  When that equals
the desired body the group *is* the desired one (``messages`` encodes canonically and its
decoders are the inverse: decoding those bytes and encoding them again gives
the same bytes).  Only when they differ is the entry decoded
(``canonical_group``), to tell a real difference (a foreign edit) from bytes
OVS wrote another way.  A restart at N=5000 read 5,219 groups of up to 256
buckets back; decoding and re-encoding them was 20 % of its first pass.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from lbaffd.compile.layout import REG_VIP_ID
from lbaffd.model import ownership as own
from lbaffd.openflow import actions, messages, packed
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import FlowSpec, Group, SetField
from lbaffd.openflow.groupdesc import GROUP_DESC, iter_group_entries
from lbaffd.openflow.packed import FlowBody, FlowId, GroupBody, PackedState
from lbaffd.reconcile.prefetch import Dumper

HEADER: Final = GROUP_DESC.size  # == messages.GROUP_MOD.size: both 16 bytes
assert messages.GROUP_MOD.size == HEADER

TICK_DECODES = 50
TICK_GROUPS = 500  # groups converted (not decoded) between two ticks


def group_body(entry: bytes) -> GroupBody:
    """The group-mod body (command ADD, as ``packed.pack_group`` writes it)
    with the very buckets and properties of a group-desc ``entry``."""
    _, gtype, gid, bucket_len = GROUP_DESC.unpack_from(entry)
    return messages.GROUP_MOD.pack(messages.OFPGC_ADD, gtype, gid, bucket_len,
                              messages.ANY) + entry[HEADER:]


# a flow-desc entry's identity (``iter_entries``) up to its match: table,
# priority, idle, hard, flags, importance, cookie
IDENTITY_HEAD: Final = struct.Struct("!2xBxHHHHHQ")
assert IDENTITY_HEAD.size == messages.FLOW_DESC_SIZE - 2
# the set_field of the VIP id as ``messages`` encodes it (OVS echoes it)
VIP_ID_HEADER: Final = actions.set_field_bytes(REG_VIP_ID, 0)[4:8]


def flow_body(identity: bytes) -> FlowBody:
    """The flow-mod body (command ADD, as ``packed.pack_flow`` writes it) with
    the very match and instructions of a flow-desc entry (its ``identity``).

    OVS encodes a flow's match and actions again for its reply
    (``ofputil_append_flow_stats_reply``, lib/ofp-flow.c): for what lbaffd
    wrote, in the canonical form ``messages`` writes, that gives back the
    bytes it sent, so when this equals the desired body the flow *is* the
    desired one.  Where it differs, it is decoded (``canonical_flow``)."""
    table, priority, idle, hard, flags, importance, cookie = IDENTITY_HEAD.unpack_from(identity)
    return messages.FLOW_MOD.pack(
        cookie, 0, table, messages.OFPFC_ADD, idle, hard, priority, messages.ANY,
        messages.ANY, messages.ANY, flags, importance) + identity[IDENTITY_HEAD.size:]


def _as_desired(body: FlowBody, desired: Mapping[FlowId, FlowBody]) -> FlowBody | None:
    """The desired flow that ``body`` (from ``flow_body``) is byte for byte,
    or None (it must be decoded)."""
    want = desired.get(packed.flow_id(body))
    return want if want is not None and want == body else None


def canonical_flow(body: FlowBody) -> tuple[FlowBody, FlowSpec]:
    """``body`` (from ``flow_body``) decoded and encoded again, as
    ``DecodeCache`` makes of an entry it decodes; the decoded flow too."""
    spec = packed.unpack_flow(body)
    return packed.installed_flow(spec), spec


def group_ref_of(body: FlowBody) -> int:
    """``_group_ref`` of a flow body from its bytes: the top-level actions'
    group or VIP-id set_field (0: none, or not one apply-actions instruction)."""
    start = packed.instructions_at(body)
    end = len(body)
    head = actions.U16_U16
    if end < start + messages.INSTRUCTION.size or head.unpack_from(body, start) != (
            messages.OFPIT_APPLY_ACTIONS, end - start):
        return 0
    pos = start + messages.INSTRUCTION.size
    while pos + 8 <= end:
        atype, length = head.unpack_from(body, pos)
        if length < 8:
            return 0
        if atype == actions.OFPAT_GROUP:
            gid: int = packed.U32.unpack_from(body, pos + 4)[0]
            if own.is_vip_group(gid):
                return gid
        elif atype == actions.OFPAT_SET_FIELD and body[pos + 4:pos + 8] == VIP_ID_HEADER:
            value: int = packed.U32.unpack_from(body, pos + 8)[0]
            if own.is_vip_group(value):
                return value
        pos += length
    return 0


def canonical_group(body: GroupBody) -> GroupBody:
    """``body`` as decoding its entry and encoding it again gives it (what
    ``packed.installed_group`` makes of the switch's report; foreign actions
    marked).  Idempotent: a body already in that form comes back equal."""
    if packed.is_foreign(body):
        return body  # only a decoded body carries the mark
    return packed.installed_group(packed.unpack_group(body))


class GroupCanonicalizer:
    """``canonical_group`` that counts the foreign groups it met (a pass
    reports how many entries held actions lbaffd never writes)."""

    def __init__(self) -> None:
        self.foreign = 0

    def __call__(self, body: GroupBody) -> GroupBody:
        out = canonical_group(body)
        self.foreign += packed.is_foreign(out)
        return out


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


def drained(parts: list[Any]) -> Iterator[Any]:
    """``parts`` in order, each let go of once taken: the replies of a dump
    of 80k flows are ~20 MB, and decoding them all takes a while."""
    parts.reverse()
    while parts:
        yield parts.pop()


class DecodeCache:
    """Installed flows by their wire bytes (stats excluded), in the desired
    state's form (``packed``: decoded, then encoded as lbaffd would); groups
    are converted from their bytes on every dump, never decoded unless they
    differ (``groups``).

    An unchanged flow comes back from OVS byte-identical on every dump, so each
    distinct entry is converted once; decoding dominates an audit otherwise
    (~0.2 ms per flow with os-ken; ``messages`` decodes lbaffd's own flows
    straight from the bytes and leaves only foreign ones to os-ken).  Holds
    only what the last dump contained, and which lbaffd group each flow
    points at (to recover the VIP -> group assignment after a restart).
    Flow entries are known by a 128-bit digest of their bytes: the bytes
    themselves (~230 each) were ~18 MB at 80k flows for as long as the daemon
    ran after its first audit.

    The entries take the form of the dump that reads them (``_regroup``): one
    dict for a dump of all flows (a full pass), one per cookie slice for an
    audit's dumps; each kind used to drop the other's, so a full pass after
    an audit, and the audit after it, decoded every flow again (10k flows,
    ~0.5 s of CPU at N=1000, at every turn of the soak's mix).  A dump of all
    flows that finds none of lbaffd's (ovs-vswitchd restarted, or someone
    deleted them) keeps what it knew until the next one (``_lost``): the pass
    that follows installs the very flows again, and the audit after it then
    decoded all of them at once (the burst left RSS 1 MB higher for good,
    ``bench.memprobe``).
    """

    def __init__(self) -> None:
        self._flows: dict[int | None, dict[bytes, FlowBody]] = {}
        self._refs: dict[bytes, int] = {}  # entry digest -> group id, for flows naming one
        self._lost = False  # the last dump of all flows found none: its cache is the one before
        self._unsettled: list[bytes] = []  # digests of entries converted, not yet checked
        self.decoded = 0  # entries the last ``flows`` or ``settle`` call had to decode

    def held(self) -> int:
        """Converted switch entries held (``memory/show``; asked from the
        control thread: the dict of slices copied at once, not iterated)."""
        return sum(map(len, list(self._flows.values())))

    def flows(self, parts: Iterable[Any], chunk: int | None = None,
              tick: Callable[[], object] | None = None, defer: bool = False,
              desired: Mapping[FlowId, FlowBody] | None = None) -> list[FlowBody]:
        """Convert a dump of all lbaffd flows (``chunk`` None) or of one cookie
        chunk, the cache first regrouped for it (``_regroup``).  ``tick`` runs
        every ``TICK_DECODES`` decodes (decoding is the slow part of a first
        audit).

        ``defer`` (a dump of all flows read before the desired state is
        known: a restart's): entries not known yet are only converted
        (``flow_body``), their group ids read off the bytes, and ``settle``
        must follow once the desired flows are compiled.  A restart at
        N=5000 decoded 50k flows otherwise (~2 s of its ~11).

        ``desired`` (the flows compiled already: an audit's): an entry not
        known yet whose conversion equals its desired body is that body, as
        ``settle`` finds it; only the others are decoded.  The first audit
        after a cold start (or after a pass that installed many new flows)
        decoded every one of them (52k at N=5000, ~0.7 s of CPU and every
        decoded flow's objects at once)."""
        self._forget_unsettled()
        self._regroup(chunk)
        known = self._flows.get(chunk, {})
        refs = self._refs
        seen: dict[bytes, FlowBody] = {}
        decoded = 0
        for part in parts:
            for offset, _, entry in iter_entries(part.raw):
                identity = _digest(entry)
                body = known.get(identity) or seen.get(identity)
                if body is None and desired is not None:
                    body = _as_desired(flow_body(entry), desired)
                    if body is not None and chunk is None:
                        gid = group_ref_of(body)
                        if gid:
                            refs[identity] = gid
                if body is None and defer and chunk is None:
                    body = flow_body(entry)
                    gid = group_ref_of(body)
                    if gid:
                        refs[identity] = gid
                    self._unsettled.append(identity)
                elif body is None:
                    spec = messages.decode_flow(part.raw, offset)
                    body = packed.installed_flow(spec)
                    gid = _group_ref(spec)
                    if gid and chunk is None:  # (only a full dump recovers group ids)
                        refs[identity] = gid
                    decoded += 1
                    if tick is not None and decoded % TICK_DECODES == 0:
                        tick()
                seen[identity] = body
        self.decoded = decoded
        if chunk is None and not seen and known and not self._lost:
            self._lost = True  # the flows will be back as they were: keep them
            return []
        self._lost = False
        self._flows[chunk] = seen
        if chunk is None:
            self._refs = {k: v for k, v in refs.items() if k in seen}
        return list(seen.values())

    def settle(self, desired: Mapping[FlowId, FlowBody]) -> list[FlowBody]:
        """The flows of the last deferred ``flows`` call, each the desired
        body where its conversion equals it, else decoded (``canonical_flow``),
        as ``flows`` would have returned them."""
        cached = self._flows.get(None, {})
        decoded = 0
        for identity in self._unsettled:
            want = _as_desired(cached[identity], desired)
            if want is not None:
                cached[identity] = want
                continue
            cached[identity], spec = canonical_flow(cached[identity])
            decoded += 1
            gid = _group_ref(spec)
            if gid:
                self._refs[identity] = gid
            else:
                self._refs.pop(identity, None)
        self._unsettled = []
        self.decoded = decoded
        return list(cached.values())

    def _forget_unsettled(self) -> None:
        """Entries converted for a ``settle`` that never came (the pass
        failed) are decoded when next met: they may not be canonical."""
        cached = self._flows.get(None, {})
        for identity in self._unsettled:
            cached.pop(identity, None)
            self._refs.pop(identity, None)
        self._unsettled = []

    def _regroup(self, chunk: int | None) -> None:
        """The cache in the form of the dump about to be read: one dict for
        a dump of all flows, else one per slice (the same entries, only the
        dicts that hold them are new)."""
        flows = self._flows
        if chunk is None:
            slices = [k for k in flows if k is not None]
            if slices:
                whole = flows.pop(None, {})
                for k in slices:
                    whole.update(flows.pop(k))
                flows[None] = whole
        elif None in flows:
            for identity, body in flows.pop(None).items():
                flows.setdefault(own.audit_chunk(packed.cookie(body)), {})[identity] = body

    def group_ids(self) -> dict[int, int]:
        """cookie -> lbaffd group id, from the last dump of all flows (none
        when it found no flow of lbaffd's)."""
        found: dict[int, int] = {}
        if self._lost:
            return found
        for identity, body in self._flows.get(None, {}).items():
            gid = self._refs.get(identity)
            if gid:
                found.setdefault(packed.cookie(body), gid)
        return found

    def adopt(self, flows: Mapping[FlowId, FlowBody]) -> None:
        """Where a converted entry equals the desired one, keep the desired
        bytes instead: the cache then costs its keys, not a second copy of
        the state, and the next audit's diff finds the very same objects
        (``is``) without comparing them."""
        for chunk in list(self._flows):
            self.adopt_flows(flows, chunk)

    def adopt_flows(self, flows: Mapping[FlowId, FlowBody], chunk: int | None) -> None:
        """``adopt`` for the flows of one kind of dump (an audit adopts each
        slice as it goes: the whole at once held the worker ~50 ms at 80k
        flows)."""
        cached = self._flows.get(chunk, {})
        for identity, body in cached.items():
            want = flows.get(packed.flow_id(body))
            if want is not None and want is not body and want == body:
                cached[identity] = want

    def groups(self, parts: Iterable[Any], tick: Callable[[], object] | None = None,
               desired: Mapping[int, GroupBody] | None = None) -> list[GroupBody]:
        """lbaffd's groups, each as the body of its entry's bytes
        (``group_body``): decoded only where a diff finds it differs
        from the desired one (``canonical_group``).  Nothing is
        kept: converting is a copy of the bytes, and a copy kept here was a
        second copy of every group (~12 MB at 1000 VIPs) until the pass ended.
        With the ``desired`` groups known already, one equal to its desired
        body is that very body (the copy is let go of at once)."""
        out: list[GroupBody] = []
        for part in parts:
            for _, group_id, entry in iter_group_entries(part.raw):
                if not own.is_lbaffd_group(group_id):
                    continue
                body = group_body(entry)
                want = desired.get(group_id) if desired is not None else None
                out.append(want if want is not None and want == body else body)
                if tick is not None and len(out) % TICK_GROUPS == 0:
                    tick()
        return out


def read_installed(channel: Dumper, cache: DecodeCache | None = None
                   ) -> tuple[PackedState, int]:
    """lbaffd's flows and groups as the switch reports them now, and how many
    of them hold actions lbaffd never writes (foreign edits, to be repaired)."""
    cache = cache or DecodeCache()
    flows = cache.flows(drained(channel.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)))
    group_parts = channel.dump_group_desc(own.is_lbaffd_group)
    groups = cache.groups(drained(group_parts))
    foreign = sum(map(packed.is_foreign, flows)) + sum(map(packed.is_foreign, groups))
    return PackedState.build(flows, groups), foreign
