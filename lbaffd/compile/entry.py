"""How traffic gets into lbaffd's tables (``layout.Entry``) and what each
local port puts on the switch (``layout.PortStage``): the parts of the
pipeline that differ between modes, each chosen by the mode's layout.

The shared stages (``stages``) balance, learn, forward and hairpin the same
way in every mode; what differs is the door.  ``Entry.PRE_LB`` takes every IP
packet of a datapath through the pre-LB table (standalone: after T0
CLASSIFY; embedded: the other controller resubmits there), answers ARP/ND for
the VIPs and un-SNATs hairpin replies there.  ``Entry.INTERCEPT`` (next to
ovn-controller) takes only a VIP's own traffic, per client port, in table 0
above OVN's flows for the port; ARP/ND stays OVN's.  ``vip.compile_vip`` and
``state.compile_stream`` call these builders without asking for the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lbaffd.compile.layout import (
    HAIRPIN_ZONE,
    PRIO_ARP_RESPONDER,
    PRIO_INTERCEPT,
    PRIO_INTERCEPT_UNSNAT,
    PRIO_REPLY_HOOK,
    PRIO_UNSNAT,
    REG_CT_ZONE,
    REG_HAIRPIN,
    REG_OVN_FLAGS,
    REPLY_MARK_BIT,
    Entry,
    Pipeline,
    PortStage,
)
from lbaffd.compile.stages import (
    ETH_ARP,
    ETH_IP,
    ETH_IP6,
    ICMP6,
    ND_SOLICIT,
    FlowBuilder,
    ip_match,
    l4_match,
    port_flows,
    vip_mac,
)
from lbaffd.model.plan import VipPlan
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.flowspec import (
    OFPCML_NO_BUFFER,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    Action,
    Ct,
    Match,
    Move,
    Nat,
    Output,
    SetField,
)

# ------------------------------------------------------------------ Entry.PRE_LB


def neighbor_responders(b: FlowBuilder, p: Pipeline, tk: int, ip: str, snat: str) -> None:
    """The VIP answers ARP/ND on its datapath, and so does its hairpin
    source address (the backends answer it)."""
    arp_responder(b, p, tk, ip)
    if snat != ip:
        arp_responder(b, p, tk, snat)


def arp_responder(b: FlowBuilder, p: Pipeline, tk: int, ip: str) -> None:
    mac = vip_mac(ip)
    if ":" in ip:
        # OpenFlow cannot turn a solicitation into an advertisement cleanly:
        # lbaffd answers it (as ovn-controller's pinctrl does for nd_na)
        b.flow(("nd", str(tk), ip), p.pre_lb, PRIO_ARP_RESPONDER,
               {"metadata": tk, "eth_type": ETH_IP6, "ip_proto": ICMP6,
                "icmpv6_type": ND_SOLICIT, "ipv6_nd_target": ip},
               (Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),))
        return
    b.flow(("arp", str(tk), ip), p.pre_lb, PRIO_ARP_RESPONDER,
           {"metadata": tk, "eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac),
            Move("arp_spa", "arp_tpa", 32), SetField("arp_spa", ip), Output(OFPP_IN_PORT)))


def unsnat_pre_lb(b: FlowBuilder, p: Pipeline, tk: int, snat: str) -> None:
    """Traffic to a hairpin source address may be a reply of a hairpinned
    connection: un-SNAT it (hairpin zone) before the usual un-DNAT."""
    b.flow(("unsnat", str(tk), snat), p.pre_lb, PRIO_UNSNAT,
           {"metadata": tk, **ip_match(snat, "dst")},
           (SetField(REG_HAIRPIN, 0), Ct(zone=HAIRPIN_ZONE, table=p.hairpin, nat=Nat())))


# ------------------------------------------------------------------ Entry.INTERCEPT


def _enter(p: Pipeline, tk: int) -> tuple[Action, ...]:
    """Entry from table 0: the client's datapath and lbaffd's zone.
    ``metadata`` is 0 for every packet that arrives from a port and non-zero
    once lbaffd has set it, so a packet lbaffd sends back to table 0 never
    matches an interception again (no loop), and OVN's own table-0 flow,
    which loads ``metadata``, ``reg13`` and the logical inport itself, takes it."""
    return (SetField("metadata", tk), SetField(REG_CT_ZONE, p.ct_zone))


def intercept_flows(b: FlowBuilder, p: Pipeline, plan: VipPlan,
                    ports: tuple[LocalPort, ...]) -> None:
    """Per local port of the VIP's client switches, the VIP's traffic
    (protocol, port) is taken into lbaffd's zone above OVN's table-0 flow for
    the port (priority 100): new connections are balanced, the rest of the
    connection is DNATed there too."""
    vip = plan.vip
    for port in ports:
        tk = port.datapath.tunnel_key
        match = {"in_port": port.ofport, "metadata": 0, **l4_match(vip, vip.endpoint),
                 **ip_match(vip.endpoint.ip, "dst")}
        b.flow(plan.owner, 0, PRIO_INTERCEPT, match,
               (*_enter(p, tk), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))


def hairpin_intercept(b: FlowBuilder, p: Pipeline, port: LocalPort, snat: str) -> None:
    """A backend port's traffic to a hairpin source address may be the reply
    of a connection it made to its own VIP: un-SNAT it (hairpin zone), then
    un-DNAT (lbaffd's zone) and return it by ``IN_PORT``."""
    tk = port.datapath.tunnel_key
    b.flow(("unsnat-port", port.logical_port, snat), 0, PRIO_INTERCEPT_UNSNAT,
           {"in_port": port.ofport, "metadata": 0, **ip_match(snat, "dst")},
           (*_enter(p, tk), Ct(zone=HAIRPIN_ZONE, table=p.hairpin, nat=Nat())))


def _intercepts(own: FlowBuilder, shared: FlowBuilder, p: Pipeline, plan: VipPlan,
                topo: Topology, snat: str) -> None:
    """The VIP's interceptions on its client ports, and the hairpin un-SNAT
    on those of them that are its live backends."""
    intercept_flows(own, p, plan, topo.ports_on(plan.datapaths))
    _hairpin_intercepts(shared, p, plan, topo, snat)


def _hairpin_intercepts(shared: FlowBuilder, p: Pipeline, plan: VipPlan, topo: Topology,
                        snat: str) -> None:
    """The hairpin un-SNAT on the VIP's client ports that are its live backends."""
    live = frozenset(be.ip for be in plan.live_backends)
    for port in topo.ports_on(plan.datapaths):
        if port.ips & live:
            hairpin_intercept(shared, p, port, snat)


# ------------------------------------------------------------------ the entries


def _no_vip_flows(own: FlowBuilder, shared: FlowBuilder, p: Pipeline, plan: VipPlan,
                  topo: Topology, snat: str) -> None:
    """The VIP's traffic comes in with everything else of its datapath."""


def _no_datapath_flows(b: FlowBuilder, p: Pipeline, tk: int, ip: str, snat: str) -> None:
    """ARP/ND for the VIP stays the owning controller's."""


def _no_unsnat(b: FlowBuilder, p: Pipeline, tk: int, snat: str) -> None:
    """Done per backend port with the interceptions (``hairpin_intercept``)."""


def _no_live_flows(shared: FlowBuilder, p: Pipeline, plan: VipPlan, topo: Topology,
                   snat: str) -> None:
    """No flow of the entry depends on which backends are live."""


@dataclass(frozen=True, slots=True)
class EntryStages:
    """What one kind of entry adds to a VIP's part, in ``compile_vip``'s order."""

    vip: Callable[[FlowBuilder, FlowBuilder, Pipeline, VipPlan, Topology, str], None]
    # the shared flows ``vip`` adds that depend on which backends are live:
    # the first of the VIP's shared flows (``vip.derived``)
    live: Callable[[FlowBuilder, Pipeline, VipPlan, Topology, str], None]
    datapath: Callable[[FlowBuilder, Pipeline, int, str, str], None]  # per datapath (tk, ip, snat)
    unsnat: Callable[[FlowBuilder, Pipeline, int, str], None]  # per datapath (tk, snat)
    # what of the topology a VIP's part depends on beyond its backends (its
    # cache key); VIP templates mark addresses, not ports: only without
    ports_key: Callable[[VipPlan, Topology], tuple[object, ...]]
    templates: bool


ENTRIES: Mapping[Entry, EntryStages] = {
    Entry.PRE_LB: EntryStages(_no_vip_flows, _no_live_flows, neighbor_responders, unsnat_pre_lb,
                              lambda _plan, _topo: (), templates=True),
    Entry.INTERCEPT: EntryStages(_intercepts, _hairpin_intercepts, _no_datapath_flows, _no_unsnat,
                                 lambda plan, topo: (topo.ports_on(plan.datapaths),),
                                 templates=False),
}


def entry_of(p: Pipeline) -> EntryStages:
    return ENTRIES[p.layout.entry]


# ------------------------------------------------------------------ per port


def reply_hook_flows(b: FlowBuilder, p: Pipeline, port: LocalPort, ovn_match: Match,
                     output_table: int) -> None:
    """Replies to a local port, at OVN's output table, above OVN's own flow
    for that port (``ovn_match``, read from the switch): through lbaffd's zone
    with ``nat``, which un-DNATs the replies of connections lbaffd balanced
    (from local and tunnelled backends alike) and leaves other traffic as it
    is; then back to this table, marked so that OVN's flow takes it."""
    for eth in (ETH_IP, ETH_IP6):
        b.flow(("port", port.logical_port), output_table, PRIO_REPLY_HOOK,
               {**ovn_match.as_dict(), "eth_type": eth,
                REG_OVN_FLAGS: (0, 1 << REPLY_MARK_BIT)},
               (Ct(zone=p.ct_zone, table=p.reply, nat=Nat()),))


def _classify_port(b: FlowBuilder, p: Pipeline, port: LocalPort, topo: Topology) -> None:
    port_flows(b, p, port.ofport, port.logical_port, port.datapath.tunnel_key)


def _reply_hook(b: FlowBuilder, p: Pipeline, port: LocalPort, topo: Topology) -> None:
    """Once OVN's output flow for the port is known (read from the switch)."""
    layout = topo.ovn
    ovn_match = layout.output_match(port.ofport) if layout is not None else None
    if layout is not None and ovn_match is not None:
        reply_hook_flows(b, p, port, ovn_match, layout.output_table)


PORT_STAGES: Mapping[PortStage, Callable[[FlowBuilder, Pipeline, LocalPort, Topology], None]] = {
    PortStage.CLASSIFY: _classify_port,
    PortStage.REPLY_HOOK: _reply_hook,
}


def local_port_flows(b: FlowBuilder, p: Pipeline, port: LocalPort, topo: Topology) -> None:
    """Everything ``port`` puts on the switch in this mode (its layout's
    ``port_stages``)."""
    for stage in p.layout.port_stages:
        PORT_STAGES[stage](b, p, port, topo)
