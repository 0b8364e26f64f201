"""What lbaffd reads of ovn-controller's use of br-int (companion mode and the
safety checks of the other modes): thin I/O around ``ovnlayout``/``companion``.

The switch is the source of truth: whether another controller's flows are in
a table, and where ovn-controller outputs to each local port, are asked of
ovs-vswitchd, never assumed from an OVN version.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from lbaffd.model import ownership as own
from lbaffd.model.ovnlayout import OvnLayout, discover
from lbaffd.openflow import messages, packed
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.flowspec import FlowSpec
from lbaffd.ops.daemonize import process_alive

OFPTT_ALL = 0xFF
# ofp_flow_desc: length, pad, table, pad, priority, idle, hard, flags,
# importance, then the cookie (OpenFlow 1.5.1 section 7.3.5.2)
COOKIE_OFFSET = 16
COOKIE_AT = struct.Struct("!Q")


class FlowDumper(Protocol):
    def dump_flow_desc(self, cookie: int, cookie_mask: int, table_id: int = ...,
                       out_port: int = ...) -> list[Any]: ...


def flows(channel: FlowDumper, table: int = OFPTT_ALL, out_port: int = 0xFFFFFFFF
          ) -> list[FlowSpec]:
    """Every flow of ``table`` (or all tables) that outputs to ``out_port``
    (ANY: no filter), decoded; lbaffd's own included."""
    out: list[FlowSpec] = []
    for part in channel.dump_flow_desc(0, 0, table, out_port):
        for offset, _, _ in iter_entries(part.raw):
            out.append(messages.decode_flow(part.raw, offset))
    return out


def foreign(specs: Iterable[FlowSpec]) -> list[FlowSpec]:
    """Flows lbaffd did not write (nor learn)."""
    return [f for f in specs if not (own.is_managed(f.cookie) or own.is_learned(f.cookie))]


def cookies(channel: FlowDumper, table: int) -> Iterator[int]:
    """The cookie of every flow of ``table``, read from each flow-desc entry's
    fixed part: nothing decoded (a restart's check of lbaffd's own tables
    read back its 50k flows at N=5000; decoding them took seconds)."""
    for part in channel.dump_flow_desc(0, 0, table):
        for offset, _, _ in iter_entries(part.raw):
            yield COOKIE_AT.unpack_from(part.raw, offset + COOKIE_OFFSET)[0]


def foreign_in_tables(channel: FlowDumper, tables: Iterable[int]) -> dict[int, int]:
    """Per table of ``tables``: how many flows of another controller it holds."""
    counts: dict[int, int] = {}
    for table in sorted(set(tables)):  # one request a table: OVN's others may be 100k flows
        n = sum(1 for c in cookies(channel, table)
                if not (own.is_managed(c) or own.is_learned(c)))
        if n:
            counts[table] = n
    return counts


def foreign_ids(channel: FlowDumper, tables: Iterable[int]) -> frozenset[bytes]:
    """The (table, priority, match) of other controllers' flows in ``tables``,
    in the form lbaffd's desired state keys flows by (``packed.flow_id``)."""
    ids: set[bytes] = set()
    for table in sorted(set(tables)):
        for f in foreign(flows(channel, table)):
            try:
                ids.add(packed.flow_id(packed.pack_flow(replace(f, actions=(), cookie=0))))
            except (ValueError, KeyError, TypeError, struct.error):
                continue  # a match field lbaffd never writes: no key of lbaffd's equals it
    return frozenset(ids)


def read_layout(channel: FlowDumper, ofports: Iterable[int]) -> OvnLayout | None:
    """OVN's output table and per-port output matches, from the flows that
    output to each local port (OpenFlow's ``out_port`` filter: a few flows a
    port, whatever the size of OVN's tables)."""
    return discover({p: flows(channel, out_port=p) for p in ofports})


def ovn_controller_running(ovn_rundir: str) -> bool:
    """ovn-controller's pidfile names a live process (``ovn-ctl`` and the
    systemd unit write ``<OVN rundir>/ovn-controller.pid``)."""
    try:
        with open(os.path.join(ovn_rundir, "ovn-controller.pid")) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return False
    return pid > 0 and process_alive(pid)


def managed_by_ovn(external_ids: Mapping[str, str], table0_foreign: int,
                   ovn_rundir: str) -> tuple[bool, str]:
    """Does ovn-controller manage this bridge?  Its flows are in table 0, or
    the chassis is configured for OVN (``external_ids:ovn-remote``) and
    ovn-controller runs.  Returns the answer and why."""
    if table0_foreign:
        return True, f"{table0_foreign} flows of another controller in table 0"
    if external_ids.get("ovn-remote") and ovn_controller_running(ovn_rundir):
        return True, "external_ids:ovn-remote is set and ovn-controller runs"
    return False, "no other controller's flows in table 0 and no ovn-controller running"
