"""Start-up decisions taken before the first pass: which mode (``auto``:
companion when ovn-controller manages the bridge), and the refusals that
keep lbaffd from damaging a bridge another controller manages (its tables
in use, its conntrack zone given to a port by ovn-controller)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from lbaffd.compile.layout import COMPANION_MODE, STANDALONE_MODE, Pipeline
from lbaffd.config import AUTO_MODE, Settings
from lbaffd.model.distribution import MODES as DISTRIBUTIONS
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.ops.metrics import Metrics
from lbaffd.ovn import chassis as ovnchassis
from lbaffd.ovn.runtime import CompanionRuntime
from lbaffd.sb.monitor import DbMonitor, configure_ssl
from lbaffd.sb.rows import read_bridge_external_ids, read_ovs_external_ids

log = structlog.get_logger("lbaffd")


def choose_pipeline(s: Settings, channel: OpenFlowChannel, external_ids: dict[str, str],
                    ovs: DbMonitor, metrics: Metrics
                    ) -> tuple[Pipeline, CompanionRuntime | None]:
    """The pipeline, and companion mode's runtime state; SystemExit where
    lbaffd must not start."""
    mode = s.mode
    if mode == AUTO_MODE:
        table0 = ovnchassis.foreign_in_tables(channel, [0]).get(0, 0)
        ovn, why = ovnchassis.managed_by_ovn(external_ids, table0, s.ovn_rundir)
        mode = COMPANION_MODE if ovn else STANDALONE_MODE
        log.info("mode_chosen", mode=mode, reason=why)
    try:
        pipeline = s.pipeline(mode)
    except ValueError as exc:
        raise SystemExit(f"lbaffd: {exc}") from None
    busy = ovnchassis.foreign_in_tables(channel, pipeline.tables)
    if busy and (pipeline.companion or not s.force):
        log.error("tables_in_use", mode=mode, tables=",".join(map(str, sorted(busy))),
                  flows=sum(busy.values()),
                  hint=("choose another --table-base" if pipeline.companion else
                        "another controller manages this bridge: use --mode companion "
                        "next to ovn-controller, or --force"))
        raise SystemExit(2)
    if not pipeline.companion:
        return pipeline, None
    companion = CompanionRuntime(pipeline, s.take_over, metrics)
    clash = zone_clash(ovs, s.bridge, companion)
    if clash:
        log.error("ct_zone_in_use", zone=pipeline.ct_zone, ports=",".join(clash),
                  hint="choose another --ct-zone")
        raise SystemExit(2)
    return pipeline, companion


def zone_clash(ovs: DbMonitor, bridge: str, companion: CompanionRuntime) -> list[str]:
    """Companion: ports to which ovn-controller gave lbaffd's zones."""
    with ovs.conn.lock:
        ext = read_bridge_external_ids(ovs, bridge)
    return companion.zone_clash(ext)


def wait_local_external_ids(ovs: DbMonitor, bridge: str,
                            stopping: threading.Event) -> dict[str, str]:
    """The local Open_vSwitch row's external_ids, once the OVS DB is read
    (they name the SB, the chassis, the encapsulation); SystemExit(0) when
    the daemon is stopped meanwhile."""
    while not stopping.is_set():
        idl = ovs.idl
        if idl is not None and idl.in_sync:
            with ovs.conn.lock:
                return read_ovs_external_ids(ovs)
        time.sleep(0.05)
    raise SystemExit(0)


def check_settings(s: Settings) -> None:
    """The settings the SB connection needs: SystemExit when one is missing
    or wrong; SSL set up for ``ssl:`` remotes."""
    if not s.sb_db:
        raise SystemExit("no SB remote: pass --sb-db or set external_ids:ovn-remote")
    if s.distribution not in DISTRIBUTIONS:
        raise SystemExit(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}")
    if "ssl:" in s.sb_db or "ssl:" in s.ovs_db:
        try:
            configure_ssl(s.ssl_private_key, s.ssl_certificate, s.ssl_ca_cert)
        except ValueError as exc:
            raise SystemExit(f"lbaffd: {exc}") from None


def log_settings(s: Settings, pipeline: Pipeline, external_ids: dict[str, str]) -> None:
    """The settings, logged once as lbaffd will use them."""
    log.info("settings", sb_db=s.sb_db, bridge=s.bridge, of_target=s.of_target,
             chassis=s.chassis or "-", ovs_version=external_ids.get("ovs_version", "?"),
             distribution=s.distribution, mode=pipeline.mode,
             tables=f"{pipeline.base}..{pipeline.base + pipeline.stages - 1}",
             next_table=pipeline.next_table if pipeline.embedded else "-")


def start_in_background(mon: DbMonitor, stopping: threading.Event,
                        failed: Callable[[Exception], None]) -> threading.Thread:
    """``mon.start()`` on a thread of its own, so that the rest of the start
    (OpenFlow, the bridge's checks, the control socket, metrics, the
    switch's dumps) happens while the server builds its first reply: at
    N=5000 (realistic) ovsdb-server took 1.0-1.4 s before the first byte of
    it.  ``start`` retries, with a warning per attempt, until the server
    answers (the control socket is up meanwhile) or the daemon stops; the
    worker runs no pass until the monitor is in sync (``DbMonitor.connected``).
    Any other failure (ovsdbapp's first wait timing out, say) goes to
    ``failed``, which stops the daemon with it, as it did when the main
    thread started the monitor itself."""
    def run() -> None:
        try:
            mon.start()
        except Exception as exc:
            if not stopping.is_set():
                failed(exc)
            # else: stopped while still waiting for the database: not a failure
    thread = threading.Thread(target=run, name=f"lbaffd-start-{mon.schema}", daemon=True)
    thread.start()
    return thread
