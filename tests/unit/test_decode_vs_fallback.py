"""The codec's flow-desc decoder (``messages.decode_flow``) agrees with the os-ken path
(``messages.decode_flow_fallback``, through ``oskenfallback``).

There is no switch at this level, so entries are built from what lbaffd sends:
a flow mod's match and instructions are laid out exactly as in an
``ofp_flow_desc`` (OF1.5 7.3.5.2), to which an OVS-like stats block is added.
OVS's own re-encodings (``xreg`` pairs, NXM ``ct_mark``, copy_field for
every move, ...) are covered against a real switch by
``tests/integration/test_decode_vs_ovs.py``; the few that are trivial to write by
hand are checked here too.  Anything outside lbaffd's subset must take the
os-ken path and decode exactly as before (``Opaque`` included).
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from os_ken.lib import type_desc

from lbaffd.model import ownership as own
from lbaffd.openflow import messages
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import (
    OFPP_CONTROLLER,
    Ct,
    FlowSpec,
    GroupSpec,
    Learn,
    LearnLoadField,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
    Move,
    Nat,
    Opaque,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.oxm import ipv6_text
from lbaffd.openflow.packed import PackedState
from lbaffd.reconcile.readback import DecodeCache
from tests.switchstate import specs
from tests.unit.test_encode_vs_osken import EXTRA_GROUPS, STATES

FLOW_MOD_FIXED = 40  # messages.FLOW_MOD after the 8-byte header: match and instructions follow
# duration, idle_time, packet_count, byte_count (OXS, as OVS sends them)
STATS = struct.pack("!HH", 0, 52) + b"".join(
    struct.pack("!IQ", (0x8002 << 16) | (field << 9) | 8, value)
    for field, value in ((0, 0x2DC6C0), (1, 7), (4, 0), (5, 0))) + bytes(4)

# what the compiler does not emit but lbaffd's decoder must still cover exactly:
# NAT ranges, ct marks, learn from fields, masks, controller output, timeouts
EXTRA_FLOWS = (
    FlowSpec(3, 101, Match.of(eth_type=0x86DD, ipv6_dst="fd00::1",
                              ipv6_src=("fd00::", "ffff:ffff:ffff:ffff::")),
             (Ct(commit=True, zone=7, table=4, nat=Nat("src", "fd00::1", "fd00::9", 1000, 2000),
                 mark=0xFFFFFFFF),), 0x1BAF000000000001),
    FlowSpec(3, 102, Match.of(eth_type=0x800, ipv4_dst="10.9.0.1",
                              ipv4_src=("10.1.0.0", "255.255.0.0")),
             (Ct(commit=True, nat=Nat("dst", "10.0.0.1", "10.0.0.9")),
              Ct(commit=True, nat=Nat("src", "10.0.0.3", port_min=5, port_max=5)),
              Ct(commit=True, zone_field="reg13", nat=Nat("dst", "10.0.0.1")), Ct(nat=Nat()),
              Ct(commit=True, zone=3, table=9, mark=5)), 0x1BAF000000000001),
    FlowSpec(4, 5, Match.of(in_port=3, tcp_src=1, ip_proto=6, eth_type=0x800,
                            reg5=(0x1030, 0xF0F0), metadata=(7, 0xFF), reg3=9),
             (Learn(table=9, specs=(LearnMatchValue(0x800, "eth_type", 16),
                                    LearnLoadField("reg1", "reg2", 16),
                                    LearnLoadField("ipv4_src", "reg8", 32),
                                    LearnMatchField("ipv4_src", "ipv4_dst", 32),
                                    LearnLoadValue(5, "reg9", 17)),
                    hard_timeout=9, fin_idle_timeout=3, fin_hard_timeout=4, flags=3, cookie=8),
              Move("reg0", "reg1", 16, 4, 8), Move("eth_src", "eth_dst", 48),
              SetField("ipv4_dst", "10.0.0.1"), SetField("eth_src", "02:aa:bb:cc:dd:ee"),
              SetField("ip_dscp", 10), Output(OFPP_CONTROLLER, 0xFFFF), Output(3),
              Resubmit(7, 5)),
             0x1BAF000000000002, idle_timeout=77, hard_timeout=88, flags=1),
    FlowSpec(0, 0, Match(), (), 0x1BAF000000000003),
)


def corpus() -> Iterator[FlowSpec]:
    for state in STATES:
        yield from specs(state.state).flows.values()
    yield from EXTRA_FLOWS


def entry(spec: FlowSpec, body: bytes | None = None) -> bytes:
    """An ``ofp_flow_desc`` for ``spec`` (or for the given match+instructions)."""
    if body is None:
        body = messages.flow_add(spec).body[FLOW_MOD_FIXED:]
    (mlen,) = struct.unpack_from("!H", body, 2)
    match_end = (mlen + 7) // 8 * 8
    rest = body[:match_end] + STATS + body[match_end:]
    return struct.pack("!H2xBxHHHHHQ", 24 + len(rest), spec.table, spec.priority,
                       spec.idle_timeout, spec.hard_timeout, spec.flags, 0, spec.cookie) + rest


def replies(entries: list[bytes]) -> list[bytes]:
    """OFPMP_FLOW_DESC reply messages holding ``entries`` (each under 64 KiB)."""
    msgs: list[bytes] = []
    body = b""
    for e in [*entries, None]:
        if e is None or 16 + len(body) + len(e) > 0xFFFF:
            msgs.append(struct.pack("!BBHIHH4x", 6, 19, 16 + len(body), 1, 1, 0) + body)
            body = b""
        if e is not None:
            body += e
    return msgs


def old(buf: bytes, offset: int = 0) -> FlowSpec:
    return messages.decode_flow_fallback(buf, offset)


def test_corpus_is_rich() -> None:
    kinds = {type(a).__name__ for f in corpus() for a in f.actions}
    assert {"Output", "SetField", "Move", "Resubmit", "Group", "Ct", "Learn"} <= kinds
    assert len(list(corpus())) > 1000


def test_compiled_flows_decode_directly_and_equal() -> None:
    for spec in corpus():
        raw = entry(spec)
        fast = messages.decode_fast(raw, 0)
        assert fast is not None, spec
        assert fast == old(raw) == spec


def test_a_whole_reply_through_the_decode_cache() -> None:
    flows = list(corpus())
    msgs = replies([entry(f) for f in flows])
    assert len(msgs) > 1

    @dataclass
    class Part:
        raw: bytes

    decoded = DecodeCache().flows([Part(m) for m in msgs])
    assert PackedState.build(decoded, []) == PackedState.of(flows, [])
    for msg in msgs:
        offsets = [off for off, _, _ in iter_entries(msg)]
        assert [messages.decode_flow(msg, off) for off in offsets] == [
            old(msg, off) for off in offsets]


def test_decoded_state_is_shared() -> None:
    """Equal actions and match TLVs are decoded once (memos)."""
    spec = next(f for f in corpus() if any(isinstance(a, Resubmit) for a in f.actions)
                and f.match.fields)
    messages.clear_caches()
    a, b = messages.decode_flow(entry(spec), 0), messages.decode_flow(entry(spec), 0)
    assert a == b == spec
    assert all(x is y for x, y in zip(a.actions, b.actions, strict=True))
    assert all(x is y for x, y in zip(a.match.fields, b.match.fields, strict=True))


# ------------------------------------------------------------------ OVS's forms


def oxm(cls: int, field: int, value: bytes, mask: bytes = b"") -> bytes:
    size = len(value) + len(mask)
    return struct.pack("!I", (cls << 16) | (field << 9) | (0x100 if mask else 0) | size) \
        + value + mask


def match(*tlvs: bytes) -> bytes:
    body = b"".join(tlvs)
    size = 4 + len(body)
    return struct.pack("!HH", 1, size) + body + bytes(-size % 8)


def apply(*actions: bytes) -> bytes:
    body = b"".join(actions)
    return struct.pack("!HH4x", 4, 8 + len(body)) + body


def raw_entry(match_bytes: bytes, *instructions: bytes) -> bytes:
    spec = FlowSpec(5, 100, Match(), (), 0x1BAF000000000007)
    return entry(spec, match_bytes + b"".join(instructions))


def output(port: int) -> bytes:
    return struct.pack("!HHIH6x", 0, 16, port, 0)


ETH_IP = oxm(0x8000, 5, b"\x08\x00")
U32 = struct.Struct("!I")

OVS_FORMS = {
    # reg0=1,reg1=2 as one OXM_OF_PKT_REG; reg3 alone: a half mask
    "xreg": match(ETH_IP, oxm(0x8001, 0, bytes.fromhex("0000000100000002")),
                  oxm(0x8001, 1, bytes.fromhex("0000000000000009"),
                      bytes.fromhex("00000000ffffffff"))),
    "xreg partial mask": match(oxm(0x8001, 2, bytes.fromhex("00000010ffffffff"),
                                   bytes.fromhex("000000f0ffffff00"))),
    # ct_mark and ct_state as NXM_NX fields, masked
    "nxm ct": match(ETH_IP, oxm(1, 107, U32.pack(2), U32.pack(2)),
                    oxm(1, 105, U32.pack(0x21), U32.pack(0x3F))),
    "full masks": match(ETH_IP, oxm(0x8000, 11, socket.inet_aton("10.0.0.1"), b"\xff" * 4),
                        oxm(0x8000, 2, bytes(7) + b"\x05", b"\xff" * 8)),
    "unmasked value bits": match(oxm(0x8000, 2, b"\xff" * 8, bytes(7) + b"\x0f")),
}


@pytest.mark.parametrize("name", sorted(OVS_FORMS))
def test_ovs_match_forms(name: str) -> None:
    raw = raw_entry(OVS_FORMS[name], apply(output(3)))
    fast = messages.decode_fast(raw, 0)
    assert fast is not None
    assert fast == old(raw)


def test_xreg_split_values() -> None:
    fast = messages.decode_fast(raw_entry(OVS_FORMS["xreg"]), 0)
    assert fast is not None
    assert fast.match == Match.of(eth_type=0x800, reg0=1, reg1=2, reg3=9)


def test_nat_single_address_and_port_forms() -> None:
    """OVS may send a single address/port with or without its max."""
    nat = struct.pack("!HHIH2xHH", 0xFFFF, 32, 0x2320, 36, 2, 1 | 2 | 16 | 32) \
        + socket.inet_aton("10.0.0.1") * 2 + struct.pack("!HH", 80, 80) + bytes(4)
    ct = struct.pack("!HHIHH4sHB3xH", 0xFFFF, 24 + len(nat), 0x2320, 35, 1, bytes(4), 0,
                     0xFF, 0) + nat
    raw = raw_entry(match(ETH_IP), apply(ct))
    fast = messages.decode_fast(raw, 0)
    assert fast is not None and fast == old(raw)
    assert fast.actions == (Ct(commit=True, nat=Nat("dst", "10.0.0.1", port_min=80,
                                                    port_max=80)),)


def test_ipv6_text_is_os_kens() -> None:
    rng = random.Random(5)
    samples = [bytes(16), bytes(15) + b"\1", bytes(10) + b"\xff\xff\1\2\3\4",
               bytes(12) + b"\1\2\3\4", bytes.fromhex("20010db8000000010000000000000005"),
               bytes.fromhex("00010000000100000000000100000000")]
    samples += [bytes(rng.choice((0, 0, 0, 1, 0xFF, rng.randrange(256))) for _ in range(16))
                for _ in range(20000)]
    for raw in samples:
        assert ipv6_text(raw) == type_desc.IPv6Addr.to_user(raw)


# ------------------------------------------------------------------ fallbacks

NOTE = struct.pack("!HHIH6s", 0xFFFF, 16, 0x2320, 8, b"abcd\0\0")
DEC_TTL = struct.pack("!HH4x", 24, 8)
MASKED_REG_LOAD = struct.pack("!HH", 25, 16) + oxm(1, 3, U32.pack(5), U32.pack(0xFF)) + bytes(4)
CT_LABEL = struct.pack("!HHIHH4sHB3xH", 0xFFFF, 24 + 40, 0x2320, 35, 1, bytes(4), 0, 0xFF,
                       0) + struct.pack("!HH", 25, 40) + oxm(1, 108, bytes(15) + b"\1",
                                                          bytes(15) + b"\1") + bytes(4)
LEARN_OUTPUT = struct.pack("!HHIHHHHQHBxHH", 0xFFFF, 40, 0x2320, 16, 10, 0, 0x8000, 0, 0, 5,
                           0, 0) + struct.pack("!HIH", 0x1000 | 16, (0 << 16) | (1 << 9) | 2,
                                               0) + bytes(0)
UNKNOWN_EXPERIMENTER = struct.pack("!HHI8x", 0xFFFF, 16, 0x00ABCDEF)

FOREIGN = {
    "dec_ttl": raw_entry(match(ETH_IP), apply(DEC_TTL, output(3))),
    "note": raw_entry(match(ETH_IP), apply(output(1), NOTE)),
    "masked load": raw_entry(match(ETH_IP), apply(MASKED_REG_LOAD)),
    "ct exec label": raw_entry(match(ETH_IP), apply(CT_LABEL)),
    "learn output": raw_entry(match(ETH_IP), apply(LEARN_OUTPUT + bytes(-len(LEARN_OUTPUT) % 8))),
    "other experimenter": raw_entry(match(ETH_IP), apply(UNKNOWN_EXPERIMENTER)),
    "write actions": raw_entry(match(ETH_IP), struct.pack("!HH4x", 3, 24) + output(3)),
    "goto table": raw_entry(match(ETH_IP), apply(output(3)), struct.pack("!HHB3x", 1, 8, 4)),
    "unknown OXM field": raw_entry(match(ETH_IP, oxm(0x8000, 120, b"\1\2"))),
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_entries_take_the_os_ken_path(name: str) -> None:
    raw = FOREIGN[name]
    assert messages.decode_fast(raw, 0) is None
    try:
        expected = old(raw)
    except Exception as err:
        with pytest.raises(type(err)):
            messages.decode_flow(raw, 0)
        return
    assert messages.decode_flow(raw, 0) == expected
    if name != "unknown OXM field":
        assert any(isinstance(a, Opaque) for a in expected.actions)


def varied() -> list[FlowSpec]:
    """One compiled flow per kind of action list, and the extra flows."""
    kinds: dict[tuple[str, ...], FlowSpec] = {}
    for f in corpus():
        kinds.setdefault(tuple(type(a).__name__ for a in f.actions), f)
    return [*kinds.values(), *EXTRA_FLOWS]


def _outcome(fn: object, raw: bytes) -> object:
    try:
        return fn(raw, 0)  # type: ignore[operator]
    except Exception as err:
        return type(err)


def test_damaged_entries_never_crash_the_fast_path() -> None:
    """Any 16-bit word of an entry set to 0, 8 or 0xffff (lengths included):
    the fast path declines or decodes exactly what os-ken decodes.  (When it
    declines, the os-ken path is not run here: os-ken itself loops forever on
    some of these, e.g. a zero-length action nested in ``ct``.)"""
    for raw in [entry(f) for f in varied()] + list(FOREIGN.values()):
        for pos in range(0, len(raw) - 1, 2):
            for word in (b"\0\0", b"\xff\xff", b"\0\x08"):
                case = raw[:pos] + word + raw[pos + 2:]
                fast = messages.decode_fast(case, 0)
                if fast is not None:
                    assert fast == old(case)


def test_truncated_entries_fall_back() -> None:
    """A cut entry is declined, and decodes (or fails) as on the os-ken path."""
    for raw in [entry(f) for f in EXTRA_FLOWS] + list(FOREIGN.values()):
        for n in range(len(raw)):
            case = raw[:n]
            assert messages.decode_fast(case, 0) is None
            assert _outcome(messages.decode_flow, case) == _outcome(old, case)


def test_own_cookie_space_is_untouched() -> None:
    """The decoder keeps the cookie (ownership is decided from it)."""
    spec = next(iter(corpus()))
    fast = messages.decode_fast(entry(spec), 0)
    assert fast is not None and own.is_managed(fast.cookie) == own.is_managed(spec.cookie)


# ------------------------------------------------------------------ groups


def group_entry(spec: GroupSpec) -> bytes:
    """An ``ofp_group_desc`` for ``spec``: a group mod's buckets and properties
    are laid out as in the desc (OF1.5 7.3.5.9)."""
    body = messages.group_add(spec).body
    rest = body[GROUP_MOD_FIXED:]
    (bucket_len,) = struct.unpack_from("!H", body, 8)
    return struct.pack("!HBxIH6x", 16 + len(rest), 1, spec.group_id, bucket_len) + rest


GROUP_MOD_FIXED = 16  # messages.GROUP_MOD: buckets and properties follow


def groups() -> Iterator[GroupSpec]:
    for state in STATES:
        yield from specs(state.state).groups.values()
    yield from EXTRA_GROUPS


def old_group(buf: bytes, offset: int = 0) -> GroupSpec:
    return messages.decode_group_fallback(buf, offset)


def test_groups_decode_directly_and_equal() -> None:
    count = 0
    for spec in groups():
        raw = group_entry(spec)
        fast = messages.decode_group_fast(raw, 0)
        assert fast is not None, spec
        assert fast == old_group(raw) == spec
        count += 1
    assert count > 50


def test_foreign_groups_take_the_os_ken_path() -> None:
    spec = next(g for g in groups() if g.buckets)
    raw = group_entry(spec)
    (bucket_len,) = struct.unpack_from("!H", raw, 8)
    cases = {
        "all": raw[:2] + b"\0" + raw[3:],  # OFPGT_ALL
        "dec_ttl": None,
        "other property": raw + struct.pack("!HHI", 0xFFFF, 16, 0xABC) + bytes(8),
    }
    # a bucket whose first action is dec_ttl
    b0 = 16
    blen, alen, bid = struct.unpack_from("!HHI", raw, b0)
    bucket = struct.pack("!HHI", blen + 8, alen + 8, bid) + DEC_TTL + raw[b0 + 8:b0 + blen]
    body = bucket + raw[b0 + blen:]
    cases["dec_ttl"] = struct.pack("!HBxIH6x", 16 + len(body), 1, spec.group_id,
                                   bucket_len + 8) + body
    for name, case in cases.items():
        fixed_len = struct.pack("!H", len(case)) + case[2:]
        assert messages.decode_group_fast(fixed_len, 0) is None, name
        assert messages.decode_group(fixed_len, 0) == old_group(fixed_len), name
    assert any(isinstance(a, Opaque) for b in old_group(cases["dec_ttl"]).buckets
               for a in b.actions)


def test_damaged_groups_never_crash_the_fast_path() -> None:
    for spec in list(groups())[:3] + list(EXTRA_GROUPS):
        raw = group_entry(spec)
        for n in range(len(raw)):
            assert messages.decode_group_fast(raw[:n], 0) is None
            assert _outcome(messages.decode_group, raw[:n]) == _outcome(old_group, raw[:n])
        for pos in range(0, len(raw) - 1, 2):
            for word in (b"\0\0", b"\xff\xff", b"\0\x08"):
                case = raw[:pos] + word + raw[pos + 2:]
                fast = messages.decode_group_fast(case, 0)
                if fast is not None:  # (declined: os-ken may loop forever on these)
                    assert fast == old_group(case)
