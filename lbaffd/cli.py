"""``lbaffd run ...``: command-line entry point."""

from __future__ import annotations

import argparse
import sys
import warnings

from lbaffd import __version__
from lbaffd.config import Settings, default_ovs_rundir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbaffd",
        description="Session affinity for OVN load balancers on an Open vSwitch host.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"lbaffd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Settings()
    run.add_argument("--ovs-db", default="",
                     help="local Open_vSwitch DB remote (default: unix:<ovs-rundir>/db.sock)")
    run.add_argument("--sb-db", default="",
                     help="OVN Southbound DB remote(s), comma-separated for a cluster "
                          "(default: Open_vSwitch external_ids:ovn-remote)")
    run.add_argument("--bridge", default="",
                     help="integration bridge (default: external_ids:ovn-bridge, else br-int)")
    run.add_argument("--of-target", default="",
                     help="OpenFlow target (default: unix:<ovs-rundir>/<bridge>.mgmt)")
    run.add_argument("--ovs-rundir", default="",
                     help=f"ovs-vswitchd run directory (default: $OVS_RUNDIR or "
                          f"{default_ovs_rundir()})")
    run.add_argument("--chassis", default="",
                     help="this chassis' name (default: external_ids:system-id)")
    run.add_argument("--log-format", choices=("console", "json"), default=d.log_format)
    run.add_argument("--log-level", default=d.log_level,
                     choices=("debug", "info", "warning", "error"))
    run.add_argument("--audit-interval", type=float, default=d.audit_interval,
                     help="seconds between full audits of the switch against the SB")
    run.add_argument("--metrics-address", default=d.metrics_address,
                     help="host:port for Prometheus /metrics ('' disables)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        # ovs.poller imports eventlet only to detect monkey patching (lbaffd
        # never patches); keep its deprecation notice out of the daemon's log.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        from lbaffd.daemon import Daemon
        from lbaffd.log import configure

        settings = Settings(
            ovs_db=args.ovs_db, sb_db=args.sb_db, bridge=args.bridge, of_target=args.of_target,
            ovs_rundir=args.ovs_rundir, chassis=args.chassis, log_format=args.log_format,
            log_level=args.log_level, audit_interval=args.audit_interval,
            metrics_address=args.metrics_address,
        )
        configure(settings.log_format, settings.log_level)
        return Daemon(settings).run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
