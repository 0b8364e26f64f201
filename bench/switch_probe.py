"""How long ovs-vswitchd itself takes to answer right after it reported a
new port's ofport: a barrier sent on a connection of the bench's own the
moment the local DB's update arrives (``OvsdbWatch.on_update``).

A local port's flows cannot be applied before the port has an ofport, and
right after ovs-vswitchd writes it to the database its main thread is still
finishing the port (on the netdev datapath: the port's rx queues, the PMD
reload, the bridge's reconfiguration), answering no OpenFlow connection
meanwhile.  That time is the floor under lbaffd's (or any controller's)
``local_port_added`` latency measured from the ofport's arrival; the bench
reports it next to lbaffd's figure (``switch_ms``)."""

from __future__ import annotations

import contextlib
import threading
import time

from bench.ovsdb_watch import Update
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.replies import ConnectionLost, OpenFlowTimeout


class SwitchProbe:
    """Barrier round trips, by interface name, sent when its ofport arrives."""

    def __init__(self, mgmt_socket: str, prefix: str = "lp") -> None:
        self._channel = OpenFlowChannel(f"unix:{mgmt_socket}")
        self._prefix = prefix
        self._lock = threading.Lock()
        self._rtt: dict[str, float] = {}

    def start(self) -> None:
        self._channel.connect(10)

    def stop(self) -> None:
        self._channel.close()

    def on_update(self, u: Update) -> None:
        """For ``OvsdbWatch``: a new ``Interface`` row of ours with its ofport."""
        name, ofport = u.new.get("name"), u.new.get("ofport")
        if (u.table != "Interface" or u.deleted or not isinstance(name, str)
                or not name.startswith(self._prefix) or not isinstance(ofport, int)
                or ofport <= 0):
            return
        with self._lock:
            if name in self._rtt:
                return
        t = time.monotonic()
        with contextlib.suppress(ConnectionLost, OpenFlowTimeout):
            self._channel.barrier(10)
            with self._lock:
                self._rtt[name] = (time.monotonic() - t) * 1000

    def rtt_ms(self, name: str, wait: float = 2.0) -> float | None:
        """The barrier's round trip after ``name``'s ofport arrived (None if none)."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if name in self._rtt:
                    return round(self._rtt[name], 2)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)
