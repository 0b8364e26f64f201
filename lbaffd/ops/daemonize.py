"""Found and run like an OVS daemon: ``lbaffd.pid`` and ``lbaffd.<pid>.ctl`` in
the OVS run directory, ``--detach``, ``--pidfile``, ``--log-file``.

``ovs-appctl -t NAME`` (lib/unixctl.c ``unixctl_client_create`` via
``utilities/ovs-appctl.c``) turns a target without a ``/`` into
``<OVS_RUNDIR>/NAME.pid``, reads the pid from that file only while its owner
holds a POSIX lock on it (``read_pidfile`` checks with F_GETLK), and connects
to ``<OVS_RUNDIR>/NAME.<pid>.ctl``.  So ``ovs-appctl -t lbaffd lb/list`` works
with no path once lbaffd holds a locked ``lbaffd.pid`` and listens on
``lbaffd.<pid>.ctl`` in the run directory it is configured with
(``--ovs-rundir``, whose default is ``$OVS_RUNDIR`` as for the OVS tools).
The control socket in ``--rundir`` stays: it is what the systemd unit, the
container and existing scripts use.

The pidfile, the detach and the wait for startup are python-ovs's
``ovs.daemon`` (the same protocol as lib/daemon-unix.c: a locked pidfile
written through a temporary name and linked in place, a stale one replaced,
a live one refused; ``--detach`` forks, and the parent exits only once the
child says it has started, i.e. once both control sockets exist, as
ovs-vswitchd does after creating its unixctl server).  ``--log-file`` sends
the log stream (stderr: structlog and the ovs library's logging) to a file
that ``ovs-appctl -t lbaffd vlog/reopen`` reopens for logrotate, as the OVS
daemons' logrotate configuration does.  These are process options, flags only
(not ``LBAFFD_*`` settings): how one process is started, not how lbaffd
behaves.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from typing import Any, Protocol

import ovs.daemon
import ovs.dirs
import ovs.unixctl
import structlog

from lbaffd.compile.layout import Pipeline
from lbaffd.ops.control import Command, ControlServer, DaemonHandle
from lbaffd.ops.process_options import NAME, ProcessOptions

log = structlog.get_logger("lbaffd")
# Served by both control sockets (the ovs library's command table is global).
REOPEN = Command("vlog/reopen", "", 0, 0, "_vlog_reopen",
                 "Reopen the --log-file, after logrotate moved it away.")


def pidfile_path(opts: ProcessOptions, ovs_rundir: str) -> str:
    """Where the pidfile goes: a relative name is taken relative to the run
    directory, as ``ovs.daemon.make_pidfile_name`` / OVS's ``abs_file_name`` do."""
    return os.path.join(ovs_rundir, opts.pidfile or f"{NAME}.pid")


def log_file_path(opts: ProcessOptions) -> str | None:
    if opts.log_file is None:
        return None
    return os.path.abspath(opts.log_file or os.path.join(str(ovs.dirs.LOGDIR), f"{NAME}.log"))


def ctl_path(ovs_rundir: str, pid: int) -> str:
    return os.path.join(ovs_rundir, f"{NAME}.{pid}.ctl")


class ProcessHooks(Protocol):
    """What the daemon calls once its control socket exists, and at shutdown."""

    def started(self, daemon: DaemonHandle, pipeline: Pipeline) -> None: ...
    def stopped(self) -> None: ...


class LogFile:
    """The log stream (fds 1 and 2) pointed at a file, reopened on demand."""

    def __init__(self, path: str) -> None:
        self.path = path

    def attach(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            for target in (1, 2):
                os.dup2(fd, target)
        finally:
            os.close(fd)


class OvsDaemonProcess:
    """One lbaffd process's OVS-daemon conventions (``ProcessHooks``)."""

    def __init__(self, opts: ProcessOptions, ovs_rundir: str) -> None:
        self.opts = opts
        self.ovs_rundir = os.path.abspath(ovs_rundir)
        self.pidfile = pidfile_path(opts, self.ovs_rundir)
        path = log_file_path(opts)
        self.log_file = LogFile(path) if path is not None else None
        self._control: ControlServer | None = None
        # The default name is a convenience: where the OVS run directory is not
        # ours to write (a non-root container user), lbaffd runs without it.
        self.named = bool(opts.pidfile) or os.access(self.ovs_rundir, os.W_OK)

    def start(self) -> None:
        """Before any thread exists: the log file, the fork for ``--detach``
        and the locked pidfile (in the process that stays)."""
        if self.log_file is not None:
            os.makedirs(os.path.dirname(self.log_file.path), exist_ok=True)
            self.log_file.attach()
        if self.opts.detach:
            ovs.daemon.set_detach()
            if self.opts.no_chdir:
                ovs.daemon.set_no_chdir()
        if self.opts.overwrite_pidfile:
            ovs.daemon.ignore_existing_pidfile()
        if self.named:
            os.makedirs(os.path.dirname(self.pidfile), exist_ok=True)
            ovs.daemon.set_pidfile(self.pidfile)
        ovs.daemon.daemonize_start()  # exits here on an already running lbaffd

    def started(self, daemon: DaemonHandle, pipeline: Pipeline) -> None:
        """The daemon's own control socket exists: add the one ``ovs-appctl -t
        lbaffd`` finds, then let a ``--detach`` parent return."""
        ovs.unixctl.command_register(REOPEN.name, REOPEN.usage, REOPEN.min_args,
                                     REOPEN.max_args, getattr(self, REOPEN.method), None)
        if not self.named:
            log.warning("ovs_appctl_target_unavailable", ovs_rundir=self.ovs_rundir,
                        reason="not writable", control_socket="--rundir's lbaffd.ctl only")
            self._complete()
            return
        self._remove_stale_sockets()
        path = ctl_path(self.ovs_rundir, os.getpid())
        self._control = ControlServer(path, daemon, pipeline)
        os.chmod(path, 0o750)  # as ovs-vswitchd's: the owner and its group
        self._control.start()
        log.info("ovs_appctl_target", target=NAME, pidfile=self.pidfile, ctl=path)
        self._complete()

    def _complete(self) -> None:
        ovs.daemon.daemonize_complete()  # with --detach: closes fds 0-2, chdir /
        if self.opts.detach and self.log_file is not None:
            self.log_file.attach()  # daemonize_complete pointed fds 1-2 at /dev/null

    def stopped(self) -> None:
        """The socket goes with its server; the pidfile is unlinked at exit
        (``ovs.fatal_signal``'s atexit hook, armed by ``ovs.daemon``)."""
        if self._control is not None:
            self._control.stop()
            self._control = None

    def _vlog_reopen(self, conn: Any, argv: list[str], aux: Any) -> None:
        if self.log_file is None:
            conn.reply_error("Logging to file not configured\n")
            return
        try:
            self.log_file.attach()
        except OSError as exc:
            conn.reply_error(f"cannot reopen {self.log_file.path}: {exc}\n")
            return
        log.info("log_file_reopened", path=self.log_file.path)
        conn.reply("")

    def _remove_stale_sockets(self) -> None:
        """``lbaffd.<pid>.ctl`` of predecessors that died without cleaning up
        (SIGKILL); a socket of a live process is left alone."""
        for path in glob.glob(os.path.join(glob.escape(self.ovs_rundir), f"{NAME}.*.ctl")):
            m = re.fullmatch(rf"{NAME}\.(\d+)\.ctl", os.path.basename(path))
            if m is None or int(m.group(1)) == os.getpid() or process_alive(int(m.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
