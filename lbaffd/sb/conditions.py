"""Conditional monitoring of the SB: receive only the rows of local interest.

Without it every lbaffd receives every Port_Binding and Load_Balancer of the
cluster: the fan-out ovn-controller avoids with ``ovn-monitor-all=false``
(``update_sb_monitors`` in ovn-controller.c sets OVSDB ``monitor_cond``
conditions on the datapaths it has found local, and widens them as it finds
more).  lbaffd asks the same way (RFC 7047 ``monitor_cond`` /
``monitor_cond_change``, done by the ``ovs`` IDL's ``cond_change``):

- Port_Binding: every ``patch``/``l3gateway``/``chassisredirect`` port (they
  decide which datapaths are local, as in ovn-controller), the ports bound to
  this chassis, the ports named by a local interface's ``iface-id``, and every
  port of a local datapath (backend MACs, hairpin);
- Logical_DP_Group: the groups with a local datapath;
- Load_Balancer: the LBs on a local datapath, directly or through one of
  those groups (``datapath_group`` and, where the schema has them,
  ``ls_datapath_group``/``lr_datapath_group``).

Datapath_Binding, Chassis and Service_Monitor stay whole (small tables; a
backend's monitor may sit on any chassis).  One consequence: a monitor's
logical port on a datapath that is not local is not received, so its
"bound to other addresses" check cannot apply and the monitor is matched by
address, port and protocol only.

The monitor starts without conditions: the first full pass (after a start
or restart) works from a complete read, and only then are the conditions
narrowed to what it found local.  Starting narrow and widening in rounds
(local ports -> their datapaths -> their groups -> their LBs) is not safe
for a first pass: ovsdb-server 3.1 acknowledges a ``monitor_cond_change``
before it has sent the rows the new condition matches (seen at 1000 LBs:
the acknowledged first pass had no LB yet and removed every flow, which the
next pass put back).  Later widenings (a datapath becoming local) just bring
rows in, which arrive as changes; narrowing removes rows that compiled to
nothing here.  ``--monitor-all`` switches all of this off.

A reconnect (SB ovsdb-server restart, failover, a dropped connection) asks
with the last narrow conditions from its first request, so nothing of a
datapath that is not local is received again and nothing here resets them
(``self._current`` stays: the IDL already holds what it stands for).  In
python-ovs 3.1 (Debian's python3-openvswitch 3.1.0, ``ovs/db/idl.py``):
``Idl.run`` calls ``restart_fsm`` for every new connection (lines 441-445),
which calls ``sync_conditions`` (403-409); that marks every table's condition
acknowledged (``request()`` + ``ack()``, 390-397: a change still in flight,
or set while disconnected, becomes the acknowledged one), or, when a
``monitor_cond_since`` transaction id is known, turns a change in flight back
into a new one and forgets the id (398-401, ``ConditionState.reset`` 133-141:
the reconnect then asks with the previous acknowledged condition and sends the
new one after the reply);
``__send_monitor_request`` then puts each table's acknowledged condition in
the ``where`` of the ``monitor_cond``/``monitor_cond_since`` request (847-851).
The reply carries the matching rows in full (it is not acknowledged before
them, unlike a ``monitor_cond_change``); a reply without history is a new
dump of the rows under those conditions (python-ovs clears the old rows first,
``__clear``, 491-498 and 760-771, which also sets ``cond_seqno`` to 0; lbaffd
compares it with the rows it holds instead: a held row it does not bring is
deleted, ``NotifyingIdl._Idl__clear``).  ``tests/integration/test_sb_reconnect.py``
restarts the SB under a narrowed daemon: the new connection brings and holds
only the local rows."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from lbaffd.model.records import SbSnapshot
from lbaffd.model.topology import Topology
from lbaffd.sb.monitor import DbMonitor
from lbaffd.sb.rows import lb_group_columns

log = structlog.get_logger("lbaffd")

Condition = list[Any]
STRUCTURAL_TYPES = ("patch", "l3gateway", "chassisredirect")


@dataclass(frozen=True, slots=True)
class Interest:
    chassis_uuid: str | None
    iface_ids: frozenset[str]
    datapaths: frozenset[str]  # local datapath uuids
    groups: frozenset[str]  # Logical_DP_Group uuids with a local datapath


def interest(snap: SbSnapshot, topo: Topology, chassis_uuid: str | None) -> Interest:
    local = topo.local_datapaths
    dps = frozenset(u for u, dp in snap.datapaths.items() if dp.tunnel_key in local)
    groups = frozenset(u for u, g in snap.dp_groups.items() if dps.intersection(g.datapaths))
    return Interest(chassis_uuid, frozenset(i.iface_id for i in snap.interfaces), dps, groups)


def conditions(want: Interest, group_columns: Iterable[str]) -> dict[str, Condition]:
    """The monitor conditions for ``want`` (deterministic: sorted clauses)."""
    pb: Condition = [["type", "==", t] for t in STRUCTURAL_TYPES]
    if want.chassis_uuid:
        pb.append(["chassis", "==", ["uuid", want.chassis_uuid]])
    pb += [["logical_port", "==", name] for name in sorted(want.iface_ids)]
    pb += [["datapath", "==", ["uuid", d]] for d in sorted(want.datapaths)]
    dpg: Condition = [["datapaths", "includes", ["uuid", d]] for d in sorted(want.datapaths)]
    lb: Condition = [["datapaths", "includes", ["uuid", d]] for d in sorted(want.datapaths)]
    lb += [[col, "==", ["uuid", g]] for g in sorted(want.groups) for col in group_columns]
    return {"Port_Binding": pb, "Logical_DP_Group": dpg or [False],
            "Load_Balancer": lb or [False]}


class _Wake:
    """A no-op item for ovsdbapp's transaction queue: the only way to wake
    its connection thread (blocked in poll) so that the IDL sends a
    condition change now rather than with the next update from the server."""

    def __init__(self) -> None:
        self.results: queue.Queue[Any] = queue.Queue()

    def do_commit(self) -> None:
        return None


class SbConditions:
    """The SB monitor's conditions, owned by the worker."""

    def __init__(self, mon: DbMonitor, chassis: str) -> None:
        self.mon = mon
        self.chassis = chassis
        self._chassis_uuid: str | None = None
        self._current: dict[str, Condition] | None = None
        # what ``_current`` was made from (by identity: the snapshot's and
        # topology's parts are immutable, and an LB change or health flip
        # keeps them; recomputing was ~0.7 ms of each such step at N=5000)
        self._made_from: tuple[object, ...] = ()

    def _chassis(self) -> str | None:
        """This chassis's Chassis row (the Chassis table is received whole);
        call with the lock held."""
        if self._chassis_uuid is None:
            for r in self.mon.rows("Chassis"):
                if r.name == self.chassis:
                    self._chassis_uuid = str(r.uuid)
        return self._chassis_uuid

    def _acknowledged(self, idl: Any) -> bool:
        """The server has every table's current condition: the IDL holds it
        as acknowledged, with nothing newer pending.  Read from the IDL's
        ``ConditionState`` rather than counted in ``cond_seqno``: a reconnect
        acknowledges the conditions without a ``monitor_cond_change``
        (``sync_conditions``) and a reply without history sets ``cond_seqno``
        back to 0 (``__clear``), so a number taken before it was never reached
        again; and python-ovs 3.1's ``cond_change`` returns a number one too
        high (it tests ``request``, a method, for ``requested``)."""
        assert self._current is not None
        for table, cond in self._current.items():
            t = idl.tables.get(table)
            if t is None:
                continue
            state = t.condition_state
            if state.new is not None or state.requested is not None or state.acked != cond:
                return False
        return True

    def update(self, snap: SbSnapshot, topo: Topology) -> bool:
        """Ask for the conditions of what ``snap``/``topo`` make local if they
        are new; True once the server has acknowledged the ones asked for
        (their rows may still be on their way)."""
        idl = self.mon.idl
        if idl is None:
            return False
        changed = False
        with self.mon.conn.lock:
            chassis = self._chassis()
            made_from = (snap.datapaths, snap.dp_groups, snap.interfaces, topo.local_ports,
                         topo.attached, chassis)
            if len(made_from) == len(self._made_from) and all(
                    a is b for a, b in zip(made_from, self._made_from, strict=True)):
                return self._acknowledged(idl)
            want = interest(snap, topo, chassis)
            conds = conditions(want, lb_group_columns(self.mon))
            self._made_from = made_from
            if conds != self._current:
                # one monitor_cond_change carries every table's new condition;
                # it is sent after the one in flight, if any, is acknowledged.
                for table, cond in conds.items():
                    if table in idl.tables:
                        idl.cond_change(table, cond)
                self._current, changed = conds, True
                log.info("sb_conditions", datapaths=len(want.datapaths),
                         groups=len(want.groups), ports=len(want.iface_ids),
                         clauses=sum(len(c) for c in conds.values()))
            acked = self._acknowledged(idl)
        if changed:  # outside the lock: the connection thread takes it to send
            with contextlib.suppress(queue.Full):  # a wake-up already pending will do
                self.mon.conn.txns.put_nowait(_Wake())
        return acked
