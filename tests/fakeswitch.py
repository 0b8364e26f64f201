"""An in-memory OpenFlow 1.5 switch behind the reconciler's ``Channel`` protocol.

The reconciler is tested here in milliseconds instead of against a real
ovs-vswitchd.  The idea is faucet's ``FakeOFTable`` (apply FlowMod/GroupMod
semantics to tables held in memory, check that replaying messages changes
nothing), turned towards what lbaffd needs: lbaffd *reads the switch back*
(``DecodeCache`` decodes flow-desc and group-desc replies byte by byte), so
the fake must answer dumps with the bytes ovs-vswitchd 3.1 would send, not
with what it was sent.  ``tests/integration/test_fakeswitch_ovs.py`` runs the
same messages through a real ovs-vswitchd and through this fake and holds the
replies byte-identical (stats excepted) and the errors equal.

What is modelled, and the OVS behaviour it follows:

- Flow identity is (table, priority, match) with the match taken as a set of
  fields (OVS's ``cls_rule``), not as bytes: masks are applied to the value,
  an all-ones mask is an exact match, a zero mask no match at all, and an NXM
  header is the same field as its OXM twin (``mf_from_oxm_header``).
- ``ADD`` replaces a flow with the same identity (cookie, timeouts and
  actions all new); ``MODIFY``/``MODIFY_STRICT`` change only the actions of
  the flows they select and never add one (OF1.1+; OVS keeps cookie,
  timeouts and flags: checked with ``ovs-ofctl --strict mod-flows``);
  ``DELETE``/``DELETE_STRICT`` remove them.  Non-strict commands select by
  the cookie under its mask and by a match that every selected flow's match
  is at least as specific as (``cls_rule_is_loose_match``); they also honour
  ``out_port``/``out_group`` for deletes, and ``OFPTT_ALL``.
- A flow whose actions name a group that does not exist is refused with
  ``OFPBAC_BAD_OUT_GROUP``; deleting a group deletes the flows that name it
  (OpenFlow 1.5 6.5; OVS ``delete_group__``).
- Group mods: ``ADD`` of an existing id fails ``OFPGMFC_GROUP_EXISTS``,
  ``MODIFY`` of a missing one ``OFPGMFC_UNKNOWN_GROUP``, ``DELETE`` of a
  missing one is fine, ``OFPG_ALL`` deletes all.
- Bundles (``OFPBF_ATOMIC | OFPBF_ORDERED``): nothing is applied until the
  commit; the commit applies every message in order or, at the first error,
  none (the error of the failing message is raised, as ``bundle.Bundle``
  raises the add's error before the commit's ``OFPBFC_MSG_FAILED``).
- Learned entries: ``learn()`` plays a packet through a flow's ``learn``
  action and installs the entry it would learn (cookie with lbaffd's learned
  magic).  When the last flow holding a ``delete_learned`` learn action with
  a given (table, cookie) goes (deleted, replaced or modified to other
  actions), the entries learned with it go too (OVS's learned cookies): that
  is how lbaffd removes a backend's entries.
- Dumps are shaped as OVS shapes them (``ofputil_append_flow_stats_reply``):
  multipart parts of at most 65535 bytes; in each ``ofp_flow_desc`` the match
  re-encoded in ``nx_put_raw``'s field order with registers paired into OF1.5
  ``xreg``s, the OXS stats OVS sends (duration, idle_time, packet and byte
  counts), an empty action list sent as no instruction at all, and learn specs
  naming fields by their NXM headers where one exists.  Group-desc entries
  carry the buckets and properties as they were sent (OVS re-encodes them
  identically for lbaffd's groups).  The order of the entries is the fake's
  own (table, then priority; groups by id; OVS: classifier and hash order),
  so where a reply splits into parts differs too: lbaffd depends on neither.

Not modelled (lbaffd never relies on it): packets and lookups (only
``learn``), timeouts expiring, counters, meters, flow monitors and async
messages, table features, ``CHECK_OVERLAP``, insert/remove bucket.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.model import ownership as own
from lbaffd.openflow import messages
from lbaffd.openflow.actions import LEARN, NX_EXPERIMENTER, NXAST_LEARN
from lbaffd.openflow.flowspec import (
    FlowSpec,
    Learn,
    LearnLoadField,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
)
from lbaffd.openflow.oxm import encode_match
from lbaffd.openflow.replies import OpenFlowError, Reply

U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")
HEADER: Final = struct.Struct("!BBHI")
MULTIPART: Final = struct.Struct("!HH4x")  # type, flags (after the header)
FLOW_DESC: Final = struct.Struct("!H2xBxHHHHHQ")  # OF1.5 ofp_flow_desc, fixed part
GROUP_DESC: Final = struct.Struct("!HBxIH6x")  # length, type, group_id, bucket_array_len
OXS_STAT: Final = struct.Struct("!IQ")  # an 8-byte OXS field: header, value
MAX_MESSAGE: Final = 0xFFFF
MATCH_AT: Final = 40  # the ofp_match in a flow mod body (after the header)
GROUP_MOD_SIZE: Final = 16  # the fixed part of a group mod body

OFPXMC_NXM_0: Final = 0x0000
OFPXMC_NXM_1: Final = 0x0001
OFPXMC_OPENFLOW_BASIC: Final = 0x8000
OFPXMC_PACKET_REGS: Final = 0x8001
OFPXMC_EXPERIMENTER: Final = 0xFFFF
OFPXSC_OPENFLOW_BASIC: Final = 0x8002
OFPGC_ADD_OR_MOD: Final = 0x8000  # OVS extension
LEARN_DELETE_LEARNED: Final = 2
LEARN_SEND_FLOW_REM: Final = 1
N_REGS: Final = 16
# flags a rule keeps and a dump reports (OVS's OFPUTIL_FF_STATE; send_flow_rem,
# the only one lbaffd sets, is checked against OVS): check_overlap and
# reset_counts only steer the flow mod itself
KEPT_FLAGS: Final = ofp.OFPFF_SEND_FLOW_REM | ofp.OFPFF_NO_PKT_COUNTS | ofp.OFPFF_NO_BYT_COUNTS

FieldKey = tuple[int, int, int]  # OXM class, field number, experimenter id (0: none)


class Refused(Exception):
    """A message the switch refuses: (OpenFlow error type, code)."""

    def __init__(self, err_type: int, code: int) -> None:
        super().__init__(err_type, code)
        self.err_type, self.code = err_type, code


def _nxm(cls: int, num: int) -> FieldKey:
    return (cls, num, 0)


def _oxm(num: int) -> FieldKey:
    return (OFPXMC_OPENFLOW_BASIC, num, 0)


# NXM header -> the OXM field it is the same as (OVS's meta-flow.xml: both
# name one mf_field).  Matches are kept in the OXM form; learn specs are
# reported in the NXM form (OVS encodes them with nx_put_header(..., 0, ...),
# i.e. as OpenFlow 1.0 knows them).
NXM_TO_OXM: Final[Mapping[FieldKey, FieldKey]] = {
    _nxm(OFPXMC_NXM_0, 1): _oxm(3),     # eth_dst
    _nxm(OFPXMC_NXM_0, 2): _oxm(4),     # eth_src
    _nxm(OFPXMC_NXM_0, 3): _oxm(5),     # eth_type
    _nxm(OFPXMC_NXM_0, 6): _oxm(10),    # ip_proto
    _nxm(OFPXMC_NXM_0, 7): _oxm(11),    # ipv4_src
    _nxm(OFPXMC_NXM_0, 8): _oxm(12),    # ipv4_dst
    _nxm(OFPXMC_NXM_0, 9): _oxm(13),    # tcp_src
    _nxm(OFPXMC_NXM_0, 10): _oxm(14),   # tcp_dst
    _nxm(OFPXMC_NXM_0, 11): _oxm(15),   # udp_src
    _nxm(OFPXMC_NXM_0, 12): _oxm(16),   # udp_dst
    _nxm(OFPXMC_NXM_0, 13): _oxm(19),   # icmpv4_type
    _nxm(OFPXMC_NXM_0, 14): _oxm(20),   # icmpv4_code
    _nxm(OFPXMC_NXM_0, 15): _oxm(21),   # arp_op
    _nxm(OFPXMC_NXM_0, 16): _oxm(22),   # arp_spa
    _nxm(OFPXMC_NXM_0, 17): _oxm(23),   # arp_tpa
    _nxm(OFPXMC_NXM_1, 16): _oxm(38),   # tunnel_id
    _nxm(OFPXMC_NXM_1, 17): _oxm(24),   # arp_sha
    _nxm(OFPXMC_NXM_1, 18): _oxm(25),   # arp_tha
    _nxm(OFPXMC_NXM_1, 19): _oxm(26),   # ipv6_src
    _nxm(OFPXMC_NXM_1, 20): _oxm(27),   # ipv6_dst
    _nxm(OFPXMC_NXM_1, 21): _oxm(29),   # icmpv6_type
    _nxm(OFPXMC_NXM_1, 22): _oxm(30),   # icmpv6_code
    _nxm(OFPXMC_NXM_1, 23): _oxm(31),   # ipv6_nd_target
}
OXM_TO_NXM: Final[Mapping[FieldKey, FieldKey]] = {v: k for k, v in NXM_TO_OXM.items()}

XREG: Final = _nxm(OFPXMC_PACKET_REGS, -1)  # where the registers go in the order, as xregs

# The order in which OVS's nx_put_raw() (lib/nx-match.c) writes the fields
# lbaffd matches on; protocols exclude each other, so one list serves.
# Fields not listed follow, by their key.
OVS_MATCH_ORDER: Final[tuple[FieldKey, ...]] = (
    _nxm(OFPXMC_NXM_1, 35),  # dp_hash
    _nxm(OFPXMC_NXM_1, 36),  # recirc_id
    _oxm(0),                 # in_port
    _oxm(4), _oxm(3), _oxm(5),  # eth_src, eth_dst, eth_type
    _oxm(6), _oxm(7),        # vlan_vid, vlan_pcp
    _oxm(11), _oxm(12),      # ipv4_src, ipv4_dst
    _oxm(26), _oxm(27), _oxm(28),  # ipv6_src, ipv6_dst, ipv6_flabel
    _nxm(OFPXMC_NXM_1, 26),  # ip_frag
    _oxm(8), _oxm(9),        # ip_dscp, ip_ecn
    _nxm(OFPXMC_NXM_1, 29),  # nw_ttl
    _oxm(10),                # ip_proto
    _oxm(13), _oxm(14),      # tcp_src, tcp_dst
    _oxm(15), _oxm(16),      # udp_src, udp_dst
    _oxm(17), _oxm(18),      # sctp_src, sctp_dst
    _oxm(19), _oxm(20),      # icmpv4_type, icmpv4_code
    _oxm(29), _oxm(30),      # icmpv6_type, icmpv6_code
    _oxm(31), _oxm(32), _oxm(33),  # ipv6_nd_target, _sll, _tll
    _oxm(21), _oxm(22), _oxm(23), _oxm(24), _oxm(25),  # arp_op, spa, tpa, sha, tha
    _oxm(38),                # tunnel_id
    XREG,                    # registers (OF1.5: as xreg0..7)
    _nxm(OFPXMC_NXM_1, 33),  # pkt_mark
    _nxm(OFPXMC_NXM_1, 105),  # ct_state
    _nxm(OFPXMC_NXM_1, 106),  # ct_zone
    _nxm(OFPXMC_NXM_1, 107),  # ct_mark
    _nxm(OFPXMC_NXM_1, 108),  # ct_label
    _oxm(2),                 # metadata
)
_RANK: Final = {k: i for i, k in enumerate(OVS_MATCH_ORDER)}


# ------------------------------------------------------------------ matches


@dataclass(frozen=True, slots=True, order=True)
class MatchField:
    """One field of a canonical match: ``value`` already ANDed with ``mask``."""

    key: FieldKey
    value: int
    mask: int
    width: int  # bytes

    @property
    def exact(self) -> bool:
        return self.mask == (1 << 8 * self.width) - 1


MatchKey = tuple[MatchField, ...]  # sorted by key


def _fields(cls: int, num: int, exp: int, value: int, mask: int,
            width: int) -> Iterable[MatchField]:
    key = NXM_TO_OXM.get((cls, num, exp), (cls, num, exp))
    if key[0] == OFPXMC_PACKET_REGS and width == 8:  # xreg N = reg 2N (high) : reg 2N+1
        for half, shift in ((0, 32), (1, 0)):
            yield MatchField((OFPXMC_NXM_1, 2 * key[1] + half, 0),
                             (value >> shift) & 0xFFFFFFFF, (mask >> shift) & 0xFFFFFFFF, 4)
        return
    yield MatchField(key, value, mask, width)


def parse_match(buf: bytes, start: int, end: int) -> MatchKey:
    """The OXM TLVs in ``buf[start:end]`` as a canonical match; a field given
    twice is refused (``OFPBMC_DUP_FIELD``)."""
    found: dict[FieldKey, MatchField] = {}
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN)
        (header,) = U32.unpack_from(buf, pos)
        cls, num, hasmask, length = header >> 16, (header >> 9) & 0x7F, (header >> 8) & 1, \
            header & 0xFF
        pos += 4
        exp = 0
        if cls == OFPXMC_EXPERIMENTER:
            (exp,) = U32.unpack_from(buf, pos)
            pos, length = pos + 4, length - 4
        payload = buf[pos:pos + length]
        if len(payload) != length or length == 0:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN)
        pos += length
        width = length // 2 if hasmask else length
        full = (1 << 8 * width) - 1
        mask = int.from_bytes(payload[width:], "big") if hasmask else full
        value = int.from_bytes(payload[:width], "big") & mask
        for f in _fields(cls, num, exp, value, mask, width):
            if f.key in found:
                raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_DUP_FIELD)
            if f.mask:
                found[f.key] = replace(f, value=f.value & f.mask)
    return tuple(sorted(found.values()))


def match_key(match: Match) -> MatchKey:
    """The canonical form of a FlowSpec's match (through lbaffd's encoder)."""
    raw = encode_match(match)
    return parse_match(raw, 4, U16.unpack_from(raw, 2)[0])


def _tlv(key: FieldKey, value: int, mask: int, width: int) -> bytes:
    cls, num, exp = key
    masked = mask != (1 << 8 * width) - 1
    payload = value.to_bytes(width, "big") + (mask.to_bytes(width, "big") if masked else b"")
    prefix = U32.pack(exp) if cls == OFPXMC_EXPERIMENTER else b""
    header = (cls << 16) | (num << 9) | (masked << 8) | (len(prefix) + len(payload))
    return U32.pack(header) + prefix + payload


def encode_match_as_ovs(match: MatchKey) -> bytes:
    """The ``ofp_match`` OVS reports for ``match`` (padded to 8 bytes)."""
    items: list[tuple[int, FieldKey, bytes]] = []
    regs: dict[int, MatchField] = {}
    for f in match:
        if f.key[0] == OFPXMC_NXM_1 and f.key[1] < N_REGS and f.key[2] == 0:
            regs[f.key[1]] = f
            continue
        items.append((_RANK.get(f.key, len(_RANK)), f.key, _tlv(f.key, f.value, f.mask, f.width)))
    for n in range(N_REGS // 2):
        hi, lo = regs.get(2 * n), regs.get(2 * n + 1)
        if hi is None and lo is None:
            continue
        value = ((hi.value if hi else 0) << 32) | (lo.value if lo else 0)
        mask = ((hi.mask if hi else 0) << 32) | (lo.mask if lo else 0)
        key = (OFPXMC_PACKET_REGS, n, 0)
        items.append((_RANK[XREG], key, _tlv(key, value, mask, 8)))
    items.sort(key=lambda item: (item[0], item[1]))
    body = b"".join(tlv for _, _, tlv in items)
    size = 4 + len(body)
    return U16.pack(ofp.OFPMT_OXM) + U16.pack(size) + body + bytes(-size % 8)


def _covers(selector: MatchKey, fields: Mapping[FieldKey, MatchField]) -> bool:
    """Whether a flow with ``fields`` is selected by a non-strict ``selector``:
    it matches on every selector field at least as specifically."""
    for s in selector:
        f = fields.get(s.key)
        if f is None or f.mask & s.mask != s.mask or f.value & s.mask != s.value:
            return False
    return True


# ------------------------------------------------------------------ actions


def _iter_actions(buf: bytes) -> Iterable[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(buf):
        atype, alen = struct.unpack_from("!HH", buf, pos)
        if alen < 8 or pos + alen > len(buf):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_LEN)
        yield atype, buf[pos:pos + alen]
        pos += alen


def _iter_instructions(buf: bytes) -> Iterable[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(buf):
        itype, ilen = struct.unpack_from("!HH", buf, pos)
        if ilen < 8 or pos + ilen > len(buf):
            raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN)
        yield itype, buf[pos:pos + ilen]
        pos += ilen


def _is_nx(raw: bytes, subtype: int) -> bool:
    return (len(raw) >= 10 and U16.unpack_from(raw)[0] == ofp.OFPAT_EXPERIMENTER
            and U32.unpack_from(raw, 4)[0] == NX_EXPERIMENTER
            and U16.unpack_from(raw, 8)[0] == subtype)


def _learn_field_header(raw: bytearray, pos: int) -> int:
    """Rewrite the learn subfield header at ``pos`` to its NXM form; its size."""
    (header,) = U32.unpack_from(raw, pos)
    cls, num = header >> 16, (header >> 9) & 0x7F
    if cls == OFPXMC_EXPERIMENTER:
        return 8
    nxm = OXM_TO_NXM.get((cls, num, 0))
    if nxm is not None:
        U32.pack_into(raw, pos, (nxm[0] << 16) | (nxm[1] << 9) | (header & 0x1FF))
    return 4


def _learn_as_ovs(action: bytes) -> bytes:
    """A learn action with its specs' fields named by NXM headers (as OVS
    reports it; OVS encodes learn through nx_put_header at OpenFlow 1.0)."""
    raw = bytearray(action)
    pos = LEARN.size
    while pos + 2 <= len(raw):
        (spec,) = U16.unpack_from(raw, pos)
        if spec == 0:
            break  # padding
        n_bits, src_imm, dst_type = spec & 0x3FF, spec & 0x2000, (spec >> 11) & 3
        pos += 2
        if src_imm:
            pos += (n_bits + 15) // 16 * 2
        else:
            pos += _learn_field_header(raw, pos) + 2
        if dst_type in (0, 1):  # match or load: a destination subfield
            pos += _learn_field_header(raw, pos) + 2
    return bytes(raw)


def _actions_as_ovs(actions: bytes) -> bytes:
    return b"".join(_learn_as_ovs(raw) if _is_nx(raw, NXAST_LEARN) else raw
                    for _, raw in _iter_actions(actions))


def instructions_as_ovs(buf: bytes) -> bytes:
    """Instructions as OVS reports them: an empty action list is no instruction."""
    out: list[bytes] = []
    for itype, raw in _iter_instructions(buf):
        if itype in (ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS):
            if len(raw) == 8:
                continue
            actions = _actions_as_ovs(raw[8:])
            out.append(U16.pack(itype) + U16.pack(8 + len(actions)) + bytes(4) + actions)
        else:
            out.append(raw)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class _ActionFacts:
    groups: frozenset[int]
    ports: frozenset[int]
    learns: frozenset[tuple[int, int]]  # (table, cookie) of delete_learned learn actions


def _facts(instructions: bytes) -> _ActionFacts:
    groups: set[int] = set()
    ports: set[int] = set()
    learns: set[tuple[int, int]] = set()
    for itype, raw in _iter_instructions(instructions):
        if itype not in (ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS):
            continue
        for atype, action in _iter_actions(raw[8:]):
            if atype == ofp.OFPAT_GROUP:
                groups.add(U32.unpack_from(action, 4)[0])
            elif atype == ofp.OFPAT_OUTPUT:
                ports.add(U32.unpack_from(action, 4)[0])
            elif _is_nx(action, NXAST_LEARN):
                fields = LEARN.unpack_from(action)
                cookie, flags, table = fields[7], fields[8], fields[9]
                if flags & LEARN_DELETE_LEARNED:
                    learns.add((table, cookie))
    return _ActionFacts(frozenset(groups), frozenset(ports), frozenset(learns))


# ------------------------------------------------------------------ entries


FlowKey = tuple[int, int, MatchKey]


@dataclass(frozen=True, slots=True)
class FakeFlow:
    """One flow as the switch holds it (its actions as OVS would report them)."""

    table: int
    priority: int
    match: MatchKey
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    importance: int
    instructions: bytes
    added: float = field(default=0.0, compare=False)
    facts: _ActionFacts = field(init=False, compare=False, repr=False)
    fields: Mapping[FieldKey, MatchField] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts", _facts(self.instructions))
        object.__setattr__(self, "fields", {f.key: f for f in self.match})

    @property
    def key(self) -> FlowKey:
        return (self.table, self.priority, self.match)

    @property
    def learned(self) -> bool:
        return own.is_learned(self.cookie)

    def desc(self, now: float) -> bytes:
        """This flow as one ``ofp_flow_desc`` of an OVS flow-desc reply."""
        age = max(now - self.added, 0.0)
        sec, nsec = int(age), int((age % 1) * 1e9)
        stats = b"".join(OXS_STAT.pack((OFPXSC_OPENFLOW_BASIC << 16) | (num << 9) | 8, value)
                         for num, value in ((0, sec << 32 | nsec), (1, sec << 32 | nsec),
                                            (4, 0), (5, 0)))
        stats = U16.pack(0) + U16.pack(4 + len(stats)) + stats
        stats += bytes(-len(stats) % 8)
        body = encode_match_as_ovs(self.match) + stats + self.instructions
        return FLOW_DESC.pack(FLOW_DESC.size + len(body), self.table, self.priority,
                              self.idle_timeout, self.hard_timeout, self.flags, self.importance,
                              self.cookie) + body


@dataclass(frozen=True, slots=True)
class FakeGroup:
    group_id: int
    type: int
    bucket_len: int
    tail: bytes  # buckets, then group properties, as sent

    def desc(self) -> bytes:
        return GROUP_DESC.pack(GROUP_DESC.size + len(self.tail), self.type, self.group_id,
                               self.bucket_len) + self.tail


@dataclass(frozen=True, slots=True)
class Message:
    """A flow mod or group mod as it reached the switch (header stripped)."""

    msg_type: int
    body: bytes

    @classmethod
    def of(cls, msg: Any) -> Message:
        """From a ``messages.RawMessage`` or an os-ken message (serialized here, as
        ``bundle.Bundle.add`` does)."""
        if isinstance(msg, messages.RawMessage):
            return cls(msg.msg_type, msg.body)
        msg.xid = 0
        msg.serialize()
        raw = bytes(msg.buf)
        return cls(raw[1], raw[8:])

    @property
    def is_flow_mod(self) -> bool:
        return self.msg_type == messages.OFPT_FLOW_MOD

    @property
    def is_group_mod(self) -> bool:
        return self.msg_type == messages.OFPT_GROUP_MOD

    @property
    def command(self) -> int:
        if self.is_flow_mod:
            return self.body[17]
        value: int = U16.unpack_from(self.body)[0]
        return value

    @property
    def cookie(self) -> int:
        value: int = struct.unpack_from("!Q", self.body)[0]
        return value

    @property
    def group_id(self) -> int:
        value: int = U32.unpack_from(self.body, 4)[0]
        return value


@dataclass
class _Tables:
    """The switch's state: flows by identity, groups by id, and how many flows
    hold each (table, cookie) delete_learned learn action."""

    flows: dict[FlowKey, FakeFlow] = field(default_factory=dict)
    groups: dict[int, FakeGroup] = field(default_factory=dict)
    learners: Counter[tuple[int, int]] = field(default_factory=Counter)

    def copy(self) -> _Tables:
        return _Tables(dict(self.flows), dict(self.groups), Counter(self.learners))

    def put(self, flow: FakeFlow) -> None:
        old = self.flows.get(flow.key)
        self.flows[flow.key] = flow
        self.learners.update(flow.facts.learns)
        if old is not None:
            self._forget(old)

    def remove(self, key: FlowKey) -> None:
        self._forget(self.flows.pop(key))

    def _forget(self, flow: FakeFlow) -> None:
        for learn in flow.facts.learns:
            self.learners[learn] -= 1
            if self.learners[learn] <= 0:
                del self.learners[learn]
                self._flush_learned(*learn)

    def _flush_learned(self, table: int, cookie: int) -> None:
        """OVS learned_cookies_flush: the entries learned with (table, cookie)."""
        for key in [k for k, f in self.flows.items()
                    if f.table == table and f.cookie == cookie and f.learned]:
            self.remove(key)


# ------------------------------------------------------------------ the switch


class FakeBundle:
    """``bundle.Bundle`` against the fake: adds are kept, the commit applies
    them all or none."""

    def __init__(self, switch: FakeSwitch) -> None:
        self._switch = switch
        self._msgs: list[tuple[int, Message]] = []
        self._closed = False
        self.count = 0

    def _check_open(self) -> None:
        if self._closed:
            raise OpenFlowError(ofp.OFPET_BUNDLE_FAILED, ofp.OFPBFC_BAD_ID, 0)

    def add(self, msg: Any) -> None:
        self._check_open()
        self._msgs.append((self._switch.next_xid(), Message.of(msg)))
        self.count += 1

    def position(self, xid: int) -> int | None:
        """Which add ``xid`` was (0-based), as ``bundle.Bundle.position``: the
        reconciler names the VIP of a refused add by it."""
        for i, (x, _) in enumerate(self._msgs):
            if x == xid:
                return i
        return None

    def commit(self) -> None:
        """As ``bundle.Bundle.commit``: a barrier follows the commit."""
        self._check_open()
        self._closed = True
        if self._msgs:
            self._switch.commit(self._msgs)
            self._switch.barrier()

    def discard(self) -> None:
        self._check_open()
        self._closed = True
        if self._msgs:
            self._switch.counts["bundle_discarded"] += 1
        self._msgs = []

    def __enter__(self) -> FakeBundle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class FakeSwitch:
    """The reconciler's ``Channel`` on an in-memory OpenFlow 1.5 switch.

    ``counts`` says what the controller sent (``flow_mod``, ``group_mod``,
    ``bundle_committed``, ``bundle_failed``, ``bundle_discarded``,
    ``barrier``, ``flow_desc``, ``group_desc``) and ``received`` lists its
    mods in order; ``apply`` is someone else's change (another controller,
    ``ovs-ofctl``) and is counted apart, as ``foreign_mod``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._state = _Tables()
        self._clock = clock
        self._xids = itertools.count(1)
        self._refusals: list[tuple[Callable[[Message], bool], int, int]] = []
        self.counts: Counter[str] = Counter()
        self.received: list[Message] = []

    def next_xid(self) -> int:
        return next(self._xids)

    # ------------------------------------------------------------ Channel

    def dump_flow_desc(self, cookie: int, cookie_mask: int, table_id: int = ofp.OFPTT_ALL,
                       out_port: int = ofp.OFPP_ANY) -> list[Reply]:
        self.counts["flow_desc"] += 1
        now = self._clock()
        entries = [f.desc(now) for f in self._sorted_flows()
                   if f.cookie & cookie_mask == cookie & cookie_mask
                   and table_id in (ofp.OFPTT_ALL, f.table)
                   and (out_port == ofp.OFPP_ANY or out_port in f.facts.ports)]
        return self._multipart(ofp.OFPMP_FLOW_DESC, entries)

    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Reply]:
        """Every group, ``owned`` or not: the fake has none too large for
        group-desc to report (what makes the real channel ask by id)."""
        self.counts["group_desc"] += 1
        return self._multipart(ofp.OFPMP_GROUP_DESC,
                               [self._state.groups[g].desc() for g in sorted(self._state.groups)])

    def open_bundle(self) -> FakeBundle:
        return FakeBundle(self)

    def bundle(self, msgs: Iterable[Any]) -> None:
        with self.open_bundle() as b:
            for m in msgs:
                b.add(m)

    def barrier(self) -> None:
        self.counts["barrier"] += 1

    # ------------------------------------------------------------ test hooks

    def refuse(self, predicate: Callable[[Message], bool],
               err_type: int = ofp.OFPET_FLOW_MOD_FAILED,
               code: int = ofp.OFPFMFC_TABLE_FULL) -> None:
        """Refuse every message ``predicate`` picks with this error (until ``allow``)."""
        self._refusals.append((predicate, err_type, code))

    def allow(self) -> None:
        self._refusals.clear()

    def apply(self, msg: Any) -> None:
        """Someone else's flow mod or group mod, applied at once (not counted
        as the controller's); raises ``OpenFlowError`` as the switch answers."""
        self.counts["foreign_mod"] += 1
        state = self._state.copy()
        xid = self.next_xid()
        try:
            self._apply(state, Message.of(msg))
        except Refused as exc:
            raise OpenFlowError(exc.err_type, exc.code, xid) from None
        self._state = state

    def learn(self, flow: FlowSpec, packet: Mapping[str, int | str]) -> FakeFlow:
        """Play a packet with these field values (os-ken names) through the
        ``learn`` action of the installed ``flow`` (found by its table,
        priority and match), as ovs-vswitchd does in the slow path, and
        install what it learns: its loads as set_field actions (masked for
        part of a field), byte-identical to what ``ofproto/trace -generate``
        makes OVS learn (``test_learned_entries_equal_ovs``)."""
        key = (flow.table, flow.priority, match_key(flow.match))
        holder = self._state.flows.get(key)
        learns = [a for a in _decode_actions(holder) if isinstance(a, Learn)] if holder else []
        if len(learns) != 1:
            raise LookupError(f"{len(learns)} learn actions in the installed {flow}")
        (spec,) = learns
        match: dict[str, int | str] = {}
        loads: list[bytes] = []
        for s in spec.specs:
            if isinstance(s, LearnMatchField):
                match[s.dst] = packet[s.src]
            elif isinstance(s, LearnMatchValue):
                match[s.dst] = s.value
            elif isinstance(s, LearnLoadValue):
                loads.append(_set_field(s.dst, s.value, s.n_bits))
            elif isinstance(s, LearnLoadField):
                loads.append(_set_field(s.dst, int(packet[s.src]), s.n_bits))
        actions = b"".join(loads)
        instructions = (U16.pack(ofp.OFPIT_APPLY_ACTIONS) + U16.pack(8 + len(actions)) + bytes(4)
                        + actions) if actions else b""
        learned = FakeFlow(spec.table, spec.priority, match_key(Match.of(match)), spec.cookie,
                           spec.idle_timeout, spec.hard_timeout,
                           ofp.OFPFF_SEND_FLOW_REM if spec.flags & LEARN_SEND_FLOW_REM else 0, 0,
                           instructions, self._clock())
        self._state.put(learned)
        return learned

    # ------------------------------------------------------------ inspection

    def flows(self, cookie: int = 0, cookie_mask: int = 0) -> list[FakeFlow]:
        return [f for f in self._sorted_flows()
                if f.cookie & cookie_mask == cookie & cookie_mask]

    def managed_flows(self) -> list[FakeFlow]:
        return self.flows(own.MANAGED_COOKIE, own.MAGIC_MASK)

    def learned_flows(self) -> list[FakeFlow]:
        return self.flows(own.LEARNED_COOKIE, own.MAGIC_MASK)

    @property
    def groups(self) -> Mapping[int, FakeGroup]:
        return dict(self._state.groups)

    @property
    def mods(self) -> int:
        """Flow and group mods the controller has sent."""
        return self.counts["flow_mod"] + self.counts["group_mod"]

    def snapshot(self) -> tuple[frozenset[FakeFlow], frozenset[FakeGroup]]:
        """The whole table, comparable (``added`` times aside)."""
        return frozenset(self._state.flows.values()), frozenset(self._state.groups.values())

    # ------------------------------------------------------------ semantics

    def commit(self, msgs: list[tuple[int, Message]]) -> None:
        """Apply a bundle's messages in order, all or none."""
        state = self._state.copy()
        for _, msg in msgs:
            self.received.append(msg)
            self.counts["flow_mod" if msg.is_flow_mod else "group_mod"] += 1
        for xid, msg in msgs:
            try:
                for predicate, err_type, code in self._refusals:
                    if predicate(msg):
                        raise Refused(err_type, code)
                self._apply(state, msg)
            except Refused as exc:
                self.counts["bundle_failed"] += 1
                raise OpenFlowError(exc.err_type, exc.code, xid) from None
        self.counts["bundle_committed"] += 1
        self._state = state

    def _sorted_flows(self) -> list[FakeFlow]:
        return sorted(self._state.flows.values(), key=lambda f: (f.table, -f.priority))

    def _apply(self, state: _Tables, msg: Message) -> None:
        if msg.is_flow_mod:
            self._flow_mod(state, msg.body)
        elif msg.is_group_mod:
            self._group_mod(state, msg.body)
        else:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)

    def _flow_mod(self, state: _Tables, body: bytes) -> None:
        (cookie, cookie_mask, table, command, idle, hard, priority, _buffer, out_port,
         out_group, flags, importance) = messages.FLOW_MOD.unpack_from(body)
        match_len = U16.unpack_from(body, MATCH_AT + 2)[0]
        match = parse_match(body, MATCH_AT + 4, MATCH_AT + match_len)
        instructions = instructions_as_ovs(body[MATCH_AT + (match_len + 7) // 8 * 8:])
        facts = _facts(instructions)
        if (command in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT)
                and any(g not in state.groups for g in facts.groups)):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP)
        if command == ofp.OFPFC_ADD:
            if table == ofp.OFPTT_ALL:
                raise Refused(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID)
            state.put(FakeFlow(table, priority, match, cookie, idle, hard, flags & KEPT_FLAGS,
                               importance, instructions, self._clock()))
            return
        strict = command in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT)
        if command not in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE,
                           ofp.OFPFC_DELETE_STRICT):
            raise Refused(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND)
        deleting = command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
        if strict:
            found = state.flows.get((table, priority, match))
            candidates = [found] if found is not None else []
        else:
            candidates = [f for f in state.flows.values()
                          if table in (ofp.OFPTT_ALL, f.table) and _covers(match, f.fields)]
        chosen = [f for f in candidates
                  if f.cookie & cookie_mask == cookie & cookie_mask
                  and table in (ofp.OFPTT_ALL, f.table)
                  and (not deleting or out_port == ofp.OFPP_ANY or out_port in f.facts.ports)
                  and (not deleting or out_group == ofp.OFPG_ANY
                       or out_group in f.facts.groups)]
        for f in chosen:
            if f.key not in state.flows:
                continue  # gone already: a learned entry flushed with its learning flow
            if deleting:
                state.remove(f.key)
            else:
                state.put(replace(f, instructions=instructions))

    def _group_mod(self, state: _Tables, body: bytes) -> None:
        command, gtype, group_id, bucket_len, _ = messages.GROUP_MOD.unpack_from(body)
        if command == ofp.OFPGC_DELETE:
            doomed = list(state.groups) if group_id == ofp.OFPG_ALL else [group_id]
            for gid in doomed:
                if state.groups.pop(gid, None) is None:
                    continue
                for key in [k for k, f in state.flows.items() if gid in f.facts.groups]:
                    if key in state.flows:
                        state.remove(key)
            return
        if group_id > ofp.OFPG_MAX:
            raise Refused(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_INVALID_GROUP)
        group = FakeGroup(group_id, gtype, bucket_len, body[GROUP_MOD_SIZE:])
        exists = group_id in state.groups
        if command == ofp.OFPGC_ADD and exists:
            raise Refused(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_GROUP_EXISTS)
        if command == ofp.OFPGC_MODIFY and not exists:
            raise Refused(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_UNKNOWN_GROUP)
        if command not in (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, OFPGC_ADD_OR_MOD):
            raise Refused(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_COMMAND)
        state.groups[group_id] = group

    def _multipart(self, mp_type: int, entries: list[bytes]) -> list[Reply]:
        """Entries in multipart replies of at most 65535 bytes (OVS
        ofpmp_postappend starts a new message when one would grow past that)."""
        xid = self.next_xid()
        parts: list[list[bytes]] = [[]]
        size = HEADER.size + MULTIPART.size
        for e in entries:
            if size + len(e) > MAX_MESSAGE and parts[-1]:
                parts.append([])
                size = HEADER.size + MULTIPART.size
            parts[-1].append(e)
            size += len(e)
        replies: list[Reply] = []
        for i, part in enumerate(parts):
            body = b"".join(part)
            more = 1 if i < len(parts) - 1 else 0
            length = HEADER.size + MULTIPART.size + len(body)
            raw = (HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, length, xid)
                   + MULTIPART.pack(mp_type, more) + body)
            replies.append(Reply(ofp.OFPT_MULTIPART_REPLY, xid, raw))
        return replies


def _decode_actions(flow: FakeFlow) -> tuple[Any, ...]:
    """``flow``'s actions as lbaffd's decoder reads them from a dump."""
    entry = flow.desc(0.0)
    return messages.decode_flow(entry, 0).actions


def _set_field(name: str, value: int, n_bits: int) -> bytes:
    """OF1.5 set_field of the low ``n_bits`` of ``name`` (masked when partial)."""
    num, kind = ofp.oxm_get_field_info_by_name(name)
    width = kind.size
    full = (1 << 8 * width) - 1
    mask = (1 << n_bits) - 1 if n_bits < 8 * width else full
    cls, fnum = (num >> 7, num & 0x7F) if isinstance(num, int) else (OFPXMC_EXPERIMENTER, 0)
    tlv = _tlv((cls, fnum, 0), value & mask, mask, width)
    size = (4 + len(tlv) + 7) // 8 * 8
    return U16.pack(ofp.OFPAT_SET_FIELD) + U16.pack(size) + tlv + bytes(size - 4 - len(tlv))
