"""Refusals for VIPs without backends (``options:reject=true``), as OVN does.

OpenFlow cannot turn a SYN into a RST (``tcp_flags``, ``seq`` and ``ack`` are
not writable), so the VIP's dispatch flow sends new connections to lbaffd,
which answers from the VIP: TCP gets RST+ACK, UDP/SCTP/other IP get ICMP
port (or protocol) unreachable.  Pure: packet bytes in, packet bytes out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from os_ken.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, vlan

TCP_RST_ACK = tcp.TCP_RST | tcp.TCP_ACK
ICMP_PORT_UNREACH = 3
ICMP_PROTO_UNREACH = 2
ICMPV6_PORT_UNREACH = 4
ETH_IP, ETH_IPV6 = 0x0800, 0x86DD

log = structlog.get_logger("lbaffd.reject")


def refusal(frame: bytes) -> tuple[bytes, str] | None:
    """The reply refusing ``frame`` (a new connection to a VIP) and its kind
    (``tcp_rst`` / ``icmp_unreachable``); None for frames never to answer."""
    try:
        pkt = packet.Packet(frame)
    except Exception:
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        return None
    l3_v4 = pkt.get_protocol(ipv4.ipv4)
    l3_v6 = pkt.get_protocol(ipv6.ipv6)
    seg = pkt.get_protocol(tcp.tcp)
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=eth.ethertype))
    if seg is not None and not seg.has_flags(tcp.TCP_RST):
        payload_len = len(pkt.protocols[-1]) if isinstance(pkt.protocols[-1], bytes) else 0
        seq_space = payload_len + (1 if seg.has_flags(tcp.TCP_SYN) else 0) + (
            1 if seg.has_flags(tcp.TCP_FIN) else 0)
        if l3_v4 is not None:
            out.add_protocol(ipv4.ipv4(src=l3_v4.dst, dst=l3_v4.src, proto=6, ttl=64))
        elif l3_v6 is not None:
            out.add_protocol(ipv6.ipv6(src=l3_v6.dst, dst=l3_v6.src, nxt=6, hop_limit=64))
        else:
            return None
        out.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=seg.ack,
                                 ack=(seg.seq + seq_space) & 0xFFFFFFFF, offset=5,
                                 bits=TCP_RST_ACK))
        out.serialize()
        return bytes(out.data), "tcp_rst"
    if l3_v4 is not None:
        start = _l3_offset(pkt)
        quoted = frame[start:start + l3_v4.header_length * 4 + 8]
        code = ICMP_PORT_UNREACH if l3_v4.proto in (17, 132) else ICMP_PROTO_UNREACH
        out.add_protocol(ipv4.ipv4(src=l3_v4.dst, dst=l3_v4.src, proto=1, ttl=64))
        out.add_protocol(icmp.icmp(type_=icmp.ICMP_DEST_UNREACH, code=code,
                                   data=icmp.dest_unreach(data=quoted)))
        out.serialize()
        return bytes(out.data), "icmp_unreachable"
    if l3_v6 is not None:
        start = _l3_offset(pkt)
        quoted = frame[start:start + 1232]  # as much as fits in the minimum MTU
        out.add_protocol(ipv6.ipv6(src=l3_v6.dst, dst=l3_v6.src, nxt=58, hop_limit=64))
        out.add_protocol(icmpv6.icmpv6(type_=icmpv6.ICMPV6_DST_UNREACH,
                                       code=ICMPV6_PORT_UNREACH,
                                       data=icmpv6.echo(data=quoted)))
        out.serialize()
        return bytes(out.data), "icmp_unreachable"
    return None


def _l3_offset(pkt: packet.Packet) -> int:
    """Where the IP header starts: after Ethernet and any VLAN tags."""
    return 14 + 4 * sum(isinstance(p, vlan.vlan) for p in pkt.protocols)


class TokenBucket:
    """Refusals per second, like OVN's controller-event meter: a VIP without
    backends under a SYN flood must not turn lbaffd into a packet pump."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class Refuser:
    """Answers the packet-ins of reject flows (reader thread: cheap, bounded).

    ``vip_of`` maps a flow cookie to ``(lb, vip)`` from the latest pass, so a
    refusal is counted per VIP; the first one of each VIP is logged."""

    def __init__(self, send_packet_out: Callable[[int, bytes], None],
                 vip_of: Callable[[int], tuple[str, str] | None],
                 count: Callable[[str, str, str], None],
                 rate: float = 100.0, burst: float = 200.0) -> None:
        self._send = send_packet_out
        self._vip_of = vip_of
        self._count = count
        self._bucket = TokenBucket(rate, burst)
        self._logged: set[tuple[str, str]] = set()

    def forget(self, gone: frozenset[tuple[str, str]]) -> None:
        """Forget that VIPs no longer realized were logged (a daemon that
        runs for months sees many come and go); replaced whole, as the
        reader thread reads it."""
        if not self._logged.isdisjoint(gone):
            self._logged = self._logged - gone

    def handle(self, cookie: int, in_port: int, frame: bytes) -> str:
        """-> what happened: ``tcp_rst``/``icmp_unreachable``, ``unknown``, ``ignored``,
        ``rate_limited``."""
        vip = self._vip_of(cookie)
        if vip is None:
            return "unknown"
        if not self._bucket.take():
            self._count(*vip, "rate_limited")
            return "rate_limited"
        answer = refusal(frame)
        if answer is None:
            self._count(*vip, "ignored")
            return "ignored"
        reply, kind = answer
        self._send(in_port, reply)
        self._count(*vip, kind)
        if vip not in self._logged:
            self._logged.add(vip)
            log.info("vip_rejecting", lb=vip[0], vip=vip[1], kind=kind,
                     detail="no backend: refusing new connections (options:reject=true)")
        return kind
