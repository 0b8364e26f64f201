"""The packed form: bodies equal exactly when flows are, and the messages
derived from a body are the ones ``messages`` encodes from the FlowSpec."""

from __future__ import annotations

import pytest

from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import (
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
    cookie,
    delete_message,
    flow_id,
    group_id,
    group_modify_message,
    installed_flow,
    installed_group,
    is_foreign,
    modify_message,
    pack_flow,
    pack_group,
    same_header,
    sort_key,
    unpack_flow,
    unpack_group,
)
from lbaffd.openflow.replies import XidSpan
from tests.switchstate import specs as unpacked
from tests.unit.test_encode_vs_osken import STATES

C1 = 0x1BAF000000000001


def specs() -> list[FlowSpec]:
    return [f for s in STATES for f in unpacked(s.state).flows.values()]


def test_compiled_states_round_trip_and_derive_the_wire_messages() -> None:
    for spec in specs():
        body = pack_flow(spec)
        assert unpack_flow(body) == spec
        assert cookie(body) == spec.cookie
        assert sort_key(body) == (spec.table, -spec.priority)
        assert modify_message(body) == messages.flow_modify(spec)
        assert delete_message(body) == messages.flow_delete(spec)
    for state in STATES:
        for gid, body in state.state.groups.items():
            g = unpack_group(body)
            assert g.group_id == group_id(body) == gid
            assert pack_group(g) == body
            assert group_modify_message(body) == messages.group_modify(g)


def test_flow_id_is_table_priority_and_match() -> None:
    a = FlowSpec(2, 100, Match.of(reg6=1, eth_type=0x800), (Resubmit(6),), C1)
    same_key = FlowSpec(2, 100, Match.of(eth_type=0x800, reg6=1), (Output(1),), C1 + 1,
                        idle_timeout=5)
    assert flow_id(pack_flow(a)) == flow_id(pack_flow(same_key))
    assert pack_flow(a) != pack_flow(same_key)
    for other in (FlowSpec(3, 100, a.match, a.actions, C1),
                  FlowSpec(2, 101, a.match, a.actions, C1),
                  FlowSpec(2, 100, Match.of(reg6=2, eth_type=0x800), a.actions, C1)):
        assert flow_id(pack_flow(other)) != flow_id(pack_flow(a))


def test_same_header_is_what_a_modify_cannot_change() -> None:
    a = FlowSpec(2, 100, Match.of(reg6=1), (Resubmit(6),), C1)
    assert same_header(pack_flow(a), pack_flow(FlowSpec(2, 100, a.match, (Output(1),), C1)))
    for other in (FlowSpec(2, 100, a.match, a.actions, C1 + 1),
                  FlowSpec(2, 100, a.match, a.actions, C1, idle_timeout=3),
                  FlowSpec(2, 100, a.match, a.actions, C1, hard_timeout=3),
                  FlowSpec(2, 100, a.match, a.actions, C1, flags=1)):
        assert not same_header(pack_flow(a), pack_flow(other))


def test_unknown_actions_mark_an_installed_entry_foreign() -> None:
    want = FlowSpec(2, 100, Match.of(reg6=1), (Resubmit(6),), C1)
    for tampered in ((Resubmit(6), Opaque("NXActionNote")), (Opaque("NXActionNote"),)):
        body = installed_flow(FlowSpec(2, 100, want.match, tampered, C1))
        assert is_foreign(body) and body != pack_flow(want)
        assert flow_id(body) == flow_id(pack_flow(want))
        assert delete_message(body) == messages.flow_delete(want)
        assert unpack_flow(body).actions == tuple(a for a in tampered if
                                                  not isinstance(a, Opaque))
    assert installed_flow(want) == pack_flow(want) and not is_foreign(pack_flow(want))
    g = GroupSpec(0xB0000001, (Bucket(0, (Output(1),)),))
    bad = installed_group(GroupSpec(0xB0000001, (Bucket(0, (Output(1), Opaque("x"))),)))
    assert is_foreign(bad) and bad != pack_group(g) and unpack_group(bad) == g


def test_packed_state_decodes_to_the_specs() -> None:
    state = STATES[0].state
    again = PackedState.of(unpacked(state).flows.values(), unpacked(state).groups.values())
    assert again == state


@pytest.mark.parametrize(("first", "last", "inside", "outside"), [
    (10, 20, (10, 15, 20), (9, 21, 0)),
    (0xFFFFFFF0, 5, (0xFFFFFFF0, 0xFFFFFFFF, 0, 5), (6, 0xFFFFFFEF)),  # wrapped at 2^32
])
def test_a_bundle_xid_span(first: int, last: int, inside: tuple[int, ...],
                           outside: tuple[int, ...]) -> None:
    span = XidSpan(first, last)
    assert all(x in span for x in inside)
    assert not any(x in span for x in outside)
