"""The OVS-daemon process options of ``lbaffd run`` (``--detach``,
``--pidfile``, ``--log-file``, ...): parsing only, so that ``--help`` and the
man page build import nothing from the ovs library (``lbaffd.cli`` keeps
eventlet out before the first ovs import).  What they do: ``ops_daemonize``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

NAME = "lbaffd"


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    detach: bool = False
    no_chdir: bool = False
    pidfile: str = ""  # "": <ovs-rundir>/lbaffd.pid
    overwrite_pidfile: bool = False
    log_file: str | None = None  # None: log to stderr; "": <OVS_LOGDIR>/lbaffd.log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "daemon options (as the OVS daemons have them; flags only)",
        "lbaffd always writes a locked <ovs-rundir>/lbaffd.pid and listens on "
        "<ovs-rundir>/lbaffd.<pid>.ctl, so `ovs-appctl -t lbaffd COMMAND` finds it "
        "(with OVS_RUNDIR set if the run directory is not the default).")
    g.add_argument("--detach", action="store_true",
                   help="run in the background; return once the control sockets exist "
                   "(the log then goes nowhere without --log-file)")
    g.add_argument("--no-chdir", action="store_true",
                   help="with --detach, do not chdir to / (relative paths stay valid)")
    g.add_argument("--pidfile", nargs="?", const="", default="", metavar="FILE",
                   help="pidfile (default: <ovs-rundir>/lbaffd.pid; a relative FILE is "
                   "relative to --ovs-rundir; `ovs-appctl -t lbaffd` needs the default)")
    g.add_argument("--overwrite-pidfile", action="store_true",
                   help="replace the pidfile even if another process holds it")
    g.add_argument("--log-file", nargs="?", const="", default=None, metavar="FILE",
                   help="write the log to FILE instead of stderr (default FILE: "
                   "<OVS_LOGDIR>/lbaffd.log, i.e. /var/log/openvswitch/lbaffd.log); "
                   "`ovs-appctl -t lbaffd vlog/reopen` reopens it after rotation")


def options_from_args(args: argparse.Namespace) -> ProcessOptions:
    return ProcessOptions(detach=args.detach, no_chdir=args.no_chdir, pidfile=args.pidfile,
                          overwrite_pidfile=args.overwrite_pidfile, log_file=args.log_file)
