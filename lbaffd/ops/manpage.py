"""lbaffd(8): the sections of the man page that are not the argument parser.

The page itself is built by argparse-manpage from ``lbaffd.cli.build_parser``
at build time (``[tool.build_manpages]`` in pyproject.toml; ``pip install``
installs it as ``share/man/man8/lbaffd.8``).  What the parser cannot say, the
control commands and the metrics, is generated here from the code that
serves them (``control.COMMANDS``, the daemon's metric registry and its live
families read against an empty switch) into ``man/lbaffd.include``, in the
include format argparse-manpage reads (GNU help2man's).  Both are also kept
in the repository, the include for the build and ``./lbaffd.8`` so that
``man ./lbaffd.8`` works in a checkout (the build renders its own copy in
``build/man``); ``tests/packaging/test_manpage.py`` fails when either is stale.

``python -m lbaffd.ops.manpage`` rewrites both (argparse-manpage needed: the
``test`` extra has it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lbaffd.compile.layout import STANDALONE
from lbaffd.ops.control import COMMANDS, Command
from lbaffd.ops.daemonize import REOPEN
from lbaffd.ops.exposition import live_families
from lbaffd.ops.metrics import LiveCollector, Metrics
from lbaffd.ops.status import Status

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "man" / "lbaffd.include"
PAGE = ROOT / "lbaffd.8"
# what [tool.build_manpages] in pyproject.toml passes too
PAGE_DATA = {"manual_section": "8", "manual_title": "System Manager's Manual",
             "project_name": "lbaffd",
             "description": "session affinity for OVN load balancers on Open vSwitch hosts",
             "include": str(INCLUDE)}


def _roff(text: str) -> str:
    """Plain text as roff: backslashes escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.splitlines())


class _EmptySwitch:
    """A connected switch with nothing on it: every live family is written
    (HELP and TYPE), none has a sample."""

    def __init__(self) -> None:
        self.sent_counts: dict[str, int] = {}

    def dump_flow_desc(self, cookie: int, cookie_mask: int, table_id: int = 0) -> list[Any]:
        return []

    def request(self, msg: Any, timeout: float | None = None) -> list[Any]:
        return []


class _Idle:
    def status(self) -> Status:
        return Status()

    def live_channel(self) -> _EmptySwitch:
        return _EmptySwitch()

    def connections(self) -> dict[str, bool]:
        return {}


def metric_families() -> list[tuple[str, str, str]]:
    """(name as scraped, type, help) of every family ``/metrics`` serves, from
    the daemon's own registry and live collectors."""
    live = CollectorRegistry()
    live.register(LiveCollector(_Idle()))
    text = (generate_latest(Metrics().registry).decode() + generate_latest(live).decode()
            + "".join(live_families(_Idle(), STANDALONE)))
    fams = list(text_string_to_metric_families(text))
    # prometheus_client writes a counter's or histogram's creation time as a
    # <name>_created gauge: part of its family, not one of its own
    timed = {f.name + "_created" for f in fams if f.type in ("counter", "histogram")}
    out = []
    for fam in fams:
        if fam.name in timed:
            continue
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out.append((name, fam.type, fam.documentation))
    return sorted(out)


def _commands() -> Iterator[Command]:
    yield from COMMANDS
    yield REOPEN


def include_text() -> str:
    """The extra sections, in argparse-manpage's include format."""
    cmds = []
    for c in _commands():
        cmds.append(f".TP\n\\fB{_roff(c.name)}\\fR {_roff(c.usage)}".rstrip() + "\n"
                    + _roff(c.doc))
    metrics = [f".TP\n\\fB{_roff(name)}\\fR ({kind})\n{_roff(doc)}"
               for name, kind, doc in metric_families()]
    sections = {
        "CONTROL COMMANDS": (
            "Sent with \\fBovs\\-appctl \\-t lbaffd\\fR \\fICOMMAND\\fR (the socket "
            "\\fI<ovs\\-rundir>/lbaffd.<pid>.ctl\\fR found through "
            "\\fI<ovs\\-rundir>/lbaffd.pid\\fR; set \\fBOVS_RUNDIR\\fR if the run directory "
            "is not the default) or \\fBovs\\-appctl \\-t \\fI<rundir>\\fB/lbaffd.ctl\\fR. "
            "\\fBhelp\\fR and \\fBversion\\fR are answered too.\n" + "\n".join(cmds)),
        "METRICS": (
            "Served in the Prometheus text format at \\fBhttp://\\fI<metrics\\-address>"
            "\\fB/metrics\\fR, with \\fB/healthz\\fR (worker loop alive) and \\fB/readyz\\fR "
            "(switch in sync within three audit intervals).\n" + "\n".join(metrics)),
        "FILES": (
            ".TP\n\\fI<ovs\\-rundir>/lbaffd.pid\\fR, \\fI<ovs\\-rundir>/lbaffd.<pid>.ctl\\fR\n"
            "The locked pidfile and the control socket \\fBovs\\-appctl \\-t lbaffd\\fR uses.\n"
            ".TP\n\\fI<rundir>/lbaffd.ctl\\fR\n"
            "The control socket in lbaffd's own run directory (mode 0700).\n"
            ".TP\n\\fI/etc/default/lbaffd\\fR\n"
            "\\fBLBAFFD_\\fINAME\\fR settings for the systemd unit."),
        "ENVIRONMENT": (
            "Every setting of \\fBrun\\fR is also \\fBLBAFFD_\\fINAME\\fR "
            "(\\fBLBAFFD_SB_DB\\fR, ...); precedence: flag, environment, \\fB\\-\\-config\\fR "
            "file, \\fBOpen_vSwitch external_ids\\fR, default. \\fBOVS_RUNDIR\\fR and "
            "\\fBOVS_LOGDIR\\fR give the defaults of \\fB\\-\\-ovs\\-rundir\\fR and "
            "\\fB\\-\\-log\\-file\\fR, as for the OVS daemons."),
        "SEE ALSO": "\\fBovs\\-appctl\\fR(8), \\fBovn\\-controller\\fR(8), "
                    "\\fBovs\\-vswitchd\\fR(8), \\fBovn\\-sb\\fR(5)",
    }
    return "".join(f"[{heading}]\n{body}\n\n" for heading, body in sections.items())


def render() -> str:
    """The page as the build renders it (argparse-manpage, same options)."""
    from argparse_manpage.manpage import Manpage

    from lbaffd.cli import build_parser

    return str(Manpage(build_parser(), _data=dict(PAGE_DATA)))


def main() -> int:
    INCLUDE.parent.mkdir(exist_ok=True)
    INCLUDE.write_text(include_text())
    PAGE.write_text(render())
    print(f"wrote {INCLUDE.relative_to(ROOT)} and {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
