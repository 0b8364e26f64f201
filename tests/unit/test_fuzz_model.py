"""Property-based fuzzing of the SB ``Load_Balancer`` row parser.

The oracle for "what OVN accepts" is not a re-implementation: it is the C
library's own ``inet_pton`` (through ``socket.inet_pton``) and ``strtoll``
(through ctypes, C locale), the two functions OVN's
``ip_address_and_port_from_lb_key`` / OVS's ``str_to_int`` rely on.

Example counts come from the hypothesis profile (``tests/unit/fuzzprofile.py``):
modest in ``make test``, ``LBAFFD_FUZZ=long`` for a long local run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import re
import socket
from types import MappingProxyType

from hypothesis import example, given
from hypothesis import strategies as st

from lbaffd.model.loadbalancer import (
    MAX_AFFINITY_TIMEOUT,
    parse_affinity_timeout,
    parse_load_balancer,
)
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from tests.unit import fuzzprofile

fuzzprofile.load()

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_LIBC.strtoll.restype = ctypes.c_longlong
_LIBC.strtoll.argtypes = (ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int)

DPS = {"dp-1": DatapathRow("dp-1", 1, "ls1")}
REASON = re.compile(r"^[a-z][a-z0-9_]*$")


def c_str_to_int(text: str) -> int | None:
    """OVS's ``str_to_int(text, 10)``: the real strtoll, whole string consumed."""
    raw = text.encode()
    if b"\0" in raw:
        return None  # C sees a shorter string; OVSDB strings hold no NUL anyway
    buf = ctypes.create_string_buffer(raw)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    value = _LIBC.strtoll(buf, ctypes.byref(end), 10)
    consumed = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)  # type: ignore[operator]
    if ctypes.get_errno() or consumed == 0 or consumed != len(raw):
        return None
    return int(value) if -(2**31) <= value < 2**31 else None


def c_inet_pton(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "\0" in host:
        return None
    for family, cls in ((socket.AF_INET, ipaddress.IPv4Address),
                        (socket.AF_INET6, ipaddress.IPv6Address)):
        try:
            return cls(socket.inet_pton(family, host))  # type: ignore[arg-type]
        except (OSError, UnicodeError):
            continue
    return None


def ovn_endpoint(text: str) -> tuple[object, int | None] | None:
    """(address, port) as OVN would read ``IP[:PORT]`` / ``[IPv6]:PORT``, with
    lbaffd's documented extra strictness (port 1..65535, ``IP:`` is bad)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
        ip = c_inet_pton(host)
        if ip is None or ip.version != 6:
            return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        ip = c_inet_pton(host)
        if ip is None or ip.version != 4:
            return None
    else:
        port_text = None
        ip = c_inet_pton(text)
        if ip is None:
            return None
    if port_text is None:
        return ip, None
    port = c_str_to_int(port_text)
    return (ip, port) if port is not None and 1 <= port <= 65535 else None


# ------------------------------------------------------------------ strategies

# digits OVN reads, and look-alikes Python's int() also reads
DIGITS = st.sampled_from("0123456789")
LOOKALIKE = st.sampled_from("\uff10\uff18\u0660\u0668\u06f0\u0966\u09e6\U0001d7ce_")
BLANKS = st.sampled_from([" ", "\t", "\n", "\v", "\f", "\r", "\u00a0", "\u2000", "\u3000",
                          "\u200b", ""])


@st.composite
def number_text(draw: st.DrawFn, lo: int = 0, hi: int = 70000) -> str:
    """A number as text, mostly well formed, sometimes with what int() would
    forgive and strtoll would not (or the other way around)."""
    n = draw(st.integers(lo, hi))
    text = str(n).zfill(draw(st.integers(0, 6)))
    kind = draw(st.integers(0, 9))
    if kind == 1:
        chars = list(text)
        i = draw(st.integers(0, len(chars) - 1))
        chars[i] = draw(LOOKALIKE)
        text = "".join(chars)
    elif kind == 2:
        text = draw(BLANKS) + text + draw(BLANKS)
    elif kind == 3:
        text = draw(st.sampled_from(["+", "-", "--", "+-", "0x"])) + text
    elif kind == 4:
        text = text[:1] + "_" + text[1:]
    elif kind == 5:
        text = draw(st.text(max_size=6))
    return text


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@st.composite
def host_text(draw: st.DrawFn, version: int) -> str:
    host = draw(ipv4 if version == 4 else ipv6)
    kind = draw(st.integers(0, 9))
    if kind == 1:
        host = draw(BLANKS) + host + draw(BLANKS)
    elif kind == 2 and any(c.isdigit() for c in host):
        i = next(i for i, c in enumerate(host) if c.isdigit())
        host = host[:i] + chr(0xFF10 + int(host[i])) + host[i + 1:]
    elif kind == 3 and version == 6:
        host += "%" + draw(st.sampled_from(["eth0", "1", ""]))
    elif kind == 4:
        host = draw(st.text(max_size=12))
    return host


@st.composite
def endpoint_text(draw: st.DrawFn, version: int, with_port: bool) -> str:
    host = draw(host_text(version))
    if not with_port:
        return host
    port = draw(number_text(0, 70000))
    return f"[{host}]:{port}" if version == 6 else f"{host}:{port}"


@st.composite
def vips_map(draw: st.DrawFn) -> dict[str, str]:
    vips: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 6))):
        version = draw(st.sampled_from([4, 4, 6]))
        with_port = draw(st.booleans())
        if draw(st.integers(0, 9)) == 0:
            key = draw(st.text(max_size=30))
        else:
            key = draw(endpoint_text(version, with_port))
        backends = [draw(endpoint_text(draw(st.sampled_from([version, version, 10 - version])),
                                       draw(st.sampled_from([with_port, with_port,
                                                             not with_port]))))
                    for _ in range(draw(st.integers(0, 5)))]
        sep = draw(st.sampled_from([",", ",", ",", ", ", ",,"]))
        vips[key] = sep.join(backends)
    return vips


OPTION_KEYS = st.sampled_from(["affinity_timeout", "distribution", "selection_fields",
                               "reject", "hairpin_snat_ip", "ct_flush", "other"])
option_values = st.one_of(number_text(-10, 100000), st.text(max_size=20),
                          st.sampled_from(["true", "false", "TRUE", "balanced", "ovs-default",
                                           "ip_src,ip_dst", "10.0.0.1 fd00::1"]))


def row(vips: dict[str, str], options: dict[str, str], protocol: str | None,
        name: str) -> LoadBalancerRow:
    return LoadBalancerRow(uuid="lb-1", name=name, vips=MappingProxyType(vips),
                           protocol=protocol or "", options=MappingProxyType(options),
                           datapaths=("dp-1",), datapath_group=None)


# ------------------------------------------------------------------ properties


@given(vips=vips_map(), options=st.dictionaries(OPTION_KEYS, option_values, max_size=4),
       protocol=st.one_of(st.none(), st.sampled_from(["tcp", "udp", "sctp", "TCP"]),
                          st.text(max_size=5)),
       name=st.text(max_size=20))
@example(vips={"10.0.0.162:\uff18\uff10": "10.0.0.21:8080"}, options={}, protocol="tcp",
         name="lb")
@example(vips={"10.0.0.162:80": "10.0.0.21:\uff18\uff10\uff18\uff10"}, options={},
         protocol="tcp", name="lb")
@example(vips={"10.0.0.1:80": "10.0.0.2:80"}, options={"affinity_timeout": "\uff16\uff10"},
         protocol="tcp", name="lb")
def test_row_parser_never_raises_and_accepts_only_what_ovn_reads(
        vips: dict[str, str], options: dict[str, str], protocol: str | None,
        name: str) -> None:
    lb, issues = parse_load_balancer(row(vips, options, protocol, name), DPS, {})
    for issue in issues:  # every rejection or warning says why, in a stable word
        assert REASON.match(issue.reason), issue
        assert issue.detail and issue.lb
    rejected = {i.vip for i in issues if i.fatal}  # (the key "" is a VIP too)
    if lb is None:
        assert [i.reason for i in issues if i.fatal] == ["unknown_protocol"]
        return
    accepted = {v.key for v in lb.vips}
    assert accepted | rejected == set(vips), "every VIP is realized or rejected with a reason"
    assert not accepted & rejected
    for vip in lb.vips:
        want = ovn_endpoint(vip.key)
        assert want == (vip.endpoint.ip, vip.endpoint.port), vip.key
        for be, text in zip(vip.backends, [b for b in vips[vip.key].split(",") if b],
                            strict=False):
            assert ovn_endpoint(text) is not None, text
            assert be.port is None or 1 <= be.port <= 65535
        # round trip: the canonical text reads back to the same endpoint
        again, _ = parse_load_balancer(
            row({str(vip.endpoint): ",".join(map(str, vip.backends))}, {}, protocol, name),
            DPS, {})
        assert again is not None and again.vips[0].endpoint == vip.endpoint
        assert again.vips[0].backends == vip.backends


@given(host=ipv4, port=st.integers(1, 65535), pad=st.sampled_from(["", "0", "00", "+", " "]))
def test_what_ovn_reads_lbaffd_reads(host: str, port: int, pad: str) -> None:
    """The converse on well-formed IPv4 keys: OVN reads it -> lbaffd does."""
    key = f"{host}:{pad}{port}"
    ip = ipaddress.ip_address(host)
    lb, issues = parse_load_balancer(row({key: "10.9.9.9:80"}, {}, "tcp", "lb"), DPS, {})
    assert lb is not None
    if ip.is_unspecified or ip.is_multicast:
        assert [i.reason for i in issues] == ["bad_address"]
    else:
        assert ovn_endpoint(key) is not None
        assert [(v.endpoint.ip, v.endpoint.port) for v in lb.vips] == [(ip, port)], issues


@given(raw=number_text(-100, 100000))
@example(raw="\uff16\uff10")
@example(raw="1_000")
@example(raw=" 60")
def test_affinity_timeout_is_smap_get_int(raw: str) -> None:
    value, err = parse_affinity_timeout({"affinity_timeout": raw})
    c = c_str_to_int(raw)
    if c is None or not 0 <= c <= MAX_AFFINITY_TIMEOUT:
        assert value is None and err
    else:
        assert err is None and value == (c or None)
