"""The fake switch (``tests/fakeswitch.py``) held equal to a real ovs-vswitchd.

The same bundles go to br-int of a real ovs-vswitchd 3.1 and to the fake:
lbaffd's compiled state for four pipeline layouts, then edits of every kind
the fake models (strict and non-strict modifies and deletes, cookie masks,
masked selectors, group modify and delete with the flows that name a group,
replays, refusals).  After each step both answer with the same error (type
and code, or none) and dump the same flows and groups: every flow-desc entry
byte-identical but for its stats (match field order, xregs, NXM learn specs,
no instruction for no actions), every group-desc entry byte-identical.  The
unit tests of the reconciler against the fake rest on this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.compile.layout import REG_VIP_ID, STANDALONE
from lbaffd.model import ownership as own
from lbaffd.openflow import messages
from lbaffd.openflow.actions import encode_all
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import (
    Action,
    FlowSpec,
    Group,
    GroupSpec,
    Learn,
    Match,
    Output,
    Resubmit,
)
from lbaffd.openflow.groupdesc import iter_group_entries
from lbaffd.openflow.oxm import encode_match
from lbaffd.openflow.replies import OpenFlowError, Reply
from lbaffd.reconcile.reconciler import Reconciler
from lbaffd_sandbox.sandbox import Sandbox
from tests.fakeswitch import FakeSwitch
from tests.switchstate import SwitchState, specs
from tests.unit.test_encode_vs_osken import DPS, ROWS, STATES, TOPO

pytestmark = pytest.mark.integration

def loose(command: int, table: int, match: Match, cookie: int = 0, cookie_mask: int = 0,
          actions: tuple[Action, ...] = ()) -> messages.RawMessage:
    """A non-strict flow mod (``ovs-ofctl mod-flows`` / ``del-flows`` without --strict)."""
    body = encode_all(actions)
    instructions = (messages.INSTRUCTION.pack(messages.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
                    if command in (ofp.OFPFC_MODIFY, ofp.OFPFC_ADD) else b"")
    return messages.RawMessage(messages.OFPT_FLOW_MOD, messages.FLOW_MOD.pack(
        cookie, cookie_mask, table, command, 0, 0, 0, messages.ANY, messages.ANY, messages.ANY,
        0, 0)
        + encode_match(match) + instructions)


def flow_ids(parts: list[Reply]) -> Counter[bytes]:
    return Counter(ident for p in parts for _, _, ident in iter_entries(p.raw))


def group_entries(parts: list[Reply]) -> Counter[bytes]:
    return Counter(entry for p in parts for _, _, entry in iter_group_entries(p.raw))


def send(bundle: Callable[[Sequence[Any]], None], msgs: Sequence[Any]) -> tuple[int, int] | None:
    try:
        bundle(msgs)
    except OpenFlowError as exc:
        return exc.err_type, exc.code
    return None


def assert_same(channel: OpenFlowChannel, fake: FakeSwitch) -> int:
    """Both switches hold the same flows and groups (as their dumps say)."""
    real, mine = flow_ids(channel.dump_flow_desc(0, 0)), flow_ids(fake.dump_flow_desc(0, 0))
    assert real == mine, (sorted(x.hex() for x in (real - mine).elements())[:3],
                          sorted(x.hex() for x in (mine - real).elements())[:3])
    owned = own.is_lbaffd_group
    assert group_entries(channel.dump_group_desc(owned)) == group_entries(
        fake.dump_group_desc(owned))
    return sum(real.values())


def steps(state: SwitchState) -> list[tuple[str, list[Any]]]:
    flows = sorted(state.flows.values(), key=lambda f: (f.table, -f.priority, str(f.match)))
    groups = sorted(state.groups.values(), key=lambda g: g.group_id)
    full = ([messages.group_add(g) for g in groups] + [messages.flow_add(f) for f in flows])
    named = next(g for g in groups if any(Group(g.group_id) in f.actions for f in flows))
    wide = next(g for g in groups if len(g.buckets) > 1)
    v6 = [f for f in flows if f.match.as_dict().get("eth_type") == 0x86DD]
    # a VIP whose flows outlive the group delete
    vip_cookie = next(f.cookie for f in flows
                      if any(isinstance(a, Group) and a.group_id != named.group_id
                             for a in f.actions))
    base = min(f.table for f in flows)
    return [
        ("install", full),
        ("replay: every group exists", full),
        ("modify strict", [messages.flow_modify(replace(f, actions=(Output(3),)))
                           for f in flows[::7]]),
        ("delete strict, one with another cookie",
         [messages.flow_delete(f) for f in flows[1::11]]
         + [messages.flow_delete(replace(flows[2], cookie=flows[2].cookie ^ 1))]),
        ("modify strict of a flow that is not there",
         [messages.flow_modify(replace(flows[1], actions=(Output(4),)))]),
        ("flow to a missing group", [messages.flow_add(replace(flows[3], actions=(Group(77),)))]),
        ("add replaces", [messages.flow_add(replace(f, cookie=f.cookie + 1, idle_timeout=9,
                                                 actions=(Resubmit(base + 2),)))
                          for f in flows[5::13]]),
        ("modify a group", [messages.group_modify(replace(wide, buckets=wide.buckets[:1]))]),
        ("modify a group that is not there",
         [messages.group_modify(replace(wide, group_id=own.GROUP_ID_MAX))]),
        ("delete a group and the flows naming it", [messages.group_delete(named.group_id)]),
        ("add a group twice", [messages.group_add(replace(wide, group_id=own.GROUP_ID_MAX))] * 2),
        ("non-strict modify of IPv6 flows in one table",
         [loose(ofp.OFPFC_MODIFY, v6[0].table, Match.of(eth_type=0x86DD),
                actions=(Output(5),))] if v6 else []),
        ("non-strict delete under a /24",
         [loose(ofp.OFPFC_DELETE, ofp.OFPTT_ALL,
                Match.of(eth_type=0x800, ipv4_dst=("10.0.0.0", "255.255.255.0")))]),
        ("non-strict delete by cookie", [loose(ofp.OFPFC_DELETE, ofp.OFPTT_ALL, Match(),
                                               vip_cookie, (1 << 64) - 1)]),
        ("non-strict delete of a table under a masked metadata",
         [loose(ofp.OFPFC_DELETE, base + 1, Match.of(metadata=(1, 0xFF)))]),
        ("cleanup: by cookie magic, then every group",
         [messages.flow_delete_by_cookie(own.MANAGED_COOKIE, own.MAGIC_MASK),
          messages.group_delete(ofp.OFPG_ALL)]),
    ]


@pytest.mark.parametrize("index", range(len(STATES)), ids=["standalone", "embedded", "base100",
                                                           "embedded-low"])
def test_fake_answers_as_ovs(channel: OpenFlowChannel, index: int) -> None:
    fake = FakeSwitch()
    errors: list[tuple[str, tuple[int, int] | None]] = []
    counts: list[int] = []
    unchanged: set[str] = set()
    for name, msgs in steps(specs(STATES[index].state)):
        before = fake.snapshot()
        real = send(channel.bundle, msgs)
        assert send(fake.bundle, msgs) == real, name
        errors.append((name, real))
        counts.append(assert_same(channel, fake))
        if fake.snapshot() == before:
            unchanged.add(name)
    assert counts[0] > 300 and counts[-1] == 0
    refused = {name for name, err in errors if err is not None}
    assert refused == {"replay: every group exists", "flow to a missing group",
                       "modify a group that is not there", "add a group twice"}
    # refused bundles change nothing (atomic), and neither does a modify of
    # nothing; every other step did change the tables
    assert unchanged == refused | {"modify strict of a flow that is not there"}


def test_reconciler_reads_the_fake_as_it_reads_ovs(channel: OpenFlowChannel) -> None:
    """A pass, an audit and a restart against both: the same messages, the
    same tables, nothing sent the second and third time."""
    from lbaffd.model.loadbalancer import parse_all

    lbs, _ = parse_all(ROWS, DPS, {})
    fake = FakeSwitch()
    results = [Reconciler(STANDALONE).reconcile(sw, lbs, TOPO) for sw in (channel, fake)]
    assert results[0].changes == results[1].changes and len(results[0].changes) > 300
    assert assert_same(channel, fake) > 300
    for sw in (channel, fake):
        again = Reconciler(STANDALONE).reconcile(sw, lbs, TOPO)
        assert again.changes.empty and again.installed_flows == len(again.desired.state.flows)


def test_groups_are_reported_as_sent(channel: OpenFlowChannel) -> None:
    """Every group shape lbaffd compiles (dp_hash, hash on fields, 1..255 buckets)."""
    groups: list[GroupSpec] = [g for s in STATES for g in specs(s.state).groups.values()]
    unique = list({g.group_id: g for g in groups}.values())
    fake = FakeSwitch()
    msgs = [messages.group_add(g) for g in unique]
    assert send(channel.bundle, msgs) is None and send(fake.bundle, msgs) is None
    assert assert_same(channel, fake) == 0
    groups = group_entries(fake.dump_group_desc(own.is_lbaffd_group))
    assert sum(groups.values()) == len(unique) > 20



def test_learned_entries_equal_ovs(channel: OpenFlowChannel, sandbox: Sandbox) -> None:
    """An entry learned by a real packet (``ofproto/trace -generate``) equals
    the one the fake's ``learn`` installs, byte for byte; it stays while a flow
    holding its learn action is left and goes with the last one, deleted or
    modified to other actions (delete_learned), on both."""
    from lbaffd.model.loadbalancer import parse_all

    lbs, _ = parse_all(ROWS, DPS, {})
    fake = FakeSwitch()
    for sw in (channel, fake):
        Reconciler(STANDALONE).reconcile(sw, lbs, TOPO)
    learner = next(f for f in (messages.decode_flow(p.raw, off)
                               for p in fake.dump_flow_desc(0, 0)
                               for off, _, _ in iter_entries(p.raw))
                   if any(isinstance(a, Learn) for a in f.actions))
    vip_id = learner.match.as_dict()[REG_VIP_ID]
    assert isinstance(vip_id, int)
    # a second flow with the same learn action, that a plain packet reaches from table 0
    trigger = FlowSpec(0, 65000, Match.of(eth_type=0x800, ipv4_src="10.0.0.11"),
                       learner.actions, 0x1234)
    for sw in (channel, fake):
        sw.bundle([messages.flow_add(trigger)])
    packet = (f"in_port=11,tcp,nw_src=10.0.0.11,nw_dst=10.0.0.21,tp_src=5555,tp_dst=8080,"
              f"metadata=1,{REG_VIP_ID}={vip_id:#x}")
    values: dict[str, int | str] = {"metadata": 1, "ipv4_src": "10.0.0.11", REG_VIP_ID: vip_id}

    def entries(sw: OpenFlowChannel | FakeSwitch) -> Counter[bytes]:
        return flow_ids(sw.dump_flow_desc(own.LEARNED_COOKIE, own.MAGIC_MASK))

    def learn() -> None:
        sandbox.appctl("ofproto/trace", "br-int", packet, "-generate")
        fake.learn(trigger, values)
        assert entries(channel) == entries(fake) and sum(entries(fake).values()) == 1

    def then(msg: Any, left: int) -> None:
        for sw in (channel, fake):
            sw.bundle([msg])
        assert entries(channel) == entries(fake) and sum(entries(fake).values()) == left

    learn()
    then(messages.flow_delete(trigger), 1)  # the learner still holds the same learn action
    then(messages.flow_modify(replace(learner, actions=(Output(1),))), 0)  # and now none does
    then(messages.flow_add(trigger), 0)
    learn()
    then(messages.flow_delete(trigger), 0)  # deleted with the last flow holding its learn
    assert_same(channel, fake)
