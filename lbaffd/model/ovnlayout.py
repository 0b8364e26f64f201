"""Where ovn-controller delivers packets to local ports, read from its own flows.

Companion mode un-DNATs replies at OVN's *output* stage: the table whose flows
send a packet whose logical outport (a register) is a local port out of that
port's ofport.  OVN numbers its tables differently between releases (23.03:
table 65, ``reg15=<port key>,metadata=<datapath> actions=output:<ofport>``,
``controller/lflow.h`` OFTABLE_LOG_TO_PHY), so lbaffd never assumes a number:
it asks the switch for the flows that output to each local ofport
(``out_port`` filter of a flow-desc request) and keeps, per port, the match of
the one foreign flow that does nothing but output there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lbaffd.model import ownership as own
from lbaffd.openflow.flowspec import Action, FlowSpec, Match, Opaque, Output, SetField

# fields an output flow of OVN may match on besides the outport register
_OUTPUT_CONTEXT = ("metadata",)


@dataclass(frozen=True, slots=True)
class OvnLayout:
    """``output_table``: OVN's logical-to-physical output table; ``outputs``:
    per local ofport, OVN's match there (e.g. ``metadata=0x1,reg15=0x2``)."""

    output_table: int
    outputs: tuple[tuple[int, Match], ...] = ()

    def output_match(self, ofport: int) -> Match | None:
        for port, match in self.outputs:
            if port == ofport:
                return match
        return None

    @property
    def known_ports(self) -> frozenset[int]:
        return frozenset(port for port, _ in self.outputs)


def _outputs_to(actions: tuple[Action, ...], ofport: int) -> bool:
    """``output:<ofport>`` and nothing else, or the same inside the VLAN tag
    of a tagged localnet port: ovn-controller 23.03 writes that port's output
    flow as ``push_vlan:0x8100, set_field:<tag|0x1000>->vlan_vid,
    output:<patch port>, pop_vlan`` (``controller/physical.c``)."""
    if actions == (Output(ofport),):
        return True
    return (len(actions) == 4 and actions[0] == Opaque("OFPActionPushVlan")
            and isinstance(actions[1], SetField) and actions[1].field == "vlan_vid"
            and actions[2] == Output(ofport) and actions[3] == Opaque("OFPActionPopVlan"))


def output_flow_match(flow: FlowSpec, ofport: int) -> Match | None:
    """OVN's match if ``flow`` is its plain output flow for ``ofport``: not
    lbaffd's, actions exactly ``output:<ofport>`` (for a tagged localnet
    port, inside its VLAN tag), matching the datapath and one register (the
    logical outport) and nothing else."""
    if own.is_managed(flow.cookie) or own.is_learned(flow.cookie):
        return None
    if not _outputs_to(flow.actions, ofport):
        return None
    names = [name for name, _ in flow.match.fields]
    regs = [n for n in names if n.startswith("reg")]
    if len(regs) != 1 or set(names) - set(regs) - set(_OUTPUT_CONTEXT):
        return None
    if any(isinstance(v, tuple) for _, v in flow.match.fields):
        return None  # masked: not a per-port flow
    return flow.match


def discover(flows_by_port: Mapping[int, Iterable[FlowSpec]]) -> OvnLayout | None:
    """The layout from each local ofport's flows (those that output to it).

    The output table is the one most ports have their output flow in; a port
    whose output flow is not (yet) there is left out, so it is not
    intercepted until ovn-controller has programmed it.  None: no port has
    one yet (ovn-controller has not programmed the bridge)."""
    found: dict[int, list[tuple[int, Match]]] = {}
    for ofport, flows in flows_by_port.items():
        for f in flows:
            m = output_flow_match(f, ofport)
            if m is not None:
                found.setdefault(ofport, []).append((f.table, m))
    tables = Counter(t for hits in found.values() for t, _ in hits)
    if not tables:
        return None
    table = min(tables, key=lambda t: (-tables[t], t))
    outputs = []
    for ofport in sorted(found):
        matches = [m for t, m in found[ofport] if t == table]
        if len(matches) == 1:
            outputs.append((ofport, matches[0]))
    return OvnLayout(table, tuple(outputs))


def merge(previous: OvnLayout | None, found: OvnLayout | None,
          ofports: frozenset[int]) -> OvnLayout | None:
    """What is known now: ``found`` wins for the ports it has; a port it
    lacks keeps its ``previous`` match.  ovn-controller deletes every flow when
    it reconnects and re-installs them over the next ~0.1 s; a port key and
    its datapath come from the SB and survive that, so lbaffd puts its hooks
    back at once instead of waiting for OVN's.  Only ports still local count."""
    if found is None and previous is None:
        return None
    if found is not None and (previous is None or found.outputs
                              or found.output_table != previous.output_table):
        table = found.output_table
    else:
        assert previous is not None
        table = previous.output_table
    outputs = dict(previous.outputs) if previous is not None and (
        previous.output_table == table) else {}
    if found is not None and found.output_table == table:
        outputs.update(found.outputs)
    return OvnLayout(table, tuple(sorted((p, m) for p, m in outputs.items() if p in ofports)))
