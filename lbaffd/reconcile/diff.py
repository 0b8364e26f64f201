"""Desired vs installed -> the minimal set of changes (pure).

Flows are identified as OpenFlow identifies them, by (table, priority, match)
(``packed.flow_id``); groups by id.  Both sides are encoded bodies
(``packed``), so unchanged means byte-equal.  A flow whose id matches but
whose actions differ is modified in place (counters kept); if its cookie,
flags or timeouts differ it is re-added, because an OF1.5 modify cannot change
a cookie.  Learned flows are never part of either side (they carry the learned
magic), so they are never "stale".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lbaffd.openflow.packed import (
    FlowBody,
    FlowId,
    GroupBody,
    PackedState,
    group_id,
    same_header,
    sort_key,
)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    add_groups: tuple[GroupBody, ...] = ()
    mod_groups: tuple[GroupBody, ...] = ()
    del_flows: tuple[FlowBody, ...] = ()  # as installed
    add_flows: tuple[FlowBody, ...] = ()  # new ids, or replacements (cookie changed)
    mod_flows: tuple[FlowBody, ...] = ()  # same id and cookie, new actions
    del_groups: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add_groups or self.mod_groups or self.del_flows or self.add_flows
                    or self.mod_flows or self.del_groups)

    def __add__(self, other: ChangeSet) -> ChangeSet:
        """Both change sets, in order (an audit's slices add up)."""
        return ChangeSet(
            self.add_groups + other.add_groups, self.mod_groups + other.mod_groups,
            self.del_flows + other.del_flows, self.add_flows + other.add_flows,
            self.mod_flows + other.mod_flows, self.del_groups + other.del_groups)

    def __len__(self) -> int:
        return (len(self.add_groups) + len(self.mod_groups) + len(self.del_flows)
                + len(self.add_flows) + len(self.mod_flows) + len(self.del_groups))


class DiffStream:
    """``diff`` one desired group or flow at a time, in the order the compiler
    produces them, so that a full pass can have its bundle on the wire while
    the rest is still compiling.  ``group``/``flow`` say what the item needs
    (``"add"``, ``"mod"`` or None); ``finish`` adds what is installed but no
    longer desired and returns the whole ChangeSet."""

    def __init__(self, installed: PackedState,
                 canonical_group: Callable[[GroupBody], GroupBody] | None = None) -> None:
        self._installed = installed
        # an installed group that differs from the desired one is brought to
        # the form decoding gives before it is called changed (``readback``:
        # groups are read back as bytes, not decoded)
        self._canonical_group = canonical_group
        self._add_flows: list[FlowBody] = []
        self._mod_flows: list[FlowBody] = []
        self._add_groups: list[GroupBody] = []
        self._mod_groups: list[GroupBody] = []

    def flow(self, fid: FlowId, want: FlowBody) -> str | None:
        have = self._installed.flows.get(fid)
        if have is want:
            return None  # the very bytes compiled last pass: unchanged
        if have is None:
            self._add_flows.append(want)
            return "add"
        if have == want:
            return None
        if same_header(have, want):
            self._mod_flows.append(want)
            return "mod"
        self._add_flows.append(want)  # a new cookie: OF1.5 modify cannot change it
        return "add"

    def group(self, gid: int, want: GroupBody) -> str | None:
        have = self._installed.groups.get(gid)
        if have is want:
            return None
        if have is None:
            self._add_groups.append(want)
            return "add"
        if have == want:
            groups = self._installed.groups
            if isinstance(groups, dict):  # the read-back copy can go now (10 KB a group)
                groups[gid] = want
            return None
        if self._canonical_group is not None:
            have = self._canonical_group(have)
            if have == want:
                return None
        self._mod_groups.append(want)
        return "mod"

    def finish(self, desired: PackedState) -> ChangeSet:
        """The ChangeSet, in stream order, with the deletions appended."""
        installed = self._installed
        return ChangeSet(
            add_groups=tuple(self._add_groups), mod_groups=tuple(self._mod_groups),
            del_flows=tuple(have for fid, have in installed.flows.items()
                            if fid not in desired.flows),
            add_flows=tuple(self._add_flows), mod_flows=tuple(self._mod_flows),
            del_groups=tuple(gid for gid in installed.groups if gid not in desired.groups))


def diff(desired: PackedState, installed: PackedState,
         canonical_group: Callable[[GroupBody], GroupBody] | None = None) -> ChangeSet:
    """What turns ``installed`` into ``desired``, in a deterministic order
    (``canonical_group``: see ``DiffStream``)."""
    stream = DiffStream(installed, canonical_group)
    for gid, want_g in desired.groups.items():
        stream.group(gid, want_g)
    for fid, want in desired.flows.items():
        stream.flow(fid, want)
    cs = stream.finish(desired)
    # stable sorts: within a (table, priority) the deterministic dict order stays
    return ChangeSet(
        add_groups=tuple(sorted(cs.add_groups, key=group_id)),
        mod_groups=tuple(sorted(cs.mod_groups, key=group_id)),
        del_flows=tuple(sorted(cs.del_flows, key=sort_key)),
        add_flows=tuple(sorted(cs.add_flows, key=sort_key)),
        mod_flows=tuple(sorted(cs.mod_flows, key=sort_key)),
        del_groups=tuple(sorted(cs.del_groups)),
    )
