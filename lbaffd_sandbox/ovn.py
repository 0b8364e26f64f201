"""A real OVN sandbox: NB + SB + ovn-northd, and one or two chassis each with
its own ovs-vswitchd and a real ``ovn-controller`` (Debian's ``ovn-host``).

This is what lbaffd's companion mode (issue 14) runs next to: ovn-controller
owns br-int, lbaffd only adds to it.  Chassis 1 is the plain ``Sandbox``
(ovsdb-server with the Open_vSwitch schema in the run directory, ovs-vswitchd
with a netdev br-int in its own namespace) with ovn-controller added; chassis 2
has its own ovsdb-server, ovs-vswitchd (own namespace) and ovn-controller, all
with ``OVS_RUNDIR`` / ``OVN_RUNDIR`` = ``<rundir>/ch2``, so its management
socket is ``<rundir>/ch2/br-int.mgmt`` (ovs-vswitchd names it
``<ovs_rundir()>/<bridge>.mgmt``, and ovn-controller connects to the same
``ovs_rundir()`` path, both from ``OVS_RUNDIR``).

The two chassis talk Geneve in OVS userspace (netdev datapath tunnelling): in
each OVS namespace a netdev bridge ``br-phy`` whose internal port holds the
chassis' underlay address (``ovn-encap-ip``), joined by a veth pair between the
two namespaces.  ovn-controller then creates the Geneve ports on br-int by
itself (``/work/shared/ovn-companion-notes.md``).  The package's systemd units
are never used: every daemon runs by hand in the run directory and is stopped
by the pid in its pidfile.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lbaffd_sandbox.sandbox import (
    VSWITCH_SCHEMA,
    Host,
    Sandbox,
    _alive,
    _kill_pidfile,
    _wait_for,
    run,
)

UNDERLAY_NET = "192.168.77"  # chassis n's encap IP: 192.168.77.n/24
UNDERLAY_MTU = "9000"  # Geneve adds ~58 bytes: the hosts' 1500-byte frames must fit


class OvnChassis:
    """One hypervisor: an Open_vSwitch ovsdb-server, ovs-vswitchd in its own
    namespace, br-int, and ovn-controller; every file in ``rundir``."""

    def __init__(self, index: int, name: str, rundir: Path, ovs_ns: str,
                 env: dict[str, str]) -> None:
        self.index = index
        self.name = name
        self.rundir = rundir
        self.ovs_ns = ovs_ns
        self.env = {**env, "OVS_RUNDIR": str(rundir), "OVS_DBDIR": str(rundir),
                    "OVS_LOGDIR": str(rundir), "OVN_RUNDIR": str(rundir),
                    "OVN_LOGDIR": str(rundir), "OVN_DBDIR": str(rundir)}
        self.ofports: dict[str, int] = {}  # host name -> ofport on br-int

    @property
    def ovs_db_remote(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    @property
    def mgmt_socket(self) -> Path:
        return self.rundir / "br-int.mgmt"

    @property
    def of_target(self) -> str:
        return f"unix:{self.mgmt_socket}"

    @property
    def encap_ip(self) -> str:
        return f"{UNDERLAY_NET}.{self.index}"

    @property
    def controller_pidfile(self) -> Path:
        return self.rundir / "ovn-controller.pid"

    def controller_pid(self) -> int | None:
        try:
            return int(self.controller_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def ovn_controller_ctl(self) -> Path:
        """ovn-controller 23.03 has no ``--unixctl``: it listens on
        ``<OVN_RUNDIR>/ovn-controller.<pid>.ctl``."""
        pid = self.controller_pid()
        if pid is None:
            raise RuntimeError(f"ovn-controller of {self.name} is not running")
        return self.rundir / f"ovn-controller.{pid}.ctl"

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.ovs_db_remote}", "--timeout=10", *args,
                   env=self.env)

    def ofctl(self, *args: str) -> str:
        """``ovs-ofctl -O OpenFlow15``; a ``br-int`` argument means this chassis' br-int."""
        return run("ovs-ofctl", "-O", "OpenFlow15",
                   *[self.of_target if a == "br-int" else a for a in args], env=self.env)

    def appctl(self, *args: str) -> str:
        """``ovs-appctl`` on this chassis' ovs-vswitchd."""
        return run("ovs-appctl", "-t", str(self.rundir / "ovs-vswitchd.ctl"), *args,
                   env=self.env)

    def ovn_appctl(self, *args: str) -> str:
        """``ovn-appctl`` on this chassis' ovn-controller (e.g. ``ct-zone-list``)."""
        return run("ovn-appctl", "-t", str(self.ovn_controller_ctl), *args, env=self.env)

    def dump_flows(self, *filters: str) -> list[str]:
        out = self.ofctl("--no-stats", "dump-flows", "br-int", *filters)
        return sorted(line.strip() for line in out.splitlines() if "actions=" in line)

    def dump_groups(self) -> list[str]:
        out = self.ofctl("dump-groups", "br-int")
        return sorted(line.strip() for line in out.splitlines() if "group_id=" in line)

    def ct_zones(self) -> dict[str, int]:
        """The conntrack zones ovn-controller assigned, as it records them in
        br-int's ``external_ids:ct-zone-<port or datapath_dnat/snat>`` (what it
        reads back after a restart to keep its zones stable)."""
        out = json.loads(self.vsctl("--format=json", "--columns=external_ids", "list",
                                    "Bridge", "br-int"))
        pairs = out["data"][0][0][1]  # ["map", [[k, v], ...]]
        return {k.removeprefix("ct-zone-"): int(v) for k, v in pairs
                if k.startswith("ct-zone-")}

    def interfaces_of_type(self, kind: str) -> list[str]:
        out = self.vsctl("--bare", "--columns=name", "find", "Interface", f"type={kind}")
        return [line for line in out.split() if line]


class OvnSandbox(Sandbox):
    """NB + SB + ovn-northd, and ``chassis_count`` (1 or 2) chassis running
    ovn-controller.  The inherited ``vsctl``/``ofctl``/``appctl``/
    ``ovs_db_remote``/``mgmt_socket`` are chassis 1's; ``node(n)`` gives
    chassis n's."""

    def __init__(self, rundir: Path, prefix: str | None = None, chassis_count: int = 1) -> None:
        if chassis_count not in (1, 2):
            raise ValueError("chassis_count must be 1 or 2")
        super().__init__(rundir, prefix, chassis="chassis-1", nb=True)
        self.chassis_count = chassis_count
        self.nodes: list[OvnChassis] = [
            OvnChassis(1, "chassis-1", self.rundir, self.ovs_ns, self.env)]
        if chassis_count == 2:
            self.nodes.append(OvnChassis(2, "chassis-2", self.rundir / "ch2",
                                         f"{self.prefix}-ovs2", self.env))
        self.host_chassis: dict[str, int] = {}

    def node(self, chassis: int = 1) -> OvnChassis:
        return self.nodes[chassis - 1]

    # ------------------------------------------------------------ per-chassis accessors

    def ovs_db_remote_of(self, chassis: int = 1) -> str:
        return self.node(chassis).ovs_db_remote

    def mgmt_socket_of(self, chassis: int = 1) -> Path:
        return self.node(chassis).mgmt_socket

    def ovn_controller_ctl(self, chassis: int = 1) -> Path:
        return self.node(chassis).ovn_controller_ctl

    def ct_zones(self, chassis: int = 1) -> dict[str, int]:
        return self.node(chassis).ct_zones()

    # ------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        super()._start()  # chassis 1's OVS, SB, NB, ovn-northd
        # Sandbox registers a fake Chassis row for SB-only tests; here the real
        # ovn-controller registers its own (with its encaps), so drop that one.
        self.sbctl("chassis-del", self.chassis)
        first = self.nodes[0]
        first.vsctl("set", "Open_vSwitch", ".", *_ovn_ids(first, self.sb_remote,
                                                          two=self.chassis_count == 2))
        if self.chassis_count == 2:
            second = self.nodes[1]
            second.rundir.mkdir(mode=0o700, exist_ok=True)
            self._start_second_ovs(second)
            self._underlay()
        for n in self.nodes:
            self._start_ovn_controller(n)
        names = {n.name for n in self.nodes}
        _wait_for(lambda: names <= set(self.sbctl("--bare", "--columns=name", "list",
                                                  "Chassis").split()),
                  30, "every ovn-controller to register its Chassis")
        if self.chassis_count == 2:
            for n in self.nodes:
                _wait_for(lambda n=n: bool(n.interfaces_of_type("geneve")), 30,
                          f"a geneve port on {n.name}'s br-int")
        self._save_state()

    def _start_second_ovs(self, ch: OvnChassis) -> None:
        """Chassis 2's ovsdb-server (Open_vSwitch) and ovs-vswitchd in its own
        namespace, with a netdev br-int set up as ovn-controller expects it."""
        self._add_ns(ch.ovs_ns)
        run("ip", "-n", ch.ovs_ns, "link", "set", "lo", "up")
        r = ch.rundir
        (r / "db.db").unlink(missing_ok=True)  # a fresh DB every start (make demo reuses run/)
        run("ovsdb-tool", "create", str(r / "db.db"), str(VSWITCH_SCHEMA), env=ch.env)
        run("ovsdb-server", str(r / "db.db"), "--detach", "--no-chdir",
            f"--pidfile={r / 'db.pid'}", f"--log-file={r / 'db.log'}",
            f"--unixctl={r / 'db.ctl'}", f"--remote=punix:{r / 'db.sock'}", env=ch.env)
        self._pidfiles.append(r / "db.pid")
        self._save_state()
        ch.vsctl("--no-wait", "init")
        ch.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                 *_ovn_ids(ch, self.sb_remote, two=True))
        run("ip", "netns", "exec", ch.ovs_ns, "ovs-vswitchd", ch.ovs_db_remote,
            "--detach", "--no-chdir", f"--pidfile={r / 'ovs-vswitchd.pid'}",
            f"--log-file={r / 'ovs-vswitchd.log'}", f"--unixctl={r / 'ovs-vswitchd.ctl'}",
            env=ch.env)
        self._pidfiles.append(r / "ovs-vswitchd.pid")
        self._save_state()
        ch.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                 "fail_mode=secure", "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
                 "other_config:disable-in-band=true")
        _wait_for(ch.mgmt_socket.exists, 10, f"{ch.mgmt_socket}")

    def _underlay(self) -> None:
        """``br-phy`` (netdev, NORMAL) in each OVS namespace with the chassis'
        encap IP on its internal port, and a veth between the two namespaces
        on the two br-phys: OVS's userspace tunnelling routes the Geneve
        packets by the routes it learns from the namespace's kernel, and
        resolves the peer with its own ARP on br-phy."""
        a, b = self.nodes
        ends = (f"{self.prefix}u1", f"{self.prefix}u2")
        run("ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for ch, end in zip((a, b), ends, strict=True):
            run("ip", "link", "set", end, "netns", ch.ovs_ns)
            run("ip", "-n", ch.ovs_ns, "link", "set", end, "mtu", UNDERLAY_MTU, "up")
            ch.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy",
                     "datapath_type=netdev", "--", "add-port", "br-phy", end)
            _wait_for(lambda ch=ch: _link_exists(ch.ovs_ns, "br-phy"), 10,
                      f"br-phy in {ch.ovs_ns}")
            run("ip", "-n", ch.ovs_ns, "addr", "add", f"{ch.encap_ip}/24", "dev", "br-phy")
            run("ip", "-n", ch.ovs_ns, "link", "set", "br-phy", "mtu", UNDERLAY_MTU, "up")
        # OVS resolves a tunnel's next hop with its own ARP and drops the
        # packet that needed it (a lost SYN costs a test 1 s): give each
        # chassis its peer's underlay MAC up front (the cache entry ages out
        # after minutes of idleness, then OVS ARPs again by itself).
        for ch, peer in ((a, b), (b, a)):
            mac = _link_mac(peer.ovs_ns, "br-phy")
            ch.appctl("tnl/neigh/set", "br-phy", peer.encap_ip, mac)

    def _start_ovn_controller(self, ch: OvnChassis) -> None:
        """ovn-controller by hand with the chassis' environment: it reads
        ``OVS_RUNDIR`` for br-int's management socket and puts its control
        socket ``ovn-controller.<pid>.ctl`` in ``OVN_RUNDIR``.  It runs in
        the chassis' OVS namespace, as on a real hypervisor where it sees the
        same interfaces as ovs-vswitchd (it opens the netdevs of the bridge
        holding the encap IP; from elsewhere it warns ``br-phy: could not
        open netdev``); its sockets are files, reachable from any namespace."""
        pidfile = ch.controller_pidfile
        run("ip", "netns", "exec", ch.ovs_ns, "ovn-controller", ch.ovs_db_remote,
            "--detach", "--no-chdir",
            f"--pidfile={pidfile}", f"--log-file={ch.rundir / 'ovn-controller.log'}",
            env=ch.env)
        if pidfile not in self._pidfiles:
            self._pidfiles.append(pidfile)
        self._save_state()

    def stop_ovn_controller(self, chassis: int = 1) -> None:
        """SIGTERM by pid: ovn-controller exits without its ``exit`` cleanup,
        as in a crash or an upgrade, so its Chassis row and zones stay."""
        ch = self.node(chassis)
        pid = ch.controller_pid()
        if pid is None:
            return
        _kill_pidfile(ch.controller_pidfile)
        _wait_for(lambda: not _alive(pid), 10, f"ovn-controller {pid} to exit")

    def start_ovn_controller(self, chassis: int = 1, wait: bool = True) -> None:
        ch = self.node(chassis)
        self._start_ovn_controller(ch)
        if wait:
            self.wait_programmed()

    def restart_ovn_controller(self, chassis: int = 1, timeout: float = 30.0) -> float:
        """Stop chassis ``chassis``' ovn-controller by pid, start it again and
        return once it has re-programmed br-int (it deletes every flow and
        group when it connects and installs its own); the seconds that took."""
        self.stop_ovn_controller(chassis)
        start = time.monotonic()
        self._start_ovn_controller(self.node(chassis))
        self.wait_programmed(timeout)
        return time.monotonic() - start

    def wait_programmed(self, timeout: float = 30.0) -> None:
        """Until every chassis' ovn-controller has installed the current NB:
        ``ovn-nbctl --wait=hv sync`` returns once each Chassis_Private.nb_cfg
        caught up (ovn-controller reports nb_cfg only after the flows of that
        config were acknowledged by ovs-vswitchd), every bound host's logical
        port is ``up`` and has its table-0 flow on its chassis."""
        deadline = time.monotonic() + timeout
        self.nbctl("--wait=hv", "sync", timeout=int(timeout))
        for name in self.host_chassis:
            _wait_for(lambda name=name: self.nbctl("get", "Logical_Switch_Port", name,
                                                   "up") == "true",
                      max(deadline - time.monotonic(), 0.1), f"port {name} up")
        for ch in self.nodes:
            for name, ofport in ch.ofports.items():
                _wait_for(lambda ch=ch, ofport=ofport: ch.dump_flows(
                              f"table=0,in_port={ofport}"),
                          max(deadline - time.monotonic(), 0.1),
                          f"{name}'s table-0 flow on {ch.name}")

    # ------------------------------------------------------------ hosts

    def add_host(self, name: str, ip: str, mac: str, ofport: int, iface_id: str,
                 chassis: int = 1, gateway: str | None = None) -> Host:
        """A namespace with ``eth0`` (``ip``/24, ``mac``, default route via
        ``gateway``) whose veth peer is a port of chassis ``chassis``' br-int
        with ``external_ids:iface-id`` = the logical port: ovn-controller binds
        it (sets Port_Binding.chassis) when it sees that Interface."""
        ch = self.node(chassis)
        host = self.veth_host(name, ip, mac, ofport, iface_id, ch.ovs_ns,
                              {"default": gateway} if gateway else None)
        port = host.port_name
        ch.vsctl("add-port", "br-int", port, "--", "set", "Interface", port,
                 f"ofport_request={ofport}", f"external_ids:iface-id={iface_id}")
        self.hosts[name] = host
        self.host_chassis[name] = chassis
        ch.ofports[name] = ofport
        return host


    # ------------------------------------------------------------ physical network

    def add_provider_bridge(self, bridge: str, network: str, chassis: int = 1) -> None:
        """A provider bridge as an operator sets one up for a localnet port: a
        netdev bridge in chassis ``chassis``' ovs-vswitchd, left in OVS's
        default ``standalone`` fail mode (no controller: it forwards by
        ``NORMAL``), and ``external_ids:ovn-bridge-mappings=<network>:<bridge>``.
        ovn-controller then creates the patch ports between br-int and it for
        every localnet port with ``options:network_name=<network>`` on a
        datapath local to the chassis (``controller/patch.c``,
        ``add_bridge_mappings``)."""
        ch = self.node(chassis)
        ch.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                 "other_config:disable-in-band=true")
        ch.vsctl("set", "Open_vSwitch", ".",
                 f"external_ids:ovn-bridge-mappings={network}:{bridge}")

    def add_external_host(self, name: str, ip: str, mac: str, bridge: str,
                          routes: dict[str, str], chassis: int = 1,
                          ofport: int = 0) -> Host:
        """A machine of the physical network: a namespace whose ``eth0``
        (``ip``/24, ``mac``) is a veth whose peer is a port of the provider
        ``bridge`` on chassis ``chassis`` (no ``iface-id``: OVN does not know
        it), with ``routes`` (prefix -> next hop).  Not an OVN port, so it is
        not in ``host_chassis`` and ``wait_programmed`` does not wait for it."""
        ch = self.node(chassis)
        host = self.veth_host(name, ip, mac, ofport, "", ch.ovs_ns, routes)
        port = host.port_name
        ch.vsctl("add-port", bridge, port,
                 *(["--", "set", "Interface", port, f"ofport_request={ofport}"] if ofport else []))
        self.hosts[name] = host
        return host

    def localnet_patch_ports(self, chassis: int = 1) -> dict[str, str]:
        """ovn-controller's localnet patch ports on br-int: localnet logical
        port -> the Port's name (it marks them ``external_ids:ovn-localnet-port
        =<logical port>`` on the *Port* row, ``controller/patch.c``)."""
        ch = self.node(chassis)
        out = json.loads(ch.vsctl("--format=json", "--columns=name,external_ids", "list",
                                  "Port"))
        on_br_int = set(ch.vsctl("list-ports", "br-int").split())
        found: dict[str, str] = {}
        for name, ids in out["data"]:
            lp = dict(ids[1]).get("ovn-localnet-port")
            if lp and name in on_br_int:
                found[lp] = name
        return found


def _ovn_ids(ch: OvnChassis, sb_remote: str, two: bool) -> list[str]:
    """The ``Open_vSwitch external_ids`` ovn-controller reads: who it is, where
    the SB is, its tunnel endpoint, and which bridge (netdev) it programs."""
    return [f"external_ids:system-id={ch.name}", f"external_ids:ovn-remote={sb_remote}",
            "external_ids:ovn-encap-type=geneve",
            f"external_ids:ovn-encap-ip={ch.encap_ip if two else '127.0.0.1'}",
            "external_ids:ovn-bridge=br-int", "external_ids:ovn-bridge-datapath-type=netdev"]


def _link_mac(ns: str, name: str) -> str:
    out = json.loads(run("ip", "-j", "-n", ns, "link", "show", name))
    return str(out[0]["address"])


def _link_exists(ns: str, name: str) -> bool:
    res = subprocess.run(["ip", "-n", ns, "link", "show", name], capture_output=True)
    return res.returncode == 0


@contextlib.contextmanager
def started_ovn_sandbox(chassis_count: int = 1, tmp_prefix: str = "lbo-",
                        **kwargs: Any) -> Iterator[OvnSandbox]:
    """A started OvnSandbox in a fresh short ``/tmp`` directory (unix socket
    paths must stay under 108 bytes), stopped by pid and removed afterwards."""
    rundir = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir="/tmp"))
    sb = OvnSandbox(rundir, chassis_count=chassis_count, **kwargs)
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(rundir, ignore_errors=True)

