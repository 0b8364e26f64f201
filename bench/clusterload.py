"""``bench.cluster``'s realistic SB loaded into one sandbox, and the changes a
cluster keeps making to it, for the long-running benchmarks (``bench.soak``,
``bench.memprobe``).

The sandbox runs an NB and the real ovn-northd (``started_sandbox(nb=True)``):
the NB is written as ``bench.realistic`` writes it (every pod, the cluster
and gateway routers, every service in one ``Load_Balancer_Group``), northd
writes the SB lbaffd reads, the other chassis's ovn-controllers are played
by SB writes (their Chassis rows, their pods' binding) and so is this
chassis's (its pods bound here, an OVS internal port with each pod's
``iface-id``).  Beside the cluster, a few real hosts (a client and three
backends in namespaces, on this chassis's switch) behind a VIP with a short
``affinity_timeout``: affinity entries are learned and expire under real
traffic.

Each change method makes one change the way the cluster would (an endpoint
replaced, a service replaced, a pod started or stopped here or elsewhere, a
health check flipping); none waits for lbaffd."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from bench import cluster as cl
from bench.common import ovsdb_select
from lbaffd_sandbox.sandbox import ConnResult, Host, Sandbox, ovsdb_transact
from lbaffd_sandbox.topology import mac_of

NB = "OVN_Northbound"
SB = "OVN_Southbound"
REAL_VIP, REAL_PORT, REAL_BACKEND_PORT = "10.0.250.100", 80, 8080
# on ls0, outside its pods' addresses (10.0.0.2-10.0.0.251 for <= 250 local pods)
REAL_HOSTS = {"cli1": ("10.0.250.11", 11), "be1": ("10.0.250.21", 21),
              "be2": ("10.0.250.22", 22), "be3": ("10.0.250.23", 23)}
CLIENT_IPS = [f"10.0.250.{150 + i}" for i in range(8)]


@dataclass
class ClusterLoad:
    """The loaded cluster and the bookkeeping its changes need."""

    sb: Sandbox
    c: cl.Cluster
    rng: random.Random
    pb_uuids: dict[str, str] = field(default_factory=dict)
    chassis_uuids: dict[str, str] = field(default_factory=dict)
    backends: dict[str, list[str]] = field(default_factory=dict)  # service -> pod names
    services: dict[str, cl.Service] = field(default_factory=dict)
    monitors: list[str] = field(default_factory=list)  # Service_Monitor uuids
    offline: list[str] = field(default_factory=list)
    remote_started: list[str] = field(default_factory=list)  # pods this load started
    local_spare: list[str] = field(default_factory=list)  # local pods not plugged
    local_plugged: list[str] = field(default_factory=list)  # plugged by this load
    next_pod: dict[int, int] = field(default_factory=dict)
    created: int = 0
    hosts: dict[str, Host] = field(default_factory=dict)

    # ------------------------------------------------------------ plumbing

    def nb(self, ops: list[dict[str, Any]], timeout: float = 300) -> list[object]:
        return ovsdb_transact(self.sb.nb_remote, NB, ops, timeout)

    def select(self, remote: str, db: str, table: str, columns: list[str],
               where: list[Any] | None = None) -> list[dict[str, Any]]:
        return ovsdb_select(remote, db, table, columns, where)

    def _bind(self, bindings: list[tuple[str, str]]) -> None:
        self.sb.transact(cl.sb_bind_ops(self.pb_uuids, self.chassis_uuids, bindings))

    def _port_binding(self, pod: str, timeout: float = 60) -> str:
        """The uuid of the Port_Binding northd made for ``pod``."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.select(self.sb.sb_remote, SB, "Port_Binding", ["_uuid"],
                               [["logical_port", "==", pod]])
            if rows:
                self.pb_uuids[pod] = rows[0]["_uuid"][1]
                return self.pb_uuids[pod]
            if time.monotonic() > deadline:
                raise TimeoutError(f"northd made no Port_Binding for {pod}")
            time.sleep(0.02)

    def add_ports(self, names: list[str]) -> None:
        """OVS internal ports for local pods, each with its ``iface-id``."""
        if names:
            self.sb.vsctl(*cl.local_port_args(names))

    def _new_pod(self, node: int) -> cl.Pod:
        return self.c.new_pod(node, self.next_pod)

    def _lsp_add(self, pod: cl.Pod) -> None:
        self.nb(cl.nb_pod_ops(pod))

    def _lsp_del(self, pod: cl.Pod) -> None:
        rows = self.select(self.sb.nb_remote, NB, "Logical_Switch_Port", ["_uuid"],
                           [["name", "==", pod.name]])
        if not rows:
            return
        ref = ["uuid", rows[0]["_uuid"][1]]
        self.nb([{"op": "mutate", "table": "Logical_Switch",
                  "where": [["name", "==", f"ls{pod.node}"]],
                  "mutations": [["ports", "delete", ["set", [ref]]]]},
                 {"op": "delete", "table": "Logical_Switch_Port",
                  "where": [["_uuid", "==", ref]]}])
        self.pb_uuids.pop(pod.name, None)

    # ------------------------------------------------------------ setup

    def setup(self, timeout: float = 600) -> None:
        """Topology, bindings and ports first, the services last (one NB
        transaction), then the real hosts and their VIP; returns once
        northd has written it all."""
        sb, c = self.sb, self.c
        n_local = len(c.local_pods)
        # a sixth of the local pods are left unplugged, for the local port churn
        keep = n_local - max(2, n_local // 6)
        self.local_spare = [p.name for p in c.local_pods[keep:]]
        self.nb(cl.nb_topology_ops(c, sb.chassis), timeout)
        sb.nbctl("--wait=sb", "sync", timeout=int(timeout))
        sb.transact(cl.sb_chassis_ops(c))
        self.pb_uuids = {r["logical_port"]: r["_uuid"][1] for r in self.select(
            sb.sb_remote, SB, "Port_Binding", ["_uuid", "logical_port"])}
        self.chassis_uuids = {r["name"]: r["_uuid"][1] for r in self.select(
            sb.sb_remote, SB, "Chassis", ["_uuid", "name"])}
        plugged = [p.name for p in c.local_pods[:keep]]
        self._bind([(p.name, cl.chassis_name(p.node)) for p in c.remote_pods]
                   + [(name, sb.chassis) for name in plugged])
        self.add_ports(plugged)
        self.services = {s.name: s for s in c.services}
        self.backends = {s.name: list(s.backends) for s in c.services}
        self.nb(cl.nb_lb_ops(c), timeout)
        self._real_hosts()
        sb.nbctl("--wait=sb", "sync", timeout=int(timeout))
        self.monitors = [r["_uuid"][1] for r in self.select(
            sb.sb_remote, SB, "Service_Monitor", ["_uuid"])]

    def _real_hosts(self, affinity_timeout: int = 8) -> None:
        """A client and three backends on ``ls0`` behind ``REAL_VIP`` (in the
        cluster's LB group, so realized like every service)."""
        sb = self.sb
        for name, (ip, ofport) in REAL_HOSTS.items():
            self.hosts[name] = sb.add_host(name, ip, mac_of(ip), ofport, iface_id=name)
            sb.nbctl("lsp-add", "ls0", name, "--", "lsp-set-addresses", name,
                     f"{mac_of(ip)} {ip}", timeout=120)
            if name.startswith("be"):
                sb.start_server(self.hosts[name], REAL_BACKEND_PORT)
        for ip in CLIENT_IPS:
            self.hosts["cli1"].add_address(ip)
        bes = ",".join(f"{REAL_HOSTS[b][0]}:{REAL_BACKEND_PORT}" for b in ("be1", "be2", "be3"))
        self.nb([{"op": "insert", "table": "Load_Balancer", "uuid-name": "lb", "row": {
                     "name": "real", "protocol": "tcp",
                     "vips": ["map", [[f"{REAL_VIP}:{REAL_PORT}", bes]]],
                     "options": ["map", [["affinity_timeout", str(affinity_timeout)]]]}},
                 {"op": "mutate", "table": "Load_Balancer_Group",
                  "where": [["name", "==", "cluster"]],
                  "mutations": [["load_balancer", "insert", ["set", [["named-uuid", "lb"]]]]]}])
        sb.nbctl("--wait=sb", "sync", timeout=600)
        for name in REAL_HOSTS:
            self._port_binding(name)
        self._bind([(name, sb.chassis) for name in REAL_HOSTS])

    # ------------------------------------------------------------ changes

    def lasting_pods(self) -> list[cl.Pod]:
        """The pods a service may take as backends: not the ones ``remote_port``
        started, which it removes again (a backend whose pod is gone made that
        service's next churn fail: a KeyError in the soak)."""
        transient = set(self.remote_started)
        return [p for p in self.c.pods.values() if p.name not in transient]

    def lb_churn(self) -> None:
        """One endpoint of one service replaced by another pod (an endpoint
        slice change); the backend set's size stays."""
        # not a health-checked one: its Service_Monitor rows stay those of the start
        name = self.rng.choice(sorted(n for n, s in self.services.items() if not s.health))
        svc, bes = self.services[name], self.backends[name]
        pool = [p for p in self.lasting_pods() if p.name not in bes]
        new = self.rng.choice(pool).name
        bes[self.rng.randrange(len(bes))] = new
        vips = _vips(svc, self.c.pods, bes)
        self.nb([{"op": "update", "table": "Load_Balancer", "where": [["name", "==", name]],
                  "row": {"vips": ["map", [[k, v] for k, v in vips.items()]]}}])

    def service_replace(self) -> None:
        """A service deleted and another created (new name, new VIP): the
        daemon must keep nothing of the VIPs that went."""
        gone = self.rng.choice(sorted(n for n, s in self.services.items() if not s.health))
        rows = self.select(self.sb.nb_remote, NB, "Load_Balancer", ["_uuid"],
                           [["name", "==", gone]])
        self.created += 1
        base = self.services.pop(gone)
        del self.backends[gone]
        i = self.created
        ip = f"fd00:31::{i:x}" if base.ipv6 else f"172.31.{i // 250 % 250}.{i % 250 + 1}"
        bes = tuple(self.rng.sample([p.name for p in self.lasting_pods()],
                                    len(base.backends)))
        new = cl.Service(f"svc-new-{i}", base.protocol, base.ipv6, base.vip_ports, ip, bes,
                         base.affinity, base.hairpin_snat, False)
        self.services[new.name], self.backends[new.name] = new, list(bes)
        ops = cl.nb_lb_in_group_ops(new, self.c.pods)
        if rows:
            ref = ["uuid", rows[0]["_uuid"][1]]
            ops = [{"op": "mutate", "table": "Load_Balancer_Group",
                    "where": [["name", "==", "cluster"]],
                    "mutations": [["load_balancer", "delete", ["set", [ref]]]]},
                   {"op": "delete", "table": "Load_Balancer", "where": [["_uuid", "==", ref]]},
                   *ops]
        self.nb(ops)

    def health_flip(self) -> None:
        """A health check's status flips (written by the backend's chassis's
        ovn-controller); at most a few are offline at a time."""
        if not self.monitors:
            return
        if self.offline and (len(self.offline) > 3 or self.rng.random() < 0.5):
            uuid, status = self.offline.pop(0), "online"
        else:
            uuid, status = self.rng.choice(self.monitors), "offline"
            self.offline.append(uuid)
        self.sb.transact([{"op": "update", "table": "Service_Monitor",
                           "where": [["_uuid", "==", ["uuid", uuid]]],
                           "row": {"status": status}}])

    def remote_port(self) -> None:
        """A pod starts on another node (its LSP; its chassis binds it), or
        one started earlier goes."""
        if self.remote_started and (len(self.remote_started) > 20 or self.rng.random() < 0.5):
            self._lsp_del(self.c.pods.pop(self.remote_started.pop(0)))
            return
        pod = self._new_pod(1 + self.rng.randrange(self.c.nodes))
        self._lsp_add(pod)
        self._port_binding(pod.name)
        self._bind([(pod.name, cl.chassis_name(pod.node))])
        self.remote_started.append(pod.name)

    def local_port(self) -> None:
        """A pod plugged here (LSP, binding, OVS port with its iface-id), or
        one plugged earlier unplugged (all three gone)."""
        if self.local_plugged and (not self.local_spare or self.rng.random() < 0.5):
            name = self.local_plugged.pop(0)
            self.sb.vsctl("--if-exists", "del-port", "br-int", "lp" + name.rsplit("-", 1)[1])
            self._lsp_del(self.c.pods[name])
            self.local_spare.append(name)
            return
        name = self.local_spare.pop(0)
        pod = self.c.pods[name]
        rows = self.select(self.sb.nb_remote, NB, "Logical_Switch_Port", ["_uuid"],
                           [["name", "==", name]])
        if not rows:
            self._lsp_add(pod)
        self._port_binding(name)
        self._bind([(name, self.sb.chassis)])
        self.add_ports([name])
        self.local_plugged.append(name)

    def traffic(self) -> list[ConnResult]:
        """Four new connections to the real VIP from rotating client
        addresses (entries refreshed, others idling out), each with its
        outcome (a failed one says why: refused, timed out, ...)."""
        k = self.rng.randrange(len(CLIENT_IPS) - 3)
        return self.sb.connect("cli1", REAL_VIP, REAL_PORT, count=4,
                               src_ips=CLIENT_IPS[k:k + 4], timeout=2.0)


def _vips(svc: cl.Service, pods: dict[str, cl.Pod], names: list[str]) -> dict[str, str]:
    """``svc``'s NB ``vips`` with ``names`` as its backends."""
    return cl.Service(svc.name, svc.protocol, svc.ipv6, svc.vip_ports, svc.vip_ip,
                      tuple(names)).vips(pods)


def load(sb: Sandbox, n: int, seed: int = 17, nodes: int = 50) -> ClusterLoad:
    """The cluster of ``bench.cluster.generate(n, seed, nodes)`` in ``sb``
    (started with ``nb=True``)."""
    out = ClusterLoad(sb, cl.generate(n, seed, nodes), random.Random(seed + 1))
    out.setup()
    return out
