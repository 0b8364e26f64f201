"""``bench/sb_direct.py`` writes event samples to the SB as ovn-northd would:
held to what Debian's real ovn-northd writes for the same NB change."""

from __future__ import annotations

from typing import Any

import pytest

from bench import cluster as cl
from bench.sb_direct import SbDirect, backend_for
from lbaffd_sandbox.sandbox import started_sandbox

pytestmark = pytest.mark.integration

NB = "OVN_Northbound"


def canonical(value: Any) -> Any:
    """An OVSDB JSON value with maps and sets in a fixed order, a one-element
    set as its element (the server answers either way)."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return ("map", tuple(sorted((canonical(k), canonical(v)) for k, v in value[1])))
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        items = sorted((canonical(x) for x in value[1]), key=repr)
        return items[0] if len(items) == 1 else ("set", tuple(items))
    if isinstance(value, list):
        return tuple(canonical(x) for x in value)
    return value


def same_as_northd(op: dict[str, Any], northd_row: dict[str, Any],
                   ignore: set[str]) -> dict[str, Any]:
    """The columns the direct row sets that differ from northd's row."""
    return {k: (v, northd_row.get(k)) for k, v in op["row"].items()
            if k not in ignore and canonical(v) != canonical(northd_row.get(k))}


def test_direct_rows_are_the_rows_northd_writes() -> None:
    c = cl.generate(24, seed=5, nodes=3)
    with started_sandbox("lbsd-", nb=True) as sb:
        def nb(ops: list[dict[str, Any]]) -> None:
            sb.transact(ops, db=NB, remote=sb.nb_remote)
            sb.nbctl("--wait=sb", "sync")

        nb(cl.nb_topology_ops(c, sb.chassis))
        nb(cl.nb_lb_ops(c))
        direct = SbDirect(sb.transact)
        direct.load(c)

        def sb_row(table: str, where: list[Any]) -> dict[str, Any]:
            rows = direct.select(table, where)
            assert len(rows) == 1, (table, where, rows)
            return rows[0]

        # a new pod's Port_Binding, on a remote switch and on the local one
        for node in (2, 0):
            pod = c.new_pod(node, {})
            op = direct.port_binding_insert(pod)
            nb(cl.nb_pod_ops(pod))
            row = sb_row("Port_Binding", [["logical_port", "==", pod.name]])
            assert same_as_northd(op, row, {"tunnel_key"}) == {}
            # a key no other port of that switch has (northd picked its own)
            keys = [r["tunnel_key"] for r in direct.select(
                "Port_Binding", [["datapath", "==", row["datapath"]]])
                if r["_uuid"] != row["_uuid"]]
            assert op["row"]["tunnel_key"] not in keys

        # a backend added to a service without health checks
        s = backend_for(c.services, 1, unchecked=True)
        svc = c.services[s]
        assert not svc.health
        pod = c.new_pod(1, {})
        nb(cl.nb_pod_ops(pod))
        op = SbDirect.lb_vips_update(svc, c.pods, [pod.name])
        nb([{"op": "update", "table": "Load_Balancer", "where": [["name", "==", svc.name]],
             "row": cl.lb_row(svc, c.pods, [pod.name])}])
        assert same_as_northd(op, sb_row("Load_Balancer", [["name", "==", svc.name]]),
                              set()) == {}

        # a new load balancer shaped like an existing one, in the same group
        for like in (c.services[0], next(x for x in c.services if x.ipv6),
                     next(x for x in c.services if x.affinity and x.protocol == "udp")):
            new = cl.Service(f"extra-{like.name}", like.protocol, like.ipv6, like.vip_ports,
                             "fd00:31::77" if like.ipv6 else "172.31.9.9", like.backends,
                             like.affinity, like.hairpin_snat, False)
            op = direct.lb_insert(new, like, c.pods)
            nb(cl.nb_lb_in_group_ops(new, c.pods))
            row = sb_row("Load_Balancer", [["name", "==", new.name]])
            assert same_as_northd(op, row, {"external_ids"}) == {}
            # the same keys in external_ids (lb_id: the NB row's, a fresh one here)
            assert ({k for k, _ in op["row"]["external_ids"][1]}
                    == {k for k, _ in row["external_ids"][1]})
