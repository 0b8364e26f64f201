"""vips / options parsing, including malformed input."""

from __future__ import annotations

import ipaddress
import random
from types import MappingProxyType

import pytest

from lbaffd.model.loadbalancer import (
    Endpoint,
    c_int,
    ip_text,
    parse_affinity_timeout,
    parse_all,
    parse_load_balancer,
    strict_ip,
)
from lbaffd.model.records import DatapathRow, DpGroupRow, LoadBalancerRow

DP1 = DatapathRow("dp-1", 1, "ls1")
DP2 = DatapathRow("dp-2", 2, "lr1", is_router=True)
DPS = {"dp-1": DP1, "dp-2": DP2}
GROUPS = {"grp-1": DpGroupRow("grp-1", ("dp-2",))}


def lb(vips: dict[str, str], **kw: object) -> LoadBalancerRow:
    fields: dict[str, object] = {"uuid": "lb-1", "name": "lb1", "vips": MappingProxyType(vips),
                                 "datapaths": ("dp-1",)}
    fields.update(kw)
    return LoadBalancerRow(**fields)  # type: ignore[arg-type]


def test_parses_ipv4_vip_with_backends() -> None:
    parsed, issues = parse_load_balancer(
        lb({"10.0.0.100:80": "10.0.0.21:8080,10.0.0.22:8080"},
           options=MappingProxyType({"affinity_timeout": "30"})), DPS, GROUPS)
    assert issues == []
    assert parsed is not None
    (vip,) = parsed.vips
    assert vip.endpoint == Endpoint(ipaddress.ip_address("10.0.0.100"), 80)
    assert vip.protocol == "tcp" and vip.ip_proto == 6
    assert [str(b) for b in vip.backends] == ["10.0.0.21:8080", "10.0.0.22:8080"]
    assert parsed.affinity_timeout == 30
    assert parsed.datapaths == (DP1,)


def test_ipv6_and_ip_only_forms() -> None:
    parsed, issues = parse_load_balancer(
        lb({"[fd00::1]:80": "[fd00::21]:8080", "10.0.0.7": "10.0.0.21,10.0.0.22"}), DPS, GROUPS)
    assert issues == []
    assert parsed is not None
    by_key = {v.key: v for v in parsed.vips}
    assert by_key["[fd00::1]:80"].endpoint.ip.version == 6
    assert by_key["10.0.0.7"].endpoint.port is None
    assert [b.port for b in by_key["10.0.0.7"].backends] == [None, None]


def test_empty_protocol_means_tcp_and_udp_is_kept() -> None:
    p1, _ = parse_load_balancer(lb({"10.0.0.1:53": "10.0.0.2:53"}, protocol=""), DPS, GROUPS)
    p2, _ = parse_load_balancer(lb({"10.0.0.1:53": "10.0.0.2:53"}, protocol="udp"), DPS, GROUPS)
    assert p1 is not None and p1.vips[0].protocol == "tcp"
    assert p2 is not None and p2.vips[0].protocol == "udp"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("10.0.0.300:80", "10.0.0.21:8080", "bad_address"),
        ("10.0.0.100:0", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.100:65536", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.100:abc", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.100:80", "10.0.0.21:0", "bad_port"),
        ("10.0.0.100:80", "10.0.0.21", "port_mismatch"),
        ("10.0.0.100", "10.0.0.21:80", "port_mismatch"),
        ("fd00::1]:80", "[fd00::2]:80", "bad_address"),
        ("[fd00::1:80", "[fd00::2]:80", "bad_address"),
        ("[10.0.0.1]:80", "10.0.0.2:80", "bad_address"),
        ("10.0.0.100:80", "[fd00::2]:80", "mixed_families"),
        ("0.0.0.0:80", "10.0.0.2:80", "bad_address"),
        ("", "10.0.0.2:80", "empty_address"),
        ("10.0.0.100:80", "nonsense", "bad_address"),
        # numbers and addresses are ASCII, as OVN's str_to_int()/inet_pton() read them
        ("10.0.0.162:\uff18\uff10", "10.0.0.21:8080", "bad_port"),  # full-width "80"
        ("10.0.0.162:80", "10.0.0.21:\uff18\uff10\uff18\uff10", "bad_port"),
        ("10.0.0.162:\u0668\u0660", "10.0.0.21:8080", "bad_port"),  # Arabic-Indic "80"
        ("10.0.0.162:8_0", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.162:80 ", "10.0.0.21:8080", "bad_port"),  # strtoll: trailing junk
        ("10.0.0.162:0x50", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.162:-80", "10.0.0.21:8080", "bad_port"),
        ("10.0.0.162:\u200080", "10.0.0.21:8080", "bad_port"),  # not C-locale space
        ("\uff11\uff10.0.0.162:80", "10.0.0.21:8080", "bad_address"),
        (" 10.0.0.162:80", "10.0.0.21:8080", "bad_address"),  # inet_pton: no blanks
        ("10.0.0.162:80", "10.0.0.21:8080, 10.0.0.22:8080", "bad_address"),
        ("10.0.0.162:80", "10.0.0.21:8080, ", "empty_address"),  # a blank backend
        ("[fe80::1%eth0]:80", "[fe80::2]:80", "bad_address"),  # zone: inet_pton says no
        ("[fd00::1]:80", "[fd00::\uff12]:80", "bad_address"),
    ],
)
def test_bad_vip_is_dropped_alone(key: str, value: str, reason: str) -> None:
    good = {"10.0.0.50:80": "10.0.0.21:8080"}
    parsed, issues = parse_load_balancer(lb({key: value, **good}), DPS, GROUPS)
    assert parsed is not None
    assert [v.key for v in parsed.vips] == ["10.0.0.50:80"]  # the good one survives
    assert [(i.reason, i.vip, i.fatal) for i in issues] == [(reason, key, True)]
    assert issues[0].lb == "lb1" and issues[0].detail


def test_duplicate_backend_is_used_once_with_a_warning() -> None:
    parsed, issues = parse_load_balancer(
        lb({"10.0.0.100:80": "10.0.0.21:8080,10.0.0.21:8080,10.0.0.22:8080"}), DPS, GROUPS)
    assert parsed is not None
    assert [str(b) for b in parsed.vips[0].backends] == ["10.0.0.21:8080", "10.0.0.22:8080"]
    assert [(i.reason, i.fatal) for i in issues] == [("duplicate_backend", False)]


def test_unknown_protocol_drops_the_lb_only() -> None:
    lbs, issues = parse_all(
        [lb({"10.0.0.1:80": "10.0.0.2:80"}, protocol="icmp"),
         lb({"10.0.0.3:80": "10.0.0.4:80"}, uuid="lb-2", name="lb2")], DPS, GROUPS)
    assert [x.name for x in lbs] == ["lb2"]
    assert [i.reason for i in issues] == ["unknown_protocol"]


@pytest.mark.parametrize(
    ("raw", "want", "error"),
    [
        ("300", 300, False), ("86400", 86400, False), ("0", None, False), (" 5", 5, False),
        ("+5", 5, False), ("\t60", 60, False),  # what OVS's str_to_int() also reads
        (" 5 ", None, True), ("60\n", None, True), ("\uff16\uff10", None, True),
        ("1_000", None, True), ("\u00a060", None, True), ("0x3c", None, True),
        ("99999999999999999999", None, True),
        ("-1", None, True), ("86401", None, True), ("abc", None, True), ("", None, True),
        ("1.5", None, True),
    ],
)
def test_affinity_timeout(raw: str, want: int | None, error: bool) -> None:
    value, err = parse_affinity_timeout({"affinity_timeout": raw})
    assert value == want
    assert (err is not None) == error


def test_bad_timeout_disables_affinity_but_keeps_the_lb() -> None:
    parsed, issues = parse_load_balancer(
        lb({"10.0.0.1:80": "10.0.0.2:80"}, options=MappingProxyType({"affinity_timeout": "x"})),
        DPS, GROUPS)
    assert parsed is not None and parsed.affinity_timeout is None and parsed.vips
    assert [(i.reason, i.fatal) for i in issues] == [("bad_affinity_timeout", False)]


def test_datapath_groups_and_dangling_references() -> None:
    parsed, issues = parse_load_balancer(
        lb({"10.0.0.1:80": "10.0.0.2:80"}, datapaths=("dp-1", "dp-gone"),
           datapath_group="grp-1", lr_datapath_group="grp-gone"), DPS, GROUPS)
    assert parsed is not None
    assert parsed.datapaths == (DP1, DP2)
    assert sorted(i.detail.split()[3] for i in issues) == ["dp-gone", "grp-gone"]
    assert {i.reason for i in issues} == {"dangling_datapath"}


def test_timeout_beyond_openflow_is_kept_exactly() -> None:
    parsed, issues = parse_load_balancer(
        lb({"10.0.0.1:80": "10.0.0.2:80"},
           options=MappingProxyType({"affinity_timeout": "86400"})), DPS, GROUPS)
    assert parsed is not None and parsed.affinity_timeout == 86400 and issues == []


def test_ip_text_is_str_of_the_address() -> None:
    rnd = random.Random(5)
    for ip in [ipaddress.ip_address(t) for t in ("0.0.0.0", "255.255.255.255", "10.0.0.1",
                                                 "fd00::1", "::ffff:1.2.3.4")] + [
            ipaddress.IPv4Address(rnd.getrandbits(32)) for _ in range(2000)]:
        assert ip_text(ip) == str(ip)


@pytest.mark.parametrize(
    ("key", "port"),
    [("10.0.0.1:+80", 80), ("10.0.0.1: 80", 80), ("10.0.0.1:0080", 80), ("[fd00::1]:+443", 443)],
)
def test_port_reads_what_ovs_str_to_int_reads(key: str, port: int) -> None:
    """OVN reads a port with strtoll(): leading C-locale blanks and a sign."""
    parsed, issues = parse_load_balancer(lb({key: "10.0.0.21:8080" if "." in key
                                             else "[fd00::21]:8080"}), DPS, GROUPS)
    assert parsed is not None and issues == []
    assert parsed.vips[0].endpoint.port == port


def test_c_int_is_ascii_strtoll() -> None:
    assert [c_int(t) for t in ("7", " -7", "+0", "2147483647", "2147483648", "", "+", " ",
                               "1e3", "\uff17", "7\x00")] == [
        7, -7, 0, 2147483647, None, None, None, None, None, None, None]


def test_strict_ip_rejects_what_inet_pton_rejects() -> None:
    assert str(strict_ip("::ffff:10.0.0.1")) == "::ffff:a00:1"
    assert [strict_ip(t) for t in ("fe80::1%1", "10.0.0.1 ", "\uff11.0.0.1", "010.0.0.1",
                                   "1.2.3", "")] == [None] * 6


def test_hairpin_snat_ip_splits_on_ascii_blanks_only() -> None:
    def snat(text: str) -> tuple[list[str], list[str]]:
        parsed, issues = parse_load_balancer(
            lb({"10.0.0.1:80": "10.0.0.2:80"},
               options=MappingProxyType({"hairpin_snat_ip": text})), DPS, GROUPS)
        assert parsed is not None
        return [str(i) for i in parsed.hairpin_snat_ip], [i.reason for i in issues]
    assert snat("10.0.0.9\tfd00::9") == (["10.0.0.9", "fd00::9"], [])
    assert snat("10.0.0.9\u00a0fd00::9") == ([], ["bad_hairpin_snat_ip"])


def test_bucket_order_key_is_endpoints_own_order() -> None:
    """``group_buckets`` sorts a VIP's backends by (int address, port): the
    order ``Endpoint``'s own comparison gives, for either family."""
    import random

    from lbaffd.model.plan import _endpoint_order

    rnd = random.Random(5)
    for v6 in (False, True):
        base = ipaddress.ip_address("fd00::" if v6 else "10.0.0.0")
        eps = [Endpoint(base + rnd.randrange(300), rnd.choice((80, 443, 8080)))
               for _ in range(500)]
        assert sorted(eps, key=_endpoint_order) == sorted(eps)
        bare = [Endpoint(base + rnd.randrange(300)) for _ in range(200)]
        assert sorted(bare, key=_endpoint_order) == sorted(bare)
