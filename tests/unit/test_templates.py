"""Templates change how fast a VIP compiles, never what it compiles to: the
state compiled with them equals the state compiled through the stages, for
VIPs of every kind (and the templates are really used)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest

from lbaffd.compile.layout import STANDALONE, Pipeline, embedded
from lbaffd.compile.markers import MARKS_A, distinct_addresses, marked_plan
from lbaffd.compile.shapes import VipTemplates, _shape
from lbaffd.compile.state import DesiredState, VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import IPAddress, LoadBalancer, parse_all
from lbaffd.model.plan import make_plan, plan_vips, vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology

LS = DatapathRow("dp-ls", 1, "ls")
LR = DatapathRow("dp-lr", 2, "lr", is_router=True)
LS2 = DatapathRow("dp-ls2", 3, "ls2")
DPS = {d.uuid: d for d in (LS, LR, LS2)}

# Shapes that recur (as a cluster's services do): ports, protocol, backends,
# options, datapaths, and which backend is local (hairpin), has a MAC, is down
PROFILES: list[dict[str, Any]] = [
    dict(proto="tcp", port=80, bport=8080, n=5, options={"affinity_timeout": "300"},
         dps=("dp-ls", "dp-lr")),
    dict(proto="tcp", port=443, bport=8443, n=3, options={}, dps=("dp-ls",), local=0, mac=1),
    dict(proto="udp", port=53, bport=5353, n=2, options={"affinity_timeout": "100000"},
         dps=("dp-ls2",), down=1),
    dict(proto="tcp", port=80, bport=8080, n=3, options={"selection_fields": "ip_src,tp_src"},
         dps=("dp-ls", "dp-ls2"), mac=0),
    dict(proto="tcp", port=80, bport=8080, n=4, options={"distribution": "balanced"},
         dps=("dp-ls",), local=2, down=0),
    dict(proto="", port=None, bport=None, n=2, options={"affinity_timeout": "30"},
         dps=("dp-ls",)),
    dict(proto="tcp", port=80, bport=8080, n=0, options={"reject": "true"}, dps=("dp-ls",)),
    dict(proto="tcp", port=80, bport=8080, n=3, options={}, dps=("dp-ls",), v6=True),
    dict(proto="tcp", port=80, bport=8080, n=3,
         options={"hairpin_snat_ip": "169.254.0.9", "affinity_timeout": "300"}, dps=("dp-ls",)),
]
# more, for the templates' own tests (``test_mode_layouts`` holds digests of
# states made from ``PROFILES`` alone): the hairpin source is the VIP itself
# or a backend shared with other VIPs; IPv6 with hairpin, local and MAC
MORE_PROFILES: list[dict[str, Any]] = [
    dict(proto="tcp", port=80, bport=8080, n=2, options={"hairpin_snat_ip": "VIP"},
         dps=("dp-ls",), local=0),
    dict(proto="udp", port=53, bport=53, n=3, options={"hairpin_snat_ip": "SHARED"},
         dps=("dp-ls",), local=1, shared=True),
    dict(proto="tcp", port=443, bport=8443, n=3, v6=True, local=0, mac=1,
         options={"hairpin_snat_ip": "169.254.0.9 fd00::a9", "affinity_timeout": "60"},
         dps=("dp-ls", "dp-lr")),
    dict(proto="", port=None, bport=None, n=1, v6=True, options={"affinity_timeout": "30"},
         dps=("dp-ls2",)),
]


def ip(n: int, v6: bool = False) -> IPAddress:
    return ipaddress.ip_address("fd00::" if v6 else "10.0.0.0") + n


def random_lbs(rnd: random.Random, n: int, profiles: list[dict[str, Any]] = PROFILES
               ) -> tuple[tuple[LoadBalancer, ...], Topology]:
    """``n`` LBs of the recurring profiles, with odd ones in between (a backend
    shared with other VIPs, one address twice with two ports)."""
    rows = []
    macs: dict[tuple[int, IPAddress], str] = {}
    down: set[tuple[IPAddress, int | None, str]] = set()
    local: set[IPAddress] = set()
    for i in range(n):
        prof = rnd.choice(profiles)
        v6 = bool(prof.get("v6"))
        port, bport, dps = prof["port"], prof["bport"], prof["dps"]
        addrs = [ip(100_000 + 16 * i + b, v6) for b in range(prof["n"])]
        if addrs and (prof.get("shared") or rnd.random() < 0.1):
            addrs[-1] = ip(1000 + rnd.randrange(5), v6)  # shared with other VIPs
        ends = [(a, bport) for a in addrs]
        if ends and rnd.random() < 0.05:
            ends.append((ends[0][0], 9999))  # one address, two ports
        if "local" in prof and prof["local"] < len(addrs):
            local.add(addrs[prof["local"]])
        if "mac" in prof and prof["mac"] < len(addrs):
            mac = f"02:00:00:{i >> 8:02x}:{i & 255:02x}:01"
            for dp in dps:
                macs[(DPS[dp].tunnel_key, addrs[prof["mac"]])] = mac
        if "down" in prof and prof["down"] < len(addrs):
            down.add((addrs[prof["down"]], bport, prof["proto"]))
        texts = [(f"[{a}]" if v6 else str(a)) + (f":{bp}" if port else "") for a, bp in ends]
        vip = ip(10 + i, v6)
        vtext = f"[{vip}]" if v6 else str(vip)
        options = dict(prof["options"])
        if options.get("hairpin_snat_ip") == "VIP":
            options["hairpin_snat_ip"] = str(vip)
        elif options.get("hairpin_snat_ip") == "SHARED":
            options["hairpin_snat_ip"] = str(addrs[-1])
        rows.append(LoadBalancerRow(
            uuid=f"lb-{i}", name=f"lb{i}",
            vips=MappingProxyType({f"{vtext}:{port}" if port else vtext: ",".join(texts)}),
            protocol=prof["proto"], options=MappingProxyType(options),
            datapaths=dps))
    lbs, _ = parse_all(rows, DPS, {})
    topo = Topology((LocalPort(11, "c1", LS), LocalPort(12, "c2", LS2)), MappingProxyType(macs),
                    down=frozenset(down), attached=frozenset({2}), local_ips=frozenset(local))
    return lbs, topo


def both(lbs: tuple[LoadBalancer, ...], topo: Topology, p: Pipeline,
         cache: VipCache | None = None) -> tuple[DesiredState, DesiredState, VipCache]:
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    plain = compile_state(lbs, topo, ids, p, cache=VipCache(templates=False))
    cache = cache or VipCache()
    return plain, compile_state(lbs, topo, ids, p, cache=cache), cache


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pipeline", [STANDALONE, embedded(40, 70)], ids=["standalone", "embedded"])
def test_random_states_equal_with_and_without_templates(seed: int, pipeline: Pipeline) -> None:
    lbs, topo = random_lbs(random.Random(seed), 300, PROFILES + MORE_PROFILES)
    plain, templated, cache = both(lbs, topo, pipeline)
    assert templated == plain
    assert cache.templates is not None  # not vacuous: most VIPs came from templates
    assert cache.templates.made >= 6 and cache.templates.filled >= 150


def test_one_shape_many_values() -> None:
    """The bench's case: one shape, every value different; bucket orders
    differ per VIP (they follow the backends' hashes)."""
    rows = [LoadBalancerRow(
        uuid=f"lb-{i}", name=f"lb-{i}",
        vips=MappingProxyType({f"{ip(5000 + i)}:80": ",".join(
            f"{ip(20000 + 8 * i + b)}:8080" for b in range(5))}),
        protocol="tcp", options=MappingProxyType({"affinity_timeout": "300"}),
        datapaths=("dp-ls", "dp-lr")) for i in range(200)]
    lbs, _ = parse_all(rows, DPS, {})
    topo = Topology((LocalPort(11, "c1", LS),), MappingProxyType({}), attached=frozenset({2}))
    plain, templated, cache = both(lbs, topo, STANDALONE)
    assert templated == plain
    assert cache.templates is not None
    # made from the first VIP (its unrolled shape, ``unrolled``), filled for the others
    assert (cache.templates.made, cache.templates.refused, cache.templates.filled) == (1, 0, 199)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("hairpin", ["", "169.254.169.5 fd00::a9", "VIP"])
def test_ipv6_and_hairpin_snat_vips_are_filled_in_too(v6: bool, hairpin: str) -> None:
    """IPv6 VIPs (markers of their family) and LBs with ``hairpin_snat_ip``
    (one address a cluster shares: part of the shape) come from templates
    as well; an LB whose hairpin source is its own VIP is a shape of its own
    (the stages answer ARP/ND once then), compiled the same either way."""
    rows = []
    for i in range(60):
        vip = ip(5000 + i, v6)
        vtext = f"[{vip}]" if v6 else str(vip)
        bes = [ip(20000 + 8 * i + b, v6) for b in range(3)]
        opts = {"affinity_timeout": "300"}
        if hairpin:
            opts["hairpin_snat_ip"] = str(vip) if hairpin == "VIP" else hairpin
        rows.append(LoadBalancerRow(
            uuid=f"lb-{i}", name=f"lb-{i}",
            vips=MappingProxyType({f"{vtext}:80": ",".join(
                (f"[{b}]" if v6 else str(b)) + ":8080" for b in bes)}),
            protocol="tcp", options=MappingProxyType(opts), datapaths=("dp-ls", "dp-lr")))
    lbs, _ = parse_all(rows, DPS, {})
    local = frozenset(ip(20000 + 8 * i, v6) for i in range(60))  # hairpin flows: a local backend
    macs = MappingProxyType({(1, ip(20000 + 8 * i + 1, v6)): f"02:00:00:00:{i:02x}:01"
                             for i in range(60)})
    topo = Topology((LocalPort(11, "c1", LS),), macs, attached=frozenset({2}), local_ips=local)
    plain, templated, cache = both(lbs, topo, STANDALONE)
    assert templated == plain
    assert cache.templates is not None
    if hairpin == "VIP":  # the marked VIP is never the hairpin source: no template fits
        assert cache.templates.filled == 0
    else:
        assert (cache.templates.made, cache.templates.refused, cache.templates.filled) == (1, 0, 59)


def test_templates_outlive_passes() -> None:
    """A later pass with other values (backends gone down, now local)
    compiles as the stages would."""
    lbs, topo = random_lbs(random.Random(99), 200, PROFILES + MORE_PROFILES)
    cache = VipCache()
    for change in range(3):
        plain, templated, cache = both(lbs, topo, STANDALONE, cache)
        assert templated == plain, change
        some = frozenset(be.ip for lb in lbs[change::7] for v in lb.vips for be in v.backends)
        topo = replace(topo, local_ips=topo.local_ips ^ some,
                       down=topo.down | {(a, 8080, "tcp") for a in some})


def test_templates_keep_only_the_shapes_of_the_vips_a_full_pass_kept() -> None:
    """Pods of a pool plugged and unplugged between full passes give the VIPs
    they back new shapes (which positions are local), and the next pass but
    one makes their templates.  After every full pass the templates hold the
    shapes of the VIPs in the state and no other: before, those of every
    locality ever seen stayed until ``MAX_SHAPES`` (4096).  What is compiled
    stays what the stages compile."""
    rnd = random.Random(7)
    lbs, topo = random_lbs(rnd, 300, PROFILES + MORE_PROFILES)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    addrs = sorted({be.ip for lb in lbs for v in lb.vips for be in v.backends}, key=str)
    pool = rnd.sample(addrs, 40)
    local = set(topo.local_ips) | set(pool[:20])
    cache = VipCache()
    assert cache.templates is not None
    seen: set[object] = set()
    for change in range(30):
        topo = replace(topo, local_ips=frozenset(local))
        state = compile_state(lbs, topo, ids, STANDALONE, cache=cache)
        if change % 10 == 0:
            assert state == compile_state(lbs, topo, ids, STANDALONE,
                                          cache=VipCache(templates=False)), change
        live = set(cache._shape_of.values())
        assert set(cache.templates._shapes) == live, change
        seen |= live
        for _ in range(2):  # two pods of the pool out, two others in
            local.discard(rnd.choice(sorted(local & set(pool), key=str)))
            local.add(rnd.choice(sorted(set(pool) - local, key=str)))
    assert cache.templates.made >= 15  # templates were made and used all along
    # and shapes came and went (6 with this seed: positional ones, of VIPs
    # that are not unrolled; an unrolled shape does not follow locality)
    assert len(seen - live) >= 5


def test_equal_shapes_mean_equal_marked_plans() -> None:
    """The shape key is ``marked_plan`` computed without building it: two VIPs of
    one shape must have the very same marked plan (else a template could be
    applied to a VIP it does not fit)."""
    lbs, topo = random_lbs(random.Random(3), 400, PROFILES + MORE_PROFILES)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    kept = VipTemplates(lambda *a: None)._kept  # type: ignore[arg-type,return-value]
    marked_by_shape: dict[object, object] = {}
    for lb, vip, dps in plan_vips(lbs, topo)[0]:
        plan = make_plan(lb, vip, dps, topo, ids, "balanced", 1)
        addrs = distinct_addresses(plan)
        marked = marked_plan(plan, addrs, MARKS_A)
        assert marked_by_shape.setdefault(_shape(plan, addrs, kept), marked) == marked
    assert len(marked_by_shape) < 200  # shapes do recur


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("affinity", [None, "300"], ids=["plain", "affinity"])
def test_any_number_of_backends_fills_one_unrolled_template(v6: bool,
                                                            affinity: str | None) -> None:
    """A cluster's services: 1 to 60 endpoints each, a random few of them
    pods on this node (hairpin flows, MACs on the switch), some down.
    Positionally almost every VIP is a shape of its own; unrolled, they
    are one (``unrolled``): one template, made from the first VIP, and the
    others filled in, backend by backend, to what the stages compile."""
    rnd = random.Random(11)
    rows, local, macs, down = [], set(), {}, set()
    for i in range(80):
        vip = ip(5000 + i, v6)
        vtext = f"[{vip}]" if v6 else str(vip)
        bes = [ip(20000 + 64 * i + b, v6) for b in range(rnd.choice((1, 2, 3, 7, 12, 30, 60)))]
        for b in bes:
            if rnd.random() < 0.15:
                local.add(b)
                macs[(1, b)] = f"02:00:00:{i:02x}:{int(b) & 0xff:02x}:01"
            if rnd.random() < 0.1:
                down.add((b, 8080, "tcp"))
        rows.append(LoadBalancerRow(
            uuid=f"lb-{i}", name=f"lb-{i}",
            vips=MappingProxyType({f"{vtext}:80": ",".join(
                (f"[{b}]" if v6 else str(b)) + ":8080" for b in bes)}),
            protocol="tcp",
            options=MappingProxyType({"affinity_timeout": affinity} if affinity else {}),
            datapaths=("dp-ls", "dp-lr")))
    lbs, _ = parse_all(rows, DPS, {})
    topo = Topology((LocalPort(11, "c1", LS),), MappingProxyType(macs), down=frozenset(down),
                    attached=frozenset({2}), local_ips=frozenset(local))
    plain, templated, cache = both(lbs, topo, STANDALONE)
    assert templated == plain
    assert cache.templates is not None
    # (a VIP whose backends are all down is positional: its dispatch differs)
    assert cache.templates.made <= 3 and cache.templates.filled >= 75
