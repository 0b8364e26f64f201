"""The OpenFlow pipeline lbaffd installs on br-int (standalone mode).

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

import ipaddress
from collections.abc import Mapping
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


STANDALONE_MODE = "standalone"
EMBEDDED_MODE = "embedded"
MODES = (STANDALONE_MODE, EMBEDDED_MODE)


def datapath_zone(tunnel_key: int) -> int:
    """A datapath's conntrack zone in standalone mode: its tunnel key's low 16
    bits (OpenFlow ct zones are 16-bit)."""
    return tunnel_key & 0xFFFF


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Table numbers of the stages and where packets leave lbaffd.

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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown pipeline mode {self.mode!r}")
        last = self.base + self.stages - 1
        if self.base < 0 or last > 253:
            raise ValueError(f"tables {self.base}..{last} do not fit in 0..253")
        if self.embedded and self.base <= self.next_table <= last:
            raise ValueError(f"next table {self.next_table} is inside lbaffd's "
                             f"tables {self.base}..{last}")
        if self.embedded and not 0 <= self.next_table <= 254:
            raise ValueError(f"next table {self.next_table} is not in 0..254")

    @property
    def embedded(self) -> bool:
        return self.mode == EMBEDDED_MODE

    def ct_zone(self, tunnel_key: int) -> int | None:
        """The conntrack zone in which lbaffd's DNAT for datapath ``tunnel_key``
        is committed (what T0 CLASSIFY loads into reg13), for flushing a leaving
        backend's entries; None where lbaffd does not set reg13 (embedded: the
        other controller does) and so cannot know it."""
        return None if self.embedded else datapath_zone(tunnel_key)

    @property
    def stages(self) -> int:
        return 7 if self.mode == EMBEDDED_MODE else 8

    @property
    def tables(self) -> range:
        return range(self.base, self.base + self.stages)

    @property
    def _shift(self) -> int:
        return self.base - 1 if self.embedded else self.base

    @property
    def classify(self) -> int | None:
        """Standalone only: embedded mode leaves port classification to the
        controller that owns table 0."""
        return None if self.embedded else self.base

    @property
    def entry(self) -> int:
        """Where packets enter lbaffd's stages (documented contract)."""
        return self.base

    @property
    def pre_lb(self) -> int:
        return self._shift + 1

    @property
    def dispatch(self) -> int:
        return self._shift + 2

    @property
    def affinity(self) -> int:
        return self._shift + 3

    @property
    def lb(self) -> int:
        return self._shift + 4

    @property
    def learn(self) -> int:
        return self._shift + 5

    @property
    def forward(self) -> int:
        return self._shift + 6

    @property
    def hairpin(self) -> int:
        return self._shift + 7


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
