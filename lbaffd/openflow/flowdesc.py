"""Decoder for OF1.5 flow-desc multipart replies (OFPMP_FLOW_DESC).

os-ken 4.2's ``OFPActionCopyField.parser`` slices past the end of the action
(it reads ``len_`` bytes *after* the fixed part, padding and following actions
included), so any reply holding a ``move`` fails to parse.  OVS encodes every
``move`` as OF1.5 copy_field, so lbaffd decodes flow-desc entries itself and
uses os-ken only for the pieces it parses correctly (match, stats, the other
actions).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from os_ken import utils
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser


class DecodeError(ValueError):
    """What a decoder of switch replies raises on bytes it cannot decode
    (malformed, truncated, or outside what the os-ken path parses): the one
    error the decoders here, in ``groupdesc`` and in ``fastdecode`` document."""


@dataclass(frozen=True, slots=True)
class RawInstruction:
    type: int
    actions: tuple[Any, ...]  # os-ken action objects (apply/write actions)


@dataclass(frozen=True, slots=True)
class RawFlow:
    table_id: int
    priority: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    cookie: int
    match: Any  # os-ken OFPMatch
    instructions: tuple[RawInstruction, ...]
    stats: Mapping[str, Any] = field(default_factory=dict)  # OXS: duration, idle_time, ...


NX_VENDOR = 0x00002320
# Nicira actions that nest an action list after a fixed part: os-ken's parsers
# walk it by each nested action's length and loop forever on a length of 0
# (ct: 24-byte fixed part; clone: 16).
_NX_NESTING = {35: 24, 42: 16}


def parse_actions(buf: bytes, offset: int, length: int) -> tuple[Any, ...]:
    """Parse ``length`` bytes of actions, copy_field included; ``DecodeError``
    on anything malformed or that os-ken cannot parse."""
    end = offset + length
    if end > len(buf):
        raise DecodeError(f"actions past the buffer ({end} > {len(buf)})")
    out: list[Any] = []
    while offset < end:
        if offset + 4 > end:
            raise DecodeError(f"truncated action header at offset {offset}")
        type_, len_ = struct.unpack_from("!HH", buf, offset)
        if len_ < 8 or len_ % 8 or offset + len_ > end:
            raise DecodeError(f"bad action length {len_} at offset {offset}")
        _check_nested(buf, offset, len_, type_)
        try:
            if type_ == ofp.OFPAT_COPY_FIELD:
                out.append(_parse_copy_field(buf, offset, len_))
            else:
                out.append(parser.OFPAction.parser(buf, offset))
        except Exception as exc:
            raise DecodeError(f"action type {type_} at offset {offset}: {exc!r}") from exc
        offset += len_
    return tuple(out)


def _check_nested(buf: bytes, offset: int, len_: int, type_: int) -> None:
    """The nested action list of a ct/clone action is framed (see _NX_NESTING)."""
    if type_ != ofp.OFPAT_EXPERIMENTER or len_ < 10:
        return
    vendor, subtype = struct.unpack_from("!IH", buf, offset + 4)
    fixed = _NX_NESTING.get(subtype) if vendor == NX_VENDOR else None
    if fixed is None:
        return
    pos, end = offset + fixed, offset + len_
    while pos < end:
        if pos + 4 > end:
            raise DecodeError(f"truncated nested action at offset {pos}")
        ntype, nlen = struct.unpack_from("!HH", buf, pos)
        if nlen < 8 or nlen % 8 or pos + nlen > end:
            raise DecodeError(f"bad nested action length {nlen} at offset {pos}")
        _check_nested(buf, pos, nlen, ntype)
        pos += nlen


def _parse_copy_field(buf: bytes, offset: int, len_: int) -> Any:
    _, _, n_bits, src_ofs, dst_ofs = struct.unpack_from(
        ofp.OFP_ACTION_COPY_FIELD_PACK_STR, buf, offset)
    rest = bytes(buf[offset + ofp.OFP_ACTION_COPY_FIELD_SIZE:offset + len_])
    ids = []
    for _ in range(2):  # src and dst OXM headers; the rest is padding
        oxm_id, rest = parser.OFPOxmId.parse(rest)
        ids.append(oxm_id)
    return parser.OFPActionCopyField(n_bits=n_bits, src_offset=src_ofs, dst_offset=dst_ofs,
                                     oxm_ids=ids)


def iter_entries(buf: bytes, offset: int = ofp.OFP_MULTIPART_REPLY_SIZE
                 ) -> Iterator[tuple[int, int, bytes]]:
    """(offset, length, identity) of each ``ofp_flow_desc`` in a reply message.

    ``identity`` is the entry without its length and stats, which change on
    every dump: two entries with the same identity decode to the same flow.
    """
    total = len(buf)
    while offset < total:
        if offset + ofp.OFP_FLOW_DESC_0_SIZE + 4 > total:
            raise DecodeError(f"truncated flow-desc entry at offset {offset}")
        (length,) = struct.unpack_from("!H", buf, offset)
        end = offset + length
        pos = offset + ofp.OFP_FLOW_DESC_0_SIZE
        match_end = pos + utils.round_up(struct.unpack_from("!H", buf, pos + 2)[0], 8)
        if length < ofp.OFP_FLOW_DESC_0_SIZE or end > total or match_end + 4 > end:
            raise DecodeError(f"bad flow-desc entry length {length} at offset {offset}")
        stats_end = match_end + utils.round_up(
            struct.unpack_from("!H", buf, match_end + 2)[0], 8)
        if stats_end > end:
            raise DecodeError(f"flow-desc stats past the entry at offset {offset}")
        identity = bytes(buf[offset + 2:match_end]) + bytes(buf[stats_end:end])
        yield offset, length, identity
        offset = end


def decode_entry(buf: bytes, offset: int, with_actions: bool = True) -> RawFlow:
    """One ``ofp_flow_desc`` at ``offset`` (its instructions left out when
    ``with_actions`` is false: counters need only the match and the stats)."""
    try:
        (length, table_id, priority, idle, hard, flags, _importance,
         cookie) = struct.unpack_from(ofp.OFP_FLOW_DESC_0_PACK_STR, buf, offset)
        end = offset + length
        if end > len(buf) or length < ofp.OFP_FLOW_DESC_0_SIZE:
            raise DecodeError(f"bad flow-desc entry length {length} at offset {offset}")
        pos = offset + ofp.OFP_FLOW_DESC_0_SIZE
        match = parser.OFPMatch.parser(buf, pos)
        pos += utils.round_up(match.length, 8)
        stats = parser.OFPStats.parser(buf, pos)
        pos += utils.round_up(stats.length, 8)
        items = dict(stats.items())
    except DecodeError:
        raise
    except Exception as exc:  # os-ken on a damaged match or stats block
        raise DecodeError(f"flow-desc entry at offset {offset}: {exc!r}") from exc
    insts: list[RawInstruction] = []
    while with_actions and pos < end:
        if pos + 4 > end:
            raise DecodeError(f"truncated instruction at offset {pos}")
        itype, ilen = struct.unpack_from("!HH", buf, pos)
        if ilen < ofp.OFP_INSTRUCTION_ACTIONS_SIZE or pos + ilen > end:  # would never advance
            raise DecodeError(f"bad instruction length {ilen} at offset {pos}")
        if itype in (ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS):
            actions = parse_actions(buf, pos + ofp.OFP_INSTRUCTION_ACTIONS_SIZE,
                                    ilen - ofp.OFP_INSTRUCTION_ACTIONS_SIZE)
        else:
            actions = ()
        insts.append(RawInstruction(itype, actions))
        pos += ilen
    return RawFlow(table_id, priority, idle, hard, flags, cookie, match, tuple(insts), items)


def decode_flow_desc_body(buf: bytes, offset: int = ofp.OFP_MULTIPART_REPLY_SIZE
                          ) -> list[RawFlow]:
    """All ``ofp_flow_desc`` entries of one reply message (header included in ``buf``)."""
    return [decode_entry(buf, off) for off, _, _ in iter_entries(buf, offset)]


OFPMP_FLOW_MONITOR = 16
_UPDATE_EVENTS_WITH_COOKIE = (1, 2, 3)  # OFPFME_ADDED, _REMOVED, _MODIFIED


def monitor_update_cookies(buf: bytes) -> list[int]:
    """Cookies of the flows another controller added, removed or modified, from
    one OFPMP_FLOW_MONITOR reply (os-ken 4.2 cannot parse these).  The
    requester's own changes arrive abbreviated, without a cookie, and are skipped."""
    if len(buf) < 16 or struct.unpack_from("!H", buf, 8)[0] != OFPMP_FLOW_MONITOR:
        return []
    cookies: list[int] = []
    offset = ofp.OFP_MULTIPART_REPLY_SIZE
    while offset + 4 <= len(buf):
        length, event = struct.unpack_from("!HH", buf, offset)
        if length < 4:
            break
        if event in _UPDATE_EVENTS_WITH_COOKIE and offset + 24 <= len(buf):
            cookies.append(struct.unpack_from("!Q", buf, offset + 16)[0])
        offset += length
    return cookies
