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

``gateway=True`` adds a gateway router set-up (``gateway_nb_commands``): gr0
on chassis-1 behind lr0 (join switch), an external switch with a localnet
port, the provider bridge br-ex on chassis 1 and the external host ext1 on
it, and lb-gw (affinity) on gr0.  Measured here with lbaffd not running:
OVN-native traffic from ext1 to lb-gw's VIP did *not* crash ovs-vswitchd
3.1.0 (15 new clients and 24 more connections, with the LB on gr0 only and
with ``install_ls_lb_from_router``); every new client's first connection
took ~1.03 s (its first SYN dropped by gr0's ``lr_in_lb_aff_learn``, the
retransmission passes), later ones were sticky.
"""

from __future__ import annotations

import ipaddress
import time
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

# The gateway set-up (``gateway=True``): the switches around the gateway router
# ``gr0``.  ``router_port`` is the port of the router whose address is the
# switch's first one: lr0's on the join switch, gr0's on the external switch.
GATEWAY_ROUTER = "gr0"
GATEWAY_CHASSIS = "chassis-1"
GATEWAY_SWITCHES = {
    "join": SwitchSpec("join", "100.64.0.0/24", "lr0-join", "00:00:00:00:ff:03"),
    "ext": SwitchSpec("ext", "172.20.0.0/24", "gr0-ext", "00:00:00:00:ff:05"),
}
GR_JOIN_PORT = ("gr0-join", "00:00:00:00:ff:04", "100.64.0.2")
LOCALNET_PORT = "ln-ext"
PHYSNET = "physnet"
PROVIDER_BRIDGE = "br-ex"
GATEWAY_VIP = "172.21.0.10"  # behind gr0: outside every subnet, routed by the external host
CLUSTER_NET = "10.0.0.0/16"  # sw0 and sw1, behind lr0
ALL_SWITCHES = {**SWITCHES, **GATEWAY_SWITCHES}


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
# on the physical network (provider bridge br-ex of chassis 1), not an OVN port
EXTERNAL_HOSTS = {"ext1": HostSpec("ext", "172.20.0.10", 41, 1)}


def backend_list() -> str:
    return ",".join(f"{HOSTS[b].ip}:{BACKEND_PORT}" for b in BACKENDS)


@dataclass
class AddressPool:
    """Fresh client source addresses (secondary addresses on a client's eth0):
    each one is a *new* client to a load balancer."""

    next_octet: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_SWITCHES, 100))
    wrap: bool = False  # start again at .100 after .254 (long-running demo)

    def allocate(self, switch: str, n: int) -> list[str]:
        """The next ``n`` unused addresses of ``switch``'s subnet (.100-.254)."""
        base = ALL_SWITCHES[switch].cidr.rsplit(".", 1)[0]
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
    gateway: bool = False  # the gateway router set-up was added
    gateway_vip: str = GATEWAY_VIP

    def chassis_of(self, host: str) -> int:
        return self.sandbox.host_chassis[host]

    def switch_of(self, host: str) -> str:
        return (HOSTS.get(host) or EXTERNAL_HOSTS[host]).switch

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


def _router_link(switch: str, router: str, port: str, mac: str, cidr: str) -> list[list[str]]:
    """A router port ``port`` (``mac``, ``cidr``) of ``router`` and its
    peer, ``<switch>-<router>`` of type router, on ``switch``."""
    peer = f"{switch}-{router}"
    return [["lrp-add", router, port, mac, cidr],
            ["lsp-add", switch, peer], ["lsp-set-type", peer, "router"],
            ["lsp-set-addresses", peer, "router"],
            ["lsp-set-options", peer, f"router-port={port}"]]


def gateway_nb_commands(affinity_timeout: int = AFFINITY_TIMEOUT) -> list[list[str]]:
    """The gateway router set-up, as ``ovn-nbctl`` commands on top of
    ``nb_commands`` (the shape ovn-kubernetes gives a node)::

        ext1 (physical network, br-ex)
          |
        ext 172.20.0.0/24 [localnet ln-ext, network_name=physnet]
          | .1
        gr0 (options:chassis=chassis-1)  LB lb-gw 172.21.0.10:80 -> be1..be3:8080, affinity
          | .2
        join 100.64.0.0/24
          | .1
        lr0 ---- sw0, sw1

    gr0 routes the cluster (10.0.0.0/16) through lr0; lr0 routes the external
    network through gr0, so the backends' replies (their default gateway is
    lr0) go back the way the requests came.  ovn-northd turns gr0's peer
    ports into ``l3gateway`` port bindings bound to chassis-1 (``l3gateway-
    chassis``), which makes ext and join local datapaths of chassis-1, so its
    ovn-controller patches br-int to br-ex for ``ln-ext`` (Port
    ``patch-br-int-to-ln-ext``, ``external_ids:ovn-localnet-port=ln-ext``).

    ``NB_Global options:install_ls_lb_from_router=true``: northd 23.03 writes
    no SB ``Load_Balancer`` row for an LB that is only on a router (measured
    here; ``test_northd``), so without it nothing below ovn-northd, lbaffd
    included, can see lb-gw.  With it, the row's ``datapath_group`` holds
    gr0's switches (ext and join), not gr0.  OVN's own forwarding of the
    external clients does not change: measured with lbaffd not running,
    OVN's LB flows for the VIP on the ext and join switches saw 0 packets
    and gr0's balanced every connection (the ext switch's ``ls_in_pre_lb``
    has ``ip && inport == "ln-ext"`` -> ``next;`` at priority 110: no
    conntrack, so no LB, for traffic from the localnet port)."""
    join, ext = GATEWAY_SWITCHES["join"], GATEWAY_SWITCHES["ext"]
    gr, (gr_join, gr_join_mac, gr_join_ip) = GATEWAY_ROUTER, GR_JOIN_PORT
    cmds: list[list[str]] = [
        ["set", "NB_Global", ".", "options:install_ls_lb_from_router=true"],
        ["lr-add", gr], ["set", "Logical_Router", gr, f"options:chassis={GATEWAY_CHASSIS}"],
        ["ls-add", join.name], ["ls-add", ext.name]]
    cmds += _router_link(join.name, "lr0", join.router_port, join.router_mac,
                         f"{join.gateway}/24")
    cmds += _router_link(join.name, gr, gr_join, gr_join_mac, f"{gr_join_ip}/24")
    cmds += _router_link(ext.name, gr, ext.router_port, ext.router_mac, f"{ext.gateway}/24")
    cmds += [["lsp-add", ext.name, LOCALNET_PORT], ["lsp-set-type", LOCALNET_PORT, "localnet"],
             ["lsp-set-addresses", LOCALNET_PORT, "unknown"],
             ["lsp-set-options", LOCALNET_PORT, f"network_name={PHYSNET}"],
             ["lr-route-add", gr, CLUSTER_NET, join.gateway],
             ["lr-route-add", "lr0", ext.cidr, gr_join_ip],
             ["lb-add", "lb-gw", f"{GATEWAY_VIP}:{VIP_PORT}", backend_list(), "tcp"],
             ["set", "Load_Balancer", "lb-gw", f"options:affinity_timeout={affinity_timeout}"],
             ["lr-lb-add", gr, "lb-gw"]]
    return cmds


def _joined(cmds: list[list[str]]) -> list[str]:
    """One ``ovn-nbctl`` invocation (one NB transaction) for many commands."""
    out: list[str] = []
    for cmd in cmds:
        out += [*(["--"] if out else []), *cmd]
    return out


def build_ovn_topology(sb: OvnSandbox, affinity_timeout: int = AFFINITY_TIMEOUT,
                       servers: bool = True, router_lb: bool = False,
                       gateway: bool = False) -> OvnTopology:
    """Write the NB, attach every host to its chassis (be3 to chassis 2 when
    there are two), start the backends' servers (``BACKEND_PORT`` and
    ``DROP_PORT``) and wait until every ovn-controller has programmed it.
    ``gateway``: also the gateway router set-up (``gateway_nb_commands``),
    the provider bridge on chassis 1 and the external host ``ext1`` on it."""
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
    if gateway:
        _add_gateway(sb, hosts, affinity_timeout)
    sb.wait_programmed()
    if gateway:
        wait_localnet_programmed(sb)
    return OvnTopology(sb, hosts, affinity_timeout=affinity_timeout, gateway=gateway)


def _add_gateway(sb: OvnSandbox, hosts: dict[str, Host], affinity_timeout: int) -> None:
    """br-ex on chassis 1 mapped to ``physnet``, ext1 on it (routes to the
    gateway VIP and the cluster through gr0's external address), then the NB."""
    ext = GATEWAY_SWITCHES["ext"]
    sb.add_provider_bridge(PROVIDER_BRIDGE, PHYSNET, chassis=1)
    for name, spec in EXTERNAL_HOSTS.items():
        hosts[name] = sb.add_external_host(
            name, spec.ip, spec.mac, PROVIDER_BRIDGE, chassis=spec.chassis, ofport=spec.ofport,
            routes={f"{GATEWAY_VIP}/32": ext.gateway, CLUSTER_NET: ext.gateway})
    sb.nbctl(*_joined(gateway_nb_commands(affinity_timeout)))


def wait_localnet_programmed(sb: OvnSandbox, timeout: float = 30.0) -> int:
    """Until chassis 1's ovn-controller has patched br-int to br-ex for the
    localnet port and installed the patch port's table-0 flow; its ofport."""
    deadline = time.monotonic() + timeout
    ch = sb.node(1)
    while True:
        port = sb.localnet_patch_ports(1).get(LOCALNET_PORT)
        if port is not None:
            ofport = int(ch.vsctl("get", "Interface", port, "ofport"))
            if ofport > 0 and ch.dump_flows(f"table=0,in_port={ofport}"):
                return ofport
        if time.monotonic() > deadline:
            raise RuntimeError(f"no programmed localnet patch port for {LOCALNET_PORT}")
        time.sleep(0.1)


def tag_localnet(sb: OvnSandbox, tag: int, timeout: float = 30.0) -> None:
    """Put the physical network on VLAN ``tag`` as an operator would: the
    localnet port's ``tag_request`` (ovn-controller then pops the tag in table
    0 and pushes it in its output flow for the patch port) and every external
    host's port on br-ex an access port of that VLAN (br-ex's NORMAL tags what
    it sends to the patch port, a trunk).  Returns once chassis 1's
    ovn-controller has installed the tagged output flow."""
    sb.nbctl("set", "Logical_Switch_Port", LOCALNET_PORT, f"tag_request={tag}")
    ch = sb.node(1)
    for name, spec in EXTERNAL_HOSTS.items():
        if spec.chassis == 1:
            ch.vsctl("set", "Port", sb.hosts[name].port_name, f"tag={tag}")
    ofport = wait_localnet_programmed(sb, timeout)
    deadline = time.monotonic() + timeout
    while not any("push_vlan" in f and f.endswith(f"output:{ofport},pop_vlan")
                  for f in ch.dump_flows(f"out_port={ofport}")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no tagged output flow for {LOCALNET_PORT}")
        time.sleep(0.1)
