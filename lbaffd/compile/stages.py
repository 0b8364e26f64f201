"""The flows of each pipeline stage (drawn in ``layout``), as pure builders.

``state`` decides *which* VIPs go where; this module says *what* a VIP, a
port or the static pipeline puts in each table, the same in every mode: the
tables come from the mode's ``layout.ModeLayout`` (``Pipeline``), and so do
the exits (``EXITS``) and the default flows (``STATIC``); how traffic comes
in, where the modes differ, is ``entry``.  Everything goes through a
``FlowBuilder``, which stamps the owner's cookie and refuses two different
flows on one key.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping

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
    PRIO_BACKEND_MAC,
    PRIO_COMMIT_OTHER,
    PRIO_CT_INVALID,
    PRIO_DEFAULT,
    PRIO_ESTABLISHED,
    PRIO_HAIRPIN,
    PRIO_HAIRPIN_REPLY,
    PRIO_HIT,
    PRIO_LEARN,
    PRIO_LEARNED,
    PRIO_MISS,
    PRIO_NO_BACKEND,
    PRIO_PORT,
    PRIO_REPLY,
    PRIO_VIP,
    REG_AFFINITY_HIT,
    REG_BACKEND_PORT,
    REG_CT_ZONE,
    REG_HAIRPIN,
    REG_OVN_FLAGS,
    REG_VIP_ID,
    REPLY_MARK_BIT,
    SCRATCH_REGS,
    Exit,
    Pipeline,
    Static,
    Table,
    backend_regs,
    datapath_zone,
)
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, IPAddress, Vip, ip_text
from lbaffd.model.plan import VipPlan, bucket_weights
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


def ct_state(on: int, off: int = 0) -> tuple[int, int]:
    return (on, on | off)


def static_flows(b: FlowBuilder, p: Pipeline, output_table: int | None = None) -> None:
    """The pipeline's own flows (default paths): the static stages the mode's
    layout lists.  ``output_table``: OVN's output table (where a reply stage
    returns); None until known."""
    for stage in p.layout.static:
        STATIC[stage](b, p, output_table)


def _classify_default(b: FlowBuilder, p: Pipeline, _: int | None) -> None:
    """T0: a port lbaffd does not know leaves at once."""
    b.flow(own.GLOBAL_OWNER, p.table(Table.CLASSIFY), PRIO_DEFAULT, {}, exit_actions(p))


def _pre_lb_defaults(b: FlowBuilder, p: Pipeline, _: int | None) -> None:
    """Every IP packet goes through conntrack (``nat`` un-DNATs replies and
    re-DNATs established connections); the rest leaves, neighbor discovery
    too: it is not a connection, conntrack would call it invalid."""
    g, out = own.GLOBAL_OWNER, exit_actions(p)
    b.flow(g, p.pre_lb, PRIO_DEFAULT, {}, out)
    for icmp_type in ND_TYPES:
        b.flow(g, p.pre_lb, PRIO_PORT + 1,
               {"eth_type": ETH_IP6, "ip_proto": ICMP6, "icmpv6_type": icmp_type}, out)
    for eth in (ETH_IP, ETH_IP6):
        b.flow(g, p.pre_lb, PRIO_PORT, {"eth_type": eth},
               (SetField(REG_HAIRPIN, 0), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))


def _commit_other(b: FlowBuilder, p: Pipeline, _: int | None) -> None:
    """Where every IP packet comes in: new connections to no VIP are
    committed (so their replies are known as replies) and leave, and
    replies leave."""
    g, out = own.GLOBAL_OWNER, exit_actions(p)
    for eth in (ETH_IP, ETH_IP6):
        b.flow(g, p.dispatch, PRIO_COMMIT_OTHER,
               {"ct_state": ct_state(CS_NEW | CS_TRK), "eth_type": eth},
               (Ct(commit=True, zone_field=REG_CT_ZONE), *out))
    b.flow(g, p.dispatch, PRIO_REPLY, {"ct_state": ct_state(CS_RPL | CS_TRK)}, out)


def _tracked_defaults(b: FlowBuilder, p: Pipeline, _: int | None) -> None:
    """After conntrack: invalid packets dropped, established and related
    ones forwarded (already DNATed), the rest leaves; a packet past the
    learn stage goes on to forward, and one forward does not know leaves."""
    g, out = own.GLOBAL_OWNER, exit_actions(p)
    fwd: tuple[Action, ...] = (Resubmit(p.forward),)
    b.flow(g, p.dispatch, PRIO_CT_INVALID, {"ct_state": ct_state(CS_INV | CS_TRK)}, ())
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": ct_state(CS_EST | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": ct_state(CS_REL | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_DEFAULT, {}, out)
    b.flow(g, p.learn, PRIO_DEFAULT, {}, fwd)
    b.flow(g, p.forward, PRIO_DEFAULT, {}, out)


def _hairpin_defaults(b: FlowBuilder, p: Pipeline, _: int | None) -> None:
    """After the hairpin zone, un-DNAT; a reply there was un-SNATed and is
    marked to go back whence it came."""
    g = own.GLOBAL_OWNER
    for eth in (ETH_IP, ETH_IP6):
        b.flow(g, p.hairpin, PRIO_DEFAULT, {"eth_type": eth},
               (Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat()),))
        b.flow(g, p.hairpin, PRIO_DEFAULT + 1,
               {"eth_type": eth, "ct_state": ct_state(CS_RPL | CS_TRK)},
               (SetField(REG_HAIRPIN, 1), Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat())))


def _reply_stage(b: FlowBuilder, p: Pipeline, output_table: int | None) -> None:
    """An un-DNATed reply: mark it (ct_state.trk is 1 after ct()) and hand it
    back to OVN's output table, whose own flow now takes it (nothing until
    that table is known)."""
    if output_table is not None:
        b.flow(own.GLOBAL_OWNER, p.reply, PRIO_DEFAULT, {},
               (Move("ct_state", REG_OVN_FLAGS, 1, CT_STATE_TRK_BIT, REPLY_MARK_BIT),
                Resubmit(output_table)))


STATIC: Mapping[Static, Callable[[FlowBuilder, Pipeline, int | None], None]] = {
    Static.CLASSIFY: _classify_default,
    Static.PRE_LB: _pre_lb_defaults,
    Static.COMMIT_OTHER: _commit_other,
    Static.TRACKED: _tracked_defaults,
    Static.HAIRPIN: _hairpin_defaults,
    Static.REPLY: _reply_stage,
}


def ip_match(ip: str | IPAddress, which: str) -> dict[str, MatchValue]:
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


EXITS: Mapping[Exit, Callable[[Pipeline], tuple[Action, ...]]] = {
    Exit.NORMAL: lambda _p: (Output(OFPP_NORMAL),),
    Exit.NEXT_TABLE: lambda p: (Resubmit(p.next_table),),
    # OVN's pipeline expects the registers it does not load at 0
    Exit.OVN: lambda _p: (*(SetField(r, 0) for r in SCRATCH_REGS), Resubmit(0)),
    Exit.IN_PORT: lambda _p: (Output(OFPP_IN_PORT),),
}


@functools.cache
def exit_actions(p: Pipeline) -> tuple[Action, ...]:
    """How a packet leaves lbaffd (the layout's ``exit``): NORMAL, the
    embedding controller's table, or OVN's table 0."""
    return EXITS[p.layout.exit](p)


@functools.cache
def _back_in(p: Pipeline) -> tuple[Action, ...]:
    """Hairpin exit (the layout's ``hairpin_exit``): back out of the port it
    came in (embedded: ``reg3``=1 tells the owning controller to allow that;
    companion: straight out, as OVN's pipeline would drop a packet for the
    port it came from)."""
    return EXITS[p.layout.hairpin_exit](p)


def port_flows(b: FlowBuilder, p: Pipeline, ofport: int, logical_port: str, tk: int) -> None:
    """T0 CLASSIFY: a port's packets get their datapath (``metadata``) and
    conntrack zone, then go to pre-LB.  Nothing where the layout has no
    classify table (``incremental`` calls this for ports that come and go)."""
    classify = p.classify
    if classify is None:
        return
    b.flow(("port", logical_port), classify, PRIO_PORT, {"in_port": ofport},
           (SetField("metadata", tk), SetField(REG_CT_ZONE, datapath_zone(tk)),
            Resubmit(p.pre_lb)))


def hairpin_unsnat(b: FlowBuilder, p: Pipeline, tk: int, snat: str) -> None:
    """After the SNAT of a hairpinned connection (T6 -> T7): back to the
    backend it came from.  (Its replies reach the hairpin zone through the
    mode's entry: ``entry.unsnat_pre_lb`` / ``entry.hairpin_intercept``.)"""
    b.flow(("unsnat", str(tk), snat), p.hairpin, PRIO_HAIRPIN,
           {"metadata": tk, **ip_match(snat, "src")},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", vip_mac(snat)), *_back_in(p)))


def hairpin_reply(b: FlowBuilder, p: Pipeline, tk: int, vip_ip: str) -> None:
    """The un-NATed reply of a hairpinned connection (from the VIP to the
    backend that sent it): return it whence it came, with L2 swapped."""
    b.flow(("hairpin", str(tk), vip_ip), p.dispatch, PRIO_HAIRPIN_REPLY,
           {"ct_state": ct_state(CS_RPL | CS_TRK), REG_HAIRPIN: 1, "metadata": tk,
            **ip_match(vip_ip, "src")},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", vip_mac(vip_ip)), *_back_in(p)))


def hairpin_flows(b: FlowBuilder, p: Pipeline, plan: VipPlan,
                  local_ips: frozenset[IPAddress]) -> None:
    """The VIP's hairpin SNAT flows: one per datapath and live backend that
    is a local port (only a local port can connect to its own VIP here)."""
    for tk in plan.datapaths:
        for be in plan.live_backends:
            if be.ip in local_ips:
                _hairpin_snat(b, p, plan, tk, be)


def _hairpin_snat(b: FlowBuilder, p: Pipeline, plan: VipPlan, tk: int, be: Endpoint) -> None:
    """A backend balanced to itself: source-NAT to the VIP (or the LB's
    ``hairpin_snat_ip``) so its kernel sees a peer that is not itself.  The
    connection's ``ct_mark`` (= VIP id, set at DNAT) tells which VIP it came
    through, so VIPs sharing a backend keep their own SNAT address."""
    snat = addr_text(plan.lb.hairpin_source(plan.vip.endpoint))
    match = {"metadata": tk, "ct_mark": plan.group_id, **l4_match(plan.vip, be),
             **ip_match(be.ip, "src"), **ip_match(be.ip, "dst")}
    b.flow(plan.owner, p.forward, PRIO_HAIRPIN, match,
           (Ct(commit=True, zone=HAIRPIN_ZONE, table=p.hairpin,
               nat=Nat(kind="src", ip_min=snat)),))


def forward_flow(b: FlowBuilder, p: Pipeline, tk: int, ip: str, mac: str) -> None:
    b.flow(("fwd", str(tk), ip), p.forward, PRIO_BACKEND_MAC,
           {"metadata": tk, **ip_match(ip, "dst")},
           (SetField("eth_dst", mac), *exit_actions(p)))


def l4_match(vip: Vip, ep: Endpoint, dst: bool = True) -> dict[str, MatchValue]:
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
    new = {"ct_state": ct_state(CS_NEW | CS_TRK)}
    dispatch: tuple[Action, ...]
    if affinity:
        dispatch = (SetField(REG_VIP_ID, gid), Resubmit(p.affinity), Resubmit(p.lb))
    else:
        dispatch = (SetField(REG_VIP_ID, gid), Group(gid))
    if not plan.live_backends:
        # no backend: drop, or (options:reject=true) let lbaffd refuse it
        dispatch = ((Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),) if plan.lb.reject else ())
    for tk in plan.datapaths:
        match = {**new, "metadata": tk, **l4_match(vip, vip.endpoint),
                 **ip_match(vip.endpoint.ip, "dst")}
        b.flow(owner, p.dispatch, PRIO_NO_BACKEND if not plan.live_backends else PRIO_VIP,
               match, dispatch)

    hairpin_flows(b, p, plan, local_ips)
    # one DNAT action per backend, shared by its bucket(s) and its hit flow
    commit = {be: _commit_to(p, be, gid) for be in plan.live_backends}
    # a group too large for group-desc goes in parts (last: the VIP's own)
    b.groups.extend(groupsplit.vip_groups(plan, vip_group(p, plan, commit)))
    if not affinity or not plan.live_backends:
        return
    eth = ETH_IP if vip.endpoint.ip.version == 4 else ETH_IP6
    b.flow(owner, p.lb, PRIO_MISS, {REG_VIP_ID: gid, "eth_type": eth},
           (SetField(REG_AFFINITY_HIT, 0), Group(gid)))
    # A backend that is down has no hit and no learn flow: deleting its learn
    # flow deletes its learned entries (delete_learned), so its clients move now.
    for be in plan.live_backends:
        affinity_flows(b, p, plan, be, max_idle, commit[be])


def affinity_flows(b: FlowBuilder, p: Pipeline, plan: VipPlan, be: Endpoint, max_idle: int,
                   commit: Ct | None = None) -> None:
    """A live backend's two flows of an affinity VIP: its hit (a learned
    entry chose it) and its learn (a new connection the group sent to it),
    in that order (``commit``: its DNAT action, when already built)."""
    vip, gid = plan.vip, plan.group_id
    eth = ETH_IP if vip.endpoint.ip.version == 4 else ETH_IP6
    hit: dict[str, MatchValue] = {REG_VIP_ID: gid, REG_AFFINITY_HIT: 1,
                                  **backend_regs(be.ip), "eth_type": eth}
    if be.port is not None:
        hit[REG_BACKEND_PORT] = be.port
    b.flow(plan.owner, p.lb, PRIO_HIT, hit, (commit or _commit_to(p, be, gid),))
    learn_match = {"ct_state": ct_state(CS_NEW | CS_TRK), REG_VIP_ID: gid,
                   REG_AFFINITY_HIT: 0, **l4_match(vip, be), **ip_match(be.ip, "dst")}
    timeout = plan.lb.affinity_timeout or 0
    b.flow(plan.owner, p.learn, PRIO_LEARN, learn_match,
           (_learn(p, plan, be, min(timeout, max_idle)), Resubmit(p.forward)))


def vip_group(p: Pipeline, plan: VipPlan, commit: Mapping[Endpoint, Ct] | None = None
              ) -> GroupSpec:
    """The VIP's select group: a bucket per entry of ``plan.buckets``, with its
    weight, each DNATing to its backend (``commit``: the actions already built
    for them)."""
    if commit is None:
        commit = {be: _commit_to(p, be, plan.group_id) for be in plan.live_backends}
    fields = hash_fields(plan)
    return GroupSpec(
        group_id=plan.group_id,
        buckets=tuple(vip_bucket(p, plan, bid, be, w, commit[be]) for (bid, be), w
                      in zip(plan.buckets, bucket_weights(plan.buckets), strict=True)),
        selection_method="hash" if fields else "dp_hash",
        fields=fields,
        owner_cookie=own.owner_cookie(plan.owner),
    )


def vip_bucket(p: Pipeline, plan: VipPlan, bucket_id: int, be: Endpoint, weight: int,
               commit: Ct | None = None) -> Bucket:
    """One bucket of the VIP's group: DNAT to ``be`` (``commit``: that action,
    when already built)."""
    return Bucket(bucket_id, (commit or _commit_to(p, be, plan.group_id),), weight)


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

