"""IPv6 neighbor advertisements for VIPs (the ND twin of the ARP responder).

OpenFlow can rewrite an ARP request into a reply, but not a neighbor
solicitation into an advertisement (flags and the option type change), so
the pre-LB stage sends solicitations for a VIP to lbaffd, which answers with
the VIP's MAC, as ovn-controller's pinctrl does for ``nd_na``.  Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

ND_FLAGS_SOLICITED_OVERRIDE = 0b011  # os-ken's ``res``: R, S, O bits, high to low
ALL_NODES = "ff02::1"


def neighbor_advert(frame: bytes, mac_of: Callable[[str], str]) -> bytes | None:
    """The advertisement answering ``frame`` (a solicitation for a VIP), or None."""
    try:
        pkt = packet.Packet(frame)
    except Exception:
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    ip6 = pkt.get_protocol(ipv6.ipv6)
    icmp = pkt.get_protocol(icmpv6.icmpv6)
    if eth is None or ip6 is None or icmp is None or icmp.type_ != icmpv6.ND_NEIGHBOR_SOLICIT:
        return None
    target = str(ipaddress.IPv6Address(icmp.data.dst))
    mac = mac_of(target)
    unspecified = ipaddress.IPv6Address(ip6.src).is_unspecified  # DAD probe
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=mac, ethertype=0x86DD))
    out.add_protocol(ipv6.ipv6(src=target, dst=ALL_NODES if unspecified else ip6.src,
                               nxt=58, hop_limit=255))
    out.add_protocol(icmpv6.icmpv6(
        type_=icmpv6.ND_NEIGHBOR_ADVERT,
        data=icmpv6.nd_neighbor(res=0b001 if unspecified else ND_FLAGS_SOLICITED_OVERRIDE,
                                dst=target, option=icmpv6.nd_option_tla(hw_src=mac))))
    out.serialize()
    return bytes(out.data)
