"""lbaffd(8): built by argparse-manpage from the argument parser, with the
control commands and metrics generated from the code; every flag, command and
metric is in it and man(1) renders it cleanly."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from lbaffd.cli import build_parser
from lbaffd.ops.control import COMMANDS
from lbaffd.ops.daemonize import REOPEN
from lbaffd.ops.manpage import INCLUDE, PAGE, include_text, metric_families, render


def flags(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        out.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= flags(sub)
    return out


def roff(text: str) -> str:
    return text.replace("-", "\\-")


def test_the_include_and_the_page_in_the_repository_are_current() -> None:
    """Both are generated (`make man`); never stale.  The page's first line
    carries the date it was rendered."""
    assert INCLUDE.read_text() == include_text()
    assert PAGE.read_text().splitlines()[1:] == render().splitlines()[1:]


def test_page_mentions_every_flag_command_and_metric() -> None:
    page = render()
    every = flags(build_parser())
    assert {"--sb-db", "--ovs-rundir", "--rundir", "--detach", "--pidfile", "--log-file",
            "--metrics-address", "--version"} <= every
    for flag in every - {"--help"}:  # argparse-manpage leaves --help out, as man pages do
        assert f"\\fB{roff(flag)}\\fR" in page, flag
    for cmd in (*COMMANDS, REOPEN):
        assert f"\\fB{roff(cmd.name)}\\fR" in page, cmd.name
    names = [n for n, _, _ in metric_families()]
    assert "lbaffd_backend_packets_total" in names and "lbaffd_connection_up" in names
    for name in names:
        assert f"\\fB{roff(name)}\\fR" in page, name
    assert '.TH LBAFFD "8"' in page and ".SH CONTROL COMMANDS" in page and ".SH METRICS" in page


def test_man_renders_it_without_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "lbaffd.8"
    page.write_text(render())
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                           env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "ovs-appctl -t lbaffd" in text and "--log-file" in text
    assert "(default: \"/var/run/lbaffd\")" in text  # no line lost to a leading quote


def test_groff_check_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "bad.8"
    page.write_text(render().replace(".SH METRICS", ".SH METRICS\n.BOGUS x"))
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                         capture_output=True, text=True, timeout=60)
    assert "BOGUS" in res.stderr
