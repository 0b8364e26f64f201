"""Diff logic: desired vs installed -> minimal, correctly ordered changes.

Both sides are packed bodies (``packed``); the installed side is built the way
the reconciler reads the switch (``installed_flow``: unknown actions marked).
"""

from __future__ import annotations

from lbaffd.openflow.flowspec import (
    OFPP_NORMAL,
    Bucket,
    FlowSpec,
    GroupSpec,
    Match,
    Opaque,
    Output,
    Resubmit,
)
from lbaffd.openflow.packed import (
    PackedState,
    installed_flow,
    installed_group,
    pack_flow,
    pack_group,
    unpack_flow,
)
from lbaffd.reconcile.diff import diff

C1 = 0x1BAF000000000001
C2 = 0x1BAF000000000002


def flow(prio: int = 100, cookie: int = C1, table: int = 2, **match: int) -> FlowSpec:
    return FlowSpec(table, prio, Match.of(match or {"reg6": 1}), (Resubmit(6),), cookie)


def state(*flows: FlowSpec, groups: tuple[GroupSpec, ...] = ()) -> PackedState:
    return PackedState.build(map(installed_flow, flows), map(installed_group, groups))


def test_identical_is_empty() -> None:
    s = state(flow(), flow(prio=50), groups=(GroupSpec(0xB0000001, ()),))
    assert diff(s, s).empty


def test_add_delete_by_key() -> None:
    cs = diff(state(flow(reg6=1)), state(flow(reg6=2)))
    assert [unpack_flow(f).match.as_dict() for f in cs.add_flows] == [{"reg6": 1}]
    assert [unpack_flow(f).match.as_dict() for f in cs.del_flows] == [{"reg6": 2}]
    assert not cs.mod_flows


def test_changed_actions_modify_in_place_but_cookie_change_re_adds() -> None:
    want = flow()
    other_actions = FlowSpec(want.table, want.priority, want.match, (Output(OFPP_NORMAL),), C1)
    cs = diff(state(want), state(other_actions))
    assert cs.mod_flows == (pack_flow(want),) and not cs.add_flows and not cs.del_flows
    cs = diff(state(want), state(flow(cookie=C2)))
    assert cs.add_flows == (pack_flow(want),) and not cs.mod_flows and not cs.del_flows


def test_foreign_edit_is_repaired() -> None:
    want = flow()
    tampered = FlowSpec(want.table, want.priority, want.match, (Opaque("NXActionNote"),), C1)
    assert diff(state(want), state(tampered)).mod_flows == (pack_flow(want),)
    # an unknown action added to the desired ones is no less foreign
    extra = FlowSpec(want.table, want.priority, want.match,
                     (*want.actions, Opaque("NXActionNote")), C1)
    assert diff(state(want), state(extra)).mod_flows == (pack_flow(want),)


def test_groups() -> None:
    g1 = GroupSpec(0xB0000001, (Bucket(0, (Output(1),)),))
    g1b = GroupSpec(0xB0000001, (Bucket(0, (Output(2),)),))
    g2 = GroupSpec(0xB0000002, ())
    cs = diff(state(groups=(g1,)), state(groups=(g1b, g2)))
    assert cs.mod_groups == (pack_group(g1),) and cs.del_groups == (0xB0000002,)
    assert not cs.add_groups
    cs = diff(state(flow(), groups=(g2,)), state())
    assert cs.add_groups == (pack_group(g2),) and len(cs) == 2
    tampered = GroupSpec(0xB0000001, (Bucket(0, (Output(1), Opaque("NXActionNote"))),))
    assert diff(state(groups=(g1,)), state(groups=(tampered,))).mod_groups == (pack_group(g1),)


def test_group_owner_cookie_is_not_compared() -> None:
    a = GroupSpec(0xB0000001, (), owner_cookie=1)
    b = GroupSpec(0xB0000001, (), owner_cookie=2)
    assert diff(state(groups=(a,)), state(groups=(b,))).empty
