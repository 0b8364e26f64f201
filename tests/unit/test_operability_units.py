"""Config precedence, CLI help, systemd notify, control-socket text (pure parts)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from types import MappingProxyType

import pytest

from lbaffd.cli import OPTIONS, build_parser
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import compile_state
from lbaffd.config import Settings, load_settings, read_config_file
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import ParseIssue, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.ops.observe import AffinityEntry, Counters
from lbaffd.ops.sdnotify import Notifier
from lbaffd.ops.status import (
    ReconcileStats,
    Status,
    format_affinity,
    format_lb_list,
    format_lb_show,
    format_reconcile_stats,
)


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "lbaffd.toml"
    cfg.write_text('sb_db = "tcp:1.1.1.1:6642"\nbridge = "br-file"\naudit_interval = 3\n')
    s = load_settings({"bridge": "br-cli"},
                      {"LBAFFD_SB_DB": "ssl:2.2.2.2:6642", "LBAFFD_BRIDGE": "br-env"},
                      read_config_file(str(cfg)))
    assert (s.bridge, s.sb_db, s.audit_interval) == ("br-cli", "ssl:2.2.2.2:6642", 3.0)
    assert s.log_format == Settings().log_format  # untouched -> default


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="sbdb"):
        load_settings({}, {}, {"sbdb": "x"})


def test_external_ids_fill_only_what_is_left() -> None:
    ext = {"ovn-remote": "tcp:9.9.9.9:6642", "ovn-bridge": "br-x", "system-id": "hv1"}
    s = Settings(ovs_rundir="/r").resolve(ext)
    assert (s.sb_db, s.bridge, s.chassis, s.of_target, s.ovs_db) == (
        "tcp:9.9.9.9:6642", "br-x", "hv1", "unix:/r/br-x.mgmt", "unix:/r/db.sock")
    assert Settings(ovs_rundir="/r", bridge="br-int").resolve(ext).bridge == "br-int"


def test_help_documents_every_option_with_its_default(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, _ in OPTIONS:
        assert flag in out
    assert "(default: 60.0)" in out and "LBAFFD_" in out and "--config" in out


def test_notifier_speaks_sd_notify(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert n.watchdog_interval == 2.0
        n.ready("in sync")
        n.watchdog()
        assert sock.recv(100) == b"READY=1\nSTATUS=in sync"
        assert sock.recv(100) == b"WATCHDOG=1"
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_interval == 0
    quiet.ready()  # no socket: no-op


def test_notifier_never_waits_for_its_reader(tmp_path: Path) -> None:
    """A reader that does not read (its queue full) or is gone costs
    dropped notifications, never a blocked worker."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        for _ in range(200):  # far more than a unix datagram queue holds
            n.watchdog()
        assert 0 < n.dropped < 200
        assert sock.recv(100) == b"WATCHDOG=1"
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    gone.stopping()
    assert gone.dropped == 1


def _status() -> Status:
    dp = DatapathRow("dp-1", 1, "ls1")
    topo = Topology((LocalPort(11, "cli1", dp),),
                    MappingProxyType({(1, ipaddress.ip_address("10.0.0.21")): "02:00:00:00:00:21"}))
    rows = [LoadBalancerRow(uuid="u-1", name="lb1",
                            vips=MappingProxyType({"10.0.0.100:80": "10.0.0.21:8080"}),
                            options=MappingProxyType({"affinity_timeout": "60"}),
                            datapaths=("dp-1",))]
    lbs, _ = parse_all(rows, {"dp-1": dp}, {})
    desired = compile_state(lbs, topo, own.allocate_group_ids(vip_owners(lbs, topo), {}),
                            STANDALONE)
    return Status(plans=desired.vips, stats=ReconcileStats(passes=3, last_sync=100.0))


def test_control_socket_text() -> None:
    st = _status()
    gid = st.plans[0].group_id
    assert "lb1" in format_lb_list(st) and "60s" in format_lb_list(st)
    show = format_lb_show(st, "lb1", {("lb1", "10.0.0.100:80", "10.0.0.21:8080"):
                                      Counters(7, 700)}, {("lb1", "10.0.0.100:80"): 2})
    assert show is not None and f"group {gid:#x}" in show and "packets 7  bytes 700" in show
    assert format_lb_show(st, "u-1", {}, {}) is not None  # by uuid too
    assert format_lb_show(st, "nope", {}, {}) is None
    aff = format_affinity(st, [AffinityEntry(gid, 1, "10.0.0.11", "10.0.0.21:8080", 5.0, 60)],
                          "10.0.0.100")
    assert "10.0.0.11" in aff and "55s" in aff
    assert "passes: 3" in format_reconcile_stats(st.stats, now=110.0)
    assert "10.0s ago" in format_reconcile_stats(st.stats, now=110.0)


def test_lb_show_names_the_parts_of_a_split_group_and_lbs_left_out() -> None:
    dp = DatapathRow("dp-1", 1, "ls1")
    topo = Topology((LocalPort(11, "cli1", dp),), MappingProxyType({}))
    backends = ",".join(f"10.1.{i // 250}.{i % 250 + 1}:8080" for i in range(1000))
    rows = [LoadBalancerRow(uuid="u-1", name="big",
                            vips=MappingProxyType({"10.0.0.1:80": backends}),
                            options=MappingProxyType({"affinity_timeout": "60"}),
                            datapaths=("dp-1",))]
    lbs, _ = parse_all(rows, {"dp-1": dp}, {})
    desired = compile_state(lbs, topo, own.allocate_group_ids(vip_owners(lbs, topo), {}),
                            STANDALONE)
    parts = sorted(g for g in desired.state.groups if not own.is_vip_group(g))
    issue = ParseIssue("gone", "switch_error", "OFPBMC_BAD_FIELD", vip="10.0.0.9:80")
    st = Status(plans=desired.vips, issues=(issue,))
    show = format_lb_show(st, "big", {}, {})
    assert show is not None and len(parts) == 2
    assert f"group split in 2 parts (group-desc limit): {parts[0]:#x}, {parts[1]:#x}" in show
    gone = format_lb_show(st, "gone", {}, {})
    assert gone is not None and "rejected: 10.0.0.9:80 switch_error: OFPBMC_BAD_FIELD" in gone


def test_network_facing_defaults_are_local_only() -> None:
    d = Settings()
    assert d.metrics_address.startswith("127.0.0.1:")
    assert d.rundir == "/var/run/lbaffd" and not d.cleanup_on_exit


def test_venv_has_the_c_json_parser() -> None:
    """`make venv` builds on Debian's python3-openvswitch: the IDL must parse
    SB updates with ovs._json, not the ~10x slower pure-Python parser."""
    from lbaffd.sb.monitor import json_parser

    assert json_parser() == "c"


def test_daemon_imports_without_eventlet() -> None:
    """The daemon's process never loads eventlet (ovs.poller would import it
    just to detect monkey patching, with its patched dnspython copy)."""
    import subprocess
    import sys

    code = ("import sys\nfrom lbaffd.cli import keep_eventlet_out\nkeep_eventlet_out()\n"
            "import lbaffd.daemon, lbaffd.openflow.channel, ovs.poller\n"
            "loaded = [m for m, mod in sys.modules.items() if mod is not None and "
            "m.startswith(('eventlet', 'dns', '__patched_module'))]\n"
            "assert not loaded and ovs.poller.eventlet_patcher is None, loaded\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr


def test_only_the_monitored_databases_rows_count_as_changes() -> None:
    """python-ovs notifies the ``_Server`` database's ``Database`` row too (its
    ``index`` moves with every Raft commit); a table of that name, or of any
    name, that is not the IDL's own is no change of the SB."""
    from types import SimpleNamespace

    from lbaffd.sb.idl import is_data_row

    lb, pb = SimpleNamespace(name="Load_Balancer"), SimpleNamespace(name="Port_Binding")
    tables = {"Load_Balancer": lb, "Port_Binding": pb}
    assert is_data_row(tables, SimpleNamespace(_table=lb))
    assert is_data_row(tables, SimpleNamespace(_table=pb))
    assert not is_data_row(tables, SimpleNamespace(_table=SimpleNamespace(name="Database")))
    # same name, another database's table object
    assert not is_data_row(tables, SimpleNamespace(_table=SimpleNamespace(name="Load_Balancer")))
