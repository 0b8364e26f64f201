"""A private, real OVS + OVN Southbound sandbox with network namespaces.

Everything lives in ``rundir``: two ovsdb-servers (Open_vSwitch and OVN SB
schemas from Debian's packages), ovs-vswitchd with a ``datapath_type=netdev``
br-int, and hosts in their own namespaces on veth pairs.  With ``nb=True`` a
third ovsdb-server (OVN NB schema) and Debian's real ``ovn-northd`` run too:
then northd owns the SB (datapaths, port bindings, load balancers) and tests
write the NB with ``nbctl``.  ovs-vswitchd runs in
its own namespace: a netdev bridge creates kernel taps named ``ovs-netdev``
and ``br-int`` wherever the daemon runs, and another br-int may already exist
in the root namespace.  Processes are stopped by the pids in their pidfiles,
and only the namespaces created here are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")


def run(*cmd: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 30.0) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


@dataclass(frozen=True, slots=True)
class ConnResult:
    src: str
    backend: str
    connect_ms: float
    ok: bool
    error: str = ""
    sport: int = 0  # the source port the connection had (0: it failed before connecting)


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    mac: str
    ofport: int
    iface_id: str
    port_name: str
    extra_ips: list[str] = field(default_factory=list)

    def add_address(self, ip: str) -> None:
        if ip in self.extra_ips:
            return
        run("ip", "-n", self.ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self.extra_ips.append(ip)

    def enable_ipv6(self, ip6: str) -> None:
        """IPv6 on eth0 (hosts start without it), ``ip6`` without duplicate detection."""
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6",
                    "net.ipv6.conf.eth0.disable_ipv6"):
            self.exec("sysctl", "-q", "-w", f"{key}=0")
        run("ip", "-n", self.ns, "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        self.extra_ips.append(ip6)

    def exec(self, *cmd: str, timeout: float = 60.0) -> str:
        return run("ip", "netns", "exec", self.ns, *cmd, timeout=timeout)


class Sandbox:
    def __init__(self, rundir: Path, prefix: str | None = None, chassis: str = "chassis-1",
                 sb_tcp_port: int | None = None, sb_schema: Path = SB_SCHEMA,
                 sb_ssl_port: int | None = None, sb_cluster: int = 0, nb: bool = False) -> None:
        self.nb = nb  # also an OVN NB ovsdb-server and a real ovn-northd
        self.sb_ssl_port = sb_ssl_port
        self.sb_cluster = sb_cluster  # >0: the SB is an OVSDB Raft cluster of that many
        self._raft_ports = [free_port() for _ in range(sb_cluster)]
        self._client_ports = [free_port() for _ in range(sb_cluster)]
        self.rundir = Path(rundir).resolve()
        self.prefix = prefix or "lx" + secrets.token_hex(2)
        self.chassis = chassis
        self.sb_tcp_port = sb_tcp_port
        self.sb_schema = sb_schema
        self.ovs_ns = f"{self.prefix}-ovs"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._pidfiles: list[Path] = []
        self.env = {**os.environ, "OVS_RUNDIR": str(self.rundir), "OVS_DBDIR": str(self.rundir),
                    "OVS_LOGDIR": str(self.rundir), "OVS_PKGDATADIR": "/usr/share/openvswitch",
                    "OVN_RUNDIR": str(self.rundir)}

    # ------------------------------------------------------------ properties

    @property
    def ovs_rundir(self) -> Path:
        return self.rundir

    @property
    def ovs_db_remote(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    @property
    def sb_remote(self) -> str:
        if self.sb_cluster:
            return ",".join(f"tcp:127.0.0.1:{p}" for p in self._client_ports)
        return f"unix:{self.rundir}/sb.sock"

    @property
    def nb_remote(self) -> str:
        return f"unix:{self.rundir}/nb.sock"

    @property
    def mgmt_socket(self) -> Path:
        return self.rundir / "br-int.mgmt"

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.rundir, 0o700)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._add_ns(self.ovs_ns)
        run("ip", "-n", self.ovs_ns, "link", "set", "lo", "up")
        self._ovsdb("db", VSWITCH_SCHEMA)
        if self.sb_cluster:
            self._sb_cluster()
        else:
            self._ovsdb("sb", self.sb_schema)
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   f"external_ids:system-id={self.chassis}",
                   f"external_ids:ovn-remote={self.sb_remote}",
                   "external_ids:ovn-bridge=br-int")
        self._start_vswitchd()
        self.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                   "fail_mode=secure", "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
                   "other_config:disable-in-band=true")
        _wait_for(lambda: self.mgmt_socket.exists(), 10, "br-int.mgmt")
        self.sbctl("chassis-add", self.chassis, "geneve", "127.0.0.1")
        if self.nb:
            self._ovsdb("nb", NB_SCHEMA)
            self.nbctl("init")
            self._start_northd()
        self._save_state()

    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        self._save_state()

    def add_ovsdb(self, name: str, schema: Path) -> str:
        """Another ovsdb-server in the run directory (e.g. an OVN Northbound
        DB), stopped with the sandbox; returns its unix remote."""
        self._ovsdb(name, schema)
        return f"unix:{self.rundir}/{name}.sock"

    def spawn_daemon(self, name: str, *cmd: str, unixctl: bool = True) -> Path:
        """Start an OVS-style daemon (``--detach``, pidfile, log file and unixctl
        socket named ``name`` in the run directory; without ``unixctl`` the
        daemon puts ``<name>.<pid>.ctl`` there itself) with the sandbox's
        environment, stopped by pid with the sandbox; returns its pidfile."""
        r = self.rundir
        pidfile = r / f"{name}.pid"
        ctl = [f"--unixctl={r / f'{name}.ctl'}"] if unixctl else []
        run(*cmd, "--detach", "--no-chdir", f"--pidfile={pidfile}",
            f"--log-file={r / f'{name}.log'}", *ctl, env=self.env)
        self._pidfiles.append(pidfile)
        self._save_state()
        return pidfile

    def _ovsdb(self, name: str, schema: Path) -> None:
        r = self.rundir
        (r / f"{name}.db").unlink(missing_ok=True)  # a fresh DB every start
        run("ovsdb-tool", "create", str(r / f"{name}.db"), str(schema), env=self.env)
        self._ovsdb_server(name)
        self._pidfiles.append(r / f"{name}.pid")
        self._save_state()

    def _ovsdb_server(self, name: str) -> None:
        r = self.rundir
        extra = ([f"--remote=ptcp:{self.sb_tcp_port}:127.0.0.1"]
                 if name == "sb" and self.sb_tcp_port else [])
        if name == "sb" and self.sb_ssl_port:
            pki = self.pki()
            extra += [f"--remote=pssl:{self.sb_ssl_port}:127.0.0.1",
                      f"--private-key={pki['server-key']}", f"--certificate={pki['server-cert']}",
                      f"--ca-cert={pki['ca-cert']}"]
        run("ovsdb-server", str(r / f"{name}.db"), "--detach", "--no-chdir",
            f"--pidfile={r / f'{name}.pid'}", f"--log-file={r / f'{name}.log'}",
            f"--unixctl={r / f'{name}.ctl'}", f"--remote=punix:{r / f'{name}.sock'}",
            *extra, env=self.env)

    def _start_vswitchd(self) -> None:
        r = self.rundir
        pidfile = r / "ovs-vswitchd.pid"
        run("ip", "netns", "exec", self.ovs_ns, "ovs-vswitchd", self.ovs_db_remote,
            "--detach", "--no-chdir", f"--pidfile={pidfile}",
            f"--log-file={r / 'ovs-vswitchd.log'}", f"--unixctl={r / 'ovs-vswitchd.ctl'}",
            env=self.env)
        if pidfile not in self._pidfiles:
            self._pidfiles.append(pidfile)
        self._save_state()

    def _start_northd(self) -> None:
        """Debian's ovn-northd on our NB and SB; every file it writes is in the
        rundir (its control socket ``northd.ctl`` lets teardown ask it to exit).
        Returns once northd has turned the NB into SB rows at least once."""
        r = self.rundir
        pidfile = r / "northd.pid"
        ovn_env = {**self.env, "OVN_RUNDIR": str(r), "OVN_LOGDIR": str(r), "OVN_DBDIR": str(r)}
        run("ovn-northd", f"--ovnnb-db={self.nb_remote}", f"--ovnsb-db={self.sb_remote}",
            "--detach", "--no-chdir", f"--pidfile={pidfile}", f"--log-file={r / 'northd.log'}",
            f"--unixctl={r / 'northd.ctl'}", env=ovn_env)
        self._pidfiles.append(pidfile)
        self._save_state()
        self.nbctl("--wait=sb", "sync", timeout=30)

    # ------------------------------------------------------------ clustered SB

    def _sb_cluster(self) -> None:
        """``ovsdb-tool create-cluster`` + ``join-cluster`` on loopback, then
        one ovsdb-server per member (pidfile/ctl ``sbN``)."""
        r = self.rundir
        raft = [f"tcp:127.0.0.1:{p}" for p in self._raft_ports]
        for i in range(self.sb_cluster):
            (r / f"sb{i}.db").unlink(missing_ok=True)
            if i == 0:
                run("ovsdb-tool", "create-cluster", str(r / "sb0.db"), str(self.sb_schema),
                    raft[0], env=self.env)
            else:
                run("ovsdb-tool", "join-cluster", str(r / f"sb{i}.db"), "OVN_Southbound",
                    raft[i], raft[0], env=self.env)
        for i in range(self.sb_cluster):
            self.start_sb_member(i)
            self._pidfiles.append(r / f"sb{i}.pid")
        self._save_state()
        _wait_for(lambda: self.sb_leader() is not None, 30, "an SB cluster leader")

    def start_sb_member(self, i: int) -> None:
        r = self.rundir
        run("ovsdb-server", str(r / f"sb{i}.db"), "--detach", "--no-chdir",
            f"--pidfile={r / f'sb{i}.pid'}", f"--log-file={r / f'sb{i}.log'}",
            f"--unixctl={r / f'sb{i}.ctl'}", f"--remote=punix:{r / f'sb{i}.sock'}",
            f"--remote=ptcp:{self._client_ports[i]}:127.0.0.1", env=self.env)

    def start_sb_relay(self) -> str:
        """An ovsdb-server in relay mode in front of the Raft cluster (as large
        deployments put between the SB and the chassis); its unix remote."""
        r = self.rundir
        members = ",".join(f"tcp:127.0.0.1:{p}" for p in self._client_ports)
        pidfile = r / "sb-relay.pid"
        run("ovsdb-server", "--detach", "--no-chdir", f"--pidfile={pidfile}",
            f"--log-file={r / 'sb-relay.log'}", f"--unixctl={r / 'sb-relay.ctl'}",
            f"--remote=punix:{r / 'sb-relay.sock'}", f"relay:OVN_Southbound:{members}",
            env=self.env)
        self._pidfiles.append(pidfile)
        self._save_state()
        return f"unix:{r / 'sb-relay.sock'}"

    def stop_sb_member(self, i: int) -> None:
        """Kill member ``i`` by its pid (SIGKILL: a crash, not a handover)."""
        pidfile = self.rundir / f"sb{i}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not _alive(pid), 10, f"sb{i} to die")
        pidfile.unlink(missing_ok=True)

    def sb_member_of(self, pid: int) -> int | None:
        """The cluster member process ``pid`` holds an SB connection to (its
        client port among the members'), or None: which server to stop to make
        that process reconnect to another member."""
        res = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True,
                             text=True, env=self.env, timeout=10)
        return member_of(res.stdout, pid, self._client_ports)

    def sb_leader(self) -> int | None:
        for i in range(self.sb_cluster):
            res = subprocess.run(["ovs-appctl", "-t", str(self.rundir / f"sb{i}.ctl"),
                                  "cluster/status", "OVN_Southbound"], capture_output=True,
                                 text=True, env=self.env, timeout=10)
            if "Role: leader" in res.stdout:
                return i
        return None

    def pki(self) -> dict[str, Path]:
        """A private CA with a server and a client certificate (openssl), made
        once per sandbox: what a TLS-protected SB cluster hands out."""
        d = self.rundir / "pki"
        files = {name: d / f"{name}.pem" for name in
                 ("ca-key", "ca-cert", "server-key", "server-cert", "client-key", "client-cert")}
        if files["client-cert"].exists():
            return files
        d.mkdir(mode=0o700, exist_ok=True)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=lbaffd-test-ca", "-keyout", str(files["ca-key"]),
            "-out", str(files["ca-cert"]))
        for who in ("server", "client"):
            csr = d / f"{who}.csr"
            run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                "-keyout", str(files[f"{who}-key"]), "-out", str(csr))
            run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(files["ca-cert"]),
                "-CAkey", str(files["ca-key"]), "-CAcreateserial", "-days", "2",
                "-out", str(files[f"{who}-cert"]))
        return files

    @property
    def sb_ssl_remote(self) -> str:
        return f"ssl:127.0.0.1:{self.sb_ssl_port}"

    def restart_ovsdb(self, name: str, down_for: float = 0.0,
                      while_down: list[dict[str, object]] | None = None) -> None:
        """Stop ovsdb-server ``name`` (``db`` or ``sb``) by pid and start it again
        on the same database file, after ``down_for`` seconds; ``while_down``:
        operations written to the file meanwhile (``ovsdb-tool transact``: the
        database changed while its clients were away)."""
        _kill_pidfile(self.rundir / f"{name}.pid")
        time.sleep(down_for)
        if while_down:
            db = "OVN_Southbound" if name == "sb" else "Open_vSwitch"
            out = run("ovsdb-tool", "transact", str(self.rundir / f"{name}.db"),
                      json.dumps([db, *while_down]), env=self.env)
            checked_results(json.loads(out), len(while_down), "ovsdb-tool transact")
        self._ovsdb_server(name)

    def restart_vswitchd(self) -> None:
        _kill_pidfile(self.rundir / "ovs-vswitchd.pid")
        self.mgmt_socket.unlink(missing_ok=True)
        self._start_vswitchd()
        _wait_for(lambda: self.mgmt_socket.exists(), 10, "br-int.mgmt")

    def stop(self) -> None:
        """Idempotent: stop our processes by pid, delete our namespaces."""
        for pidfile in reversed(self._pidfiles):
            _kill_pidfile(pidfile)
        for ns in reversed(self._namespaces):
            run("ip", "netns", "del", ns, check=False)
        self._pidfiles.clear()
        self._namespaces.clear()
        self.hosts.clear()
        (self.rundir / "sandbox.json").unlink(missing_ok=True)

    def _save_state(self) -> None:
        if self.rundir.exists():
            state = {"pidfiles": [str(p) for p in self._pidfiles], "namespaces": self._namespaces}
            (self.rundir / "sandbox.json").write_text(json.dumps(state))

    @staticmethod
    def stop_from_state(rundir: Path) -> bool:
        """Tear down a sandbox started by another process; False if none."""
        path = Path(rundir) / "sandbox.json"
        if not path.exists():
            return False
        state = json.loads(path.read_text())
        for pidfile in reversed(state["pidfiles"]):
            _kill_pidfile(Path(pidfile))
        for ns in reversed(state["namespaces"]):
            run("ip", "netns", "del", ns, check=False)
        path.unlink()
        return True

    # ------------------------------------------------------------ tools

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.ovs_db_remote}", "--timeout=10", *args,
                   env=self.env)

    def ofctl(self, *args: str) -> str:
        """``ovs-ofctl -O OpenFlow15``; a ``br-int`` argument means our bridge."""
        target = f"unix:{self.mgmt_socket}"
        return run("ovs-ofctl", "-O", "OpenFlow15",
                   *[target if a == "br-int" else a for a in args], env=self.env)

    def add_bridge(self, name: str) -> str:
        """Another netdev bridge in the same ovs-vswitchd (fail_mode secure, no
        flows); returns its OpenFlow target (management socket)."""
        self.vsctl("add-br", name, "--", "set", "bridge", name, "datapath_type=netdev",
                   "fail_mode=secure", "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
                   "other_config:disable-in-band=true")
        mgmt = self.rundir / f"{name}.mgmt"
        _wait_for(mgmt.exists, 10, f"{name}.mgmt")
        return f"unix:{mgmt}"

    def appctl(self, *args: str) -> str:
        return run("ovs-appctl", "-t", str(self.rundir / "ovs-vswitchd.ctl"), *args,
                   env=self.env)

    def sbctl(self, *args: str) -> str:
        return run("ovn-sbctl", f"--db={self.sb_remote}", "--timeout=10", *args,
                   env=self.env).strip()

    def nbctl(self, *args: str, timeout: int = 10) -> str:
        """``ovn-nbctl`` on the sandbox's NB (``nb=True``).  Pass ``--wait=sb``
        first to return only after ovn-northd has written the change to the SB."""
        return run("ovn-nbctl", f"--db={self.nb_remote}", f"--timeout={timeout}", *args,
                   env=self.env, timeout=timeout + 5).strip()

    def dump_flows(self, *filters: str) -> list[str]:
        out = self.ofctl("--no-stats", "dump-flows", "br-int", *filters)
        return sorted(line.strip() for line in out.splitlines() if "actions=" in line)

    def dump_groups(self) -> list[str]:
        out = self.ofctl("dump-groups", "br-int")
        return sorted(line.strip() for line in out.splitlines() if "group_id=" in line)

    # ------------------------------------------------------------ hosts

    def add_host(self, name: str, ip: str, mac: str, ofport: int, iface_id: str) -> Host:
        host = self.veth_host(name, ip, mac, ofport, iface_id, self.ovs_ns)
        self.vsctl("add-port", "br-int", host.port_name, "--", "set", "Interface", host.port_name,
                   f"ofport_request={ofport}", f"external_ids:iface-id={iface_id}")
        self.hosts[name] = host
        return host

    def veth_host(self, name: str, ip: str, mac: str, ofport: int, iface_id: str,
                  ovs_ns: str, routes: dict[str, str] | None = None) -> Host:
        """A namespace whose ``eth0`` (``ip``/24, ``mac``, ``routes``: prefix or
        ``default`` -> next hop) is a veth whose peer is up in ``ovs_ns``, ready
        to be added to a bridge there."""
        ns = f"{self.prefix}-{name}"
        port = f"{self.prefix}{name}"[:15]
        self._add_ns(ns)
        run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", port, "netns", ovs_ns)
        run("ip", "-n", ovs_ns, "link", "set", port, "up")
        for cmd in (["link", "set", "lo", "up"], ["link", "set", "eth0", "address", mac],
                    ["addr", "add", f"{ip}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            run("ip", "-n", ns, *cmd)
        for prefix, via in (routes or {}).items():
            run("ip", "-n", ns, "route", "add", prefix, "via", via)
        host = Host(name, ns, ip, mac, ofport, iface_id, port)
        # Without this TCP fails on the netdev datapath (ARP works): see dataplane notes.
        host.exec("ethtool", "-K", "eth0", "tx", "off")
        for key, value in (("net.ipv6.conf.all.disable_ipv6", "1"),
                           ("net.ipv6.conf.default.disable_ipv6", "1"),
                           ("net.ipv4.tcp_tw_reuse", "1"),
                           ("net.ipv4.ip_local_port_range", "1024 65000")):
            host.exec("sysctl", "-q", "-w", f"{key}={value}")
        return host

    def start_server(self, host: Host, port: int, proto: str = "tcp",
                     ipv6: bool = False, with_address: bool = False) -> None:
        """A backend that answers every connection/datagram with its host name
        (on IPv6 too with ``ipv6``; ``NAME@ADDRESS`` for TCP with ``with_address``)."""
        pidfile = self.rundir / f"srv-{host.name}-{proto}-{port}.pid"
        log = self.rundir / f"srv-{host.name}-{proto}-{port}.log"
        with open(log, "wb") as out:
            subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-m",
                              "lbaffd_sandbox.server", "--port", str(port), "--name", host.name,
                              "--proto", proto, "--pidfile", str(pidfile),
                              *(["--ipv6"] if ipv6 else []),
                              *(["--with-address"] if with_address else [])],
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for(pidfile.exists, 10, f"server {host.name}:{port}")
        self._pidfiles.append(pidfile)
        self._save_state()

    def connect_counts(self, host: str | Host, dst: str, port: int, count: int,
                       random_sport: bool = True, timeout: float = 3.0) -> dict[str, int]:
        """``count`` new connections; how many each backend answered ("error": failed)."""
        h = self.hosts[host] if isinstance(host, str) else host
        cmd = [sys.executable, "-m", "lbaffd_sandbox.client", "--dst", dst, "--port", str(port),
               "--count", str(count), "--timeout", str(timeout), "--summary"]
        if random_sport:
            cmd.append("--random-sport")
        out = h.exec(*cmd, timeout=count * timeout + 60)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def connect(self, host: str | Host, dst: str, port: int, count: int = 1,
                pause: float = 0.0, src_ips: list[str] | None = None, proto: str = "tcp",
                timeout: float = 3.0, random_sport: bool = False) -> list[ConnResult]:
        """``count`` new connections, one result each.  ``random_sport``: each
        from a distinct random source port (the kernel's own choice repeats
        ports within one run: 136 of 3000 seen, so some 5-tuples come twice)."""
        h = self.hosts[host] if isinstance(host, str) else host
        cmd = [sys.executable, "-m", "lbaffd_sandbox.client", "--dst", dst, "--port", str(port),
               "--count", str(count), "--pause", str(pause), "--proto", proto,
               "--timeout", str(timeout)]
        if random_sport:
            cmd.append("--random-sport")
        for ip in src_ips or []:
            cmd += ["--src-ip", ip]
        out = h.exec(*cmd, timeout=count * (timeout + pause) + 30)
        return [ConnResult(**json.loads(line)) for line in out.splitlines() if line.strip()]

    # ------------------------------------------------------------ OVN SB rows

    def add_datapath(self, name: str, tunnel_key: int, kind: str = "switch") -> str:
        key = "logical-switch" if kind == "switch" else "logical-router"
        return self.sbctl("create", "Datapath_Binding", f"tunnel_key={tunnel_key}",
                          f"external_ids:name={name}",
                          f'external_ids:{key}="{secrets.token_hex(4)}"')

    def add_port_binding(self, logical_port: str, datapath: str, tunnel_key: int,
                         mac: str = "", ip: str = "", chassis: str | None = None,
                         type: str = "", options: dict[str, str] | None = None) -> str:
        """A Port_Binding; ``type="patch", options={"peer": ...}`` joins a switch
        to a router as ovn-northd does."""
        args = ["create", "Port_Binding", f"logical_port={logical_port}",
                f"datapath={datapath}", f"tunnel_key={tunnel_key}"]
        if mac:
            args.append(f'mac="{f"{mac} {ip}".strip()}"')
        if type:
            args.append(f"type={type}")
        if options:
            args.append(_map_arg("options", options))
        uuid = self.sbctl(*args)
        if chassis:
            ch = self.sbctl("--bare", "--columns=_uuid", "find", "Chassis", f"name={chassis}")
            self.sbctl("set", "Port_Binding", uuid, f"chassis={ch}")
        return uuid

    def add_patch(self, a_port: str, a_dp: str, a_key: int,
                  b_port: str, b_dp: str, b_key: int) -> None:
        """Two patch Port_Bindings that are each other's peer (switch <-> router)."""
        self.add_port_binding(a_port, a_dp, a_key, type="patch", options={"peer": b_port})
        self.add_port_binding(b_port, b_dp, b_key, type="patch", options={"peer": a_port})

    def add_load_balancer(self, name: str, vips: dict[str, str], protocol: str = "tcp",
                          options: dict[str, str] | None = None,
                          datapaths: list[str] | None = None,
                          groups: dict[str, list[str]] | None = None) -> str:
        """``groups``: datapath-group column -> datapaths of a new Logical_DP_Group
        (a non-root table: it must be created in the LB's own transaction).
        Written over JSON-RPC (``transact``), which, unlike ovn-sbctl, knows
        the columns of whatever schema the server runs."""
        ops: list[dict[str, object]] = []
        row: dict[str, object] = {
            "name": name, "protocol": protocol,
            "vips": ["map", [[k, v] for k, v in vips.items()]],
            "options": ["map", [[k, v] for k, v in (options or {}).items()]],
            "datapaths": ["set", [["uuid", d] for d in datapaths or []]],
        }
        for n, (column, members) in enumerate((groups or {}).items()):
            ops.append({"op": "insert", "table": "Logical_DP_Group", "uuid-name": f"g{n}",
                        "row": {"datapaths": ["set", [["uuid", d] for d in members]]}})
            row[column] = ["named-uuid", f"g{n}"]
        ops.append({"op": "insert", "table": "Load_Balancer", "row": row})
        last = self.transact(ops)[-1]  # (a cluster member that is down is passed over)
        assert isinstance(last, dict), last
        return str(last["uuid"][1])

    def transact(self, ops: list[dict[str, object]], db: str = "OVN_Southbound",
                 remote: str | None = None, timeout: float = 120.0) -> list[object]:
        """One OVSDB ``transact`` of any size over JSON-RPC (``ovsdb-client
        transact`` takes the transaction as one argv string, which the kernel
        caps at 128 KiB).  Raises on any operation error."""
        return ovsdb_transact(remote or self.sb_remote, db, ops, timeout)

    def add_load_balancers(self, lbs: list[LbSpec], datapaths: list[str],
                           group_column: str | None = "datapath_group") -> list[str]:
        """Many LBs in ONE SB transaction, all on ``datapaths``: through one
        shared ``Logical_DP_Group`` in ``group_column`` (as ovn-northd writes
        it), or in the ``datapaths`` column when ``group_column`` is None."""
        ops: list[dict[str, object]] = []
        where: dict[str, object] = {}
        dp_set = ["set", [["uuid", d] for d in datapaths]]
        if group_column:
            ops.append({"op": "insert", "table": "Logical_DP_Group", "uuid-name": "grp",
                        "row": {"datapaths": dp_set}})
            where[group_column] = ["named-uuid", "grp"]
        else:
            where["datapaths"] = dp_set
        for spec in lbs:
            ops.append({"op": "insert", "table": "Load_Balancer", "row": {
                "name": spec.name, "protocol": spec.protocol,
                "vips": ["map", [[k, v] for k, v in spec.vips.items()]],
                "options": ["map", [[k, v] for k, v in spec.options.items()]], **where}})
        results = self.transact(ops)[1 if group_column else 0:]
        return [str(r["uuid"][1]) for r in results if isinstance(r, dict)]

    def set_lb_vips(self, uuid: str, vips: dict[str, str]) -> None:
        self.sbctl("set", "Load_Balancer", uuid, _map_arg("vips", vips))

    def set_lb_options(self, uuid: str, options: dict[str, str]) -> None:
        self.sbctl("set", "Load_Balancer", uuid, _map_arg("options", options))

    def delete_load_balancer(self, uuid: str) -> None:
        self.sbctl("destroy", "Load_Balancer", uuid)


@dataclass(frozen=True, slots=True)
class LbSpec:
    name: str
    vips: dict[str, str]
    protocol: str = "tcp"
    options: dict[str, str] = field(default_factory=dict)


def member_of(ss_established: str, pid: int, ports: list[int]) -> int | None:
    """Which of ``ports`` (cluster members' client ports, in member order)
    process ``pid`` is connected to, from ``ss -tnpH state established``
    (lines ``Recv-Q Send-Q local peer users:(("name",pid=N,fd=M))``)."""
    for line in ss_established.splitlines():
        cols = line.split()
        if len(cols) < 5 or f"pid={pid}," not in line:
            continue
        _, _, port = cols[3].rpartition(":")
        if port.isdigit() and int(port) in ports:
            return ports.index(int(port))
    return None


def ovsdb_transact(remote: str, db: str, ops: list[dict[str, object]],
                   timeout: float = 120.0) -> list[object]:
    """``transact`` on ``remote`` (``unix:``/``tcp:``; a comma-separated list
    of a cluster's members: the first that accepts the connection, as an
    OVSDB client would, so a member that is down is passed over) through the
    ovs library's JSON-RPC; the results, or RuntimeError naming the failed ops."""
    import ovs.jsonrpc
    import ovs.stream

    error, stream = 0, None
    for one in remote.split(","):
        error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(one),
                                                     int(timeout * 1000))
        if not error:
            break
    if error or stream is None:
        raise RuntimeError(f"cannot connect to {remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("transact", [db, *ops])
        error, reply = rpc.transact_block(request)
    finally:
        rpc.close()
    if error:
        raise RuntimeError(f"transact on {remote}: {os.strerror(error)}")
    if reply.error:
        raise RuntimeError(f"transact on {remote}: {reply.error}")
    return checked_results(list(reply.result), len(ops), f"transact on {remote}")


def checked_results(results: list[object], ops: int, where: str) -> list[object]:
    """An OVSDB transaction's ``results``, or RuntimeError naming the failed
    operations (an error entry, or fewer results than ``ops``)."""
    errors = [r for r in results if isinstance(r, dict) and "error" in r]
    if errors or len(results) < ops:
        raise RuntimeError(f"{where}: {errors[:3]}")
    return results


def _map_arg(column: str, values: dict[str, str]) -> str:
    """``column={"k"="v", ...}`` quoted for ovs-vsctl-style DB commands."""
    items = ",".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in values.items())
    return f"{column}={{{items}}}"


def newer_sb_schema(dest: Path) -> Path:
    """Debian's OVN 23.03 SB schema plus the ``ls_datapath_group`` and
    ``lr_datapath_group`` columns newer OVN adds to ``Load_Balancer``: lets the
    tests exercise both schema generations with real ovsdb-servers."""
    schema = json.loads(SB_SCHEMA.read_text())
    column = {"type": {"key": {"type": "uuid", "refTable": "Logical_DP_Group"},
                       "min": 0, "max": 1}}
    lb = schema["tables"]["Load_Balancer"]["columns"]
    lb["ls_datapath_group"] = column
    lb["lr_datapath_group"] = column
    major, minor, _ = schema["version"].split(".")
    schema["version"] = f"{major}.{int(minor) + 1}.0"
    dest.write_text(json.dumps(schema, indent=1))
    return dest


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not appear within {timeout}s")


def _alive(pid: int) -> bool:
    """Running (a zombie counts as gone: detached daemons are reaped by init,
    which may do so only every few seconds)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_pidfile(pidfile: Path, timeout: float = 5.0) -> None:
    """Stop the process named by ``pidfile``: ``ovs-appctl exit`` where it has a
    control socket (fast, clean), SIGTERM otherwise, SIGKILL as a last resort."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    ctl = pidfile.with_suffix(".ctl")
    if ctl.exists():
        subprocess.run(["ovs-appctl", "-t", str(ctl), "exit"], capture_output=True, timeout=10)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (servers)
        if not _alive(pid):
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


@contextlib.contextmanager
def started_sandbox(tmp_prefix: str = "lbx-", **kwargs: Any) -> Iterator[Sandbox]:
    """A started sandbox in a fresh short ``/tmp/<tmp_prefix>*`` directory (unix
    sockets: <= 107 chars), stopped by pid and removed afterwards."""
    rundir = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir="/tmp"))
    sb = Sandbox(rundir, **kwargs)
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(rundir, ignore_errors=True)
