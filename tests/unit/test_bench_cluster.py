"""The realistic benchmark's cluster generator: seeded, and shaped as issue 17
asks (skewed backends, a quarter with affinity, UDP, IPv6, two ports, local
backends, hairpin_snat_ip, health checks only where no local pod serves)."""

from __future__ import annotations

import ipaddress

from bench import cluster as cl
from bench.realistic import targets


def test_same_seed_same_cluster_other_seed_other() -> None:
    a, b, c = cl.generate(300, seed=5), cl.generate(300, seed=5), cl.generate(300, seed=6)
    assert a.services == b.services and a.pods == b.pods
    assert a.services != c.services


def test_shape_of_a_large_cluster() -> None:
    c = cl.generate(2000, seed=17)
    counts = [len(s.backends) for s in c.services]
    small = sum(1 <= k <= 3 for k in counts) / len(counts)
    medium = sum(10 <= k <= 50 for k in counts) / len(counts)
    large = sum(k >= 100 for k in counts)
    assert 0.8 < small < 0.9 and 0.09 < medium < 0.17 and large >= 10
    st = c.stats()
    assert 0.2 < st["affinity"] / st["services"] < 0.3
    assert {s.affinity for s in c.services if s.affinity} == set(cl.AFFINITY_TIMEOUTS)
    assert st["udp"] > 100 and st["ipv6"] > 100 and st["two_port"] > 30
    assert st["hairpin_snat_ip"] > 100 and st["service_monitors"] > 500
    assert st["local_backend_slots"] > 0 and st["remote_chassis"] == 50
    assert st["remote_pods"] == round(2000 * 3.26) and st["local_pods"] == 100


def test_vips_and_health_checks_are_well_formed() -> None:
    c = cl.generate(400, seed=3)
    for s in c.services:
        vips = s.vips(c.pods)
        assert len(vips) == len(s.vip_ports)
        for key, value in vips.items():
            host = key.rsplit(":", 1)[0].strip("[]")
            assert ipaddress.ip_address(host).version == (6 if s.ipv6 else 4)
            assert len(value.split(",")) == len(s.backends) == len(set(s.backends))
        if s.health:  # only checked where every backend is a pod of another chassis
            assert not s.ipv6 and all(not c.pods[b].local for b in s.backends)
            row = cl.lb_row(s, c.pods)
            assert len(row["ip_port_mappings"][1]) == len(s.backends)


def test_nb_ops_insert_every_service_and_pod() -> None:
    c = cl.generate(50, seed=1, nodes=4)
    lbs = [op for op in cl.nb_lb_ops(c) if op.get("table") == "Load_Balancer"]
    assert len(lbs) == 50
    lsps = [op for op in cl.nb_topology_ops(c, "chassis-1")
            if op.get("table") == "Logical_Switch_Port" and op["op"] == "insert"]
    assert {op["row"]["name"] for op in lsps} >= set(c.pods)


def test_targets_table_lists_every_target_even_unmeasured() -> None:
    rows = targets({"n": 5000, "summary": {}})
    assert all(r["met"] is None and r["measured"] == "not measured" for r in rows)
    names = [r["target"] for r in rows]
    # issue 17's targets: cold x2, remote port x2, local/health/backend p50+p99 with and
    # without an audit (12), churn lag, restart time and mods, RSS in five phases
    assert len(names) == len(set(names)) == 2 + 2 + 12 + 1 + 2 + 5
    for ev in ("local_port_added", "health_flip", "backend_added"):
        assert f"{ev} during audits p99" in names
    assert "churn: LB change lag p99" in names and "restart: in sync" in names


def test_pods_made_ahead_go_to_their_switches_in_one_transaction() -> None:
    """The realistic bench makes a sample type's pods in one NB transaction:
    each LSP gets its own named row, each node's switch one mutation."""
    c = cl.generate(30, seed=5, nodes=3)
    nxt: dict[int, int] = {}
    pods = [c.new_pod(1 + i % 3, nxt) for i in range(7)]
    ops = cl.nb_pods_ops(pods)
    inserts = [op for op in ops if op["op"] == "insert"]
    mutates = [op for op in ops if op["op"] == "mutate"]
    assert len(inserts) == 7 and len({op["uuid-name"] for op in inserts}) == 7
    assert [op["row"]["name"] for op in inserts] == [p.name for p in pods]
    refs = {m["where"][0][2]: m["mutations"][0][2][1] for m in mutates}
    assert sorted(refs) == ["ls1", "ls2", "ls3"]
    for node, pods_here in ((n, [i for i, p in enumerate(pods) if p.node == n])
                            for n in (1, 2, 3)):
        assert refs[f"ls{node}"] == [["named-uuid", f"np{i}"] for i in pods_here]
    assert cl.nb_pod_ops(pods[0])[0]["row"] == inserts[0]["row"]
