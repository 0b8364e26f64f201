"""The reconciler against the in-memory switch (``tests/fakeswitch.py``).

Every pass reads the fake back exactly as it reads ovs-vswitchd (flow-desc and
group-desc bytes shaped as OVS sends them, decoded by ``DecodeCache``), so
these tests cover what only the integration tests covered before: full,
incremental and audit passes, repair of someone else's edits, a restart that
sends nothing, a refused bundle and the replay of a bundle.  The load
balancers are the wire-encoding corpus (every VIP form and option lbaffd
compiles, standalone pipeline).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from types import MappingProxyType

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.compile.layout import PRIO_INTERCEPT, REG_BACKEND_IP, REG_VIP_ID, STANDALONE, companion
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.records import LoadBalancerRow
from lbaffd.model.topology import Topology
from lbaffd.openflow import messages, packed
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import (
    FlowSpec,
    Group,
    Learn,
    LearnLoadValue,
    Match,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.oxm import encode_match
from lbaffd.openflow.packed import PackedState
from lbaffd.openflow.replies import OpenFlowError
from lbaffd.ovn import chassis as ovnchassis
from lbaffd.ovn.takeover import TAKE_OVER_ALL, scopes, take_over
from lbaffd.reconcile.readback import read_installed
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd.reconcile.sending import cleanup
from tests.fakeswitch import FakeBundle, FakeSwitch, Message
from tests.unit.test_companion import LAYOUT, PORTS
from tests.unit.test_companion import SNAP as COMPANION_SNAP
from tests.unit.test_companion import TOPO as COMPANION_TOPO
from tests.unit.test_companion import lb as companion_lb
from tests.unit.test_encode_vs_osken import DPS, ROWS, TOPO

LBS, _ = parse_all(ROWS, DPS, {})
AFF_VIP = ("lb-aff4", "10.0.0.100:80")
COMPANION = companion()  # affinity, backends .21 .22 (.23 is down)


def programmed() -> tuple[FakeSwitch, Reconciler]:
    fake = FakeSwitch()
    rec = Reconciler(STANDALONE)
    rec.reconcile(fake, LBS, TOPO)
    return fake, rec


def installed(fake: FakeSwitch) -> PackedState:
    state, foreign = read_installed(fake)
    assert foreign == 0
    return state


def specs(fake: FakeSwitch) -> list[FlowSpec]:
    """lbaffd's flows on the fake, decoded as the daemon decodes them."""
    return [messages.decode_flow(part.raw, off)
            for part in fake.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)
            for off, _, _ in iter_entries(part.raw)]


def with_backends(lb_uuid: str, vip: str, backends: str) -> LoadBalancer:
    row = next(r for r in ROWS if r.uuid == lb_uuid)
    vips = dict(row.vips)
    vips[vip] = backends
    (lb,), issues = parse_all([replace(row, vips=MappingProxyType(vips))], DPS, {})
    assert not issues
    return lb


def test_full_pass_installs_exactly_the_desired_state() -> None:
    fake = FakeSwitch()
    result = Reconciler(STANDALONE).reconcile(fake, LBS, TOPO)
    desired = result.desired.state
    assert len(desired.flows) > 300 and len(desired.groups) > 20
    assert installed(fake) == desired
    assert fake.counts["bundle_committed"] == 1 and fake.counts["barrier"] == 1
    assert fake.mods == len(desired.flows) + len(desired.groups) == len(result.changes)
    # streamed while compiling, the bundle still adds each group before the
    # first flow that names it (the fake, as OVS, refuses a flow to a missing group)
    added_at = {m.group_id: i for i, m in enumerate(fake.received) if m.is_group_mod}
    named = [(i, a.group_id) for i, m in enumerate(fake.received) if m.is_flow_mod
             for a in packed.unpack_flow(m.body).actions if isinstance(a, Group)]
    assert len(named) >= len(desired.groups)
    assert all(added_at[gid] < i for i, gid in named)


def test_audit_with_no_change_sends_nothing() -> None:
    fake, rec = programmed()
    before, sent = fake.snapshot(), fake.mods
    full = rec.reconcile(fake, LBS, TOPO, audit=True)
    assert full.audited and full.changes.empty
    sliced = rec.audit_unchanged(fake)
    assert sliced is not None and sliced.changes.empty
    assert fake.mods == sent and fake.counts["bundle_committed"] == 1
    assert fake.snapshot() == before
    assert fake.counts["flow_desc"] == 2 + own.AUDIT_CHUNKS  # both audits read the switch


def test_restart_sends_zero_mods_and_keeps_group_ids() -> None:
    fake, first = programmed()
    sent = fake.mods
    second = Reconciler(STANDALONE)
    result = second.reconcile(fake, LBS, TOPO)
    assert result.changes.empty and fake.mods == sent
    assert second.group_ids == first.group_ids


def test_incremental_pass_sends_only_the_change() -> None:
    fake, rec = programmed()
    sent = fake.mods
    lb = with_backends(*AFF_VIP, "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080,10.0.0.27:8080")
    result = rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO)
    assert result is not None and not result.changes.empty
    assert fake.mods - sent == len(result.changes) < 10
    assert installed(fake) == result.desired.state
    # and it is what a full pass from scratch on the new inputs installs
    lbs = tuple(lb if x.uuid == lb.uuid else x for x in LBS)
    other = FakeSwitch()
    Reconciler(STANDALONE).reconcile(other, lbs, TOPO)
    assert installed(other) == installed(fake)


def test_incremental_removal_of_an_lb() -> None:
    fake, rec = programmed()
    result = rec.reconcile_changed(fake, {"lb-plain": None}, TOPO)
    assert result is not None and result.changes.del_groups and result.changes.del_flows
    assert installed(fake) == result.desired.state
    assert not result.changes.add_flows


@pytest.mark.parametrize("edit", ["delete-flow", "modify-flow", "delete-group", "modify-group",
                                  "extra-flow", "del-flows"])
def test_audit_repairs_a_foreign_edit(edit: str) -> None:
    fake, rec = programmed()
    desired = installed(fake)
    learn_flow = next(f for f in specs(fake) if any(isinstance(a, Learn) for a in f.actions))
    gid = next(g for g, body in desired.groups.items()
               if len(packed.unpack_group(body).buckets) > 1)
    if edit == "delete-flow":
        fake.apply(packed.delete_message(packed.pack_flow(learn_flow)))
    elif edit == "modify-flow":
        fake.apply(messages.flow_modify(replace(learn_flow, actions=(Output(7),))))
    elif edit == "delete-group":  # takes the flows that name it along (OVS does)
        fake.apply(messages.group_delete(gid))
    elif edit == "modify-group":
        group = packed.unpack_group(desired.groups[gid])
        fake.apply(messages.group_modify(replace(group, buckets=group.buckets[:1])))
    elif edit == "extra-flow":
        fake.apply(messages.flow_add(replace(learn_flow, priority=learn_flow.priority + 1)))
    else:  # ovs-ofctl del-flows br-int: everything, whoever owns it
        fake.apply(loose_delete_all())
    assert installed(fake) != desired
    sent = fake.mods
    result = rec.audit_unchanged(fake)
    assert result is not None and not result.changes.empty
    assert installed(fake) == desired
    assert fake.mods - sent == len(result.changes)
    again = rec.audit_unchanged(fake)
    assert again is not None and again.changes.empty


def test_refused_bundle_applies_nothing_then_only_the_refused_vip_is_left_out() -> None:
    fake = FakeSwitch()
    learn_cookie = own.owner_cookie(own.vip_owner(*AFF_VIP))
    fake.refuse(lambda m: m.is_flow_mod and m.cookie == learn_cookie)
    rec = Reconciler(STANDALONE)
    result = rec.reconcile(fake, LBS, TOPO)
    # the first bundle failed whole (all or nothing), the second went without the VIP
    assert fake.counts["bundle_failed"] == 1 and fake.counts["bundle_committed"] == 1
    refused = [i for i in result.desired.issues if i.reason == "switch_error"]
    assert [(i.vip, "FLOW_MOD_FAILED" in i.detail) for i in refused] == [(AFF_VIP[1], True)]
    assert installed(fake) == result.desired.state
    assert not any(packed.cookie(b) == learn_cookie for b in installed(fake).flows.values())
    # the other LBs are all there; the refused VIP is retried when its row changes
    fake.allow()
    lb = with_backends(*AFF_VIP, "10.0.0.21:8080")
    again = rec.reconcile(fake, tuple(lb if x.uuid == lb.uuid else x for x in LBS), TOPO)
    assert not [i for i in again.desired.issues if i.reason == "switch_error"]
    assert any(packed.cookie(b) == learn_cookie for b in installed(fake).flows.values())
    assert installed(fake) == again.desired.state


def test_refused_incremental_bundle_leaves_the_switch_as_it_was() -> None:
    fake, rec = programmed()
    before = fake.snapshot()
    fake.refuse(lambda m: m.is_group_mod, ofp.OFPET_GROUP_MOD_FAILED,
                ofp.OFPGMFC_OUT_OF_GROUPS)
    lb = with_backends(*AFF_VIP, "10.0.0.21:8080,10.0.0.27:8080")
    # the changed VIP is blamed; a full pass (without it) is due
    assert rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO) is None
    assert fake.snapshot() == before and fake.counts["bundle_failed"] == 1
    assert rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO) is None
    fake.allow()  # (the refusal stands for that row until it changes)
    lbs = tuple(lb if x.uuid == lb.uuid else x for x in LBS)
    result = rec.reconcile(fake, lbs, TOPO, audit=False)
    assert result.audited and installed(fake) == result.desired.state
    assert [i.vip for i in result.desired.issues if i.reason == "switch_error"] == [
        AFF_VIP[1]]


def test_replaying_a_change_bundle_leaves_the_same_table() -> None:
    """A change of backends (group modify, flow adds, modifies and strict
    deletes) applied twice: the second time changes nothing."""
    fake, rec = programmed()
    start = len(fake.received)
    lb = with_backends(*AFF_VIP, "10.0.0.22:8080,10.0.0.27:8080")
    result = rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO)
    assert result is not None
    bundle = [messages.RawMessage(m.msg_type, m.body) for m in fake.received[start:]]
    kinds = {(m.msg_type, Message(m.msg_type, m.body).command) for m in bundle}
    assert (messages.OFPT_GROUP_MOD, messages.OFPGC_MODIFY) in kinds
    assert (messages.OFPT_FLOW_MOD, messages.OFPFC_DELETE_STRICT) in kinds
    assert (messages.OFPT_FLOW_MOD, messages.OFPFC_ADD) in kinds
    after = fake.snapshot()
    fake.bundle(bundle)
    assert fake.snapshot() == after
    assert installed(fake) == result.desired.state


def test_replaying_a_full_bundle_is_refused_whole() -> None:
    """Group adds are not idempotent in OpenFlow (OFPGMFC_GROUP_EXISTS): the
    replay fails and, being atomic, changes nothing either."""
    fake = FakeSwitch()
    Reconciler(STANDALONE).reconcile(fake, LBS, TOPO)
    bundle = [messages.RawMessage(m.msg_type, m.body) for m in fake.received]
    after = fake.snapshot()
    with pytest.raises(OpenFlowError) as err:
        fake.bundle(bundle)
    assert err.value.code == ofp.OFPGMFC_GROUP_EXISTS
    assert fake.snapshot() == after


def _learn_flows(fake: FakeSwitch, backend: str) -> list[FlowSpec]:
    """AFF_VIP's flows that learn entries for ``backend``."""
    ip = int(ipaddress.ip_address(backend))
    vip_cookie = own.owner_cookie(own.vip_owner(*AFF_VIP))
    return [f for f in specs(fake) if f.cookie == vip_cookie for a in f.actions
            if isinstance(a, Learn) and LearnLoadValue(ip, REG_BACKEND_IP, 32) in a.specs]


def _learn_cookies(flows: list[FlowSpec]) -> set[int]:
    return {a.cookie for f in flows for a in f.actions if isinstance(a, Learn)}


def test_learned_entries_live_apart_and_go_with_their_backend() -> None:
    fake, rec = programmed()
    vip_id = rec.group_ids[own.vip_owner(*AFF_VIP)]
    kept, dropped = _learn_flows(fake, "10.0.0.21"), _learn_flows(fake, "10.0.0.22")
    assert kept and dropped
    clients = (f"10.0.0.{n}" for n in range(100, 200))
    for flow in kept + dropped:  # a new client of the switch's datapath (tunnel key 1)
        fake.learn(flow, {"metadata": 1, "ipv4_src": next(clients), REG_VIP_ID: vip_id})
    entries = fake.learned_flows()
    assert len(entries) == len(kept) + len(dropped)
    assert all(own.is_learned(e.cookie) for e in entries)
    sent = fake.mods
    assert rec.audit_unchanged(fake) is not None and fake.mods == sent  # audits ignore them
    assert len(fake.learned_flows()) == len(entries)
    lb = with_backends(*AFF_VIP, "10.0.0.21:8080,10.0.0.23:8080")  # .22 removed
    assert rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO) is not None
    # delete_learned took .22's entries along with its learn flows, and only those
    assert not _learn_flows(fake, "10.0.0.22")
    left = fake.learned_flows()
    assert len(left) == len(kept) and {e.cookie for e in left} == _learn_cookies(kept)


def test_cleanup_removes_exactly_lbaffd_state() -> None:
    fake, rec = programmed()
    flow = next(iter(specs(fake)))
    foreign = replace(flow, cookie=0x1234, priority=flow.priority + 3)
    fake.apply(messages.flow_add(foreign))
    vip_id = rec.group_ids[own.vip_owner(*AFF_VIP)]
    learn_flow = _learn_flows(fake, "10.0.0.21")[0]
    fake.learn(learn_flow, {"metadata": 1, "ipv4_src": "10.0.0.11", REG_VIP_ID: vip_id})
    assert fake.learned_flows()
    groups = len(fake.groups)
    assert cleanup(fake) == groups
    assert [f.cookie for f in fake.flows()] == [0x1234]
    assert not fake.groups


def test_embedded_pipeline_full_pass_and_restart() -> None:
    from lbaffd.compile.layout import embedded

    pipeline = embedded(40, 70)
    fake = FakeSwitch()
    result = Reconciler(pipeline).reconcile(fake, LBS, TOPO)
    assert installed(fake) == result.desired.state
    assert {f.table for f in fake.flows()} <= set(range(40, 47))
    sent = fake.mods
    assert Reconciler(pipeline).reconcile(fake, LBS, TOPO).changes.empty and fake.mods == sent


def test_a_row_with_nothing_to_realize_changes_nothing() -> None:
    fake, rec = programmed()
    sent = fake.mods
    row = LoadBalancerRow(uuid="lb-elsewhere", name="elsewhere",
                          vips=MappingProxyType({"10.9.9.9:80": "10.0.0.21:8080"}),
                          options=MappingProxyType({}), datapaths=())
    (lb,), _ = parse_all([row], DPS, {})
    result = rec.reconcile_changed(fake, {lb.uuid: lb}, TOPO)
    assert result is not None and result.changes.empty and fake.mods == sent


# ---------------------------------------------------------------- companion mode

OVN_COOKIE = 0x5EED  # ovn-controller's cookies are 32-bit: the uuid prefix of a logical flow


def ovn_controller(fake: FakeSwitch) -> None:
    """What ovn-controller 23.03 puts on br-int for the companion corpus'
    ports, as far as lbaffd looks: per port, its table-0 flow and its
    output flow in table 65 (``test_companion.LAYOUT``)."""
    for ofport, match in LAYOUT.outputs:
        tk = match.as_dict()["metadata"]
        fake.apply(messages.flow_add(FlowSpec(0, 100, Match.of(in_port=ofport),
                                          (SetField("metadata", tk), Resubmit(8)), OVN_COOKIE)))
        fake.apply(messages.flow_add(FlowSpec(LAYOUT.output_table, 100, match, (Output(ofport),),
                                          OVN_COOKIE)))


def companion_view(fake: FakeSwitch) -> tuple[tuple[LoadBalancer, ...], Topology]:
    """The daemon's companion view, read from the fake as from the switch."""
    layout = ovnchassis.read_layout(fake, sorted(p.ofport for p in PORTS))
    topo = replace(COMPANION_TOPO, ovn=layout,
                   foreign=ovnchassis.foreign_ids(fake, [0, layout.output_table if layout else 0]))
    lbs = (companion_lb("lb-sw", ("dp-sw0",)), companion_lb("lb-lr", ("dp-lr0",),
                                                             vip="172.16.0.20:80"))
    return take_over(lbs, scopes(COMPANION_SNAP, topo), TAKE_OVER_ALL).lbs, topo


def ovn_entries(fake: FakeSwitch) -> list[bytes]:
    return [f.desc(0.0) for f in fake.flows(OVN_COOKIE, (1 << 64) - 1)]


def test_companion_pass_next_to_ovn_controller() -> None:
    fake = FakeSwitch()
    ovn_controller(fake)
    ovn_before = ovn_entries(fake)
    lbs, topo = companion_view(fake)
    assert topo.ovn == LAYOUT  # read through the out_port filter of flow-desc
    rec = Reconciler(COMPANION)
    result = rec.reconcile(fake, lbs, topo)
    assert installed(fake) == result.desired.state and len(result.changes) > 20
    assert ovn_entries(fake) == ovn_before  # not one of OVN's flows changed
    tables = {f.table for f in fake.managed_flows()}
    assert tables <= {0, 65, *COMPANION.tables} and {0, 65} <= tables
    sent = fake.mods
    assert Reconciler(COMPANION).reconcile(fake, lbs, topo).changes.empty and fake.mods == sent
    # ovn-controller (re)connects: it deletes every flow and group, then puts its own back
    fake.apply(loose_delete_all())
    fake.apply(messages.group_delete(ofp.OFPG_ALL))
    ovn_controller(fake)
    repaired = rec.reconcile(fake, lbs, topo)
    assert len(repaired.changes) == len(result.changes)
    assert installed(fake) == result.desired.state and ovn_entries(fake) == ovn_before


def test_companion_never_replaces_a_flow_of_ovn_controller() -> None:
    probe = FakeSwitch()
    ovn_controller(probe)
    lbs, topo = companion_view(probe)
    Reconciler(COMPANION).reconcile(probe, lbs, topo)
    intercept = next(f for f in specs(probe) if f.table == 0 and f.priority == PRIO_INTERCEPT)
    fake = FakeSwitch()
    ovn_controller(fake)
    squatter = replace(intercept, cookie=OVN_COOKIE, actions=(Output(99),))
    fake.apply(messages.flow_add(squatter))
    before = ovn_entries(fake)
    lbs, topo = companion_view(fake)
    result = Reconciler(COMPANION).reconcile(fake, lbs, topo)
    assert ovn_entries(fake) == before  # the squatter kept its actions and cookie
    assert intercept.key not in {f.key for f in specs(fake)}
    assert installed(fake) == result.desired.state


def loose_delete_all() -> messages.RawMessage:
    """``ovs-ofctl del-flows br-int``: every flow of every table."""
    return messages.RawMessage(messages.OFPT_FLOW_MOD, messages.FLOW_MOD.pack(
        0, 0, ofp.OFPTT_ALL, ofp.OFPFC_DELETE, 0, 0, 0, messages.ANY, messages.ANY, messages.ANY,
        0, 0)
        + encode_match(Match()))


def test_restart_from_prefetched_dumps_sends_zero_mods() -> None:
    """The first pass after a start reads the dumps asked for before the SB
    synced (flows before it compiles, groups after): nothing to send, and
    the group ids the switch's flows name are kept."""
    fake, first = programmed()
    sent = fake.mods
    second = Reconciler(STANDALONE)
    second.prefetch(fake)
    result = second.reconcile(fake, LBS, TOPO)
    assert result.changes.empty and fake.mods == sent and result.foreign == 0
    assert second.group_ids == first.group_ids
    assert result.installed_groups == len(result.desired.state.groups) > 0


def test_a_start_on_a_switch_without_lbaffds_flows_streams_its_bundle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first pass after a start on a switch that has none of lbaffd's
    flows (a host's first start) sends everything: it reads the prefetched
    dumps and writes its bundle while it compiles (ovs-vswitchd checks the
    adds meanwhile), rather than compiling everything first as a restart
    does.  And a restart still compiles first, then sends nothing."""
    from lbaffd.reconcile import reconciler

    events: list[str] = []

    def logged(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        inner = compile_stream(*args, **kw)
        while True:
            try:
                item = next(inner)
            except StopIteration as done:
                return done.value
            events.append("compiled")
            yield item

    compile_stream = reconciler.compile_stream
    monkeypatch.setattr(reconciler, "compile_stream", logged)
    add = FakeBundle.add
    monkeypatch.setattr(FakeBundle, "add",
                        lambda self, msg: (events.append("sent"), add(self, msg))[1])
    fake = FakeSwitch()
    rec = Reconciler(STANDALONE)
    rec.prefetch(fake)
    result = rec.reconcile(fake, LBS, TOPO)
    assert installed(fake) == result.desired.state and result.foreign == 0
    assert events.count("sent") == events.count("compiled") > 10  # an empty switch: all sent
    last_compiled = len(events) - 1 - events[::-1].index("compiled")
    assert events.index("sent") < last_compiled  # sent while the rest still compiled

    events.clear()
    again = Reconciler(STANDALONE)
    again.prefetch(fake)
    assert again.reconcile(fake, LBS, TOPO).changes.empty
    assert "sent" not in events and events.count("compiled") > 10


def test_restart_from_prefetched_dumps_repairs_what_changed_meanwhile() -> None:
    """A group edited and a flow deleted while lbaffd was away: the prefetched
    dumps show it, and the first pass puts back exactly those two."""
    fake, _ = programmed()
    desired = installed(fake)
    gid = next(g for g, body in desired.groups.items()
               if len(packed.unpack_group(body).buckets) > 1)
    group = packed.unpack_group(desired.groups[gid])
    fake.apply(messages.group_modify(replace(group, buckets=group.buckets[:1])))
    flow = next(iter(desired.flows.values()))
    fake.apply(packed.delete_message(flow))
    second = Reconciler(STANDALONE)
    second.prefetch(fake)
    result = second.reconcile(fake, LBS, TOPO)
    assert len(result.changes.mod_groups) == 1 and len(result.changes.add_flows) == 1
    assert installed(fake) == desired
