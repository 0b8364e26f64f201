"""The codec's decoder (``messages``) against what a real ovs-vswitchd reports (differential).

Compiled flows (standalone and embedded pipelines, IPv4/IPv6, affinity,
hairpin, reject, selection fields, ct/nat, learn, several datapaths) are
installed as lbaffd installs them, dumped back as OF1.5 flow-desc replies
(OVS's re-encodings: ``xreg`` matches, copy_field, NXM fields in ct and learn,
nat ranges), and every entry is decoded both ways: the direct decoder must
take every one of lbaffd's own flows and give exactly the os-ken path's
FlowSpec, which is the one installed.  Flows with actions lbaffd never writes
must take the os-ken path and decode as before (``Opaque``).  Groups likewise.
"""

from __future__ import annotations

import pytest

from lbaffd.model import ownership as own
from lbaffd.openflow import messages, packed
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import FlowSpec, Opaque
from lbaffd.openflow.groupdesc import iter_group_entries
from lbaffd.openflow.packed import PackedState
from lbaffd.reconcile.readback import DecodeCache, flow_body
from lbaffd_sandbox.sandbox import Sandbox
from tests.switchstate import specs
from tests.unit.test_decode_vs_fallback import EXTRA_FLOWS
from tests.unit.test_encode_vs_osken import STATES

pytestmark = pytest.mark.integration

FOREIGN_COOKIE = 0x1BAF0000DEADBEEF
FOREIGN = (
    "table=1,priority=7,ip,actions=dec_ttl,mod_nw_tos:4,output:3",
    "table=1,priority=8,ip,actions=write_actions(output:3),goto_table:4",
    "table=1,priority=9,ip,actions=load:0x5->NXM_NX_REG3[0..7],"
    "ct(commit,zone=NXM_NX_REG13[0..15],exec(load:0x1->NXM_NX_CT_LABEL[0])),note:abcd",
    "table=1,priority=10,tcp,reg0=5,actions=learn(table=5,NXM_OF_ETH_TYPE[],"
    "output:NXM_OF_IN_PORT[]),resubmit(,4)",
    "table=1,priority=11,ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.5:100-200,random))",
    "table=1,priority=12,ip,actions=resubmit(3,4),output:5",
)


def dump(channel: OpenFlowChannel) -> list[tuple[bytes, int]]:
    """(reply message, entry offset) of every flow on the switch."""
    return [(part.raw, off) for part in channel.dump_flow_desc(0, 0)
            for off, _, _ in iter_entries(part.raw)]


def both_ways(raw: bytes, offset: int) -> tuple[FlowSpec | None, FlowSpec]:
    return messages.decode_fast(raw, offset), messages.decode_flow_fallback(raw, offset)


@pytest.mark.parametrize("index", range(len(STATES)), ids=["standalone", "embedded", "base100",
                                                           "embedded-low"])
def test_compiled_flows_read_back_equal(channel: OpenFlowChannel, index: int) -> None:
    packed_state = STATES[index].state
    state = specs(packed_state)
    channel.bundle([messages.group_add(g) for g in state.groups.values()]
                   + [messages.flow_add(f) for f in state.flows.values()])
    entries = dump(channel)
    assert len(entries) == len(state.flows) > 300
    for raw, offset in entries:
        fast, old = both_ways(raw, offset)
        assert fast is not None, old  # none of lbaffd's own flows left to os-ken
        assert fast == old == state.flows[old.key]
        assert messages.decode_flow(raw, offset) == old
    cache = DecodeCache()
    decoded = cache.flows(channel.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK))
    assert PackedState.build(decoded, []).flows == packed_state.flows
    # OVS reports each flow in the very bytes lbaffd sent: the byte
    # conversion alone gives the desired body, nothing is decoded
    for part in channel.dump_flow_desc(0, 0):
        for _, _, identity in iter_entries(part.raw):
            body = flow_body(identity)
            assert packed_state.flows[packed.flow_id(body)] == body
    deferred = DecodeCache()
    assert deferred.flows(channel.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK),
                          defer=True)
    settled = deferred.settle(packed_state.flows)
    assert deferred.decoded == 0
    assert PackedState.build(settled, []).flows == packed_state.flows
    assert deferred.group_ids() == cache.group_ids() != {}
    # an audit's slices, with the desired flows known: nothing decoded either
    audited, slices = DecodeCache(), []
    for chunk in range(own.AUDIT_CHUNKS):
        slices += audited.flows(
            channel.dump_flow_desc(own.MANAGED_COOKIE | (chunk << own.CHUNK_SHIFT),
                                   own.MAGIC_MASK | own.CHUNK_MASK), chunk,
            desired=packed_state.flows)
        assert audited.decoded == 0
    assert sorted(slices) == sorted(decoded)
    groups = 0
    for part in channel.dump_group_desc(own.is_lbaffd_group):
        for offset, _, _ in iter_group_entries(part.raw):
            fast_g = messages.decode_group_fast(part.raw, offset)
            old_g = messages.decode_group_fallback(part.raw, offset)
            assert fast_g is not None, old_g
            assert fast_g == old_g == state.groups[old_g.group_id]
            groups += 1
    assert groups == len(state.groups) > 10
    parts = channel.dump_group_desc(own.is_lbaffd_group)
    assert PackedState.build([], cache.groups(parts)).groups == packed_state.groups


def test_hand_written_flows_read_back_equal(channel: OpenFlowChannel) -> None:
    """NAT ranges, ct marks, learn from fields, masks, timeouts and flags."""
    channel.bundle([messages.flow_add(f) for f in EXTRA_FLOWS])
    want = {f.key: f for f in EXTRA_FLOWS}
    entries = dump(channel)
    assert len(entries) == len(want)
    for raw, offset in entries:
        fast, old = both_ways(raw, offset)
        assert fast is not None, old
        assert fast == old == want[old.key]
    # converted, then settled against a desired state that differs from
    # each (nothing desired): every entry decoded, as ``flows`` decodes it
    cache, deferred = DecodeCache(), DecodeCache()
    decoded = cache.flows(channel.dump_flow_desc(0, 0))
    deferred.flows(channel.dump_flow_desc(0, 0), defer=True)
    assert sorted(deferred.settle({})) == sorted(decoded)
    assert deferred.decoded == len(decoded) == len(want)
    # a pass that failed before its ``settle``: the next dump decodes them
    failed = DecodeCache()
    failed.flows(channel.dump_flow_desc(0, 0), defer=True)
    assert sorted(failed.flows(channel.dump_flow_desc(0, 0))) == sorted(decoded)
    assert failed.decoded == len(want)


def test_foreign_groups_take_the_os_ken_path(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    sandbox.ofctl("add-group", "br-int", "group_id=0xb0000001,type=select,"
                  "bucket=bucket_id:1,weight:5,actions=dec_ttl,output:1")
    sandbox.ofctl("add-group", "br-int", "group_id=0xb0000002,type=all,bucket=actions=output:2")
    parts = channel.dump_group_desc(own.is_lbaffd_group)
    entries = [(p.raw, off) for p in parts for off, _, _ in iter_group_entries(p.raw)]
    assert len(entries) == 2
    for raw, offset in entries:
        old = messages.decode_group_fallback(raw, offset)
        assert messages.decode_group_fast(raw, offset) is None
        assert messages.decode_group(raw, offset) == old


def test_foreign_actions_take_the_os_ken_path(channel: OpenFlowChannel,
                                               sandbox: Sandbox) -> None:
    for flow in FOREIGN:
        sandbox.ofctl("add-flow", "br-int", f"cookie={FOREIGN_COOKIE:#x},{flow}")
    entries = dump(channel)
    assert len(entries) == len(FOREIGN)
    opaque = 0
    for raw, offset in entries:
        fast, old = both_ways(raw, offset)
        assert messages.decode_flow(raw, offset) == old
        if any(isinstance(a, Opaque) for a in old.actions):
            assert fast is None, old
            opaque += 1
        else:  # nat with a flag lbaffd never sets, a resubmit with an in_port: declined too
            assert fast is None or fast == old
    assert opaque >= 4


def test_groups_read_by_id_equal_the_whole_dump(channel: OpenFlowChannel,
                                                sandbox: Sandbox) -> None:
    """The audits' connection asks for lbaffd's groups by id, a few requests
    in flight (``group_desc_window``): the same entries, byte for byte, as one
    request for every group, and another controller's group is not asked for."""
    state = specs(STATES[0].state)
    channel.bundle([messages.group_add(g) for g in state.groups.values()])
    sandbox.ofctl("add-group", "br-int", "group_id=7,type=all,bucket=actions=output:2")
    whole = sorted(entry for p in channel.dump_group_desc(own.is_lbaffd_group)
                   for _, gid, entry in iter_group_entries(p.raw) if own.is_lbaffd_group(gid))
    reads = OpenFlowChannel(channel.target, group_desc_window=4)
    reads.connect(timeout=2.0)
    try:
        parts = reads.dump_group_desc(own.is_lbaffd_group)
    finally:
        reads.close()
    by_id = sorted(entry for p in parts for _, _, entry in iter_group_entries(p.raw))
    assert len(parts) == len(whole) == len(state.groups) > 10  # one reply a group
    assert by_id == whole
