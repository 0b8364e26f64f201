"""``lbaffd run ...``: command-line entry point.

Every setting is a flag, an ``LBAFFD_<NAME>`` environment variable (what
``/etc/default/lbaffd`` sets for systemd) or a key in a TOML ``--config`` file,
in that order of precedence; what is still empty comes from the local
``Open_vSwitch.external_ids`` as ovn-controller reads them.
"""

from __future__ import annotations

import argparse
import os
import sys

from lbaffd import __version__
from lbaffd.config import ENV_PREFIX, Settings, load_settings, read_config_file
from lbaffd.ops import process_options as ops_options

D = Settings()
# (flag, help) in the order --help shows them; the default is taken from Settings.
OPTIONS: list[tuple[str, str]] = [
    ("--ovs-db", "local Open_vSwitch DB remote (empty: unix:<ovs-rundir>/db.sock)"),
    ("--sb-db", "OVN Southbound remote(s): unix:, tcp:, ssl:; comma-separated for a "
                "Raft cluster (empty: Open_vSwitch external_ids:ovn-remote)"),
    ("--bridge", "integration bridge (empty: external_ids:ovn-bridge, else br-int)"),
    ("--of-target", "OpenFlow target (empty: unix:<ovs-rundir>/<bridge>.mgmt)"),
    ("--ovs-rundir", "ovs-vswitchd run directory (empty: $OVS_RUNDIR or /var/run/openvswitch)"),
    ("--ovn-rundir", "ovn-controller's run directory, where --mode auto looks for its "
                     "pidfile (empty: $OVN_RUNDIR or /var/run/ovn)"),
    ("--chassis", "this chassis' name (empty: external_ids:system-id)"),
    ("--rundir", "lbaffd's run directory (mode 0700): control socket lbaffd.ctl"),
    ("--log-format", "console or json"),
    ("--log-level", "debug, info, warning or error"),
    ("--audit-interval", "seconds between full audits of the switch against the SB"),
    ("--metrics-address", "host:port for Prometheus /metrics (empty: disabled)"),
    ("--distribution", "dp_hash bucket layout for LBs without options:distribution: balanced "
                       "(a 256-slot dp_hash table: a bucket per backend and a filler) or "
                       "ovs-default"),
    ("--ssl-private-key", "PEM private key for ssl: DB remotes (as ovn-controller -p)"),
    ("--ssl-certificate", "PEM certificate for ssl: DB remotes (as ovn-controller -c)"),
    ("--ssl-ca-cert", "PEM CA certificate that signed the DB servers' (as ovn-controller -C)"),
    ("--cleanup-on-exit", "remove exactly lbaffd's flows, groups and learned entries when "
                          "stopping (by default they stay and traffic keeps flowing)"),
    ("--monitor-all", "receive every SB row instead of only those of local datapaths "
                      "(as ovn-controller's external_ids:ovn-monitor-all=true)"),
    ("--mode", "auto (companion when ovn-controller manages the bridge, else standalone), "
               "companion (next to ovn-controller: intercepts the VIPs it takes over in "
               "table 0 above OVN's flows, hands everything else to OVN's pipeline), "
               "standalone (lbaffd owns the bridge from table 0) or embedded (only its "
               "stage tables, entered at --table-base with metadata = datapath tunnel key "
               "and reg13 = conntrack zone, left through resubmit(,--next-table))"),
    ("--take-over", "companion mode: which LBs lbaffd balances: affinity (those with "
                    "options:affinity_timeout) or all; the others stay entirely OVN's"),
    ("--ct-zone", "companion mode: lbaffd's own conntrack zone (must be one ovn-controller "
                  "has not assigned: checked against br-int's ct-zone-* external_ids)"),
    ("--force", "standalone/embedded: start even though lbaffd's tables hold flows of "
                "another controller (never on an OVN chassis)"),
    ("--table-base", "first of lbaffd's tables (-1: 0 standalone, 180 embedded, "
                     "200 companion)"),
    ("--next-table", "embedded mode: table packets leave to (-1: the one after lbaffd's)"),
    ("--max-idle-timeout", "cap on learned entries' OpenFlow idle_timeout; longer "
                           "affinity timeouts are completed by re-installing entries (lower it "
                           "only to test that path)"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbaffd", description="Session affinity for OVN load balancers on an Open vSwitch "
        "host (built on the Ryu framework via os-ken).")
    p.add_argument("--version", action="version", version=f"lbaffd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the daemon in the foreground",
        description="Run the daemon. Each option may also be given as an environment "
        f"variable {ENV_PREFIX}<NAME> (e.g. {ENV_PREFIX}SB_DB) or as a key of the TOML "
        "--config file (e.g. sb_db = \"...\"); flags win over the environment, which wins "
        "over the file.")
    run.add_argument("--config", default=os.environ.get(ENV_PREFIX + "CONFIG", ""),
                     help="TOML config file (env LBAFFD_CONFIG; default: none)")
    for flag, text in OPTIONS:
        name = flag[2:].replace("-", "_")
        default = getattr(D, name)
        if isinstance(default, bool):
            run.add_argument(flag, dest=name, action="store_const", const=True, default=None,
                             help=f"{text} (default: off)")
            continue
        # strings in double quotes: a man page line may not start with ' (lbaffd.8)
        shown = f'"{default}"' if isinstance(default, str) else default
        run.add_argument(flag, dest=name, type=type(default), default=None,
                         help=f"{text} (default: {shown})")
    ops_options.add_arguments(run)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    cli = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
           for flag, _ in OPTIONS}
    return load_settings(cli, os.environ, read_config_file(args.config))


def keep_eventlet_out() -> None:
    """lbaffd runs on plain threads and never uses eventlet, but os-ken's
    package metadata installs it and ``ovs.poller`` imports it when present,
    only to detect monkey patching; that import alone loads eventlet's patched
    copy of dnspython (~13 MB of a 65 MB baseline).  Make it unimportable in
    the daemon's process (Python's own ``sys.modules[name] = None`` contract),
    before anything imports ``ovs``."""
    if "eventlet" not in sys.modules:
        sys.modules["eventlet"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        keep_eventlet_out()
        from lbaffd.daemon import Daemon
        from lbaffd.ops.daemonize import OvsDaemonProcess
        from lbaffd.ops.log import configure

        try:
            settings = settings_from_args(args)
        except (OSError, ValueError) as exc:
            print(f"lbaffd: {exc}", file=sys.stderr)
            return 2
        configure(settings.log_format, settings.log_level)
        process = OvsDaemonProcess(ops_options.options_from_args(args),
                                   settings.with_defaults().ovs_rundir)
        process.start()  # before any thread: log file, --detach's fork, pidfile
        return Daemon(settings, process=process).run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
