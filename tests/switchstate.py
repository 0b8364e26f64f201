"""A packed state decoded into FlowSpecs and GroupSpecs, for tests to read.

The daemon keeps its desired and installed state as bytes (``packed``); tests
that look at flows by their fields decode it here (O(state), never on a hot
path: the daemon has no use for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lbaffd.openflow.flowspec import FlowKey, FlowSpec, GroupSpec
from lbaffd.openflow.packed import PackedState, unpack_flow, unpack_group


@dataclass(frozen=True, slots=True)
class SwitchState:
    """A set of flows and groups, indexed as OpenFlow identifies them."""

    flows: Mapping[FlowKey, FlowSpec]
    groups: Mapping[int, GroupSpec]

    @classmethod
    def build(cls, flows: Iterable[FlowSpec], groups: Iterable[GroupSpec]) -> SwitchState:
        return cls(flows={f.key: f for f in flows}, groups={g.group_id: g for g in groups})


def specs(state: PackedState) -> SwitchState:
    """``state`` decoded."""
    return SwitchState.build(map(unpack_flow, state.flows.values()),
                             map(unpack_group, state.groups.values()))
