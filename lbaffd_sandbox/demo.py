"""``make demo``: a sandbox, lbaffd on it, and sticky sessions shown live.

By default the companion demo (``lbaffd_sandbox.companion_demo``): real
ovn-northd and two chassis with ovn-controller, OVN's own affinity vs lbaffd
in companion mode for new clients, side by side.

``--standalone``: the standalone demo.  Starts a private OVS + OVN SB sandbox
in ``./run/demo``, writes one logical switch, five port bindings and a load
balancer with ``affinity_timeout`` to the SB, runs the real daemon against it,
then lets two clients open new connections to the VIP every second and prints
which backend each reached.

Ctrl-C (or ``--stop`` from another shell) tears everything down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from lbaffd_sandbox import companion_demo
from lbaffd_sandbox.sandbox import Sandbox, _kill_pidfile
from lbaffd_sandbox.topology import VIP, VIP_PORT, build_demo_topology

PLAIN_VIP = "10.0.0.101"  # same backends, no affinity: for contrast
BACKENDS = "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"
RUNDIR = Path(__file__).resolve().parent.parent / "run" / "demo"
MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"


class Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop


def stop_demo(rundir: Path) -> None:
    _kill_pidfile(rundir / "lbaffd.pid")
    if Sandbox.stop_from_state(rundir):
        print(f"demo in {rundir} stopped")


def daemon_command(sb: Sandbox) -> list[str]:
    return [sys.executable, "-m", "lbaffd", "run", "--ovs-db", sb.ovs_db_remote,
            "--sb-db", sb.sb_remote, "--bridge", "br-int", "--ovs-rundir", str(sb.ovs_rundir),
            "--log-format", "console", "--metrics-address", "127.0.0.1:9476",
            "--rundir", str(sb.rundir / "lbaffd")]


def start_daemon(sb: Sandbox) -> subprocess.Popen[bytes]:
    log = open(sb.rundir / "lbaffd.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(daemon_command(sb), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (sb.rundir / "lbaffd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while not sb.dump_flows(MANAGED):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"lbaffd did not program br-int; see {sb.rundir / 'lbaffd.log'}")
        time.sleep(0.1)
    return proc


# (namespace, source address) of the clients shown; two per client namespace
CLIENTS = (("cli1", "10.0.0.11"), ("cli1", "10.0.0.31"), ("cli2", "10.0.0.12"),
           ("cli2", "10.0.0.32"))


def _lb_show(sb: Sandbox, name: str) -> str:
    """What an operator would type: ovs-appctl against lbaffd's control socket."""
    res = subprocess.run(["ovs-appctl", "-t", str(sb.rundir / "lbaffd" / "lbaffd.ctl"),
                          "lb/show", name], capture_output=True, text=True, timeout=10)
    return res.stdout


def live_view(sb: Sandbox, duration: float | None, timeout: int) -> None:
    for host, ip in CLIENTS:
        if ip != sb.hosts[host].ip:
            sb.hosts[host].add_address(ip)
    vips = ((VIP, f"affinity {timeout}s"), (PLAIN_VIP, "no affinity"))
    history: dict[tuple[str, str], list[str]] = {(ip, v): [] for _, ip in CLIENTS
                                                 for v, _ in vips}
    tty = sys.stdout.isatty()
    start = time.monotonic()
    rnd = 0
    while duration is None or time.monotonic() - start < duration:
        rnd += 1
        for host, ip in CLIENTS:
            for vip, _ in vips:
                got = sb.connect(host, vip, VIP_PORT, count=3, src_ips=[ip])
                h = history[(ip, vip)]
                h += [r.backend or "x" for r in got]
                del h[:-9]
        entries = len(sb.dump_flows(LEARNED))
        lines = [f"lbaffd demo (round {rnd}, Ctrl-C to stop): 3 new TCP connections per "
                 "client per second"]
        for vip, label in vips:
            lines.append(f" VIP {vip}:{VIP_PORT} ({label})")
            for _, ip in CLIENTS:
                seq = history[(ip, vip)]
                kind = "STICKY" if len(set(seq)) == 1 else "spread"
                lines.append(f"   client {ip:<10} -> {' '.join(seq):<36} {kind}")
        lines.append(f" learned affinity entries on br-int: {entries}")
        lines += [" " + row.strip() for row in _lb_show(sb, "lb1").splitlines()
                  if row.strip().startswith(("vip ", "backend "))]
        if tty:
            print("\033[H\033[J" + "\n".join(lines), flush=True)
        else:
            print(" | ".join(lines[1:]), flush=True)
        time.sleep(1.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stop", action="store_true", help="tear down a demo left running")
    p.add_argument("--duration", type=float, default=None, help="exit after S seconds")
    p.add_argument("--no-daemon", action="store_true",
                   help="sandbox only; print the command to run lbaffd yourself")
    p.add_argument("--affinity-timeout", type=int, default=30)
    p.add_argument("--rundir", type=Path, default=RUNDIR)
    p.add_argument("--standalone", action="store_true",
                   help="the standalone demo (lbaffd owns br-int; SB rows written directly) "
                        "instead of companion mode next to a real ovn-controller")
    p.add_argument("--metrics-address", default="127.0.0.1:9476",
                   help="companion demo: lbaffd's --metrics-address")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("make demo needs root (network namespaces, ovs-vswitchd)", file=sys.stderr)
        return 1
    if args.stop:
        stop_demo(args.rundir)
        return 0
    stop_demo(args.rundir)  # a previous demo that was not stopped
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # the default demo has a fixed, recognizable prefix; others (tests) a random one
    prefix = "lxdemo" if args.rundir == RUNDIR else None
    if not args.standalone:
        try:
            return companion_demo.run(args.rundir, prefix, args.duration, args.no_daemon,
                                      args.affinity_timeout, args.metrics_address)
        except Stop:
            return 0
    sb = Sandbox(args.rundir, prefix=prefix)
    proc: subprocess.Popen[bytes] | None = None
    try:
        sb.start()
        topo = build_demo_topology(sb, affinity_timeout=args.affinity_timeout)
        sb.add_load_balancer("lb-plain", {f"{PLAIN_VIP}:{VIP_PORT}": BACKENDS},
                             datapaths=[topo.datapath_uuid])
        print(f"sandbox up in {args.rundir} (OVS in netns {sb.ovs_ns})")
        if args.no_daemon:
            print("run lbaffd yourself:\n  " + " ".join(daemon_command(sb)))
            print(f"stop with: {sys.executable} -m lbaffd_sandbox.demo --stop")
            return 0
        proc = start_daemon(sb)
        print(f"lbaffd running (pid {proc.pid}, log {args.rundir / 'lbaffd.log'}, "
              "metrics http://127.0.0.1:9476/metrics)")
        live_view(sb, args.duration, args.affinity_timeout)
    except Stop:
        pass
    finally:
        if not args.no_daemon:
            if proc is not None:
                _kill_pidfile(args.rundir / "lbaffd.pid")
            sb.stop()
            print("demo stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
