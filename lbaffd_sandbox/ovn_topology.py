"""The OVN topology of the companion tests and demo, written only with
``ovn-nbctl`` as an operator would.

::

    cli1 cli2 be1 be2 [cli3 be3 on chassis 2]        rcli1
      \\   |    |   |   /                               |
       sw0 10.0.0.0/24 ---- lr0 ---- sw1 10.0.1.0/24
       ACL on sw0: to-lport allow-related ip4; drop tcp.dst == 9999
       LBs on sw0 and sw1:  lb-aff   172.16.0.10:80 -> be1..be3:8080, affinity_timeout
                            lb-plain 172.16.0.11:80 -> be1..be3:8080

The VIPs are outside both subnets on purpose: OVN does not answer ARP for a
switch-LB VIP inside the switch's own subnet, so clients reach the VIPs
through their default gateway (the router port); the client's own switch
balances them in its LB stage, then lr0 routes the DNATed packet.

``router_lb=True`` attaches the LBs to lr0 as well, with ``NB_Global
options:install_ls_lb_from_router=true`` (northd 23.03 then applies lr0's LBs
to both switches instead of needing ``ls-lb-add sw1``).  Measured here: with
an LB on the distributed router lr0, the first routed connection from sw1 to
a VIP kills ovs-vswitchd 3.1.0 (``conntrack.c:1063: assertion
conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()``,
userspace conntrack, netdev datapath), with or without the ACL; with the LBs
on the switches only it does not.  So the default is switch LBs only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lbaffd_sandbox.ovn import OvnSandbox
from lbaffd_sandbox.sandbox import Host

AFFINITY_VIP = "172.16.0.10"
PLAIN_VIP = "172.16.0.11"
VIP_PORT = 80
BACKEND_PORT = 8080
DROP_PORT = 9999  # the ACL drops TCP to this port on sw0; backends listen there too
AFFINITY_TIMEOUT = 120


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    name: str
    cidr: str
    router_port: str
    router_mac: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.cidr).hosts()))


SWITCHES = {
    "sw0": SwitchSpec("sw0", "10.0.0.0/24", "lr0-sw0", "00:00:00:00:ff:01"),
    "sw1": SwitchSpec("sw1", "10.0.1.0/24", "lr0-sw1", "00:00:00:00:ff:02"),
}


@dataclass(frozen=True, slots=True)
class HostSpec:
    switch: str
    ip: str
    ofport: int
    chassis: int  # with a single chassis every host is on chassis 1

    @property
    def mac(self) -> str:
        """Unique across both subnets (the last two octets of the address)."""
        _, _, c, d = self.ip.split(".")
        return f"02:00:00:00:{int(c):02x}:{int(d):02x}"


HOSTS = {
    "cli1": HostSpec("sw0", "10.0.0.11", 11, 1),
    "cli2": HostSpec("sw0", "10.0.0.12", 12, 1),
    "cli3": HostSpec("sw0", "10.0.0.13", 13, 2),  # a client of chassis 2 (lbaffd there too)
    "be1": HostSpec("sw0", "10.0.0.21", 21, 1),
    "be2": HostSpec("sw0", "10.0.0.22", 22, 1),
    "be3": HostSpec("sw0", "10.0.0.23", 23, 2),  # the remote backend with two chassis
    "rcli1": HostSpec("sw1", "10.0.1.11", 31, 1),
}
BACKENDS = ("be1", "be2", "be3")


def backend_list() -> str:
    return ",".join(f"{HOSTS[b].ip}:{BACKEND_PORT}" for b in BACKENDS)


@dataclass
class AddressPool:
    """Fresh client source addresses (secondary addresses on a client's eth0):
    each one is a *new* client to a load balancer."""

    next_octet: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SWITCHES, 100))
    wrap: bool = False  # start again at .100 after .254 (long-running demo)

    def allocate(self, switch: str, n: int) -> list[str]:
        """The next ``n`` unused addresses of ``switch``'s subnet (.100-.254)."""
        base = SWITCHES[switch].cidr.rsplit(".", 1)[0]
        out = []
        for _ in range(n):
            octet = self.next_octet[switch]
            if octet > 254:
                if not self.wrap:
                    raise RuntimeError(f"no fresh client addresses left on {switch}")
                octet = 100
            self.next_octet[switch] = octet + 1
            out.append(f"{base}.{octet}")
        return out

    def take(self, host: Host, switch: str, n: int) -> list[str]:
        """``allocate`` and add the addresses to ``host``'s eth0."""
        ips = self.allocate(switch, n)
        for ip in ips:
            host.add_address(ip)
        return ips


@dataclass
class OvnTopology:
    sandbox: OvnSandbox
    hosts: dict[str, Host]
    pool: AddressPool = field(default_factory=AddressPool)
    affinity_vip: str = AFFINITY_VIP
    plain_vip: str = PLAIN_VIP
    vip_port: int = VIP_PORT
    affinity_timeout: int = AFFINITY_TIMEOUT

    def chassis_of(self, host: str) -> int:
        return self.sandbox.host_chassis[host]

    def switch_of(self, host: str) -> str:
        return HOSTS[host].switch

    def new_clients(self, host: str, n: int) -> list[str]:
        """``n`` source addresses no connection has used yet, on ``host``."""
        return self.pool.take(self.hosts[host], self.switch_of(host), n)


def nb_commands(affinity_timeout: int = AFFINITY_TIMEOUT,
                router_lb: bool = False) -> list[list[str]]:
    """The whole logical topology as ``ovn-nbctl`` commands (no hosts' ports)."""
    cmds: list[list[str]] = [["lr-add", "lr0"]]
    if router_lb:
        cmds.append(["set", "NB_Global", ".", "options:install_ls_lb_from_router=true"])
    for sw in SWITCHES.values():
        prefix = sw.cidr.split("/")[1]
        peer = f"{sw.name}-lr0"
        cmds += [["ls-add", sw.name],
                 ["lrp-add", "lr0", sw.router_port, sw.router_mac, f"{sw.gateway}/{prefix}"],
                 ["lsp-add", sw.name, peer], ["lsp-set-type", peer, "router"],
                 ["lsp-set-addresses", peer, "router"],
                 ["lsp-set-options", peer, f"router-port={sw.router_port}"]]
    cmds += [["acl-add", "sw0", "to-lport", "1001", "ip4", "allow-related"],
             ["acl-add", "sw0", "to-lport", "1002", f"ip4 && tcp.dst == {DROP_PORT}", "drop"]]
    for lb, vip, options in (("lb-aff", AFFINITY_VIP, [f"options:affinity_timeout="
                                                       f"{affinity_timeout}"]),
                             ("lb-plain", PLAIN_VIP, [])):
        cmds.append(["lb-add", lb, f"{vip}:{VIP_PORT}", backend_list(), "tcp"])
        if options:
            cmds.append(["set", "Load_Balancer", lb, *options])
        cmds += ([["ls-lb-add", "sw0", lb], ["lr-lb-add", "lr0", lb]] if router_lb else
                 [["ls-lb-add", sw, lb] for sw in SWITCHES])
    return cmds


def _joined(cmds: list[list[str]]) -> list[str]:
    """One ``ovn-nbctl`` invocation (one NB transaction) for many commands."""
    out: list[str] = []
    for cmd in cmds:
        out += [*(["--"] if out else []), *cmd]
    return out


def build_ovn_topology(sb: OvnSandbox, affinity_timeout: int = AFFINITY_TIMEOUT,
                       servers: bool = True, router_lb: bool = False) -> OvnTopology:
    """Write the NB, attach every host to its chassis (be3 to chassis 2 when
    there are two), start the backends' servers (``BACKEND_PORT`` and
    ``DROP_PORT``) and wait until every ovn-controller has programmed it."""
    sb.nbctl(*_joined(nb_commands(affinity_timeout, router_lb)))
    hosts: dict[str, Host] = {}
    lsps: list[list[str]] = []
    for name, spec in HOSTS.items():
        chassis = spec.chassis if spec.chassis <= sb.chassis_count else 1
        hosts[name] = sb.add_host(name, spec.ip, spec.mac, spec.ofport, iface_id=name,
                                  chassis=chassis, gateway=SWITCHES[spec.switch].gateway)
        lsps += [["lsp-add", spec.switch, name],
                 ["lsp-set-addresses", name, f"{spec.mac} {spec.ip}"]]
    sb.nbctl(*_joined(lsps))
    if servers:
        for name in BACKENDS:
            sb.start_server(hosts[name], BACKEND_PORT)
            sb.start_server(hosts[name], DROP_PORT)
    sb.wait_programmed()
    return OvnTopology(sb, hosts, affinity_timeout=affinity_timeout)
