"""lbaffd on Southbound rows written by Debian's real ovn-northd (OVN 23.03).

The other integration tests write SB rows themselves.  Here the sandbox runs an
OVN NB ovsdb-server and ``ovn-northd`` (``Sandbox(nb=True)``): the test only
writes the NB with ``ovn-nbctl`` and northd owns the SB (Datapath_Binding,
Port_Binding, Logical_DP_Group, Load_Balancer).  The real daemon must find its
local ports, the datapath tunnel key, the LB's datapaths (through northd's
``datapath_group``) and the LB's changes in what northd writes, and real TCP
from client namespaces must stay sticky.

Facts about northd 23.03 this module pins down: an LB on a logical switch
gets an SB row with ``datapath_group`` (not ``datapaths``); an LB only on a
logical router gets *no* SB row, unless ``NB_Global options:
install_ls_lb_from_router=true`` makes northd apply it to the router's
switches, where its row shares the switch's Logical_DP_Group with other LBs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from lbaffd_sandbox.sandbox import Host, Sandbox
from lbaffd_sandbox.topology import HOSTS, mac_of
from tests.integration.lbaffd_proc import LbaffdProcess, sandbox_in_tmp, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

VIP, PORT, BACKEND_PORT = "10.0.0.100", 80, 8080
ROUTER_VIP = "10.0.0.200"
TIMEOUT = 60  # lb1's affinity_timeout
ALL_HOSTS = {**HOSTS, "be4": ("10.0.0.24", 24)}  # be4 joins lb1 later, from the NB
MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"


def backend(name: str) -> str:
    return f"{ALL_HOSTS[name][0]}:{BACKEND_PORT}"


def backends(*names: str) -> str:
    return ",".join(backend(n) for n in names)


# ------------------------------------------------------------------ SB as northd wrote it


def _atom(value: Any) -> Any:
    """One OVSDB JSON value (``ovn-sbctl --format=json``) -> Python."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag == "uuid":
            return body
        if tag == "set":
            return [_atom(v) for v in body]
        if tag == "map":
            return {_atom(k): _atom(v) for k, v in body}
    return value


def as_list(value: Any) -> list[Any]:
    """A set column: OVSDB prints a one-element set as the bare element."""
    return value if isinstance(value, list) else [value]


def sb_rows(sb: Sandbox, table: str) -> list[dict[str, Any]]:
    out = json.loads(sb.sbctl("--format=json", "list", table))
    return [{h: _atom(v) for h, v in zip(out["headings"], row, strict=True)}
            for row in out["data"]]


def sb_row(sb: Sandbox, table: str, **match: Any) -> dict[str, Any] | None:
    rows = [r for r in sb_rows(sb, table) if all(r.get(k) == v for k, v in match.items())]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def ls1(sb: Sandbox) -> dict[str, Any]:
    rows = [r for r in sb_rows(sb, "Datapath_Binding") if r["external_ids"].get("name") == "ls1"]
    assert len(rows) == 1, rows
    return rows[0]


def lb_datapaths(sb: Sandbox, lb: dict[str, Any]) -> set[str]:
    """Datapath uuids of an SB Load_Balancer: ``datapaths`` plus its group's."""
    dps = set(as_list(lb["datapaths"]))
    for uuid in as_list(lb["datapath_group"]):
        group = sb_row(sb, "Logical_DP_Group", _uuid=uuid)
        assert group is not None, uuid
        dps |= set(as_list(group["datapaths"]))
    return dps


# ------------------------------------------------------------------ switch state


def managed_flows(sb: Sandbox) -> list[str]:
    return sb.dump_flows(MANAGED)


def learned_entries(sb: Sandbox) -> list[str]:
    return sb.dump_flows(LEARNED)


def vip_group(sb: Sandbox, vip: str) -> tuple[str, str] | None:
    """(reg6 value, group line) of ``vip``'s select group; None if not installed.
    Table 2 tags a new connection to the VIP with reg6 and, without affinity,
    sends it to the group; with affinity table 4 sends reg6's misses there."""
    flows = managed_flows(sb)
    reg6 = gid = None
    for f in flows:
        if f"nw_dst={vip}," in f and (m := re.search(r"set_field:(0x[0-9a-f]+)->reg6", f)):
            reg6 = m.group(1)
    for f in flows:
        if reg6 and (f"nw_dst={vip}," in f or f"reg6={reg6} " in f) and (
                m := re.search(r"group:(\d+)", f)):
            gid = m.group(1)
    line = next((g for g in sb.dump_groups() if f"group_id={gid}," in g), None) if gid else None
    return None if reg6 is None or line is None else (reg6, line)


def bucket_backends(sb: Sandbox, vip: str) -> list[str]:
    found = vip_group(sb, vip)
    return [] if found is None else sorted(re.findall(r"nat\(dst=([0-9.:]+)\)", found[1]))


def sticky(sb: Sandbox, client: str, vip: str = VIP, count: int = 12) -> str:
    """``count`` new connections with random source ports: all to one backend."""
    counts = sb.connect_counts(client, vip, PORT, count)
    assert "error" not in counts and len(counts) == 1, (client, vip, counts)
    return next(iter(counts))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, ovs-vswitchd)")
    with sandbox_in_tmp("lbx-northd-", nb=True) as sb:
        yield sb


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> dict[str, Host]:
    """The NB: switch ls1 with one port per host (named as the host's iface-id,
    addresses "MAC IP"), lb1 on ls1, and router lr1 on ls1 with lb2 on lr1 only.
    ls0 comes first so that northd gives ls1 a tunnel key other than 1."""
    sb = sandbox
    sb.nbctl("--wait=sb", "ls-add", "ls0")
    sb.nbctl("ls-add", "ls1")
    hosts: dict[str, Host] = {}
    for name, (ip, ofport) in ALL_HOSTS.items():
        hosts[name] = sb.add_host(name, ip, mac_of(ip), ofport, iface_id=name)
        sb.nbctl("lsp-add", "ls1", name, "--", "lsp-set-addresses", name, f"{mac_of(ip)} {ip}")
        if name.startswith("be"):
            sb.start_server(hosts[name], BACKEND_PORT)
    sb.nbctl("lb-add", "lb1", f"{VIP}:{PORT}", backends("be1", "be2", "be3"), "tcp")
    sb.nbctl("ls-lb-add", "ls1", "lb1")
    sb.nbctl("set", "Load_Balancer", "lb1", f"options:affinity_timeout={TIMEOUT}")
    sb.nbctl("lr-add", "lr1",
             "--", "lrp-add", "lr1", "lr1-ls1", "02:00:00:00:01:01", "10.0.0.1/24",
             "--", "lsp-add", "ls1", "ls1-lr1", "--", "lsp-set-type", "ls1-lr1", "router",
             "--", "lsp-set-addresses", "ls1-lr1", "router",
             "--", "lsp-set-options", "ls1-lr1", "router-port=lr1-ls1")
    sb.nbctl("lb-add", "lb2", f"{ROUTER_VIP}:{PORT}", backend("be1"), "tcp")
    sb.nbctl("--wait=sb", "lr-lb-add", "lr1", "lb2")
    return hosts


# ------------------------------------------------------------------ tests


def test_northd_wrote_the_sb(sandbox: Sandbox, topo: dict[str, Host]) -> None:
    """The SB rows lbaffd will read are northd's: nothing here wrote the SB."""
    dp = ls1(sandbox)
    assert "logical-switch" in dp["external_ids"]
    assert dp["tunnel_key"] != 1  # northd's choice, not a default the daemon could assume
    for name, (ip, _) in ALL_HOSTS.items():
        pb = sb_row(sandbox, "Port_Binding", logical_port=name)
        assert pb is not None, name
        assert pb["datapath"] == dp["_uuid"]
        assert pb["mac"] == f"{mac_of(ip)} {ip}"
        assert pb["chassis"] == []  # no ovn-controller here: bound to no chassis
    router_port = sb_row(sandbox, "Port_Binding", logical_port="ls1-lr1")
    assert router_port is not None and router_port["type"] == "patch"

    lb = sb_row(sandbox, "Load_Balancer", name="lb1")
    assert lb is not None
    nb_uuid = sandbox.nbctl("--bare", "--columns=_uuid", "find", "Load_Balancer", "name=lb1")
    assert lb["external_ids"]["lb_id"] == nb_uuid
    assert lb["vips"] == {f"{VIP}:{PORT}": backends("be1", "be2", "be3")}
    assert lb["options"]["affinity_timeout"] == str(TIMEOUT)
    assert lb["protocol"] == "tcp"
    assert lb["datapaths"] == []  # northd 23.03 uses the group column only
    assert lb_datapaths(sandbox, lb) == {dp["_uuid"]}
    # a router-only LB gets no SB row from northd 23.03
    assert sb_row(sandbox, "Load_Balancer", name="lb2") is None


def test_switch_lb_group_and_learn_flows(sandbox: Sandbox, topo: dict[str, Host],
                                         daemon: LbaffdProcess) -> None:
    key = hex(ls1(sandbox)["tunnel_key"])
    flows = managed_flows(sandbox)
    for name, (_, ofport) in ALL_HOSTS.items():
        assert any(f"in_port={ofport} " in f and f"set_field:{key}->metadata" in f
                   for f in flows), (name, flows)
    assert any(f"metadata={key},nw_dst={VIP},tp_dst={PORT}" in f for f in flows), flows
    assert any(f"arp,metadata={key},arp_tpa={VIP}," in f for f in flows), flows
    found = wait_until(lambda: vip_group(sandbox, VIP))
    assert found, flows
    reg6, group = found
    assert "type=select" in group and "selection_method=hash,fields=ip_src" in group, group
    assert bucket_backends(sandbox, VIP) == sorted(
        backend(b) for b in ("be1", "be2", "be3")), group
    learns = [f for f in flows if f"reg6={reg6}" in f and "learn(" in f]
    assert len(learns) == 3, flows
    assert all(f"learn(table=3,idle_timeout={TIMEOUT}," in f for f in learns), learns
    # nothing for the router-only LB, and nothing about northd's rows was rejected
    assert not any(ROUTER_VIP in f for f in flows)
    assert daemon.count("lb_input_rejected") == 0 and daemon.count("lb_input_warning") == 0


def test_real_traffic_is_sticky(sandbox: Sandbox, topo: dict[str, Host],
                                daemon: LbaffdProcess) -> None:
    first = {c: sticky(sandbox, c) for c in ("cli1", "cli2")}
    assert set(first.values()) <= {"be1", "be2", "be3"}
    clients = [f"10.0.0.{60 + i}" for i in range(12)]
    for ip in clients:
        topo["cli2"].add_address(ip)
    seen: dict[str, set[str]] = {ip: set() for ip in clients}
    for _ in range(3):  # three rounds of one connection per client address
        for r in sandbox.connect("cli2", VIP, PORT, count=len(clients), src_ips=clients):
            assert r.ok, r
            seen[r.src].add(r.backend)
    assert all(len(b) == 1 for b in seen.values()), seen
    assert len({b for s in seen.values() for b in s}) >= 2, seen  # the client hash spreads
    assert len(learned_entries(sandbox)) >= 2 + len(clients)
    assert {c: sticky(sandbox, c) for c in first} == first


def test_backend_changes_from_nb_are_followed(sandbox: Sandbox, topo: dict[str, Host],
                                              daemon: LbaffdProcess) -> None:
    pinned = {c: sticky(sandbox, c) for c in ("cli1", "cli2")}

    sandbox.nbctl("--wait=sb", "set", "Load_Balancer", "lb1",
                  f'vips:"{VIP}:{PORT}"="{backends("be1", "be2", "be3", "be4")}"')
    lb = sb_row(sandbox, "Load_Balancer", name="lb1")
    assert lb is not None and lb["vips"][f"{VIP}:{PORT}"].endswith(backend("be4"))
    want = sorted(backend(b) for b in ("be1", "be2", "be3", "be4"))
    assert wait_until(lambda: bucket_backends(sandbox, VIP) == want), \
        (bucket_backends(sandbox, VIP), daemon.tail())
    assert {c: sticky(sandbox, c) for c in pinned} == pinned  # affinity survives the change

    gone = pinned["cli1"]
    rest = [b for b in ("be1", "be2", "be3", "be4") if b != gone]
    sandbox.nbctl("--wait=sb", "set", "Load_Balancer", "lb1",
                  f'vips:"{VIP}:{PORT}"="{backends(*rest)}"')
    assert wait_until(lambda: bucket_backends(sandbox, VIP) == sorted(backend(b) for b in rest))
    gone_hex = f"load:{int.from_bytes(bytes(map(int, ALL_HOSTS[gone][0].split('.')))):#x}->"
    assert not any(gone_hex in f or f"nat(dst={backend(gone)})" in f
                   for f in managed_flows(sandbox))
    assert not any(gone_hex in e for e in learned_entries(sandbox))
    moved = sticky(sandbox, "cli1")
    assert moved in rest, moved  # cli1's entry went with its backend; it is pinned anew


def test_router_lb_rows_from_northd(sandbox: Sandbox, topo: dict[str, Host],
                                    daemon: LbaffdProcess) -> None:
    """lb2 is only on lr1.  With install_ls_lb_from_router northd writes its SB
    row on lr1's switch, through the Logical_DP_Group lb1 also uses."""
    assert sb_row(sandbox, "Load_Balancer", name="lb2") is None
    assert not any(ROUTER_VIP in f for f in managed_flows(sandbox))

    sandbox.nbctl("--wait=sb", "set", "NB_Global", ".", "options:install_ls_lb_from_router=true")
    lb2 = sb_row(sandbox, "Load_Balancer", name="lb2")
    lb1 = sb_row(sandbox, "Load_Balancer", name="lb1")
    assert lb2 is not None and lb1 is not None
    assert lb2["datapaths"] == [] and lb_datapaths(sandbox, lb2) == {ls1(sandbox)["_uuid"]}
    assert lb2["datapath_group"] == lb1["datapath_group"]  # one shared group row
    # no affinity: a dp_hash group (its backends may take several buckets each)
    assert wait_until(lambda: set(bucket_backends(sandbox, ROUTER_VIP)) == {backend("be1")}), \
        daemon.tail()
    assert "selection_method=dp_hash" in vip_group(sandbox, ROUTER_VIP)[1]  # type: ignore[index]
    assert sticky(sandbox, "cli1", ROUTER_VIP) == "be1"
    assert sticky(sandbox, "cli2", VIP) in {"be1", "be2", "be3", "be4"}


def test_lb_del_removes_group_flows_and_entries(sandbox: Sandbox, topo: dict[str, Host],
                                                daemon: LbaffdProcess) -> None:
    found = vip_group(sandbox, VIP)
    assert found is not None
    reg6, group = found
    m = re.search(r"group_id=(\d+),", group)
    assert m is not None, group
    gid = m.group(1)
    sticky(sandbox, "cli1")
    assert any(f"reg6={reg6}" in e for e in learned_entries(sandbox))
    lb2_flows = [f for f in managed_flows(sandbox) if ROUTER_VIP in f]
    assert lb2_flows

    sandbox.nbctl("--wait=sb", "lb-del", "lb1")
    assert sb_row(sandbox, "Load_Balancer", name="lb1") is None

    def lb1_gone() -> bool:
        return (not any(VIP in f or f"reg6={reg6}" in f for f in managed_flows(sandbox))
                and not any(f"group_id={gid}," in g for g in sandbox.dump_groups())
                and not any(f"reg6={reg6}" in e for e in learned_entries(sandbox)))

    assert wait_until(lb1_gone), (managed_flows(sandbox), sandbox.dump_groups())
    counts = sandbox.connect_counts("cli1", VIP, PORT, 2, timeout=1.0)
    assert counts == {"error": 2}, counts  # the VIP no longer answers
    # lb2, on the same Logical_DP_Group, is untouched and still serves
    assert [f for f in managed_flows(sandbox) if ROUTER_VIP in f] == lb2_flows
    assert sticky(sandbox, "cli2", ROUTER_VIP) == "be1"

    sandbox.nbctl("--wait=sb", "lb-del", "lb2")
    assert wait_until(lambda: not any(ROUTER_VIP in f for f in managed_flows(sandbox)))
    assert not any(g for g in sandbox.dump_groups())
    # northd's rows never made lbaffd warn (no rejected input, dangling group, conflict...)
    complaints = [e for e in daemon.events() if e.get("level") in ("warning", "error")]
    assert complaints == [], complaints
    assert daemon.proc is not None and daemon.proc.poll() is None
