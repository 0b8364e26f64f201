"""``python -m bench.fanout``: what one chassis's SB monitor costs the SB.

A 3-server Raft SB (and, for the relay rows, one ``ovsdb-server`` relay in
front of it), H monitoring clients that ask what lbaffd asks (the columns it
registers; with or without the monitor conditions of ``lbaffd.sbconditions``
for a chassis whose only local datapath is its own switch), then a stream of
SB updates: pods bound on a random host's switch and backend changes of LBs
that each sit on one switch (tenant load balancers).  Measured per update:
bytes sent to all clients, per client, and the CPU time of the servers
(members + relay).  The clients are minimal JSON-RPC monitors in one process
(H lbaffd daemons would not fit on this machine); what they receive is what
ovsdb-server sends to any client with the same monitor request.

The extrapolation is linear in what the run shows: without conditions every
host receives every update (bytes and server work grow with the hosts, per
update); with them only the hosts where the datapath is local do."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.realistic_side import cpu_seconds
from bench.run import ROOT, _loadavg, _version, cpu_model
from lbaffd.sb.conditions import Interest, conditions
from lbaffd.sb.monitor import SB_COLUMNS
from lbaffd_sandbox.sandbox import SB_SCHEMA, Sandbox, started_sandbox

DB = "OVN_Southbound"
_KEYS = itertools.count(10_000)  # tunnel keys of the pods the updates add (<= 32767)


class Client(threading.Thread):
    """One chassis's SB monitor; counts the bytes it receives."""

    def __init__(self, path: tuple[str, int] | str, request: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        fam = socket.AF_UNIX if isinstance(path, str) else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(0.2)
        self.request = request
        self.received = 0
        self.error = ""
        self.synced = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.sendall(json.dumps(self.request).encode())
        buf = b""
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.received += len(chunk)
            if not self.synced.is_set():
                buf += chunk
                if b'"id":"m"' in buf.replace(b" ", b""):
                    if b'"result"' not in buf:
                        self.error = buf[:300].decode(errors="replace")
                    self.synced.set()
                    buf = b""
            if b'"echo"' in chunk:  # keep the session: answer the server's echo
                for part in chunk.split(b"}{"):
                    if b'"echo"' in part and b'"id"' in part:
                        with_id = json.loads(b"{" + part.strip(b"{}") + b"}")
                        self.sock.sendall(json.dumps({"result": with_id["params"],
                                                      "error": None,
                                                      "id": with_id["id"]}).encode())


def monitor_request(conditional: bool, chassis: str | None, dp: str) -> dict[str, Any]:
    """lbaffd's request: its tables and columns (those this schema has)."""
    schema = json.loads(SB_SCHEMA.read_text())["tables"]
    tables: dict[str, Any] = {t: {"columns": [x for x in c if x in schema[t]["columns"]]}
                              for t, c in SB_COLUMNS.items() if t in schema}
    if conditional:
        conds = conditions(Interest(chassis, frozenset(), frozenset({dp}), frozenset()),
                           ("datapath_group",))
        for t, c in conds.items():
            tables[t]["where"] = c
    return {"method": "monitor_cond", "id": "m", "params": [DB, None, tables]}


def populate(sb: Sandbox, hosts: int, pods: int, lbs: int, rnd: random.Random
             ) -> tuple[list[str], list[str], list[str]]:
    """Per host: a Chassis, its switch with ``pods`` bound ports; ``lbs`` LBs
    each on one random switch.  Returns (datapaths, chassis uuids, LB uuids)."""
    ops: list[dict[str, Any]] = []
    for h in range(hosts):
        ops.append({"op": "insert", "table": "Encap", "uuid-name": f"e{h}", "row": {
            "type": "geneve", "ip": f"127.1.{h // 250}.{h % 250 + 1}", "chassis_name": f"h{h}"}})
        ops.append({"op": "insert", "table": "Chassis", "uuid-name": f"c{h}", "row": {
            "name": f"h{h}", "hostname": f"h{h}", "encaps": ["named-uuid", f"e{h}"]}})
        ops.append({"op": "insert", "table": "Datapath_Binding", "uuid-name": f"d{h}", "row": {
            "tunnel_key": h + 1, "external_ids": ["map", [["name", f"ls{h}"],
                                                          ["logical-switch", f"x{h}"]]]}})
        for p in range(pods):
            ops.append({"op": "insert", "table": "Port_Binding", "row": {
                "logical_port": f"p{h}-{p}", "datapath": ["named-uuid", f"d{h}"],
                "tunnel_key": p + 1, "chassis": ["named-uuid", f"c{h}"],
                "mac": f"0a:58:00:{h % 256:02x}:{p // 256:02x}:{p % 256:02x} "
                       f"10.{h // 250}.{h % 250}.{p + 2}"}})
    res = sb.transact(ops, timeout=300)
    uuids = [r["uuid"][1] for r in res if isinstance(r, dict) and "uuid" in r]
    per = 3 + pods
    chassis = [uuids[h * per + 1] for h in range(hosts)]
    dps = [uuids[h * per + 2] for h in range(hosts)]
    lb_ops: list[dict[str, object]] = []
    for i in range(lbs):
        h = rnd.randrange(hosts)
        lb_ops.append({"op": "insert", "table": "Load_Balancer", "row": {
            "name": f"lb{i}", "protocol": "tcp", "datapaths": ["uuid", dps[h]],
            "vips": ["map", [[f"172.20.{i // 250}.{i % 250 + 1}:80",
                              f"10.{h // 250}.{h % 250}.2:8080"]]]}})
    res = sb.transact(lb_ops, timeout=300)
    return dps, chassis, [r["uuid"][1] for r in res if isinstance(r, dict)]


def measure(sb: Sandbox, remote: tuple[str, int] | str, conditional: bool,
            dps: list[str], chassis: list[str], lb_uuids: list[str], updates: int,
            server_pids: list[int], rnd: random.Random, pods: int) -> dict[str, Any]:
    clients = [Client(remote, monitor_request(conditional, chassis[h], dps[h]))
               for h in range(len(dps))]
    for c in clients:
        c.start()
    for c in clients:
        if not c.synced.wait(120) or c.error:
            raise RuntimeError(f"a client got no initial rows: {c.error}")
    time.sleep(0.5)
    initial = sum(c.received for c in clients)
    before = [c.received for c in clients]
    cpu0 = sum(cpu_seconds(p) for p in server_pids)
    t0 = time.monotonic()
    reached: list[int] = []  # clients that received something, per update
    last = list(before)
    for u in range(updates):
        h = rnd.randrange(len(dps))
        op: dict[str, object]
        if u % 5 == 4:  # an LB backend change
            i = rnd.randrange(len(lb_uuids))
            op = {"op": "update", "table": "Load_Balancer",
                  "where": [["_uuid", "==", ["uuid", lb_uuids[i]]]],
                  "row": {"vips": ["map", [[f"172.20.{i // 250}.{i % 250 + 1}:80",
                                            f"10.0.0.{u % 200 + 2}:8080"]]]}}
        else:  # a pod started on host h
            mac = f"0a:58:01:00:{u // 256:02x}:{u % 256:02x} 10.200.{u // 250}.{u % 250}"
            op = {"op": "insert", "table": "Port_Binding", "row": {
                "logical_port": f"new{u}-{secrets.token_hex(2)}",
                "datapath": ["uuid", dps[h]], "tunnel_key": next(_KEYS),
                "chassis": ["uuid", chassis[h]], "mac": mac}}
        sb.transact([op])
        time.sleep(0.05)  # the update reaches the clients it goes to
        now = [c.received for c in clients]
        reached.append(sum(1 for a, b in zip(now, last, strict=True) if a > b))
        last = now
    time.sleep(1.0)  # the last updates reach every client
    took = time.monotonic() - t0
    cpu = sum(cpu_seconds(p) for p in server_pids) - cpu0
    got = [c.received - b for c, b in zip(clients, before, strict=True)]
    for c in clients:
        c.stop.set()
        c.sock.close()
    return {"clients": len(clients), "updates": updates, "initial_bytes": initial,
            "bytes_per_update": round(sum(got) / updates),
            "bytes_per_update_per_client": round(sum(got) / updates / len(clients), 1),
            "clients_reached_per_update": round(sum(reached) / updates / len(clients), 3),
            "server_cpu_ms_per_update": round(cpu * 1000 / updates, 2),
            "seconds": round(took, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--pods", type=int, default=20, help="pods per host")
    p.add_argument("--lbs", type=int, default=500)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.fanout: needs root", file=sys.stderr)
        return 2
    rnd = random.Random(17)
    res: dict[str, Any] = {"hosts": a.hosts, "pods_per_host": a.pods, "lbs": a.lbs,
                           "cpu_model": cpu_model(), "loadavg_start": _loadavg(),
                           "ovs_version": _version("ovsdb-server"),
                           "rows": {}}
    with started_sandbox("lbbench-fanout-", sb_cluster=3) as sb:
        dps, chassis, lbs = populate(sb, a.hosts, a.pods, a.lbs, rnd)
        members = [int((sb.rundir / f"sb{i}.pid").read_text()) for i in range(3)]
        relay = sb.start_sb_relay()
        relay_pid = int((sb.rundir / "sb-relay.pid").read_text())
        ports = [int(r.rsplit(":", 1)[1]) for r in sb.sb_remote.split(",")]
        leader = sb.sb_leader() or 0
        direct = ("127.0.0.1", ports[leader])
        for name, remote, cond, pids in (
                ("direct, monitor all", direct, False, members),
                ("direct, conditions", direct, True, members),
                ("relay, monitor all", relay.removeprefix("unix:"), False, [*members, relay_pid]),
                ("relay, conditions", relay.removeprefix("unix:"), True, [*members, relay_pid])):
            print(f"[fanout] {name} ...", flush=True)
            res["rows"][name] = measure(sb, remote, cond, dps, chassis, lbs, a.updates,
                                        pids, rnd, a.pods)
    res["loadavg_end"] = _loadavg()
    res["extrapolation"] = extrapolate(res)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "fanout-latest.json").write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    return 0


def extrapolate(res: dict[str, Any]) -> dict[str, Any]:
    """Per SB update, at 1000 and 10 000 hosts: without conditions every host
    receives it; with them, the share of hosts the run saw reached."""
    out: dict[str, Any] = {}
    for name, r in res["rows"].items():
        per_client = r["bytes_per_update_per_client"] / max(r["clients_reached_per_update"],
                                                            1e-9)
        # conservative: the server's work per update grows with its clients
        # either way (it evaluates each client's conditions)
        cpu_per_client = r["server_cpu_ms_per_update"] / r["clients"]
        for hosts in (1000, 10000):
            reached = hosts if "all" in name else max(1.0, r["clients_reached_per_update"]
                                                       * r["clients"])
            out[f"{name} @ {hosts}"] = {
                "bytes_per_update": round(per_client * reached),
                "server_cpu_ms_per_update": round(cpu_per_client * hosts, 1)}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"{res['hosts']} monitoring clients, {res['pods_per_host']} pods a host, "
             f"{res['lbs']} LBs ({res.get('cpu_model', '?')}; load {res['loadavg_start']} -> "
             f"{res['loadavg_end']})", "",
             "| monitor | initial bytes (all clients) | bytes per update (all clients) | "
             "clients reached per update | server CPU per update |", "|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['initial_bytes']} | {r['bytes_per_update']} | "
                     f"{r['clients_reached_per_update'] * 100:.0f} % | "
                     f"{r['server_cpu_ms_per_update']:.2f} ms |")
    lines += ["", "| extrapolated | bytes per update | server CPU per update |", "|---|---|---|"]
    for name, e in res["extrapolation"].items():
        lines.append(f"| {name} hosts | {e['bytes_per_update']} | "
                     f"{e['server_cpu_ms_per_update']} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
