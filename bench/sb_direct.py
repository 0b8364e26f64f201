"""Event samples written to the SB directly, as ovn-northd would have
written them, while the real ovn-northd is paused.

Why: at N=5000 every NB change costs ovn-northd 23.03 a full recompute
(~5 s on 2 cores), so the 200 samples per event type x 6 types x (with and
without audits) x 3 runs of issue 17 would take ~10 hours through the NB.
lbaffd reads only SB rows, and only some tables of them (``Load_Balancer``,
``Port_Binding``, ``Service_Monitor``, ...); the rows written here are copies
of rows northd wrote for the same kind of object (a pod's ``Port_Binding``
on the same switch, the ``Load_Balancer`` of the service the new one is
shaped like) with only what differs changed, so lbaffd receives what it
would have received from northd.  Not for ovn-controller: it also reads
the ``Logical_Flow`` rows northd writes for each change, which are not
written here (``python -m bench.realistic --sb-direct`` applies it to lbaffd
only).

What is not imitated: a backend added to a health-checked service would
also make northd insert a ``Service_Monitor`` row; ``backend_for`` picks
services without health checks (flips of existing monitors are their own
event type)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bench import cluster as cl

SB = "OVN_Southbound"
# columns of a row northd wrote that are not copied into a new row
_NOT_COPIED = {"_uuid", "_version"}
# a Port_Binding's columns that its chassis's ovn-controller writes, not northd
_CONTROLLER_COLUMNS = {"chassis", "up", "encap", "additional_chassis",
                       "additional_encap", "requested_additional_chassis"}

Transact = Callable[[list[dict[str, Any]]], list[Any]]


def _copy(row: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in drop}


class SbDirect:
    """Keeps the northd-written rows used as templates and the tunnel keys
    taken per switch; builds the SB operations of each event."""

    def __init__(self, transact: Transact) -> None:
        self.transact = transact
        self._pb_template: dict[str, dict[str, Any]] = {}  # datapath uuid -> PB row
        self._next_key: dict[str, int] = {}  # datapath uuid -> next free tunnel_key
        self._dp_of_node: dict[int, str] = {}

    def select(self, table: str, where: list[Any]) -> list[dict[str, Any]]:
        res = self.transact([{"op": "select", "table": table, "where": where}])
        return list(res[0]["rows"])

    def load(self, c: cl.Cluster) -> None:
        """Read the Port_Binding rows northd wrote: one template per switch
        (a pod's) and the highest tunnel key in use on each."""
        for row in self.select("Port_Binding", []):
            dp = row["datapath"][1]
            self._next_key[dp] = max(self._next_key.get(dp, 1), int(row["tunnel_key"]) + 1)
            pod = c.pods.get(row["logical_port"])
            if pod is not None and pod.node not in self._dp_of_node:
                self._dp_of_node[pod.node] = dp
                self._pb_template[dp] = _copy(row, _NOT_COPIED | _CONTROLLER_COLUMNS)

    def port_binding_insert(self, pod: cl.Pod) -> dict[str, Any]:
        """The pod's Port_Binding as northd creates it for a new LSP (unbound)."""
        dp = self._dp_of_node[pod.node]
        key = self._next_key[dp]
        self._next_key[dp] = key + 1
        row = dict(self._pb_template[dp], logical_port=pod.name, tunnel_key=key,
                   mac=pod.addresses)
        return {"op": "insert", "table": "Port_Binding", "row": row}

    def lb_insert(self, svc: cl.Service, like: cl.Service,
                  pods: dict[str, cl.Pod]) -> dict[str, Any]:
        """A new service's Load_Balancer as northd writes it for an NB LB in the
        same group as ``like``: ``like``'s SB row (datapath group, protocol,
        options) with the new name, vips and id."""
        base = self.select("Load_Balancer", [["name", "==", like.name]])[0]
        row = _copy(base, _NOT_COPIED)
        row["name"] = svc.name
        row["vips"] = cl.lb_row(svc, pods)["vips"]
        ids = dict(base["external_ids"][1]) if base.get("external_ids") else {}
        if "lb_id" in ids:
            ids["lb_id"] = str(uuid.uuid4())
        row["external_ids"] = ["map", sorted(ids.items())]
        return {"op": "insert", "table": "Load_Balancer", "row": row}

    @staticmethod
    def lb_vips_update(svc: cl.Service, pods: dict[str, cl.Pod],
                       extra: list[str]) -> dict[str, Any]:
        """northd copies the NB ``vips`` into the SB row unchanged."""
        return {"op": "update", "table": "Load_Balancer", "where": [["name", "==", svc.name]],
                "row": {"vips": cl.lb_row(svc, pods, extra)["vips"]}}

    @staticmethod
    def lb_delete(name: str) -> dict[str, Any]:
        return {"op": "delete", "table": "Load_Balancer", "where": [["name", "==", name]]}


def backend_for(services: tuple[cl.Service, ...], i: int, unchecked: bool = False) -> int:
    """The service the i-th backend is added to: a stride through the
    services; with ``unchecked`` (the direct samples), the next one from there
    without health checks."""
    n = len(services)
    s = (i * 7919 + 3) % n
    if not unchecked:
        return s
    for step in range(n):
        k = (s + step) % n
        if not services[k].health:
            return k
    raise ValueError("every service is health-checked")
