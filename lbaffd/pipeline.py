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
  T6 FORWARD    dst=backend            -> eth_dst:=backend MAC, NORMAL

For affinity VIPs the group hashes on the client address
(``selection_method=hash,fields(ip_src)``) instead of dp_hash: the miss path is
then already a function of the client, so back-to-back connections that beat
the (asynchronous) learn still reach the same backend.  The learned entry is
what keeps a client on its backend when the backend set changes, and what
expires after ``affinity_timeout`` of idleness.
"""

from __future__ import annotations

from dataclasses import dataclass

# Registers (NXM_NX_REGn); the names are os-ken OXM field names.
REG_BACKEND_IP = "reg0"  # learned backend IPv4 (hit path)
REG_BACKEND_PORT = "reg1"  # learned backend L4 port in bits 0..15
REG_AFFINITY_HIT = "reg2"  # 1 when T3 matched
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
PRIO_DEFAULT = 0


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Table numbers of the stages; ``base`` shifts them all."""

    base: int = 0

    @property
    def classify(self) -> int:
        return self.base

    @property
    def pre_lb(self) -> int:
        return self.base + 1

    @property
    def dispatch(self) -> int:
        return self.base + 2

    @property
    def affinity(self) -> int:
        return self.base + 3

    @property
    def lb(self) -> int:
        return self.base + 4

    @property
    def learn(self) -> int:
        return self.base + 5

    @property
    def forward(self) -> int:
        return self.base + 6


STANDALONE = Pipeline()
