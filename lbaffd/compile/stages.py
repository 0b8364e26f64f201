"""The flows of each pipeline stage (drawn in ``pipeline``), as pure builders.

``compiler`` decides *which* VIPs go where; this module says *what* a VIP, a
port or the static pipeline puts in each table.  Everything goes through a
``FlowBuilder``, which stamps the owner's cookie and refuses two different
flows on one key.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

from lbaffd.compile import groupsplit
from lbaffd.compile.layout import (
    CS_EST,
    CS_INV,
    CS_NEW,
    CS_REL,
    CS_RPL,
    CS_TRK,
    CT_STATE_TRK_BIT,
    HAIRPIN_ZONE,
    PRIO_ARP_RESPONDER,
    PRIO_BACKEND_MAC,
    PRIO_COMMIT_OTHER,
    PRIO_CT_INVALID,
    PRIO_DEFAULT,
    PRIO_ESTABLISHED,
    PRIO_HAIRPIN,
    PRIO_HAIRPIN_REPLY,
    PRIO_HIT,
    PRIO_INTERCEPT,
    PRIO_INTERCEPT_UNSNAT,
    PRIO_LEARN,
    PRIO_LEARNED,
    PRIO_MISS,
    PRIO_NO_BACKEND,
    PRIO_PORT,
    PRIO_REPLY,
    PRIO_REPLY_HOOK,
    PRIO_UNSNAT,
    PRIO_VIP,
    REG_AFFINITY_HIT,
    REG_BACKEND_PORT,
    REG_CT_ZONE,
    REG_HAIRPIN,
    REG_OVN_FLAGS,
    REG_VIP_ID,
    REPLY_MARK_BIT,
    SCRATCH_REGS,
    Pipeline,
    backend_regs,
    datapath_zone,
)
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, IPAddress, Vip, ip_text
from lbaffd.model.plan import VipPlan
from lbaffd.model.topology import LocalPort
from lbaffd.openflow.flowspec import (
    LEARN_DELETE_LEARNED,
    LEARN_SEND_FLOW_REM,
    OFPCML_NO_BUFFER,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_NORMAL,
    Action,
    Bucket,
    Ct,
    FlowKey,
    FlowSpec,
    Group,
    GroupSpec,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
    MatchValue,
    Move,
    Nat,
    Output,
    Resubmit,
    SetField,
)

OFPFF_SEND_FLOW_REM = 1
ETH_IP = 0x0800
ETH_IP6 = 0x86DD
ICMP6 = 58
ND_SOLICIT = 135
ND_TYPES = (133, 134, 135, 136, 137)  # router/neighbor solicit/advert, redirect
ETH_ARP = 0x0806
TP_DST = {"tcp": "tcp_dst", "udp": "udp_dst", "sctp": "sctp_dst"}


class FlowBuilder:
    """Accumulates flows per owner and rejects two different flows on one key."""

    def __init__(self) -> None:
        self.flows: dict[FlowKey, FlowSpec] = {}
        self.groups: list[GroupSpec] = []
        self.owners: dict[int, own.OwnerKey] = {}
        self._cookies: dict[own.OwnerKey, int] = {}

    def flow(self, owner: own.OwnerKey, table: int, priority: int,
             match: Mapping[str, MatchValue], actions: tuple[Action, ...]) -> None:
        cookie = self._cookies.get(owner)
        if cookie is None:
            cookie = self._cookies[owner] = own.owner_cookie(owner)
            self.owners[cookie] = owner
        # send_flow_rem: a foreign delete of an lbaffd flow wakes the daemon at once
        self.add(FlowSpec(table, priority, Match.of(match),
                          actions,
                          cookie, flags=OFPFF_SEND_FLOW_REM))

    def add(self, spec: FlowSpec) -> None:
        key = spec.key
        have = self.flows.get(key)
        if have is not None:
            if have != spec:
                raise AssertionError(f"flow key clash: {have} vs {spec}")
            return
        self.flows[key] = spec


def vip_mac(ip: str) -> str:
    """A stable, locally administered MAC the ARP responder answers with."""
    d = hashlib.blake2b(ip.encode(), digest_size=3).digest()
    return "02:1b:af:" + ":".join(f"{b:02x}" for b in d)


# ------------------------------------------------------------------ stages


def _ct_state(on: int, off: int = 0) -> tuple[int, int]:
    return (on, on | off)


def static_flows(b: FlowBuilder, p: Pipeline, output_table: int | None = None) -> None:
    """The pipeline's own flows (default paths).  ``output_table``: companion
    mode's OVN output table (its reply stage returns there); None until known."""
    if p.companion:
        _companion_static_flows(b, p, output_table)
        return
    g = own.GLOBAL_OWNER
    normal = _exit(p)
    if p.classify is not None:
        b.flow(g, p.classify, PRIO_DEFAULT, {}, normal)
    b.flow(g, p.pre_lb, PRIO_DEFAULT, {}, normal)
    # neighbor discovery is not a connection: conntrack would call it invalid
    for icmp_type in ND_TYPES:
        b.flow(g, p.pre_lb, PRIO_PORT + 1,
               {"eth_type": ETH_IP6, "ip_proto": ICMP6, "icmpv6_type": icmp_type}, normal)
    for eth in (ETH_IP, ETH_IP6):
        b.flow(g, p.pre_lb, PRIO_PORT, {"eth_type": eth},
               (SetField(REG_HAIRPIN, 0), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))
        _hairpin_defaults(b, p, eth)
        b.flow(g, p.dispatch, PRIO_COMMIT_OTHER,
               {"ct_state": _ct_state(CS_NEW | CS_TRK), "eth_type": eth},
               (Ct(commit=True, zone_field=REG_CT_ZONE), *normal))
    b.flow(g, p.dispatch, PRIO_CT_INVALID, {"ct_state": _ct_state(CS_INV | CS_TRK)}, ())
    fwd: tuple[Action, ...] = (Resubmit(p.forward),)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_EST | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_REL | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_REPLY, {"ct_state": _ct_state(CS_RPL | CS_TRK)}, normal)
    b.flow(g, p.dispatch, PRIO_DEFAULT, {}, normal)
    b.flow(g, p.learn, PRIO_DEFAULT, {}, fwd)
    b.flow(g, p.forward, PRIO_DEFAULT, {}, normal)


def _hairpin_defaults(b: FlowBuilder, p: Pipeline, eth: int) -> None:
    """After the hairpin zone, un-DNAT; a reply there was un-SNATed and is
    marked to go back whence it came (every mode)."""
    g = own.GLOBAL_OWNER
    b.flow(g, p.hairpin, PRIO_DEFAULT, {"eth_type": eth},
           (Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat()),))
    b.flow(g, p.hairpin, PRIO_DEFAULT + 1,
           {"eth_type": eth, "ct_state": _ct_state(CS_RPL | CS_TRK)},
           (SetField(REG_HAIRPIN, 1), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))


def _companion_static_flows(b: FlowBuilder, p: Pipeline, output_table: int | None) -> None:
    """Only balanced connections enter lbaffd's tables in companion mode: what
    is not lbaffd's to handle goes back to OVN (``_exit``) untouched, never
    committed in lbaffd's zone."""
    g = own.GLOBAL_OWNER
    back = _exit(p)
    fwd: tuple[Action, ...] = (Resubmit(p.forward),)
    b.flow(g, p.dispatch, PRIO_CT_INVALID, {"ct_state": _ct_state(CS_INV | CS_TRK)}, ())
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_EST | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_REL | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_DEFAULT, {}, back)
    b.flow(g, p.learn, PRIO_DEFAULT, {}, fwd)
    b.flow(g, p.forward, PRIO_DEFAULT, {}, back)
    for eth in (ETH_IP, ETH_IP6):
        _hairpin_defaults(b, p, eth)
    if output_table is not None:
        # un-DNATed reply: mark it (ct_state.trk is 1 after ct()) and hand it
        # back to OVN's output table, whose own flow now takes it
        b.flow(g, p.reply, PRIO_DEFAULT, {},
               (Move("ct_state", REG_OVN_FLAGS, 1, CT_STATE_TRK_BIT, REPLY_MARK_BIT),
                Resubmit(output_table)))


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


def _enter(p: Pipeline, tk: int) -> tuple[Action, ...]:
    """Companion entry from table 0: the client's datapath and lbaffd's zone.
    ``metadata`` is 0 for every packet that arrives from a port and non-zero
    once lbaffd has set it, so a packet lbaffd sends back to table 0 never
    matches an interception again (no loop), and OVN's own table-0 flow,
    which loads ``metadata``, ``reg13`` and the logical inport itself, takes it."""
    return (SetField("metadata", tk), SetField(REG_CT_ZONE, p.ct_zone))


def intercept_flows(b: FlowBuilder, p: Pipeline, plan: VipPlan,
                    ports: tuple[LocalPort, ...]) -> None:
    """Companion: per local port of the VIP's client switches, the VIP's
    traffic (protocol, port) is taken into lbaffd's zone above OVN's table-0
    flow for the port (priority 100): new connections are balanced, the rest
    of the connection is DNATed there too."""
    vip = plan.vip
    for port in ports:
        tk = port.datapath.tunnel_key
        match = {"in_port": port.ofport, "metadata": 0, **_l4(vip, vip.endpoint),
                 **_ip(vip.endpoint.ip, "dst")}
        b.flow(plan.owner, 0, PRIO_INTERCEPT, match,
               (*_enter(p, tk), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))


def hairpin_intercept(b: FlowBuilder, p: Pipeline, port: LocalPort, snat: str) -> None:
    """Companion: a backend port's traffic to a hairpin source address may be
    the reply of a connection it made to its own VIP: un-SNAT it (hairpin
    zone), then un-DNAT (lbaffd's zone) and return it by ``IN_PORT``."""
    tk = port.datapath.tunnel_key
    b.flow(("unsnat-port", port.logical_port, snat), 0, PRIO_INTERCEPT_UNSNAT,
           {"in_port": port.ofport, "metadata": 0, **_ip(snat, "dst")},
           (*_enter(p, tk), Ct(zone=HAIRPIN_ZONE, table=p.hairpin, nat=Nat())))


def _ip(ip: str | IPAddress, which: str) -> dict[str, MatchValue]:
    """``eth_type`` + ``ipv4_<which>`` / ``ipv6_<which>`` for ``ip``'s family
    (strings here are already canonical: they come from ``str(IPAddress)``)."""
    text = ip if isinstance(ip, str) else addr_text(ip)
    if ":" not in text:
        return {"eth_type": ETH_IP, f"ipv4_{which}": text}
    return {"eth_type": ETH_IP6, f"ipv6_{which}": text}


@functools.lru_cache(maxsize=4096)
def addr_text(ip: IPAddress) -> str:
    """``str(ip)`` (``model.ip_text``), memoized: the same backend address is
    written into several flows of its VIP (a VIP compiles at once: a small
    memo does, one entry per address was ~5 MB at 5000 LBs)."""
    return ip_text(ip)


@functools.cache
def _exit(p: Pipeline) -> tuple[Action, ...]:
    """How a packet leaves lbaffd: NORMAL, the embedding controller's table,
    or (companion) OVN's table 0 with lbaffd's scratch registers cleared."""
    if p.companion:
        return (*(SetField(r, 0) for r in SCRATCH_REGS), Resubmit(0))
    return (Resubmit(p.next_table),) if p.embedded else (Output(OFPP_NORMAL),)


def port_flows(b: FlowBuilder, p: Pipeline, ofport: int, logical_port: str, tk: int) -> None:
    if p.classify is None:
        return
    b.flow(("port", logical_port), p.classify, PRIO_PORT, {"in_port": ofport},
           (SetField("metadata", tk), SetField(REG_CT_ZONE, datapath_zone(tk)),
            Resubmit(p.pre_lb)))


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


def _back_in(p: Pipeline) -> tuple[Action, ...]:
    """Hairpin exit: back out of the port it came in (embedded: ``reg3``=1 tells
    the owning controller to allow that; companion: straight out, as OVN's
    pipeline would drop a packet for the port it came from)."""
    return _exit(p) if p.embedded else (Output(OFPP_IN_PORT),)


def hairpin_unsnat(b: FlowBuilder, p: Pipeline, tk: int, snat: str) -> None:
    """Traffic to a hairpin source address may be a reply of a hairpinned
    connection: un-SNAT it (hairpin zone) before the usual un-DNAT (companion
    mode does this per backend port in table 0: ``hairpin_intercept``)."""
    if not p.companion:
        b.flow(("unsnat", str(tk), snat), p.pre_lb, PRIO_UNSNAT,
               {"metadata": tk, **_ip(snat, "dst")},
               (SetField(REG_HAIRPIN, 0), Ct(zone=HAIRPIN_ZONE, table=p.hairpin, nat=Nat())))
    # after the SNAT (T6 -> T7): back to the backend it came from
    b.flow(("unsnat", str(tk), snat), p.hairpin, PRIO_HAIRPIN,
           {"metadata": tk, **_ip(snat, "src")},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", vip_mac(snat)), *_back_in(p)))


def hairpin_reply(b: FlowBuilder, p: Pipeline, tk: int, vip_ip: str) -> None:
    """The un-NATed reply of a hairpinned connection (from the VIP to the
    backend that sent it): return it whence it came, with L2 swapped."""
    b.flow(("hairpin", str(tk), vip_ip), p.dispatch, PRIO_HAIRPIN_REPLY,
           {"ct_state": _ct_state(CS_RPL | CS_TRK), REG_HAIRPIN: 1, "metadata": tk,
            **_ip(vip_ip, "src")},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", vip_mac(vip_ip)), *_back_in(p)))


def _hairpin_snat(b: FlowBuilder, p: Pipeline, plan: VipPlan, tk: int, be: Endpoint) -> None:
    """A backend balanced to itself: source-NAT to the VIP (or the LB's
    ``hairpin_snat_ip``) so its kernel sees a peer that is not itself.  The
    connection's ``ct_mark`` (= VIP id, set at DNAT) tells which VIP it came
    through, so VIPs sharing a backend keep their own SNAT address."""
    snat = addr_text(plan.lb.hairpin_source(plan.vip.endpoint))
    match = {"metadata": tk, "ct_mark": plan.group_id, **_l4(plan.vip, be),
             **_ip(be.ip, "src"), **_ip(be.ip, "dst")}
    b.flow(plan.owner, p.forward, PRIO_HAIRPIN, match,
           (Ct(commit=True, zone=HAIRPIN_ZONE, table=p.hairpin,
               nat=Nat(kind="src", ip_min=snat)),))


def forward_flow(b: FlowBuilder, p: Pipeline, tk: int, ip: str, mac: str) -> None:
    b.flow(("fwd", str(tk), ip), p.forward, PRIO_BACKEND_MAC,
           {"metadata": tk, **_ip(ip, "dst")},
           (SetField("eth_dst", mac), *_exit(p)))


def _l4(vip: Vip, ep: Endpoint, dst: bool = True) -> dict[str, MatchValue]:
    """Match on protocol (+ port) of ``ep``; IP-only VIPs match any protocol."""
    eth = ETH_IP if ep.ip.version == 4 else ETH_IP6
    if ep.port is None:
        return {"eth_type": eth}
    return {"eth_type": eth, "ip_proto": vip.ip_proto, TP_DST[vip.protocol]: ep.port}


def _nat(be: Endpoint) -> Nat:
    port = be.port or 0
    return Nat(kind="dst", ip_min=addr_text(be.ip), port_min=port, port_max=port)


def _commit_to(p: Pipeline, be: Endpoint, vip_id: int) -> Ct:
    """DNAT to ``be``, marking the connection with its VIP (``ct_mark``)."""
    return Ct(commit=True, zone_field=REG_CT_ZONE, table=p.learn, nat=_nat(be), mark=vip_id)


def vip_flows(b: FlowBuilder, p: Pipeline, plan: VipPlan, max_idle: int,
              local_ips: frozenset[IPAddress] = frozenset()) -> None:
    vip, gid, owner = plan.vip, plan.group_id, plan.owner
    affinity = plan.lb.affinity_timeout is not None
    new = {"ct_state": _ct_state(CS_NEW | CS_TRK)}
    dispatch: tuple[Action, ...]
    if affinity:
        dispatch = (SetField(REG_VIP_ID, gid), Resubmit(p.affinity), Resubmit(p.lb))
    else:
        dispatch = (SetField(REG_VIP_ID, gid), Group(gid))
    if not plan.live_backends:
        # no backend: drop, or (options:reject=true) let lbaffd refuse it
        dispatch = ((Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),) if plan.lb.reject else ())
    for tk in plan.datapaths:
        match = {**new, "metadata": tk, **_l4(vip, vip.endpoint), **_ip(vip.endpoint.ip, "dst")}
        b.flow(owner, p.dispatch, PRIO_NO_BACKEND if not plan.live_backends else PRIO_VIP,
               match, dispatch)

    for tk in plan.datapaths:
        for be in plan.live_backends:
            if be.ip in local_ips:  # only a local port can connect to its own VIP here
                _hairpin_snat(b, p, plan, tk, be)
    # one DNAT action per backend, shared by its bucket(s) and its hit flow
    commit = {be: _commit_to(p, be, gid) for be in plan.live_backends}
    # a group too large for group-desc goes in parts (last: the VIP's own)
    b.groups.extend(groupsplit.vip_groups(plan, vip_group(p, plan, commit)))
    if not affinity or not plan.live_backends:
        return
    timeout = plan.lb.affinity_timeout or 0
    eth = ETH_IP if vip.endpoint.ip.version == 4 else ETH_IP6
    b.flow(owner, p.lb, PRIO_MISS, {REG_VIP_ID: gid, "eth_type": eth},
           (SetField(REG_AFFINITY_HIT, 0), Group(gid)))
    # A backend that is down has no hit and no learn flow: deleting its learn
    # flow deletes its learned entries (delete_learned), so its clients move now.
    for be in plan.live_backends:
        hit: dict[str, MatchValue] = {REG_VIP_ID: gid, REG_AFFINITY_HIT: 1,
                                      **backend_regs(be.ip), "eth_type": eth}
        if be.port is not None:
            hit[REG_BACKEND_PORT] = be.port
        b.flow(owner, p.lb, PRIO_HIT, hit, (commit[be],))
        learn_match = {**new, REG_VIP_ID: gid, REG_AFFINITY_HIT: 0, **_l4(vip, be),
                       **_ip(be.ip, "dst")}
        b.flow(owner, p.learn, PRIO_LEARN, learn_match,
               (_learn(p, plan, be, min(timeout, max_idle)), Resubmit(p.forward)))


def vip_group(p: Pipeline, plan: VipPlan, commit: Mapping[Endpoint, Ct] | None = None
              ) -> GroupSpec:
    """The VIP's select group: a bucket per entry of ``plan.buckets``, each
    DNATing to its backend (``commit``: the actions already built for them)."""
    if commit is None:
        commit = {be: _commit_to(p, be, plan.group_id) for be in plan.live_backends}
    fields = hash_fields(plan)
    return GroupSpec(
        group_id=plan.group_id,
        buckets=tuple(Bucket(bid, (commit[be],)) for bid, be in plan.buckets),
        selection_method="hash" if fields else "dp_hash",
        fields=fields,
        owner_cookie=own.owner_cookie(plan.owner),
    )


def hash_fields(plan: VipPlan) -> tuple[str, ...]:
    """The select group's hashed fields: the client address for affinity VIPs
    (the miss path is then already sticky), the LB's ``selection_fields``
    otherwise (OVN names mapped to OXM fields), none (dp_hash) by default."""
    vip, lb = plan.vip, plan.lb
    family = "ipv4" if vip.endpoint.ip.version == 4 else "ipv6"
    if lb.affinity_timeout is not None:
        return (f"{family}_src",)
    out: list[str] = []
    for f in lb.selection_fields:
        if f in ("eth_src", "eth_dst"):
            out.append(f)
        elif f in ("ip_src", "ip_dst"):
            out.append(f"{family}_{f[3:]}")
        elif vip.endpoint.port is not None:  # tp_src / tp_dst: not for IP-only VIPs
            out.append(f"{vip.protocol}_{f[3:]}")
    return tuple(out)


@functools.cache  # two values: IPv4 and IPv6
def _learn_key(v4: bool) -> tuple[LearnMatchField | LearnMatchValue, ...]:
    """What every learned entry matches: datapath, family, client, VIP."""
    src = "ipv4_src" if v4 else "ipv6_src"
    return (LearnMatchField("metadata", "metadata", 64),
            LearnMatchValue(ETH_IP if v4 else ETH_IP6, "eth_type", 16),
            LearnMatchField(src, src, 32 if v4 else 128),
            LearnMatchField(REG_VIP_ID, REG_VIP_ID, 32))


def _learn(p: Pipeline, plan: VipPlan, be: Endpoint, idle_timeout: int) -> Learn:
    specs: list[LearnMatchField | LearnMatchValue | LearnLoadValue] = [
        *_learn_key(be.ip.version == 4)]
    specs += [LearnLoadValue(v, reg, 32) for reg, v in backend_regs(be.ip).items()]
    if be.port is not None:
        specs.append(LearnLoadValue(be.port, REG_BACKEND_PORT, 16))
    specs.append(LearnLoadValue(1, REG_AFFINITY_HIT, 32))
    return Learn(
        table=p.affinity,
        specs=tuple(specs),
        idle_timeout=idle_timeout,
        priority=PRIO_LEARNED,
        cookie=plan.learned_cookie(be),
        # send_flow_rem: expiry/flush are counted, and entries capped below the
        # real timeout are re-installed for the remainder.
        flags=LEARN_DELETE_LEARNED | LEARN_SEND_FLOW_REM,
    )

