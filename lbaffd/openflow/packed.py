"""A flow or group as the bytes lbaffd sends for it: the desired state's compact form.

At 10^5 flows, FlowSpecs (a flow, its match, pairs, actions and tuples: ~700
bytes a flow) were most of the daemon's memory; a flow's encoded OFPFC_ADD
body is ~190.  So the compiler's FlowSpecs live only while one VIP compiles:
what the reconciler keeps, diffs and sends is these bodies.  ``messages`` encodes
canonically (``oxm``, ``actions``: match fields in a fixed order, one encoding per action value),
so two bodies are equal exactly when their flows are, and a diff compares
bytes.  What the switch reports is brought to the same form by decoding it
and encoding it again (``installed_flow``), once per distinct entry.

A *flow body* is an OFPT_FLOW_MOD after its header, command ADD, cookie mask
0; a *group body* an OFPT_GROUP_MOD, command ADD.  A flow's *id* is what
OpenFlow identifies it by (table, priority, match) as bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import FlowSpec, GroupSpec, Opaque
from lbaffd.openflow.groupdesc import GROUP_DESC
from lbaffd.openflow.messages import RawMessage

FlowBody = bytes
GroupBody = bytes
FlowId = bytes

U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")
U64: Final = struct.Struct("!Q")
MATCH_AT: Final = 40  # the ofp_match after the flow mod's fixed part
ONES64: Final = b"\xff" * 8
# An installed flow holding actions lbaffd never writes is kept without them
# and marked: a valid body is a multiple of 8 bytes, a marked one is not, so
# it never equals a desired body (and is repaired) yet still has its id.
FOREIGN_MARK: Final = b"\xffOPQ"
EMPTY_STATS: Final = U16.pack(0) + U16.pack(4) + bytes(4)  # OXS header, no stats, padded


def pack_flow(spec: FlowSpec) -> FlowBody:
    return messages.flow_add(spec).body


def pack_group(spec: GroupSpec) -> GroupBody:
    return messages.group_add(spec).body


def match_length(body: FlowBody) -> int:
    """The ofp_match's length (header included, padding not)."""
    length: int = U16.unpack_from(body, MATCH_AT + 2)[0]
    return length


def _match_end(body: bytes) -> int:
    """End of the match without its padding."""
    return MATCH_AT + match_length(body)


def instructions_at(body: FlowBody) -> int:
    """Where the instructions start: after the match and its padding."""
    return MATCH_AT + (match_length(body) + 7) // 8 * 8


def flow_id(body: FlowBody) -> FlowId:
    return body[16:17] + body[22:24] + body[MATCH_AT + 4:_match_end(body)]


def cookie(body: FlowBody) -> int:
    value: int = U64.unpack_from(body)[0]
    return value


def sort_key(body: FlowBody) -> tuple[int, int]:
    """(table, -priority): the order ChangeSets list flows in."""
    return body[16], -U16.unpack_from(body, 22)[0]


def same_header(a: FlowBody, b: FlowBody) -> bool:
    """Same cookie, timeouts and flags: a modify can turn one into the other
    (OF1.5 modify changes neither cookie nor flags)."""
    return a[:8] == b[:8] and a[18:22] == b[18:22] and a[36:38] == b[36:38]


def is_foreign(body: FlowBody) -> bool:
    return len(body) % 8 != 0


def add_message(body: FlowBody) -> RawMessage:
    return RawMessage(messages.OFPT_FLOW_MOD, body)


def modify_message(body: FlowBody) -> RawMessage:
    """OFPFC_MODIFY_STRICT restricted to the body's cookie (as ``messages.flow_modify``)."""
    return RawMessage(messages.OFPT_FLOW_MOD, body[:8] + ONES64 + body[16:17]
                           + bytes((messages.OFPFC_MODIFY_STRICT,)) + body[18:])


def delete_message(body: FlowBody) -> RawMessage:
    """OFPFC_DELETE_STRICT of this flow with this cookie (as ``messages.flow_delete``)."""
    end = instructions_at(body)
    return RawMessage(messages.OFPT_FLOW_MOD, messages.FLOW_MOD.pack(
        cookie(body), messages.ALL_ONES64, body[16], messages.OFPFC_DELETE_STRICT, 0, 0,
        U16.unpack_from(body, 22)[0], messages.ANY, messages.ANY, messages.ANY, 0, 0)
        + body[MATCH_AT:end])


def group_id(body: GroupBody) -> int:
    value: int = U32.unpack_from(body, 4)[0]
    return value


def group_add_message(body: GroupBody) -> RawMessage:
    return RawMessage(messages.OFPT_GROUP_MOD, body)


def group_modify_message(body: GroupBody) -> RawMessage:
    return RawMessage(messages.OFPT_GROUP_MOD, U16.pack(messages.OFPGC_MODIFY) + body[2:])


def installed_flow(spec: FlowSpec) -> FlowBody:
    """A flow decoded from the switch, in the desired state's form (marked
    foreign when it holds actions lbaffd cannot have written)."""
    if not any(isinstance(a, Opaque) for a in spec.actions):
        return pack_flow(spec)
    known = tuple(a for a in spec.actions if not isinstance(a, Opaque))
    return pack_flow(replace(spec, actions=known)) + FOREIGN_MARK


def installed_group(spec: GroupSpec) -> GroupBody:
    """A group decoded from the switch, in the desired state's form (marked
    foreign as ``installed_flow``)."""
    if not any(isinstance(a, Opaque) for b in spec.buckets for a in b.actions):
        return pack_group(spec)
    buckets = tuple(replace(b, actions=tuple(a for a in b.actions if not isinstance(a, Opaque)))
                    for b in spec.buckets)
    return pack_group(replace(spec, buckets=buckets)) + FOREIGN_MARK


def unpack_flow(body: FlowBody) -> FlowSpec:
    """The FlowSpec a body encodes (for logs, tests and the few deletions a
    pass announces; the hot paths never decode).  A foreign body decodes
    without the actions lbaffd did not recognise."""
    if is_foreign(body):
        body = body[: -len(FOREIGN_MARK)]
    return messages.decode_flow(desc_entry(body), 0)


def desc_entry(body: FlowBody) -> bytes:
    """The flow-desc entry (no stats) the switch reports for the flow of
    ``body``, as lbaffd encodes it (``readback.flow_body`` is the inverse)."""
    cookie_, _, table, _, idle, hard, priority, _, _, _, flags, importance = (
        messages.FLOW_MOD.unpack_from(body))
    match_pad = instructions_at(body)
    rest = body[MATCH_AT:match_pad] + EMPTY_STATS + body[match_pad:]
    return messages.FLOW_DESC.pack(messages.FLOW_DESC_SIZE + len(rest), table, priority,
                                   idle, hard, flags, importance, cookie_) + rest


def unpack_group(body: GroupBody) -> GroupSpec:
    if is_foreign(body):
        body = body[: -len(FOREIGN_MARK)]
    command, gtype, gid, bucket_len, _ = messages.GROUP_MOD.unpack_from(body)
    del command
    entry = GROUP_DESC.pack(len(body), gtype, gid, bucket_len) + body[GROUP_DESC.size:]
    return messages.decode_group(entry, 0)


@dataclass(frozen=True, slots=True)
class PackedState:
    """Flows by id and groups by id, as bodies (desired or installed)."""

    flows: Mapping[FlowId, FlowBody]
    groups: Mapping[int, GroupBody]

    @classmethod
    def build(cls, flows: Iterable[FlowBody], groups: Iterable[GroupBody]) -> PackedState:
        return cls({flow_id(b): b for b in flows}, {group_id(g): g for g in groups})

    @classmethod
    def of(cls, flows: Iterable[FlowSpec], groups: Iterable[GroupSpec]) -> PackedState:
        return cls.build(map(pack_flow, flows), map(pack_group, groups))
