"""Desired vs installed -> the minimal set of changes (pure).

Flows are identified as OpenFlow identifies them, by (table, priority, match);
groups by id.  A flow whose key matches but whose actions differ is modified
in place (counters kept); if its cookie differs it is re-added, because an
OF1.5 modify cannot change a cookie.  Learned flows are never part of either
side (they carry the learned magic), so they are never "stale".
"""

from __future__ import annotations

from dataclasses import dataclass

from lbaffd.openflow.flowspec import FlowSpec, GroupSpec, SwitchState


@dataclass(frozen=True, slots=True)
class ChangeSet:
    add_groups: tuple[GroupSpec, ...] = ()
    mod_groups: tuple[GroupSpec, ...] = ()
    del_flows: tuple[FlowSpec, ...] = ()
    add_flows: tuple[FlowSpec, ...] = ()  # new keys, or replacements (cookie changed)
    mod_flows: tuple[FlowSpec, ...] = ()  # same key and cookie, new actions
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


def diff(desired: SwitchState, installed: SwitchState) -> ChangeSet:
    add_flows: list[FlowSpec] = []
    mod_flows: list[FlowSpec] = []
    for key, want in desired.flows.items():
        have = installed.flows.get(key)
        if have is want:
            continue  # the very object compiled last pass: unchanged, nothing to compare
        if have is None:
            add_flows.append(want)
        elif have != want:
            same_in_place = (have.cookie == want.cookie and have.flags == want.flags
                             and have.idle_timeout == want.idle_timeout
                             and have.hard_timeout == want.hard_timeout)
            (mod_flows if same_in_place else add_flows).append(want)
    del_flows = [have for key, have in installed.flows.items() if key not in desired.flows]

    add_groups: list[GroupSpec] = []
    mod_groups: list[GroupSpec] = []
    for gid, want_g in desired.groups.items():
        have_g = installed.groups.get(gid)
        if have_g is want_g:
            continue
        if have_g is None:
            add_groups.append(want_g)
        elif have_g != want_g:
            mod_groups.append(want_g)
    del_groups = [gid for gid in installed.groups if gid not in desired.groups]

    def by_key(f: FlowSpec) -> tuple[int, int]:
        # stable sort: within a (table, priority) the deterministic dict order
        # stays; formatting 100k matches to sort by them cost ~0.4 s per pass
        return (f.table, -f.priority)

    return ChangeSet(
        add_groups=tuple(sorted(add_groups, key=lambda g: g.group_id)),
        mod_groups=tuple(sorted(mod_groups, key=lambda g: g.group_id)),
        del_flows=tuple(sorted(del_flows, key=by_key)),
        add_flows=tuple(sorted(add_flows, key=by_key)),
        mod_flows=tuple(sorted(mod_flows, key=by_key)),
        del_groups=tuple(sorted(del_groups)),
    )
