"""``lbaffd run``'s OVS-daemon process options: parsed as the OVS daemons'
(``--pidfile[=FILE]``, ``--log-file[=FILE]``), names resolved as OVS does."""

from __future__ import annotations

import os

import pytest

from lbaffd.cli import build_parser
from lbaffd.ops.daemonize import ctl_path, log_file_path, pidfile_path
from lbaffd.ops.process_options import ProcessOptions, options_from_args


def opts(*argv: str) -> ProcessOptions:
    return options_from_args(build_parser().parse_args(["run", *argv]))


def test_defaults_still_name_the_daemon_for_ovs_appctl() -> None:
    o = opts()
    assert o == ProcessOptions()
    assert pidfile_path(o, "/run/openvswitch") == "/run/openvswitch/lbaffd.pid"
    assert ctl_path("/run/openvswitch", 42) == "/run/openvswitch/lbaffd.42.ctl"
    assert log_file_path(o) is None


def test_pidfile_forms() -> None:
    assert pidfile_path(opts("--pidfile"), "/r") == "/r/lbaffd.pid"
    assert pidfile_path(opts("--pidfile=other.pid"), "/r") == "/r/other.pid"
    assert pidfile_path(opts("--pidfile=/elsewhere/x.pid"), "/r") == "/elsewhere/x.pid"
    # the bare form does not swallow the next flag
    o = opts("--pidfile", "--detach", "--no-chdir", "--overwrite-pidfile")
    assert o == ProcessOptions(detach=True, no_chdir=True, overwrite_pidfile=True)


def test_log_file_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    import ovs.dirs

    monkeypatch.setattr(ovs.dirs, "LOGDIR", "/var/log/openvswitch")
    assert log_file_path(opts("--log-file")) == "/var/log/openvswitch/lbaffd.log"
    assert log_file_path(opts("--log-file=/tmp/x.log")) == "/tmp/x.log"
    assert log_file_path(opts("--log-file=rel.log")) == os.path.join(os.getcwd(), "rel.log")


def test_process_options_are_flags_not_settings() -> None:
    """They say how one process starts, so they are no LBAFFD_* variables."""
    from lbaffd.config import settings_fields

    assert not {"detach", "pidfile", "log_file", "no_chdir"} & settings_fields().keys()
