"""Typed, immutable load-balancer model parsed from SB ``Load_Balancer`` rows.

Parsing never raises on bad input: each problem becomes a ``ParseIssue`` that
names the LB, the VIP and a stable ``reason`` (used as a metric label), and
only the VIP it concerns is dropped.  Mirrors what ovn-northd accepts in
``vips``: ``"IP[:PORT]" -> "IP[:PORT],..."``, IPv6 in brackets when a port
is given.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lbaffd.model.records import DatapathRow, DpGroupRow, LoadBalancerRow

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTOCOLS = ("tcp", "udp", "sctp")
IP_PROTO = {"tcp": 6, "udp": 17, "sctp": 132}
MAX_AFFINITY_TIMEOUT = 86400  # Kubernetes' maximum sessionAffinity timeoutSeconds
MAX_OPENFLOW_IDLE_TIMEOUT = 0xFFFF  # OpenFlow idle_timeout is 16-bit
DISTRIBUTIONS = ("balanced", "ovs-default")  # see lbaffd.model.distribution
# OVN's Load_Balancer selection_fields (NB column; lbaffd reads options:selection_fields)
SELECTION_FIELDS = ("eth_src", "eth_dst", "ip_src", "ip_dst", "tp_src", "tp_dst")


def ip_text(ip: IPAddress) -> str:
    """``str(ip)``; IPv4 through the C formatter (ipaddress formats in Python,
    ~1.5 us: it named every bucket and learned cookie of a cold pass)."""
    if ip.version == 4:
        return socket.inet_ntoa(ip.packed)
    return str(ip)


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """An address with an optional L4 port (``None`` for IP-only VIPs)."""

    ip: IPAddress
    port: int | None = None
    # ipaddress hashes through hex(int): remembered, as endpoints key many dicts
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            h = hash((self.ip, self.port)) or 1
            object.__setattr__(self, "_hash", h)
        return h

    def __str__(self) -> str:
        if self.port is None:
            return ip_text(self.ip)
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{ip_text(self.ip)}:{self.port}"


@dataclass(frozen=True, slots=True)
class Vip:
    key: str  # the ``vips`` map key exactly as in the SB, identifies the VIP
    endpoint: Endpoint
    protocol: str
    backends: tuple[Endpoint, ...]

    @property
    def ip_proto(self) -> int:
        return IP_PROTO[self.protocol]


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    uuid: str
    name: str
    vips: tuple[Vip, ...]
    datapaths: tuple[DatapathRow, ...]
    affinity_timeout: int | None  # seconds; None = no affinity
    distribution: str | None = None  # options:distribution; None = daemon default
    # options:selection_fields: hash these instead of dp_hash (VIPs without affinity)
    selection_fields: tuple[str, ...] = ()
    reject: bool = False  # options:reject: a VIP without backends refuses instead of dropping
    # options:hairpin_snat_ip (one per family): source of a backend's connection to itself
    hairpin_snat_ip: tuple[IPAddress, ...] = ()
    # options:ct_flush (OVN's name): flush a leaving backend's conntrack entries
    # (UDP VIPs always are, see lbaffd.reconcile.ctflush)
    ct_flush: bool = False

    def hairpin_source(self, vip: Endpoint) -> IPAddress:
        """What a backend balanced to itself sees as the client (OVN: the VIP)."""
        for ip in self.hairpin_snat_ip:
            if ip.version == vip.ip.version:
                return ip
        return vip.ip


@dataclass(frozen=True, slots=True)
class ParseIssue:
    lb: str
    reason: str
    detail: str
    vip: str = ""
    fatal: bool = True  # False: the VIP/LB is still realized (e.g. deduplicated)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# What OVS's str_to_int() (lib/util.c: strtoll(s, &tail, 10) in the C locale,
# then "tail != s && *tail == '\0'") accepts: optional leading ASCII white
# space, an optional sign, ASCII digits, nothing after.  OVN reads VIP and
# backend ports this way (ip_address_and_port_from_lb_key -> inet_parse_active
# -> parse_sockaddr_components in lib/socket-util.c) and options such as
# affinity_timeout with smap_get_int().  Python's int() also takes any
# Unicode digit ("\uff18\uff10"), underscores ("1_000") and trailing white space, none of
# which OVN reads as a number: lbaffd must not either.
_C_SPACE = " \t\n\v\f\r"
_ASCII_DIGITS = frozenset("0123456789")
_C_BLANK_TO_SPACE = str.maketrans(dict.fromkeys(_C_SPACE, " "))


def c_int(text: str) -> int | None:
    """``text`` as OVS's ``str_to_int(text, 10, ...)`` reads it; None where
    it fails (Unicode digits, underscores, trailing characters, empty)."""
    s = text.lstrip(_C_SPACE)
    digits = s[1:] if s[:1] in ("+", "-") else s
    if not digits or not set(digits) <= _ASCII_DIGITS:
        return None
    n = int(s)
    return n if -(2**31) <= n < 2**31 else None  # str_to_int: fits in an int


def strict_ip(text: str) -> IPAddress | None:
    """An address as OVS/OVN read one (``inet_pton``): ASCII only, no white
    space, no IPv6 zone (``fe80::1%eth0``, which Python's ipaddress accepts
    and inet_pton does not); None otherwise."""
    # (ASCII white space: a blank, or a character isprintable() refuses)
    if not text.isascii() or "%" in text or " " in text or not text.isprintable():
        return None
    try:  # inet_pton itself, in C: ~0.7 us against ipaddress's ~2.5 us (IPv4) and
        # ~3.3 us (IPv6) parsing in Python, for every backend and port address
        # of a full pass; the same answer on every text (``test_strict_ip``)
        if ":" in text:
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``IP``, ``IP:PORT``, ``IPv6`` or ``[IPv6]:PORT``.

    No white space is stripped: OVN hands each ``vips`` key and each
    comma-separated backend to ``inet_pton`` as it is, which fails on
    surrounding blanks (only the port may have leading blanks, see ``c_int``)."""
    s = text
    if not s.strip():
        raise _Bad("empty_address", "empty address")
    port_text: str | None = None
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise _Bad("bad_address", f"unbalanced bracket in {text!r}")
        host, rest = s[1:close], s[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _Bad("bad_address", f"junk after ']' in {text!r}")
            port_text = rest[1:]
        ip = _ip(host, text)
        if ip.version != 6:
            raise _Bad("bad_address", f"brackets around a non-IPv6 address in {text!r}")
    elif s.count(":") == 1:
        host, port_text = s.split(":")
        ip = _ip(host, text)
    else:
        ip = _ip(s, text)  # plain IPv4, or IPv6 without a port
    return Endpoint(ip, None if port_text is None else _port(port_text, text))


def _ip(host: str, text: str) -> IPAddress:
    ip = strict_ip(host)
    if ip is None:
        raise _Bad("bad_address", f"not an IP address: {text!r}")
    return ip


def _port(p: str, text: str) -> int:
    n = c_int(p)
    if n is None:
        raise _Bad("bad_port", f"port is not an ASCII decimal number in {text!r}")
    if not 1 <= n <= 65535:
        raise _Bad("bad_port", f"port out of range 1..65535 in {text!r}")
    return n


def parse_vip(key: str, value: str, protocol: str) -> tuple[Vip, list[tuple[str, str]]]:
    """Parse one ``vips`` entry; returns the VIP and non-fatal warnings."""
    vip = parse_endpoint(key)
    if vip.ip.is_unspecified or vip.ip.is_multicast:
        raise _Bad("bad_address", f"VIP {key!r} is not a unicast address")
    warnings: list[tuple[str, str]] = []
    backends: list[Endpoint] = []
    seen: set[Endpoint] = set()  # a list's ``in`` made 5000 backends ~1.6 s (quadratic)
    for item in value.split(","):
        if not item:
            continue  # strtok_r(value, ",") in OVN skips empty tokens, and only those
        be = parse_endpoint(item)
        if be.ip.version != vip.ip.version:
            raise _Bad("mixed_families", f"backend {item!r} is not IPv{vip.ip.version}")
        if (vip.port is None) != (be.port is None):
            raise _Bad(
                "port_mismatch",
                f"backend {item!r} must {'not ' if vip.port is None else ''}have a port",
            )
        if be in seen:
            warnings.append(("duplicate_backend", f"backend {be} listed twice; used once"))
            continue
        seen.add(be)
        backends.append(be)
    return Vip(key=key, endpoint=vip, protocol=protocol, backends=tuple(backends)), warnings


def parse_selection_fields(text: str) -> tuple[tuple[str, ...], list[str]]:
    """``"ip_src,ip_dst"`` -> (known fields in OVN's order, unknown ones)."""
    given = [f.strip() for f in text.replace(" ", ",").split(",") if f.strip()]
    bad = [f for f in given if f not in SELECTION_FIELDS]
    return tuple(f for f in SELECTION_FIELDS if f in given), bad


def parse_affinity_timeout(options: Mapping[str, str]) -> tuple[int | None, str | None]:
    """``options:affinity_timeout`` -> seconds (None = off) and an error text."""
    raw = options.get("affinity_timeout")
    if raw is None:
        return None, None
    n = c_int(raw)  # OVN: smap_get_int()
    if n is None:
        return None, f"affinity_timeout {raw!r} is not an ASCII decimal integer"
    if n < 0 or n > MAX_AFFINITY_TIMEOUT:
        return None, f"affinity_timeout {n} outside 0..{MAX_AFFINITY_TIMEOUT}"
    return (n or None), None


def _smap_bool(options: Mapping[str, str], key: str) -> bool:
    """OVS's ``smap_get_bool(..., false)``: true only for "true" in any ASCII case
    (strcasecmp; ``str.lower`` would also fold non-ASCII letters)."""
    value = options.get(key, "")
    return value.isascii() and value.lower() == "true"


def resolve_datapaths(
    row: LoadBalancerRow,
    datapaths: Mapping[str, DatapathRow],
    dp_groups: Mapping[str, DpGroupRow],
) -> tuple[tuple[DatapathRow, ...], list[str]]:
    """Union of ``datapaths`` and every datapath-group column the row has.

    Returns the resolved datapaths (sorted by tunnel key) and the dangling uuids.
    """
    wanted: list[str] = list(row.datapaths)
    dangling: list[str] = []
    for group_uuid in (row.datapath_group, row.ls_datapath_group, row.lr_datapath_group):
        if group_uuid is None:
            continue
        group = dp_groups.get(group_uuid)
        if group is None:
            dangling.append(group_uuid)
            continue
        wanted.extend(group.datapaths)
    found: dict[str, DatapathRow] = {}
    for uuid in wanted:
        dp = datapaths.get(uuid)
        if dp is None:
            dangling.append(uuid)
        else:
            found[uuid] = dp
    return tuple(sorted(found.values(), key=lambda d: d.tunnel_key)), dangling


def parse_load_balancer(
    row: LoadBalancerRow,
    datapaths: Mapping[str, DatapathRow],
    dp_groups: Mapping[str, DpGroupRow],
) -> tuple[LoadBalancer | None, list[ParseIssue]]:
    """Parse a row.  Bad VIPs are dropped one by one; an unknown protocol
    drops the LB (it applies to every VIP).  Returns ``None`` only then."""
    label = row.name or row.uuid
    issues: list[ParseIssue] = []
    protocol = (row.protocol or "tcp").strip().lower()
    if protocol not in PROTOCOLS:
        issues.append(ParseIssue(label, "unknown_protocol", f"protocol {row.protocol!r}"))
        return None, issues

    timeout, err = parse_affinity_timeout(row.options)
    if err:
        issues.append(ParseIssue(label, "bad_affinity_timeout", err + "; affinity disabled",
                                 fatal=False))

    distribution = row.options.get("distribution")
    if distribution is not None and distribution not in DISTRIBUTIONS:
        issues.append(ParseIssue(label, "bad_distribution",
                                 f"distribution {distribution!r} is not one of "
                                 f"{', '.join(DISTRIBUTIONS)}; using the default", fatal=False))
        distribution = None

    fields, bad_fields = parse_selection_fields(row.options.get("selection_fields", ""))
    if bad_fields:
        issues.append(ParseIssue(label, "bad_selection_fields",
                                 f"selection_fields {', '.join(bad_fields)} not one of "
                                 f"{', '.join(SELECTION_FIELDS)}; ignored", fatal=False))
    snat: list[IPAddress] = []
    # split on ASCII blanks only, as OVN's lexer does: "a\u00a0b" is one bad token
    for text in row.options.get("hairpin_snat_ip", "").translate(_C_BLANK_TO_SPACE).split(" "):
        if not text:
            continue
        ip = strict_ip(text)
        if ip is None:
            issues.append(ParseIssue(label, "bad_hairpin_snat_ip",
                                     f"hairpin_snat_ip {text!r} is not an IP address; "
                                     "the VIP is used", fatal=False))
            continue
        if all(ip.version != other.version for other in snat):
            snat.append(ip)

    dps, dangling = resolve_datapaths(row, datapaths, dp_groups)
    issues.extend(
        ParseIssue(label, "dangling_datapath", f"datapath or group {u} does not exist",
                   fatal=False)
        for u in dangling
    )

    vips: list[Vip] = []
    seen: set[Endpoint] = set()
    for key in sorted(row.vips):
        try:
            vip, warnings = parse_vip(key, row.vips[key], protocol)
        except _Bad as bad:
            issues.append(ParseIssue(label, bad.reason, bad.detail, vip=key))
            continue
        if vip.endpoint in seen:
            issues.append(ParseIssue(label, "duplicate_vip", f"{vip.endpoint} listed twice",
                                     vip=key))
            continue
        seen.add(vip.endpoint)
        issues.extend(ParseIssue(label, r, d, vip=key, fatal=False) for r, d in warnings)
        vips.append(vip)
    lb = LoadBalancer(
        uuid=row.uuid, name=row.name, vips=tuple(vips), datapaths=dps, affinity_timeout=timeout,
        distribution=distribution, selection_fields=fields,
        reject=_smap_bool(row.options, "reject"),
        hairpin_snat_ip=tuple(snat),
        ct_flush=_smap_bool(row.options, "ct_flush"),
    )
    return lb, issues


def parse_all(
    rows: Iterable[LoadBalancerRow],
    datapaths: Mapping[str, DatapathRow],
    dp_groups: Mapping[str, DpGroupRow],
) -> tuple[tuple[LoadBalancer, ...], list[ParseIssue]]:
    lbs: list[LoadBalancer] = []
    issues: list[ParseIssue] = []
    for row in sorted(rows, key=lambda r: r.uuid):
        lb, found = parse_load_balancer(row, datapaths, dp_groups)
        issues.extend(found)
        if lb is not None:
            lbs.append(lb)
    return tuple(lbs), issues
