"""The OpenFlow pipeline lbaffd installs on br-int, and the three table layouts.

Standalone owns the bridge from table 0 (drawn below).  Embedded is entered
by a cooperating controller at ``resubmit(,base)``.  Companion runs next to a
stock ovn-controller (see ``companion``): per local port, a table-0 flow above
OVN's priorities takes the VIPs lbaffd balances into its own tables, and after
DNAT the packet goes back to table 0, where OVN's own pipeline takes it as an
ordinary packet to the backend; replies are un-DNATed at OVN's output table.
The stages (dispatch .. hairpin) are the same in every mode: a mode is only
which tables they sit in and how a packet enters and leaves them.

::

  T0 CLASSIFY   in_port=<local port>  -> metadata:=dp tunnel key, reg13:=ct zone
       |                                  (unknown port: NORMAL)
  T1 PRE_LB     arp who-has VIP        -> ARP reply from the VIP MAC, IN_PORT
       |        ip                     -> ct(zone=reg13, nat, table=T2)
       v                                  (un-DNATs replies, re-DNATs established)
  T2 DISPATCH   +inv                   -> drop
       |        +new to VIP            -> reg6:=VIP id; [affinity: resubmit T3] ; T4
       |                                  [no affinity: group:VIP id]
       |        +est/+rel, not reply   -> T6
       |        reply                  -> NORMAL
       |        other +new             -> ct(commit), NORMAL
       v
  T3 AFFINITY   learned entries only: metadata,client,reg6 -> reg0/reg1:=backend, reg2:=1
  T4 LB         reg2=1 & backend known -> ct(commit,nat(dst=backend),table=T5)   (hit)
       |        otherwise              -> reg2:=0, group:VIP id                 (miss)
       |            bucket per backend: ct(commit,zone=reg13,nat(dst=B:P),table=T5)
       v
  T5 LEARN      +new, reg2=0, dst=B:P  -> learn(T3, idle_timeout=affinity), T6
       |        (the packet is NOT dropped: the first SYN of a session goes on)
       v
  T6 FORWARD    src=dst=backend        -> hairpin: ct(commit,zone=HAIRPIN,nat(src=VIP),table=T7)
       |        dst=backend            -> eth_dst:=backend MAC, NORMAL
       v
  T7 HAIRPIN    after un-SNAT (from T1) -> ct(zone=reg13, nat, table=T2)
                after SNAT, dst=backend -> eth_dst:=backend MAC, IN_PORT

A backend balanced to itself (hairpin) is source-NATed to the VIP (or the
LB's ``hairpin_snat_ip``) in a zone of its own, so it sees a peer that is not
itself; its replies (to that address) are un-SNATed first (T1 -> T7), then
un-DNATed as usual, and marked (``reg3`` bit 0) to leave through IN_PORT.
A VIP with no backends drops new connections, or, with ``options:reject=true``,
sends them to lbaffd, which answers with a TCP RST or ICMP unreachable.

For affinity VIPs the group hashes on the client address
(``selection_method=hash,fields(ip_src)``) instead of dp_hash: the miss path is
then already a function of the client, so back-to-back connections that beat
the (asynchronous) learn still reach the same backend.  The learned entry is
what keeps a client on its backend when the backend set changes, and what
expires after ``affinity_timeout`` of idleness.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Registers (NXM_NX_REGn); the names are os-ken OXM field names.
REG_BACKEND_IP = "reg0"  # learned backend IPv4 (hit path)
REG_BACKEND_PORT = "reg1"  # learned backend L4 port in bits 0..15
REG_BACKEND_IP6 = ("reg8", "reg9", "reg10", "reg11")  # learned backend IPv6, high word first
REG_AFFINITY_HIT = "reg2"  # 1 when T3 matched
REG_HAIRPIN = "reg3"  # 1: a reply un-SNATed from the hairpin zone (goes back IN_PORT)
REG_VIP_ID = "reg6"  # the VIP's id (= its group id), keys affinity per (LB, VIP)
REG_CT_ZONE = "reg13"  # conntrack zone of the datapath, bits 0..15

# ct_state bits (NXM_NX_CT_STATE).
CS_NEW = 0x01
CS_EST = 0x02
CS_REL = 0x04
CS_RPL = 0x08
CS_INV = 0x10
CS_TRK = 0x20

# Flow priorities, per stage.
PRIO_ARP_RESPONDER = 200
PRIO_CT_INVALID = 300
PRIO_VIP = 200
PRIO_ESTABLISHED = 150
PRIO_REPLY = 140
PRIO_COMMIT_OTHER = 100
PRIO_PORT = 100
PRIO_HIT = 100
PRIO_MISS = 50
PRIO_LEARN = 100
PRIO_BACKEND_MAC = 100
PRIO_LEARNED = 100
PRIO_UNSNAT = 210
PRIO_HAIRPIN = 110
PRIO_HAIRPIN_REPLY = 145
PRIO_NO_BACKEND = 200

# The conntrack zone of hairpin SNAT (one per host; tuples hold real addresses).
HAIRPIN_ZONE = 0xFFF0
PRIO_DEFAULT = 0


# Companion mode (next to ovn-controller).  Table 0 priorities: OVN 23.03's
# per-port flows are priority 100-150 there; lbaffd's interceptions sit above.
PRIO_INTERCEPT = 1100  # in_port + VIP (+ proto, port) -> lbaffd's zone
PRIO_INTERCEPT_UNSNAT = 1050  # in_port + hairpin source address -> un-SNAT
PRIO_REPLY_HOOK = 1100  # OVN's output table: outport = a local port -> un-DNAT
# The default conntrack zone of companion mode: far above the zones
# ovn-controller hands out (it allocates from 1 upward, one per local port and
# router); checked against the bridge's ``ct-zone-*`` external_ids at start.
COMPANION_ZONE = 0xFFF1
COMPANION_BASE = 200  # OVN 23.03 uses tables 0-78 (newer releases a few more)
EMBEDDED_BASE = 180
# Replies: OVN's output table is entered once by OVN and once more after
# lbaffd's un-DNAT; this bit of OVN's flags register (MFF_LOG_FLAGS; OVN
# allocates its flag bits from 0 upward) tells the two apart.  It is set from
# ct_state's +trk bit (always 1 after ct()), since a move needs no mask support.
REG_OVN_FLAGS = "reg10"
REPLY_MARK_BIT = 31
CT_STATE_TRK_BIT = 5
# lbaffd's scratch registers, cleared before a packet goes back to OVN's
# table 0 (its logical pipeline expects the registers it does not load at 0)
SCRATCH_REGS = ("reg0", "reg1", "reg2", "reg3", "reg6", "reg8", "reg9", "reg10", "reg11")

STANDALONE_MODE = "standalone"
EMBEDDED_MODE = "embedded"
COMPANION_MODE = "companion"
MODES = (STANDALONE_MODE, EMBEDDED_MODE, COMPANION_MODE)


def datapath_zone(tunnel_key: int) -> int:
    """A datapath's conntrack zone in standalone mode: its tunnel key's low 16
    bits (OpenFlow ct zones are 16-bit)."""
    return tunnel_key & 0xFFFF


# ------------------------------------------------------------------ modes
#
# A mode is data: which of the shared stages get a table (in order from the
# table base), how a VIP's traffic enters them, how a packet leaves, which
# conntrack zone the DNAT is in, and which default flows and per-port flows
# the mode installs.  The stages (``stages``, ``vip``, ``state``) read these
# fields and never ask which mode they run in: a new mode is a new
# ``ModeLayout`` in ``MODE_LAYOUTS`` (docs/architecture.md, "How to add a mode").


class Table(enum.Enum):
    """lbaffd's stages, one table each (drawn above)."""

    CLASSIFY = "classify"
    PRE_LB = "pre_lb"
    DISPATCH = "dispatch"
    AFFINITY = "affinity"
    LB = "lb"
    LEARN = "learn"
    FORWARD = "forward"
    HAIRPIN = "hairpin"
    REPLY = "reply"  # after the un-DNAT of a reply: back to the owner's output table


class Entry(enum.Enum):
    """How a VIP's traffic gets into lbaffd's tables (``stages.ENTRIES``)."""

    PRE_LB = "pre_lb"  # every IP packet of a datapath, through the pre-LB table
    INTERCEPT = "intercept"  # per (client port, VIP) in table 0, above its owner's flows


class Exit(enum.Enum):
    """How a packet leaves lbaffd's tables (``stages.EXITS``)."""

    NORMAL = "normal"  # output:NORMAL: lbaffd owns the bridge
    NEXT_TABLE = "next_table"  # resubmit(,next_table): the embedding controller's pipeline
    OVN = "ovn"  # scratch registers cleared, resubmit(,0): an ordinary packet to OVN
    IN_PORT = "in_port"  # output:IN_PORT (a hairpinned packet, back where it came from)


class Zone(enum.Enum):
    """The conntrack zone of lbaffd's DNAT (``Pipeline.zone_of``)."""

    DATAPATH = "datapath"  # reg13 := the datapath's tunnel key (T0 CLASSIFY)
    CALLER = "caller"  # the embedding controller loads reg13: lbaffd cannot know it
    OWN = "own"  # one zone of lbaffd's own for every datapath (``Pipeline.ct_zone``)


class Static(enum.Enum):
    """The pipeline's own default flows, by what they do (``stages.STATIC``)."""

    CLASSIFY = "classify"  # an unknown port leaves at once
    PRE_LB = "pre_lb"  # IP -> ct(nat) to dispatch; the rest (ND too) leaves
    COMMIT_OTHER = "commit_other"  # other new connections committed, replies leave
    TRACKED = "tracked"  # invalid dropped, established forwarded; learn/forward defaults
    HAIRPIN = "hairpin"  # after the hairpin zone: un-DNAT
    REPLY = "reply"  # un-DNATed replies marked and handed back to OVN's output table


class PortStage(enum.Enum):
    """Flows each local port puts on the switch (``stages.PORT_STAGES``)."""

    CLASSIFY = "classify"  # in_port -> datapath metadata and zone, to pre-LB
    REPLY_HOOK = "reply_hook"  # replies to the port, at OVN's output table: un-DNAT


@dataclass(frozen=True, slots=True)
class ModeLayout:
    """One mode of the pipeline as a description the shared stages read."""

    name: str
    tables: tuple[Table, ...]  # from the table base up
    entry: Entry
    exit: Exit
    hairpin_exit: Exit
    zone: Zone
    static: tuple[Static, ...]
    port_stages: tuple[PortStage, ...]
    min_base: int = 0  # companion: table 0 belongs to ovn-controller
    # a VIP's flows depend on the local ports (companion: the interceptions
    # and reply hooks follow them), so a port change is no local-only step
    vips_follow_ports: bool = False


_BALANCE = (Table.DISPATCH, Table.AFFINITY, Table.LB, Table.LEARN, Table.FORWARD, Table.HAIRPIN)

# Owns the bridge from table 0: classifies ports, everything leaves by NORMAL.
STANDALONE_LAYOUT = ModeLayout(
    STANDALONE_MODE, (Table.CLASSIFY, Table.PRE_LB, *_BALANCE), Entry.PRE_LB,
    exit=Exit.NORMAL, hairpin_exit=Exit.IN_PORT, zone=Zone.DATAPATH,
    static=(Static.CLASSIFY, Static.PRE_LB, Static.COMMIT_OTHER, Static.TRACKED, Static.HAIRPIN),
    port_stages=(PortStage.CLASSIFY,))
# Entered at resubmit(,base) by a controller that owns table 0 and has set
# metadata and reg13; leaves to its next table (a hairpin too, marked reg3=1).
EMBEDDED_LAYOUT = ModeLayout(
    EMBEDDED_MODE, (Table.PRE_LB, *_BALANCE), Entry.PRE_LB,
    exit=Exit.NEXT_TABLE, hairpin_exit=Exit.NEXT_TABLE, zone=Zone.CALLER,
    static=(Static.PRE_LB, Static.COMMIT_OTHER, Static.TRACKED, Static.HAIRPIN),
    port_stages=())
# Next to ovn-controller: only balanced connections come in (table-0
# interceptions), ARP/ND stays OVN's, packets go back to OVN's table 0, and
# replies are un-DNATed at OVN's output table.
COMPANION_LAYOUT = ModeLayout(
    COMPANION_MODE, (*_BALANCE, Table.REPLY), Entry.INTERCEPT,
    exit=Exit.OVN, hairpin_exit=Exit.IN_PORT, zone=Zone.OWN,
    static=(Static.TRACKED, Static.HAIRPIN, Static.REPLY),
    port_stages=(PortStage.REPLY_HOOK,), min_base=1, vips_follow_ports=True)

MODE_LAYOUTS = {m.name: m for m in (STANDALONE_LAYOUT, EMBEDDED_LAYOUT, COMPANION_LAYOUT)}


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A mode's layout (``ModeLayout``) placed at a table base: the table
    numbers of the stages, and the parameters its exit and zone need
    (``next_table`` for ``Exit.NEXT_TABLE``, ``ct_zone`` for ``Zone.OWN``).

    Standalone (the default) owns the bridge from table ``base`` (0): T0
    classifies ports and everything leaves through ``NORMAL``.  Embedded shares
    the bridge with another controller that owns table 0: lbaffd has no
    classify stage, its entry table is ``base`` (= PRE_LB), the caller sets
    ``metadata`` (datapath tunnel key) and ``reg13[0..15]`` (conntrack zone)
    before ``resubmit(,base)``, and every packet lbaffd does not consume leaves
    through ``resubmit(,next_table)`` instead of ``NORMAL``."""

    base: int = 0
    mode: str = STANDALONE_MODE
    next_table: int = 0
    ct_zone: int = COMPANION_ZONE  # companion: lbaffd's own conntrack zone

    def __post_init__(self) -> None:
        if self.mode not in MODE_LAYOUTS:
            raise ValueError(f"unknown pipeline mode {self.mode!r}")
        layout = self.layout
        last = self.base + self.stages - 1
        if self.base < 0 or last > 253:
            raise ValueError(f"tables {self.base}..{last} do not fit in 0..253")
        if self.base < layout.min_base:
            raise ValueError(f"{self.mode} mode cannot use table {self.base}: "
                             "it belongs to ovn-controller")
        if layout.exit is Exit.NEXT_TABLE and self.base <= self.next_table <= last:
            raise ValueError(f"next table {self.next_table} is inside lbaffd's "
                             f"tables {self.base}..{last}")
        if layout.exit is Exit.NEXT_TABLE and not 0 <= self.next_table <= 254:
            raise ValueError(f"next table {self.next_table} is not in 0..254")
        if layout.zone is Zone.OWN and not 1 <= self.ct_zone <= 0xFFFF:
            raise ValueError(f"conntrack zone {self.ct_zone} is not in 1..65535")

    @property
    def layout(self) -> ModeLayout:
        return MODE_LAYOUTS[self.mode]

    @property
    def embedded(self) -> bool:
        """The mode, for the daemon's messages and checks (the stages read ``layout``)."""
        return self.mode == EMBEDDED_MODE

    @property
    def companion(self) -> bool:
        """The mode, for the daemon's runtime (the stages read ``layout``)."""
        return self.mode == COMPANION_MODE

    def zone_of(self, tunnel_key: int) -> int | None:
        """The conntrack zone in which lbaffd's DNAT for datapath ``tunnel_key``
        is committed (what T0 CLASSIFY loads into reg13; companion: its own
        ``ct_zone`` for every datapath), for flushing a leaving backend's
        entries; None where lbaffd does not set reg13 (embedded: the other
        controller does) and so cannot know it."""
        return _ZONES[self.layout.zone](self, tunnel_key)

    @property
    def stages(self) -> int:
        return len(self.layout.tables)

    @property
    def tables(self) -> range:
        return range(self.base, self.base + self.stages)

    def table(self, stage: Table) -> int:
        """The table of ``stage``; ValueError where the mode has no such stage."""
        try:
            return self.base + self.layout.tables.index(stage)
        except ValueError:
            raise ValueError(f"{self.mode} mode has no {stage.value} stage") from None

    @property
    def classify(self) -> int | None:
        """Standalone only: the other modes leave port classification to the
        controller that owns table 0."""
        try:
            return self.table(Table.CLASSIFY)
        except ValueError:
            return None

    @property
    def entry(self) -> int:
        """Where packets enter lbaffd's stages (documented contract)."""
        return self.base

    @property
    def pre_lb(self) -> int:
        """Not in companion mode: its table-0 interceptions do this stage's job
        per (port, VIP), and ARP/ND for VIPs stays OVN's."""
        return self.table(Table.PRE_LB)

    @property
    def dispatch(self) -> int:
        return self.table(Table.DISPATCH)

    @property
    def affinity(self) -> int:
        return self.table(Table.AFFINITY)

    @property
    def lb(self) -> int:
        return self.table(Table.LB)

    @property
    def learn(self) -> int:
        return self.table(Table.LEARN)

    @property
    def forward(self) -> int:
        return self.table(Table.FORWARD)

    @property
    def hairpin(self) -> int:
        return self.table(Table.HAIRPIN)

    @property
    def reply(self) -> int:
        """Companion only: after the un-DNAT of a reply, back to OVN's output table."""
        return self.table(Table.REPLY)


_ZONES: Mapping[Zone, Callable[[Pipeline, int], int | None]] = {
    Zone.DATAPATH: lambda _p, tk: datapath_zone(tk),
    Zone.CALLER: lambda _p, _tk: None,
    Zone.OWN: lambda p, _tk: p.ct_zone,
}


STANDALONE = Pipeline()


def backend_regs(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, int]:
    """Registers that carry a learned backend address (IPv6: four 32-bit words)."""
    if ip.version == 4:
        return {REG_BACKEND_IP: int(ip)}
    n = int(ip)
    return {reg: (n >> (32 * (3 - i))) & 0xFFFFFFFF for i, reg in enumerate(REG_BACKEND_IP6)}


def backend_from_regs(values: Mapping[str, object]
                      ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The inverse of ``backend_regs`` on a match or a set of loads."""
    if all(r in values for r in REG_BACKEND_IP6):
        n = 0
        for r in REG_BACKEND_IP6:
            n = (n << 32) | int(values[r])  # type: ignore[call-overload]
        return ipaddress.IPv6Address(n)
    if REG_BACKEND_IP in values:
        return ipaddress.IPv4Address(int(values[REG_BACKEND_IP]))  # type: ignore[call-overload]
    return None


def embedded(table_base: int, next_table: int) -> Pipeline:
    return Pipeline(base=table_base, mode=EMBEDDED_MODE, next_table=next_table)


def companion(table_base: int = COMPANION_BASE, ct_zone: int = COMPANION_ZONE) -> Pipeline:
    return Pipeline(base=table_base, mode=COMPANION_MODE, ct_zone=ct_zone)
