"""A seeded, cluster-shaped set of services and pods for ``bench.realistic``.

Shaped after what a Kubernetes (ovn-kubernetes) cluster writes, not after
what flatters the compiler's templates (``bench.common``'s N identical LBs):

- one switch per node: ``ls0`` is this chassis's, ``ls1..lsK`` belong to K
  other chassis; all joined by a distributed cluster router ``cr`` (so the
  other nodes' switches are local datapaths for ovn-controller, as in
  ovn-kubernetes), plus a gateway router ``gr0`` pinned to this chassis;
- every service's load balancer is in one ``Load_Balancer_Group`` on ``ls0``
  and ``gr0`` (what lbaffd and ovn-controller both realize here);
- backends per VIP skewed (most 1-3, some 10-50, a few 100+), ~10 % of them
  pods on this chassis (with MACs on ``ls0``: forward and hairpin flows), the
  rest pods on other chassis; a quarter of the services with
  ``affinity_timeout`` at several values, ~10 % UDP, ~10 % IPv6, ~5 % with a
  second port, ~10 % with ``hairpin_snat_ip``, ~30 % of the IPv4 services
  whose backends are all remote health-checked (``Service_Monitor`` rows).

``generate`` is pure and deterministic for a seed; ``nb_*_ops`` render it
as OVSDB operations on the OVN Northbound DB (real ovn-northd then writes the
Southbound rows both daemons read); ``sb_bind_ops`` plays the other
chassis's ovn-controllers (binding their pods)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

AFFINITY_TIMEOUTS = (60, 300, 1800, 10800)
HAIRPIN_SNAT = "169.254.169.5 fd69::5"
PORTS = {"tcp": (80, 8080), "udp": (53, 5353)}
SECOND_PORT = (443, 8443)


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    node: int  # 0: this chassis; k: the switch ls<k> of remote chassis k
    index: int
    mac: str
    ip4: str
    ip6: str

    @property
    def local(self) -> bool:
        return self.node == 0

    @property
    def addresses(self) -> str:
        return f"{self.mac} {self.ip4} {self.ip6}"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    protocol: str
    ipv6: bool
    vip_ports: tuple[tuple[int, int], ...]  # (VIP port, backend port)
    vip_ip: str
    backends: tuple[str, ...]  # pod names
    affinity: int | None = None
    hairpin_snat: bool = False
    health: bool = False

    def vips(self, pods: dict[str, Pod], extra: Iterable[str] = ()) -> dict[str, str]:
        """The NB ``vips`` column; ``extra``: more pod names as backends."""
        names = (*self.backends, *extra)
        out = {}
        for vport, bport in self.vip_ports:
            if self.ipv6:
                key = f"[{self.vip_ip}]:{vport}"
                val = ",".join(f"[{pods[n].ip6}]:{bport}" for n in names)
            else:
                key = f"{self.vip_ip}:{vport}"
                val = ",".join(f"{pods[n].ip4}:{bport}" for n in names)
            out[key] = val
        return out

    def options(self) -> dict[str, str]:
        opts = {}
        if self.affinity:
            opts["affinity_timeout"] = str(self.affinity)
        if self.hairpin_snat:
            opts["hairpin_snat_ip"] = HAIRPIN_SNAT
        return opts


@dataclass(frozen=True)
class Cluster:
    seed: int
    n: int
    nodes: int  # remote chassis
    pods: dict[str, Pod] = field(repr=False)
    services: tuple[Service, ...] = field(repr=False)

    @property
    def local_pods(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.local]

    @property
    def remote_pods(self) -> list[Pod]:
        return [p for p in self.pods.values() if not p.local]

    def new_pod(self, node: int, next_index: dict[int, int]) -> Pod:
        """A pod added on ``node`` after the generated ones (``next_index``:
        the caller's count per node, advanced), kept in ``pods``."""
        base = max(p.index for p in self.pods.values() if p.node == node) + 1
        idx = next_index.get(node, base)
        next_index[node] = idx + 1
        pod = make_pod(node, idx)
        self.pods[pod.name] = pod
        return pod

    def stats(self) -> dict[str, Any]:
        """What the SB will hold, for the results file."""
        s = self.services
        slots = [len(x.backends) * len(x.vip_ports) for x in s]
        local = {p.name for p in self.local_pods}
        return {
            "seed": self.seed, "services": len(s), "vips": sum(len(x.vip_ports) for x in s),
            "backend_slots": sum(slots),
            "local_backend_slots": sum(sum(b in local for b in x.backends) * len(x.vip_ports)
                                       for x in s),
            "backends_per_vip_max": max((len(x.backends) for x in s), default=0),
            "udp": sum(x.protocol == "udp" for x in s), "ipv6": sum(x.ipv6 for x in s),
            "two_port": sum(len(x.vip_ports) > 1 for x in s),
            "affinity": sum(bool(x.affinity) for x in s),
            "hairpin_snat_ip": sum(x.hairpin_snat for x in s),
            "service_monitors": sum(len(x.backends) * len(x.vip_ports) for x in s if x.health),
            "remote_pods": len(self.remote_pods), "local_pods": len(self.local_pods),
            "remote_chassis": self.nodes,
        }


def local_port_args(names: Iterable[str]) -> list[str]:
    """``ovs-vsctl`` arguments that plug local pods into br-int: an internal
    port ``lp<i>`` each, with the pod's ``iface-id``."""
    args: list[str] = []
    for name in names:
        port = "lp" + name.rsplit("-", 1)[1]
        args += ["--", "add-port", "br-int", port, "--", "set", "Interface", port,
                 "type=internal", f"external_ids:iface-id={name}"]
    return args


def chassis_name(node: int) -> str:
    return f"node-{node}"


def make_pod(node: int, index: int) -> Pod:
    hi, lo = divmod(index, 250)
    return Pod(name=f"pod-{node}-{index}", node=node, index=index,
               mac=f"0a:58:{node:02x}:{index >> 16 & 0xff:02x}:{index >> 8 & 0xff:02x}:"
                   f"{index & 0xff:02x}",
               ip4=f"10.{node}.{hi}.{lo + 2}", ip6=f"fd00:{node:x}::{index + 2:x}")


def backend_count(rng: random.Random) -> int:
    """Skewed: most services have 1-3 endpoints, some 10-50, a few 100+."""
    r = rng.random()
    if r < 0.85:
        return rng.randint(1, 3)
    if r < 0.98:
        return rng.randint(10, 50)
    return rng.randint(100, 120)


def generate(n: int, seed: int = 17, nodes: int = 50) -> Cluster:
    rng = random.Random(seed)
    n_local = max(4, min(250, n // 20))
    n_remote = max(nodes, round(n * 3.26))
    pods = {p.name: p for p in (make_pod(0, i) for i in range(n_local))}
    for i in range(n_remote):
        p = make_pod(1 + i % nodes, i // nodes)
        pods[p.name] = p
    local_names = [p.name for p in pods.values() if p.local]
    remote_names = [p.name for p in pods.values() if not p.local]
    services = []
    for i in range(n):
        protocol = "udp" if rng.random() < 0.1 else "tcp"
        ipv6 = rng.random() < 0.1
        k = min(backend_count(rng), len(remote_names))
        chosen: list[str] = []
        while len(chosen) < k:
            pool = local_names if rng.random() < 0.1 else remote_names
            name = rng.choice(pool)
            if name not in chosen:
                chosen.append(name)
        vip_ports: tuple[tuple[int, int], ...] = (PORTS[protocol],)
        if protocol == "tcp" and rng.random() < 0.05:
            vip_ports += (SECOND_PORT,)
        hi, lo = divmod(i, 250)
        vip = f"fd00:30::{i + 1:x}" if ipv6 else f"172.30.{hi}.{lo + 1}"
        affinity = rng.choice(AFFINITY_TIMEOUTS) if rng.random() < 0.25 else None
        hairpin = rng.random() < 0.1
        all_remote = not any(pods[c].local for c in chosen)
        health = not ipv6 and all_remote and rng.random() < 0.3
        services.append(Service(f"svc-{i}", protocol, ipv6, vip_ports, vip, tuple(chosen),
                                affinity, hairpin, health))
    return Cluster(seed, n, nodes, pods, tuple(services))


# ------------------------------------------------------------------ NB


def _named(name: str) -> list[str]:
    return ["named-uuid", name]


def _map(d: dict[str, str]) -> list[Any]:
    return ["map", [[k, v] for k, v in d.items()]]


def lsp_row(pod: Pod) -> dict[str, Any]:
    return {"name": pod.name, "addresses": pod.addresses}


def nb_topology_ops(c: Cluster, local_chassis: str) -> list[dict[str, Any]]:
    """Switches with every pod, the cluster router, the gateway router."""
    ops: list[dict[str, Any]] = []
    by_node: dict[int, list[Pod]] = {}
    for p in c.pods.values():
        by_node.setdefault(p.node, []).append(p)
    cr_ports = []
    for node in range(c.nodes + 1):
        ports = []
        for p in by_node.get(node, []):
            ops.append({"op": "insert", "table": "Logical_Switch_Port",
                        "uuid-name": f"p_{p.node}_{p.index}", "row": lsp_row(p)})
            ports.append(_named(f"p_{p.node}_{p.index}"))
        ops.append({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"rp{node}",
                    "row": {"name": f"ls{node}-cr", "type": "router", "addresses": "router",
                            "options": _map({"router-port": f"cr-ls{node}"})}})
        ports.append(_named(f"rp{node}"))
        ops.append({"op": "insert", "table": "Logical_Router_Port", "uuid-name": f"lrp{node}",
                    "row": {"name": f"cr-ls{node}", "mac": f"0a:58:{node:02x}:ff:ff:fe",
                            "networks": ["set", [f"10.{node}.255.254/16",
                                                 f"fd00:{node:x}::fffe/64"]]}})
        cr_ports.append(_named(f"lrp{node}"))
        if node == 0:
            ops.append({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": "gwp",
                        "row": {"name": "ls0-gr0", "type": "router", "addresses": "router",
                                "options": _map({"router-port": "gr0-ls0"})}})
            ports.append(_named("gwp"))
        ops.append({"op": "insert", "table": "Logical_Switch", "uuid-name": f"ls{node}",
                    "row": {"name": f"ls{node}", "ports": ["set", ports]}})
    ops.append({"op": "insert", "table": "Logical_Router",
                "row": {"name": "cr", "ports": ["set", cr_ports]}})
    ops.append({"op": "insert", "table": "Logical_Router_Port", "uuid-name": "gwlrp",
                "row": {"name": "gr0-ls0", "mac": "0a:58:00:ff:ff:fd",
                        "networks": ["set", ["10.0.255.253/16", "fd00:0::fffd/64"]]}})
    ops.append({"op": "insert", "table": "Logical_Router", "row": {
        "name": "gr0", "ports": ["set", [_named("gwlrp")]],
        "options": _map({"chassis": local_chassis})}})
    return ops


def lb_row(svc: Service, pods: dict[str, Pod], extra: Iterable[str] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {"name": svc.name, "protocol": svc.protocol,
                           "vips": _map(svc.vips(pods, extra)), "options": _map(svc.options())}
    if svc.health:
        row["ip_port_mappings"] = _map({
            pods[b].ip4: f"{b}:10.{pods[b].node}.255.250" for b in (*svc.backends, *extra)})
    return row


def nb_lb_ops(c: Cluster) -> list[dict[str, Any]]:
    """Every service's LB (health checks included) in one group on ``ls0``
    and ``gr0``, and an ``nb_cfg`` bump: one NB transaction."""
    ops: list[dict[str, Any]] = []
    for i, svc in enumerate(c.services):
        row = lb_row(svc, c.pods)
        if svc.health:
            checks = []
            for j, (vip, _) in enumerate(svc.vips(c.pods).items()):
                ops.append({"op": "insert", "table": "Load_Balancer_Health_Check",
                            "uuid-name": f"hc{i}_{j}", "row": {
                                "vip": vip, "options": _map({"interval": "5", "timeout": "20",
                                                             "success_count": "3",
                                                             "failure_count": "3"})}})
                checks.append(_named(f"hc{i}_{j}"))
            row["health_check"] = ["set", checks]
        ops.append({"op": "insert", "table": "Load_Balancer", "uuid-name": f"lb{i}",
                    "row": row})
    ops.append({"op": "insert", "table": "Load_Balancer_Group", "uuid-name": "lbg", "row": {
        "name": "cluster", "load_balancer": ["set", [_named(f"lb{i}")
                                                     for i in range(len(c.services))]]}})
    for table, name in (("Logical_Switch", "ls0"), ("Logical_Router", "gr0")):
        ops.append({"op": "mutate", "table": table, "where": [["name", "==", name]],
                    "mutations": [["load_balancer_group", "insert",
                                   ["set", [_named("lbg")]]]]})
    ops.append(bump_nb_cfg())
    return ops


def nb_pod_ops(pod: Pod) -> list[dict[str, Any]]:
    """A pod added after the generated ones: its LSP on its node's switch."""
    return nb_pods_ops([pod])


def nb_pods_ops(pods: Iterable[Pod]) -> list[dict[str, Any]]:
    """Pods added after the generated ones, in one transaction: their LSPs on
    their nodes' switches."""
    ops: list[dict[str, Any]] = []
    by_switch: dict[int, list[list[str]]] = {}
    for i, pod in enumerate(pods):
        ops.append({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"np{i}",
                    "row": lsp_row(pod)})
        by_switch.setdefault(pod.node, []).append(_named(f"np{i}"))
    for node, refs in sorted(by_switch.items()):
        ops.append({"op": "mutate", "table": "Logical_Switch",
                    "where": [["name", "==", f"ls{node}"]],
                    "mutations": [["ports", "insert", ["set", refs]]]})
    return ops


def nb_lb_in_group_ops(svc: Service, pods: dict[str, Pod]) -> list[dict[str, Any]]:
    """A service added after the generated ones: its LB in the cluster's group."""
    return nb_lbs_in_group_ops([svc], pods)


def nb_lbs_in_group_ops(svcs: list[Service], pods: dict[str, Pod]) -> list[dict[str, Any]]:
    """Services added after the generated ones, in one transaction: their
    LBs in the cluster's group."""
    ops: list[dict[str, Any]] = [{"op": "insert", "table": "Load_Balancer", "uuid-name": f"lb{i}",
                                  "row": lb_row(svc, pods)} for i, svc in enumerate(svcs)]
    ops.append({"op": "mutate", "table": "Load_Balancer_Group",
                "where": [["name", "==", "cluster"]],
                "mutations": [["load_balancer", "insert",
                               ["set", [_named(f"lb{i}") for i in range(len(svcs))]]]]})
    return ops


def bump_nb_cfg() -> dict[str, Any]:
    return {"op": "mutate", "table": "NB_Global", "where": [],
            "mutations": [["nb_cfg", "+=", 1]]}


# ------------------------------------------------------------------ SB (other chassis)


def sb_chassis_ops(c: Cluster) -> list[dict[str, Any]]:
    """The other nodes' Chassis rows (each with its Geneve Encap)."""
    ops: list[dict[str, Any]] = []
    for node in range(1, c.nodes + 1):
        name = chassis_name(node)
        ops.append({"op": "insert", "table": "Encap", "uuid-name": f"e{node}", "row": {
            "type": "geneve", "ip": f"127.0.{1 + node // 250}.{node % 250 + 1}",
            "chassis_name": name, "options": _map({"csum": "true"})}})
        ops.append({"op": "insert", "table": "Chassis", "row": {
            "name": name, "hostname": name, "encaps": ["set", [_named(f"e{node}")]]}})
    return ops


def sb_bind_ops(pb_uuids: dict[str, str], chassis_uuids: dict[str, str],
                bindings: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Bind ports as their chassis's ovn-controller would: ``chassis`` and
    ``up``.  ``bindings``: (logical port, chassis name)."""
    return [{"op": "update", "table": "Port_Binding",
             "where": [["_uuid", "==", ["uuid", pb_uuids[port]]]],
             "row": {"chassis": ["uuid", chassis_uuids[ch]], "up": True}}
            for port, ch in bindings]
