"""Reconciler and OpenFlow channel against a real ovs-vswitchd (no traffic)."""

from __future__ import annotations

import ipaddress
import threading
import time
from types import MappingProxyType

import pytest

from lbaffd.compile.layout import STANDALONE
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow import messages
from lbaffd.openflow import oskenfallback as fallback
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.flowspec import FlowSpec, Group, Match, Output
from lbaffd.openflow.oskenfallback import constants as ofp
from lbaffd.openflow.packed import flow_id
from lbaffd.openflow.replies import ConnectionLost, OpenFlowError
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd_sandbox.sandbox import Sandbox
from tests import reference_codec

pytestmark = pytest.mark.integration

DP1 = DatapathRow("dp-1", 1, "ls1")
TOPO = Topology((LocalPort(11, "cli1", DP1), LocalPort(21, "be1", DP1)),
                MappingProxyType({(1, ipaddress.ip_address("10.0.0.21")): "02:00:00:00:00:21"}),
                local_ips=frozenset({ipaddress.ip_address("10.0.0.21")}))


def lbs(backends: str = "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080",
        timeout: str | None = "30") -> tuple[LoadBalancer, ...]:
    rows = [
        LoadBalancerRow(uuid="lb-1", name="lb1",
                        vips=MappingProxyType({"10.0.0.100:80": backends}),
                        options=MappingProxyType({"affinity_timeout": timeout} if timeout else {}),
                        datapaths=("dp-1",)),
        LoadBalancerRow(uuid="lb-2", name="lb2",
                        vips=MappingProxyType({"10.0.0.200:80": "10.0.0.21:8080"}),
                        datapaths=("dp-1",)),
    ]
    return parse_all(rows, {"dp-1": DP1}, {})[0]


def sends(ch: OpenFlowChannel) -> int:
    counts = ch.sent_counts
    return counts.get("OFPBundleAddMsg", 0)


def test_install_then_nothing_to_do_even_after_restart(channel: OpenFlowChannel,
                                                        sandbox: Sandbox) -> None:
    first = Reconciler(STANDALONE).reconcile(channel, lbs(), TOPO)
    assert len(first.changes) == len(first.desired.state.flows) + 2  # + 2 groups
    assert sends(channel) == len(first.changes)
    again = Reconciler(STANDALONE)  # a restarted daemon: no memory, the switch decides
    result = again.reconcile(channel, lbs(), TOPO)
    assert result.changes.empty and result.installed_flows == len(first.desired.state.flows)
    assert sends(channel) == len(first.changes)  # not one more flow/group mod


def test_one_backend_change_is_o_of_change(channel: OpenFlowChannel) -> None:
    rec = Reconciler(STANDALONE)
    rec.reconcile(channel, lbs(), TOPO)
    result = rec.reconcile(channel, lbs("10.0.0.21:8080,10.0.0.23:8080"), TOPO)
    c = result.changes
    # group modified, the removed backend's hit and learn flows deleted (it is not a
    # local port: it has no hairpin flow); nothing else
    assert (len(c.mod_groups), len(c.del_flows), len(c.add_flows), len(c.mod_flows)) == (
        1, 2, 0, 0)


def test_foreign_interference_is_repaired(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    rec = Reconciler(STANDALONE)
    rec.reconcile(channel, lbs(), TOPO)
    before = sandbox.dump_flows(), sandbox.dump_groups()
    foreign = "cookie=0x1234,table=2,priority=5,actions=drop"
    sandbox.ofctl("add-flow", "br-int", foreign)
    sandbox.ofctl("del-flows", "br-int", "table=4")
    sandbox.ofctl("del-groups", "br-int")  # also removes flows that point at the groups
    sandbox.ofctl("mod-flows", "br-int", "table=6,cookie=0x1baf000000000000/0xffff000000000000,"
                  "ip,nw_dst=10.0.0.21,actions=drop")
    sandbox.ofctl("add-flow", "br-int", "cookie=0x1baf0000deadbeef,table=1,priority=7,"
                  "actions=drop")
    result = rec.reconcile(channel, lbs(), TOPO)
    assert result.foreign == 0 and not result.changes.empty
    after = sandbox.dump_flows(), sandbox.dump_groups()
    assert [f for f in after[0] if "cookie=0x1234" not in f] == before[0]
    assert after[1] == before[1]
    assert any("cookie=0x1234" in f for f in after[0])  # not ours: left alone
    assert rec.reconcile(channel, lbs(), TOPO).changes.empty


def test_bundle_is_atomic(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    good = FlowSpec(9, 10, Match.of(in_port=1), (Output(2),), 0x1BAF000000000009)
    bad = FlowSpec(9, 11, Match.of(in_port=2), (Group(0xB0FFFFFF),), 0x1BAF000000000009)
    with pytest.raises(OpenFlowError) as err:
        channel.bundle([reference_codec.flow_add(good), reference_codec.flow_add(bad)])
    assert "GROUP" in str(err.value)
    assert sandbox.dump_flows("table=9") == []
    channel.bundle([reference_codec.flow_add(good)])
    assert len(sandbox.dump_flows("table=9")) == 1


def test_bundle_block_commits_or_discards(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    """``with channel.open_bundle() as b:``: what a block that raises added
    never reaches the table; a block that ends normally commits."""
    good = FlowSpec(9, 10, Match.of(in_port=1), (Output(2),), 0x1BAF000000000009)
    with pytest.raises(RuntimeError), channel.open_bundle() as b:
        b.add(messages.flow_add(good))
        raise RuntimeError("the compile side failed half way")
    assert sandbox.dump_flows("table=9") == []
    with channel.open_bundle() as b:
        b.add(messages.flow_add(good))
    assert len(sandbox.dump_flows("table=9")) == 1


def test_bundle_of_wire_messages(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    """Raw ``messages`` messages, batched into multi-message writes, mixed with
    os-ken ones; an error names the failing add by its own xid."""
    cookie = 0x1BAF00000000000A
    flows = [FlowSpec(9, 10, Match.of(in_port=1, eth_type=0x800, ipv4_dst=str(
        ipaddress.IPv4Address("10.200.0.0") + i)), (Output(2),), cookie) for i in range(4000)]
    before = channel.sent_counts.get("OFPBundleAddMsg", 0)
    channel.bundle([*(messages.flow_add(f) for f in flows),
                    reference_codec.flow_add(
                        FlowSpec(9, 11, Match.of(in_port=3), (Output(4),), cookie))])
    assert channel.sent_counts["OFPBundleAddMsg"] == before + len(flows) + 1
    assert len(sandbox.dump_flows("table=9")) == len(flows) + 1
    bad = FlowSpec(9, 12, Match.of(in_port=2), (Group(0xB0FFFFFF),), cookie)
    with pytest.raises(OpenFlowError) as err:
        channel.bundle([messages.flow_delete(f) for f in flows] + [messages.flow_add(bad)])
    assert "GROUP" in str(err.value) and err.value.xid != 0
    assert len(sandbox.dump_flows("table=9")) == len(flows) + 1  # atomic: nothing deleted
    channel.bundle([messages.flow_delete(f) for f in flows])
    assert len(sandbox.dump_flows("table=9")) == 1


def test_open_bundle_streams_and_stays_atomic(channel: OpenFlowChannel,
                                              sandbox: Sandbox) -> None:
    """A bundle written while it is built: adds are on the wire before the
    commit (the switch checks them meanwhile), yet nothing applies until
    the commit; an add the switch rejects fails the commit; a discarded
    bundle leaves nothing behind."""
    cookie = 0x1BAF00000000000B
    flows = [FlowSpec(9, 10, Match.of(in_port=5, eth_type=0x800, ipv4_dst=str(
        ipaddress.IPv4Address("10.201.0.0") + i)), (Output(2),), cookie) for i in range(6000)]
    before = channel.sent_counts.get("OFPBundleAddMsg", 0)
    b = channel.open_bundle()
    for f in flows:
        b.add(messages.flow_add(f))
    assert channel.sent_counts["OFPBundleAddMsg"] > before  # streamed, not held back
    assert sandbox.dump_flows("table=9") == []  # ...but not applied
    b.add(messages.flow_add(FlowSpec(9, 12, Match.of(in_port=2), (Group(0xB0FFFFFE),), cookie)))
    b.add(messages.flow_add(FlowSpec(9, 13, Match.of(in_port=3), (Output(4),), cookie)))
    with pytest.raises(OpenFlowError) as err:
        b.commit()
    assert "GROUP" in str(err.value)
    assert sandbox.dump_flows("table=9") == []

    d = channel.open_bundle()
    for f in flows[:100]:
        d.add(messages.flow_add(f))
    d.discard()
    assert sandbox.dump_flows("table=9") == []
    channel.bundle(messages.flow_add(f) for f in flows[:10])  # any iterable
    assert len(sandbox.dump_flows("table=9")) == 10
    channel.bundle(messages.flow_delete(f) for f in flows[:10])
    empty = channel.open_bundle()
    empty.commit()  # nothing added: nothing sent
    assert empty.count == 0 and sandbox.dump_flows("table=9") == []


def test_bundle_is_one_round_trip_ending_in_a_barrier(channel: OpenFlowChannel,
                                                     sandbox: Sandbox) -> None:
    """The open request is not waited for, the commit is followed by a
    barrier at once: the bundle is applied when ``commit`` returns.  An open
    the switch refuses is the error raised, not the adds' or the commit's
    that follow from it (here a bundle id already open on the connection:
    ovs-vswitchd puts the adds in that bundle, so the flow is applied, and
    the caller's next pass, a full one, reads it back)."""
    cookie = 0x1BAF00000000000C
    f = FlowSpec(9, 20, Match.of(in_port=6), (Output(2),), cookie)
    before = dict(channel.sent_counts)
    channel.bundle([messages.flow_add(f)])
    sent = {k: v - before.get(k, 0) for k, v in channel.sent_counts.items()}
    assert sent == {"OFPBundleCtrlMsg": 2, "OFPBundleAddMsg": 1, "OFPBarrierRequest": 1}
    assert len(sandbox.dump_flows("table=9,in_port=6")) == 1

    x = channel.next_xid()  # the next bundle's id will be x + 2 (x + 1: this request)
    channel.request(fallback.bundle_control(x + 2, ofp.OFPBCT_OPEN_REQUEST, ofp.OFPBF_ATOMIC))
    b = channel.open_bundle()
    b.add(messages.flow_delete(f))
    with pytest.raises(OpenFlowError) as err:
        b.commit()
    assert (err.value.err_type, err.value.code) == (ofp.OFPET_BUNDLE_FAILED, ofp.OFPBFC_BAD_ID)
    assert b.position(err.value.xid) is None  # the open's, not an add's
    assert not channel._waiters  # nothing of the bundle is waited for any more


def test_channel_keepalive_and_disconnect(sandbox: Sandbox) -> None:
    lost = threading.Event()
    ch = OpenFlowChannel(f"unix:{sandbox.mgmt_socket}", echo_interval=0.2,
                         on_disconnect=lost.set)
    ch.connect(5)
    time.sleep(1.0)  # five idle intervals: echoes keep it up
    assert ch.connected and ch.sent_counts.get("OFPEchoRequest", 0) >= 3
    ch.barrier()
    sandbox.restart_vswitchd()
    assert lost.wait(5)
    assert not ch.connected
    with pytest.raises(ConnectionLost):
        ch.barrier()
    ch2 = OpenFlowChannel(f"unix:{sandbox.mgmt_socket}")
    ch2.connect(5)
    ch2.barrier()
    ch2.close()


def test_audits_keep_no_second_copy_of_the_state(channel: OpenFlowChannel,
                                                 sandbox: Sandbox) -> None:
    """After an audit the decode cache holds the desired objects themselves
    wherever the switch matches (memory: one copy of 80k flows, not two), a
    repaired flow included once it is back; the next audit finds nothing."""
    rec = Reconciler(STANDALONE)
    first = rec.reconcile(channel, lbs(), TOPO)
    restarted = Reconciler(STANDALONE)  # reads everything back: a full audit
    assert restarted.reconcile(channel, lbs(), TOPO).changes.empty
    desired = restarted.audit_unchanged(channel)
    assert desired is not None and desired.changes.empty

    def cached() -> list[bytes]:
        return [f for chunk in restarted._decoded._flows.values() for f in chunk.values()]

    want = desired.desired.state.flows
    assert len(cached()) == len(want) == len(first.desired.state.flows)
    assert all(f is want[flow_id(f)] for f in cached())
    sandbox.ofctl("mod-flows", "br-int", "table=6,cookie=0x1baf000000000000/0xffff000000000000,"
                  "ip,nw_dst=10.0.0.21,actions=drop")
    repaired = restarted.audit_unchanged(channel)
    assert repaired is not None and len(repaired.changes.mod_flows) >= 1
    again = restarted.audit_unchanged(channel)
    assert again is not None and again.changes.empty
    assert all(f is want[flow_id(f)] for f in cached())
