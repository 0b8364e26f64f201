"""``make demo`` (default): lbaffd in companion mode next to a real ovn-controller.

Builds an ``OvnSandbox`` in ``./run/demo`` (NB, SB, ovn-northd, two chassis
each with ovs-vswitchd and ovn-controller, Geneve between them) with the
companion topology (``lbaffd_sandbox.ovn_topology``: sw0 - lr0 - sw1, a
stateful ACL, ``lb-aff`` 172.16.0.10:80 with ``affinity_timeout`` and
``lb-plain`` 172.16.0.11:80 without; be3 on chassis 2).

Then, side by side for *new* clients of the affinity VIP:

1. **OVN native** (lbaffd not running yet): a few new clients, three
   connections each.  OVN 23.03 drops the first connection of every new
   client, the following ones are sticky.
2. **lbaffd companion**: lbaffd is started on chassis 1 (``--mode companion``,
   it takes over the LBs with ``affinity_timeout``); every second a new client
   on sw0 and a new routed client on sw1 open three connections each.

``lb-plain`` stays OVN's all along (for contrast: it spreads).  Nothing is
faked: every line is real TCP through OVN's pipeline.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lbaffd_sandbox.ovn import OvnSandbox
from lbaffd_sandbox.ovn_topology import OvnTopology, build_ovn_topology
from lbaffd_sandbox.sandbox import _kill_pidfile
from lbaffd_sandbox.scenarios import ClientRun, open_connections

CONNECTIONS = 3  # per new client
TIMEOUT = 2.0  # s per connection: OVN's lost first connection shows as "x" this long
NATIVE_CLIENTS = (("cli1", 2), ("rcli1", 2))  # (host, how many new clients) before lbaffd


def daemon_command(sb: OvnSandbox, metrics: str, chassis: int = 1) -> list[str]:
    """The companion-mode command line (issue 14's contract) for lbaffd on
    chassis ``chassis``: its Open_vSwitch DB and br-int management socket, the
    sandbox's SB, a run directory in the chassis' own (``<rundir>/lbaffd``,
    ``<rundir>/ch2/lbaffd``)."""
    node = sb.node(chassis)
    return [sys.executable, "-m", "lbaffd", "run", "--mode", "companion",
            "--ovs-db", node.ovs_db_remote, "--sb-db", sb.sb_remote,
            "--bridge", "br-int", "--of-target", node.of_target,
            "--rundir", str(node.rundir / "lbaffd"), "--log-format", "json",
            "--metrics-address", metrics]


def start_daemon(sb: OvnSandbox, metrics: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start lbaffd, pidfile ``lbaffd.pid`` (``--stop`` uses it); return once
    it logged ``initial_sync_done`` (its first full sync is on br-int)."""
    log_path = sb.rundir / "lbaffd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(daemon_command(sb, metrics), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    (sb.rundir / "lbaffd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while not _synced(log_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise SystemExit(f"lbaffd did not sync (exit {proc.poll()}); "
                             f"{log_path}:\n{tail}")
        time.sleep(0.1)
    return proc


def _synced(log_path: Path) -> bool:
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                if json.loads(line).get("event") == "initial_sync_done":
                    return True
            except ValueError:
                continue
    return False


def new_clients(topo: OvnTopology, vip: str, who: tuple[tuple[str, int], ...]) -> list[ClientRun]:
    """Each listed host's new clients open ``CONNECTIONS`` connections one
    after another; the clients run concurrently (a lost first connection then
    costs the demo one ``TIMEOUT``, not one per client)."""
    jobs = [(host, ip) for host, n in who for ip in topo.new_clients(host, n)]

    def one(job: tuple[str, str]) -> ClientRun:
        host, ip = job
        res = open_connections(topo, host, vip, topo.vip_port, CONNECTIONS, [ip], TIMEOUT)
        return ClientRun(vip, ip, False, TIMEOUT, res)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(one, jobs))


def verdict(run: ClientRun) -> str:
    """STICKY; "lost 1st, then sticky" (OVN 23.03's affinity); else how many
    were lost and whether the rest spread."""
    if run.sticky:
        return "STICKY"
    rest = ClientRun(run.vip, run.client, run.parallel, run.timeout_s, run.results[1:])
    if not run.results[0].ok and rest.results and rest.sticky:
        return "lost 1st, then sticky"
    parts = [f"{run.failed} lost"] if run.failed else []
    if len(run.distinct) > 1:
        parts.append("spread")
    return ", ".join(parts)


def client_line(run: ClientRun) -> str:
    first = run.results[0]
    head = (f"first {first.connect_ms:7.1f} ms" if first.ok
            else f"first: no answer in {run.timeout_s:g} s")
    seq = " ".join(run.backends)
    routed = " (sw1)" if run.client.startswith("10.0.1.") else "      "
    return f"   new client {run.client:<11}{routed} {head:<24} {seq:<14} {verdict(run)}"


def render(topo: OvnTopology, native: list[ClientRun], companion: list[ClientRun],
           plain: list[str], rnd: int, lb_show: list[str]) -> list[str]:
    vip = f"{topo.affinity_vip}:{topo.vip_port}"
    lines = [f"lbaffd companion demo - real ovn-northd + 2 x ovn-controller "
             f"(round {rnd}, Ctrl-C to stop)",
             f" VIP {vip} (lb-aff, affinity_timeout={topo.affinity_timeout}s): "
             f"new clients, {CONNECTIONS} connections each",
             "  OVN native (before lbaffd started):"]
    lines += [client_line(r) for r in native]
    lines.append("  lbaffd --mode companion (on chassis 1, next to ovn-controller):")
    lines += [client_line(r) for r in companion[-6:]] or ["   (starting)"]
    kind = "spread" if len(set(plain)) > 1 else "one backend"
    lines.append(f" VIP {topo.plain_vip}:{topo.vip_port} (lb-plain, no affinity, OVN's): "
                 f"client 10.0.0.11 -> {' '.join(plain[-9:])}  {kind}")
    lines += [" " + row for row in lb_show]
    return lines


def _lb_show(sb: OvnSandbox) -> list[str]:
    """What an operator types: ``ovs-appctl -t <rundir>/lbaffd.ctl lb/show lb-aff``."""
    res = subprocess.run(["ovs-appctl", "-t", str(sb.rundir / "lbaffd" / "lbaffd.ctl"),
                          "lb/show", "lb-aff"], capture_output=True, text=True, timeout=10)
    return [row.strip() for row in res.stdout.splitlines() if row.strip()][:8]


def _show(lines: list[str], tty: bool) -> None:
    if tty:
        print("\033[H\033[J" + "\n".join(lines), flush=True)
    else:
        print(" | ".join(lines[1:]), flush=True)


def run(rundir: Path, prefix: str | None, duration: float | None, no_daemon: bool,
        affinity_timeout: int, metrics: str) -> int:
    """The companion demo; ends after ``duration`` or when the caller's signal
    handler raises, and then tears everything down (except with ``no_daemon``,
    which leaves the sandbox up and prints the lbaffd command)."""
    sb = OvnSandbox(rundir, prefix=prefix, chassis_count=2)
    tty = sys.stdout.isatty()
    proc: subprocess.Popen[bytes] | None = None
    keep = False  # --no-daemon leaves the sandbox up for the user's own lbaffd
    try:
        sb.start()
        topo = build_ovn_topology(sb, affinity_timeout=affinity_timeout)
        # one new client per switch and round: reuse addresses after ~150
        # rounds, long after their affinity (and conntrack) entries expired
        topo.pool.wrap = True
        print(f"OVN sandbox up in {rundir} (OVS in netns {sb.ovs_ns} and {sb.node(2).ovs_ns}; "
              f"ovn-controller logs {rundir}/ovn-controller.log, {rundir}/ch2/ovn-controller.log)",
              flush=True)
        native = new_clients(topo, topo.affinity_vip, NATIVE_CLIENTS)
        if no_daemon:
            print("\n".join(render(topo, native, [], [], 0, [])[2:3 + len(native)]))
            print("run lbaffd yourself:\n  " + shlex.join(daemon_command(sb, metrics)))
            print(f"stop with: {sys.executable} -m lbaffd_sandbox.demo --stop --rundir {rundir}")
            keep = True
            return 0
        proc = start_daemon(sb, metrics)
        print(f"lbaffd running (pid {proc.pid}, log {rundir / 'lbaffd.log'})", flush=True)
        companion: list[ClientRun] = []
        plain: list[str] = []
        start = time.monotonic()
        rnd = 0
        while duration is None or time.monotonic() - start < duration:
            rnd += 1
            companion += new_clients(topo, topo.affinity_vip, (("cli1", 1), ("rcli1", 1)))
            got = open_connections(topo, "cli1", topo.plain_vip, topo.vip_port, CONNECTIONS,
                                   [], TIMEOUT)
            plain += [r.backend if r.ok else "x" for r in got]
            _show(render(topo, native, companion, plain, rnd, _lb_show(sb)), tty)
            time.sleep(1.0)
        return 0
    finally:
        if not keep:
            if proc is not None:
                _kill_pidfile(rundir / "lbaffd.pid")
            sb.stop()
            print("demo stopped", flush=True)
