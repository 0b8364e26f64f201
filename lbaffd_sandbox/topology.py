"""The demo/test topology: one logical switch, two clients, three backends, one LB."""

from __future__ import annotations

from dataclasses import dataclass

from lbaffd_sandbox.sandbox import Host, Sandbox

VIP = "10.0.0.100"
VIP_PORT = 80
BACKEND_PORT = 8080
HOSTS = {  # name -> (ip, ofport)
    "cli1": ("10.0.0.11", 11),
    "cli2": ("10.0.0.12", 12),
    "be1": ("10.0.0.21", 21),
    "be2": ("10.0.0.22", 22),
    "be3": ("10.0.0.23", 23),
}


@dataclass
class Topology:
    datapath_uuid: str
    lb_uuid: str
    hosts: dict[str, Host]
    vip: str = VIP
    vip_port: int = VIP_PORT

    @property
    def vip_key(self) -> str:
        return f"{self.vip}:{self.vip_port}"


def mac_of(ip: str) -> str:
    return f"02:00:00:00:00:{int(ip.rsplit('.', 1)[1]):02x}"


def build_demo_topology(sb: Sandbox, affinity_timeout: int | None = 30) -> Topology:
    dp = sb.add_datapath("ls1", 1)
    hosts: dict[str, Host] = {}
    for key, (name, (ip, ofport)) in enumerate(HOSTS.items(), start=1):
        hosts[name] = sb.add_host(name, ip, mac_of(ip), ofport, iface_id=name)
        sb.add_port_binding(name, dp, key, mac_of(ip), ip, chassis=sb.chassis)
        if name.startswith("be"):
            sb.start_server(hosts[name], BACKEND_PORT)
    backends = ",".join(f"{HOSTS[b][0]}:{BACKEND_PORT}" for b in ("be1", "be2", "be3"))
    options = {} if affinity_timeout is None else {"affinity_timeout": str(affinity_timeout)}
    lb = sb.add_load_balancer("lb1", {f"{VIP}:{VIP_PORT}": backends}, options=options,
                              datapaths=[dp])
    return Topology(dp, lb, hosts)
