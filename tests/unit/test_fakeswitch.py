"""The fake switch's own rules, where the reconciler tests do not reach them.

``tests/integration/test_fakeswitch_ovs.py`` holds the fake equal to a real
ovs-vswitchd; these check, without a switch, the parts of its model that
lbaffd's passes rarely exercise: reply framing, field identity across NXM,
OXM and xreg encodings, loose selection with masks, the learned-entry flush
by reference count and the bundle's life cycle.
"""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.model import ownership as own
from lbaffd.openflow import messages
from lbaffd.openflow.actions import encode_all
from lbaffd.openflow.flowspec import (
    FlowSpec,
    Group,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    Match,
    Output,
)
from lbaffd.openflow.oxm import encode_match
from lbaffd.openflow.replies import OpenFlowError
from lbaffd.reconcile.readback import DecodeCache
from tests import reference_codec
from tests.fakeswitch import FakeSwitch, Message, match_key

COOKIE = own.MANAGED_COOKIE | 0x42


def flow_mod(command: int, table: int, raw_match: bytes, cookie: int = COOKIE,
             cookie_mask: int = 0, priority: int = 10, out_group: int = messages.ANY,
             actions: bytes = b"") -> messages.RawMessage:
    """A flow mod with a hand-written OXM/NXM match (``raw_match``: TLVs only)."""
    size = 4 + len(raw_match)
    match = struct.pack("!HH", ofp.OFPMT_OXM, size) + raw_match + bytes(-size % 8)
    inst = (messages.INSTRUCTION.pack(messages.OFPIT_APPLY_ACTIONS, 8 + len(actions)) + actions
            if actions else b"")
    return messages.RawMessage(messages.OFPT_FLOW_MOD, messages.FLOW_MOD.pack(
        cookie, cookie_mask, table, command, 0, 0, priority, messages.ANY, messages.ANY, out_group,
        0, 0)
        + match + inst)


def test_large_dumps_come_in_parts_as_ovs_frames_them() -> None:
    fake = FakeSwitch()
    fake.bundle([messages.flow_add(FlowSpec(
        1, 100, Match.of(eth_type=0x800, ipv4_dst=f"10.1.{i // 250}.{i % 250}"), (Output(1),),
        COOKIE)) for i in range(2000)])
    parts = fake.dump_flow_desc(0, 0)
    assert len(parts) > 1
    for i, part in enumerate(parts):
        length, = struct.unpack_from("!H", part.raw, 2)
        more = struct.unpack_from("!H", part.raw, 10)[0] & 1
        assert length == len(part.raw) <= 0xFFFF
        assert part.more == bool(more) == (i < len(parts) - 1)
    assert len(DecodeCache().flows(parts)) == 2000


def test_nxm_oxm_and_xreg_forms_are_one_field() -> None:
    """OVS takes NXM_OF_ETH_TYPE and OXM eth_type for one field, and two
    registers for one xreg: an add in one form replaces the flow in the other."""
    fake = FakeSwitch()
    nxm_eth = struct.pack("!IH", 0x00000602, 0x0800)
    oxm_eth = struct.pack("!IH", 0x80000A02, 0x0800)
    regs = struct.pack("!II", 0x00010004, 7) + struct.pack("!II", 0x00010204, 9)  # reg0, reg1
    xreg0 = struct.pack("!IQ", 0x80010008, 7 << 32 | 9)
    fake.apply(flow_mod(ofp.OFPFC_ADD, 2, nxm_eth + regs, actions=encode_all(
        (Output(1),))))
    fake.apply(flow_mod(ofp.OFPFC_ADD, 2, oxm_eth + xreg0, actions=encode_all(
        (Output(2),))))
    (flow,) = fake.flows()
    assert flow.match == match_key(Match.of(eth_type=0x800, reg0=7, reg1=9))
    assert flow.instructions == messages.INSTRUCTION.pack(messages.OFPIT_APPLY_ACTIONS, 24) + (
        encode_all((Output(2),)))


def test_loose_selection_takes_flows_at_least_as_specific() -> None:
    fake = FakeSwitch()
    dsts = ("10.0.0.5", "10.0.1.5", "10.0.0.0")
    fake.bundle([messages.flow_add(FlowSpec(1, 10, Match.of(eth_type=0x800, ipv4_dst=d),
                                        (Output(1),), COOKIE)) for d in dsts]
                + [messages.flow_add(FlowSpec(1, 10, Match.of(eth_type=0x800,
                                                          ipv4_dst=("10.0.0.0", "255.0.0.0")),
                                          (Output(1),), COOKIE))])
    selector = encode_match(Match.of(eth_type=0x800, ipv4_dst=("10.0.0.0", "255.255.255.0")))
    fake.apply(messages.RawMessage(messages.OFPT_FLOW_MOD, messages.FLOW_MOD.pack(
        0, 0, ofp.OFPTT_ALL, ofp.OFPFC_DELETE, 0, 0, 0, messages.ANY, messages.ANY, messages.ANY,
        0, 0)
        + selector))
    # the /24's two exact addresses went; 10.0.1.5 and the broader /8 stay
    left = {dict((f.key[1], f) for f in flow.match)[12].value for flow in fake.flows()}
    assert left == {0x0A000105, 0x0A000000}


def test_cookie_mask_and_out_group_narrow_a_delete() -> None:
    fake = FakeSwitch()
    empty_group = messages.RawMessage(messages.OFPT_GROUP_MOD, messages.GROUP_MOD.pack(
        messages.OFPGC_ADD, messages.OFPGT_SELECT, 5, 0, messages.ANY))
    fake.bundle([empty_group]
                + [messages.flow_add(FlowSpec(1, p, Match.of(eth_type=0x800),
                                          (Group(5),) if p % 2 else (Output(1),), COOKIE + p))
                   for p in range(1, 7)])
    fake.apply(flow_mod(ofp.OFPFC_DELETE, ofp.OFPTT_ALL, b"", cookie=COOKIE + 3,
                        cookie_mask=(1 << 64) - 1))
    fake.apply(flow_mod(ofp.OFPFC_DELETE, ofp.OFPTT_ALL, b"", out_group=5))
    assert sorted(f.priority for f in fake.flows()) == [2, 4, 6]


def test_learned_entries_go_with_the_last_flow_holding_their_learn() -> None:
    learned_cookie = own.LEARNED_COOKIE | 7
    learn = Learn(table=3, specs=(LearnMatchField("ipv4_src", "ipv4_src", 32),
                                  LearnLoadValue(1, "reg2", 32)),
                  priority=100, cookie=learned_cookie, flags=3)
    a = FlowSpec(5, 100, Match.of(eth_type=0x800, reg6=1), (learn,), COOKIE)
    b = FlowSpec(5, 100, Match.of(eth_type=0x800, reg6=2), (learn,), COOKIE)
    fake = FakeSwitch()
    fake.bundle([messages.flow_add(a), messages.flow_add(b)])
    entry = fake.learn(a, {"ipv4_src": "10.0.0.11"})
    assert entry.learned and entry.flags == ofp.OFPFF_SEND_FLOW_REM
    assert fake.learned_flows() == [entry]
    fake.bundle([messages.flow_delete(a)])
    assert fake.learned_flows() == [entry]  # b still holds the learn
    fake.bundle([messages.flow_modify(FlowSpec(5, 100, b.match, (Output(1),), COOKIE))])
    assert fake.learned_flows() == []  # its learn action is gone with the modify


def test_a_bundle_is_used_once() -> None:
    fake = FakeSwitch()
    b = fake.open_bundle()
    b.commit()  # nothing added: nothing sent, as bundle.Bundle
    assert fake.counts["bundle_committed"] == 0
    with pytest.raises(OpenFlowError) as err:
        b.add(messages.flow_add(FlowSpec(1, 1, Match(), (), COOKIE)))
    assert err.value.code == ofp.OFPBFC_BAD_ID
    d = fake.open_bundle()
    d.add(messages.flow_add(FlowSpec(1, 1, Match(), (), COOKIE)))
    d.discard()
    assert fake.counts["bundle_discarded"] == 1 and not fake.flows()
    assert fake.received == []  # a discarded bundle never reached the tables


def test_messages_from_os_ken_and_from_wire_are_the_same() -> None:
    from lbaffd.openflow import messages

    spec = FlowSpec(4, 7, Match.of(eth_type=0x800, ipv4_dst="10.0.0.9"), (Output(3),), COOKIE)
    assert Message.of(reference_codec.flow_add(spec)) == Message.of(messages.flow_add(spec))
