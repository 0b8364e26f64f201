"""Every input applied row by row gives exactly what a full read and compile
gives: ``TopologyIndex`` against ``build_topology``, and ``ChangeTracker`` +
``DesiredIndex`` against ``compile_state``, on random changes of port
bindings (MACs, addresses, chassis), Service_Monitor statuses, local
interfaces and load balancers."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from types import MappingProxyType

from lbaffd.compile.layout import STANDALONE as P
from lbaffd.compile.state import VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import (
    DatapathRow,
    DpGroupRow,
    InterfaceRow,
    LoadBalancerRow,
    PortBindingRow,
    SbSnapshot,
    ServiceMonitorRow,
)
from lbaffd.model.topoindex import MacView, TopologyIndex, backend_index
from lbaffd.model.topology import Topology, build_topology
from lbaffd.openflow.packed import PackedState, flow_id, group_id
from lbaffd.reconcile.changes import ChangeTracker
from lbaffd.reconcile.incremental import DesiredIndex
from lbaffd.sb.delta import Delta
from lbaffd.sb.inputs import Inputs

ME = "chassis-1"
DPS = {"ls1": DatapathRow("ls1", 1, "ls1"), "ls2": DatapathRow("ls2", 2, "ls2"),
       "lr": DatapathRow("lr", 3, "lr", is_router=True)}
STATUSES = ("online", "offline", "error", "")


def rand_pb(rnd: random.Random, n: int, dp: str | None = None) -> PortBindingRow:
    """Port ``p<n>``: addresses from a small pool (so ports share IPs and the
    smallest logical_port must win), sometimes two entries or none."""
    entries = []
    for _ in range(rnd.choice((0, 1, 1, 1, 2))):
        ips = " ".join(f"10.0.0.{rnd.randrange(20, 32)}" for _ in range(rnd.randint(1, 2)))
        entries.append(f"02:00:00:00:{rnd.randrange(4):02x}:{n % 256:02x} {ips}"
                       if rnd.random() < 0.9 else "unknown")
    chassis = rnd.choice((ME, ME, None, "node-2"))
    return PortBindingRow(f"pb{n}", f"p{n}", dp or rnd.choice(("ls1", "ls1", "ls2")), n,
                          tuple(entries), chassis)


def patches() -> dict[str, PortBindingRow]:
    return {"pa": PortBindingRow("pa", "ls1-lr", "ls1", 900, (), None, "patch",
                                 MappingProxyType({"peer": "lr-ls1"})),
            "pb": PortBindingRow("pb", "lr-ls1", "lr", 901, (), None, "patch",
                                 MappingProxyType({"peer": "ls1-lr"}))}


def rand_monitor(rnd: random.Random, n: int) -> ServiceMonitorRow:
    return ServiceMonitorRow(f"m{n}", f"10.0.0.{rnd.randrange(20, 32)}", 8080, "tcp",
                             f"p{rnd.randrange(40)}", rnd.choice(STATUSES))


def snapshot(pbs: dict[str, PortBindingRow], monitors: dict[str, ServiceMonitorRow],
             ifaces: tuple[InterfaceRow, ...]) -> SbSnapshot:
    return SbSnapshot(MappingProxyType({}), MappingProxyType(DPS), MappingProxyType({}),
                      MappingProxyType(dict(pbs)), ifaces, ME, tuple(monitors.values()))


def same(a: Topology, b: Topology) -> bool:
    return (a.local_ports == b.local_ports and dict(a.macs) == dict(b.macs)
            and a.down == b.down and a.attached == b.attached and a.local_ips == b.local_ips)


def ips_that_matter(a: Topology, b: Topology) -> set[ipaddress.IPv4Address | object]:
    """Addresses whose MAC on a local datapath, health or locality differs."""
    local = a.local_datapaths
    keys = {k for k in set(a.macs) | set(b.macs) if k[0] in local
            and a.macs.get(k) != b.macs.get(k)}
    return ({k[1] for k in keys} | {d[0] for d in a.down ^ b.down}
            | set(a.local_ips ^ b.local_ips))


def test_topology_index_equals_a_full_build_on_random_changes() -> None:
    rnd = random.Random(11)
    pbs = {**patches(), **{f"pb{n}": rand_pb(rnd, n) for n in range(40)}}
    monitors = {f"m{n}": rand_monitor(rnd, n) for n in range(30)}
    ifaces = tuple(InterfaceRow(f"if{n}", 10 + n, f"p{n}") for n in range(0, 40, 3))
    index = TopologyIndex(snapshot(pbs, monitors, ifaces))
    structural = 0
    for step in range(400):
        before = build_topology(snapshot(pbs, monitors, ifaces))
        dpb: dict[str, PortBindingRow | None] = {}
        dmon: dict[str, ServiceMonitorRow | None] = {}
        difaces = None
        for _ in range(rnd.randint(1, 3)):
            r = rnd.random()
            if r < 0.02:  # a patch port: reshapes the local datapaths
                dpb["pa"] = patches()["pa"]
            elif r < 0.4:
                n = rnd.randrange(50)
                new = None if rnd.random() < 0.15 else rand_pb(rnd, n)
                if new is None and f"pb{n}" not in pbs:
                    continue
                dpb[f"pb{n}"] = new
            elif r < 0.8:
                n = rnd.randrange(35)
                dmon[f"m{n}"] = None if rnd.random() < 0.1 else replace(
                    monitors.get(f"m{n}") or rand_monitor(rnd, n),
                    status=rnd.choice(STATUSES))
            else:
                n = rnd.randrange(40)
                current = [i for i in (difaces or ifaces) if i.iface_id != f"p{n}"]
                if len(current) == len(difaces or ifaces):
                    current.append(InterfaceRow(f"if{n}", 10 + n, f"p{n}"))
                difaces = tuple(sorted(current, key=lambda i: i.name))
        for k, v in dpb.items():
            if v is None:
                pbs.pop(k, None)
            else:
                pbs[k] = v
        for k, m in dmon.items():
            if m is None:
                monitors.pop(k, None)
            else:
                monitors[k] = m
        ifaces = difaces if difaces is not None else ifaces
        change = index.apply(dpb, dmon, difaces)
        after = build_topology(snapshot(pbs, monitors, ifaces))
        if change.structural:
            structural += 1
            index = TopologyIndex(snapshot(pbs, monitors, ifaces))
            assert same(index.topology(), after), step  # (what a full pass compiles)
            continue
        assert before.local_datapaths == after.local_datapaths, step
        assert same(index.topology(), after), step
        assert ips_that_matter(before, after) <= change.ips, step
        assert change.ports == (before.local_ports != after.local_ports), step
    assert 0 < structural < 200  # both paths were exercised


def test_mac_view_shares_and_flattens() -> None:
    base = {(1, ipaddress.ip_address(f"10.0.0.{n}")): f"m{n}" for n in range(10)}
    view = MacView(base)
    key = (1, ipaddress.ip_address("10.0.0.3"))
    newer = view.updated({key: None, (2, key[1]): "x"})
    assert view[key] == "m3" and key not in newer and newer[(2, key[1])] == "x"
    assert len(newer) == 10 and dict(view) == base
    missing = (3, key[1])
    for m in (view, newer):  # get: as the plain dict of its items, through the overlay
        items = dict(m.items())
        for k in (key, (2, key[1]), missing):
            assert m.get(k) == items.get(k)
            assert m.get(k, "d") == items.get(k, "d")
    MacView.FLATTEN, saved = 1, MacView.FLATTEN
    try:
        flat = newer.updated({key: "y"})
        assert flat[key] == "y" and len(flat) == 11 and dict(newer)[(2, key[1])] == "x"
    finally:
        MacView.FLATTEN = saved


# ------------------------------------------------------------------ end to end


def lb_row(n: int, backends: list[int], affinity: bool) -> LoadBalancerRow:
    """LBs 0-5 in datapath group g1 (as ovn-northd writes them), the others on ls1."""
    vips = {f"10.1.0.{n}:80": ",".join(f"10.0.0.{b}:8080" for b in backends)}
    opts = {"affinity_timeout": "30"} if affinity else {}
    where = {"datapath_group": "g1"} if n < 6 else {"datapaths": ("ls1",)}
    return LoadBalancerRow(uuid=f"lb-{n}", name=f"lb{n}", vips=MappingProxyType(vips),
                           options=MappingProxyType(opts), **where)  # type: ignore[arg-type]


def compile_all(lbs: dict[str, LoadBalancer], topo: Topology,
                ids: dict[own.OwnerKey, int]):  # type: ignore[no-untyped-def]
    t = tuple(lbs.values())
    ids = own.allocate_group_ids(vip_owners(t, topo), ids)
    return compile_state(t, topo, ids, P), ids


def test_every_input_applied_incrementally_equals_a_full_compile() -> None:
    rnd = random.Random(5)
    pbs = {**patches(), **{f"pb{n}": rand_pb(rnd, n, "ls1" if n < 30 else "ls2")
                           for n in range(40)}}
    monitors = {f"m{n}": rand_monitor(rnd, n) for n in range(20)}
    ifaces = tuple(InterfaceRow(f"if{n}", 10 + n, f"p{n}") for n in (0, 1, 2))
    pbs = {k: (replace(v, chassis=ME) if k in ("pb0", "pb1", "pb2") else v)
           for k, v in pbs.items()}
    rows = {f"lb-{n}": lb_row(n, rnd.sample(range(20, 32), 3), n % 2 == 0) for n in range(12)}
    dpgroups = {"g1": DpGroupRow("g1", ("ls1", "lr"))}
    snap = replace(snapshot(pbs, monitors, ifaces), dp_groups=MappingProxyType(dict(dpgroups)))
    lbs, issues = parse_all(rows.values(), snap.datapaths, dpgroups)
    inputs = Inputs(snap, {lb.uuid: lb for lb in lbs}, tuple(issues))
    topo = build_topology(snap)
    desired, ids = compile_all(dict(inputs.parsed), topo, {})
    index, cache = DesiredIndex(desired, ids), VipCache()
    installed = PackedState(dict(desired.state.flows), dict(desired.state.groups))
    tracker = ChangeTracker(inputs, topo)
    quiet = 0
    for step in range(150):
        r = rnd.random()
        if r < 0.3:  # a pod on the other switch: never a VIP's concern
            n = rnd.randrange(30, 45)
            delta = Delta(port_bindings={f"pb{n}": rand_pb(rnd, n, "ls2")})
        elif r < 0.5:
            n = rnd.randrange(3, 30)
            delta = Delta(port_bindings={f"pb{n}": rand_pb(rnd, n, "ls1")})
        elif r < 0.7:
            n = rnd.randrange(25)
            delta = Delta(monitors={f"m{n}": replace(rand_monitor(rnd, n),
                                                     status=rnd.choice(STATUSES))})
        elif r < 0.8:  # a local VIF comes or goes (ls1 keeps p0..p2)
            n = rnd.randrange(3, 8)
            have = [i for i in tracker.index.interfaces if i.iface_id != f"p{n}"]
            if len(have) == len(tracker.index.interfaces):
                have.append(InterfaceRow(f"if{n}", 10 + n, f"p{n}"))
            delta = Delta(interfaces=tuple(sorted(have, key=lambda i: i.name)))
        elif r < 0.87:  # the group's members: local ones or the other switch's
            dpgroups["g1"] = DpGroupRow("g1", tuple(sorted(rnd.sample(sorted(DPS),
                                                                    rnd.randint(1, 3)))))
            delta = Delta(dp_groups={"g1": dpgroups["g1"]},
                          group_lbs={u: r for u, r in rows.items() if r.groups})
        else:
            n = rnd.randrange(14)
            row = None if rnd.random() < 0.2 else lb_row(
                n, rnd.sample(range(20, 32), rnd.randint(1, 4)), rnd.random() < 0.5)
            if row is None:
                rows.pop(f"lb-{n}", None)
            else:
                rows[f"lb-{n}"] = row
            delta = Delta(lbs={f"lb-{n}": row})
        s = tracker.step(delta)
        assert s is not None, step  # nothing here changes the local datapaths
        if s.no_effect:
            quiet += 1
        changes = index.apply(s.changed, s.topo, P, cache, 65535, "balanced", 1, s.old_topo,
                              s.ports)
        assert changes is not None, step
        tracker.commit(s)
        flows, groups = dict(installed.flows), dict(installed.groups)
        for f in changes.del_flows:
            del flows[flow_id(f)]
        for f in changes.add_flows + changes.mod_flows:
            flows[flow_id(f)] = f
        for g in changes.add_groups + changes.mod_groups:
            groups[group_id(g)] = g
        for gid in changes.del_groups:
            del groups[gid]
        installed = PackedState(flows, groups)
        assert installed.flows == index.flows and installed.groups == index.groups, step
        # what a full pass would compile from a fresh read of the same rows
        fresh = build_topology(s.inputs.snapshot)
        assert same(s.topo, fresh), step
        parsed, _ = parse_all(rows.values(), DPS, dpgroups)
        want, _ = compile_all({lb.uuid: lb for lb in parsed}, fresh, index.group_ids)
        assert index.flows == dict(want.state.flows), step
        assert index.groups == dict(want.state.groups), step
        assert index.owners == dict(want.owners), step
        # and nothing the steps left behind that fresh indexes would not hold
        # (kept until the next full pass, it would pile up between them)
        ti, ft = tracker.index, TopologyIndex(s.inputs.snapshot)
        for name in ("pbs", "by_name", "port_ips", "claims", "monitors", "monitors_of_port",
                     "down_of", "peer_names"):
            assert getattr(ti, name) == getattr(ft, name), (step, name)
        assert dict(ti.down) == dict(ft.down), step  # (no key left at zero)
        assert dict(ti.macs) == dict(ft.macs), step
        assert tracker.backends == backend_index(tracker.inputs.lbs), step
        fi = DesiredIndex(want, index.group_ids)
        assert {k: set(v) for k, v in index.refs.items()} == {
            k: set(v) for k, v in fi.refs.items()}, step
        assert index.slots == fi.slots, step
        assert {k: set(v) for k, v in index.by_lb.items()} == {
            k: set(v) for k, v in fi.by_lb.items()}, step
        assert set(index.plans) == set(fi.plans), step
        assert index._shared_flows == fi._shared_flows, step
        assert [dict(c) for c in index.chunks] == [dict(c) for c in fi.chunks], step
        assert set(index.group_ids) == set(index.plans), step
        assert index.taken == set(index.group_ids.values()), step
        if s.no_effect:
            assert changes.empty, step
    assert quiet > 30  # other switches' pods and unrelated flips cost nothing


def test_a_bulk_change_of_load_balancers_is_left_to_a_full_pass_unparsed(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """More changed LBs than ``BULK_MIN`` (and a quarter of them): ``step``
    declines before parsing any (the full pass parses every LB again)."""
    from lbaffd.reconcile import changes

    pbs = {**patches(), "pb0": replace(rand_pb(random.Random(1), 0, "ls1"), chassis=ME)}
    snap = snapshot(pbs, {}, (InterfaceRow("if0", 10, "p0"),))
    inputs = Inputs(snap, {}, ())
    tracker = ChangeTracker(inputs, build_topology(snap))
    parsed: list[int] = []
    real = Inputs.parse_change

    def counting(self: Inputs, rows):  # type: ignore[no-untyped-def]
        parsed.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(Inputs, "parse_change", counting)
    few = {f"lb-{n}": lb_row(n + 6, [20], False) for n in range(changes.BULK_MIN)}
    assert tracker.step(Delta(lbs=few)) is not None and parsed == [changes.BULK_MIN]
    many = {f"lb-{n}": lb_row(n + 6, [20], False) for n in range(changes.BULK_MIN + 1)}
    assert tracker.step(Delta(lbs=many)) is None and parsed == [changes.BULK_MIN]
    # read_delta leaves more rows than the limit unread: only their number
    bulk = Delta(bulk_lbs=tracker.bulk_limit() + 1)
    assert not bulk.empty and tracker.step(bulk) is None and parsed == [changes.BULK_MIN]
