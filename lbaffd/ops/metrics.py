"""Prometheus metrics, in a registry owned by the daemon (no module globals)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lbaffd.ops.exposition import chunked


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.parse_errors = Counter(
            "lbaffd_parse_errors_total", "Bad SB load-balancer input seen, by reason",
            ["reason"], registry=r)
        self.install_failures = Counter(
            "lbaffd_vip_install_failures_total",
            "VIPs left out of a pass because they could not be installed (group too large, "
            "encoding error, refused by the switch), by reason", ["reason"], registry=r)
        self.reconciles = Counter(
            "lbaffd_reconcile_total", "Reconcile passes, by result", ["result"], registry=r)
        self.reconcile_seconds = Histogram(
            "lbaffd_reconcile_duration_seconds", "Time of one reconcile pass "
            "(read switch, compile, diff, bundle, barrier)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.changes = Counter(
            "lbaffd_openflow_changes_total", "Flow and group changes sent, by kind",
            ["kind"], registry=r)
        self.repairs = Counter(
            "lbaffd_switch_repairs_total", "Audits that found lbaffd's flows or groups removed "
            "or changed by someone else (del-flows, another controller) and put them back",
            registry=r)
        self.repaired = Counter(
            "lbaffd_switch_repaired_changes_total",
            "Flow and group changes those repairs sent", registry=r)
        self.desired_flows = Gauge("lbaffd_desired_flows", "Flows lbaffd wants", registry=r)
        self.desired_groups = Gauge("lbaffd_desired_groups", "Groups lbaffd wants", registry=r)
        self.installed_flows = Gauge(
            "lbaffd_installed_flows", "lbaffd flows on the switch before the last pass",
            registry=r)
        self.installed_groups = Gauge(
            "lbaffd_installed_groups", "lbaffd groups on the switch before the last pass",
            registry=r)
        self.queue_depth = Gauge(
            "lbaffd_work_queue_depth", "Wake-ups coalesced into the last reconcile pass",
            registry=r)
        self.entries_expired = Counter(
            "lbaffd_affinity_entries_expired_total",
            "Affinity entries that idled out after the full affinity_timeout",
            ["lb", "vip"], registry=r)
        self.entries_flushed = Counter(
            "lbaffd_affinity_entries_flushed_total",
            "Affinity entries deleted before expiry (backend removed or down, LB gone)",
            ["lb", "vip"], registry=r)
        self.entries_extended = Counter(
            "lbaffd_affinity_entries_extended_total",
            "Entries re-installed because affinity_timeout exceeds the OpenFlow idle limit",
            ["lb", "vip"], registry=r)
        self.refusals = Counter(
            "lbaffd_vip_refusals_total",
            "New connections to a VIP without backends answered (options:reject=true), "
            "by kind: tcp_rst, icmp_unreachable, rate_limited, ignored",
            ["lb", "vip", "kind"], registry=r)
        self.vips_without_backends = Gauge(
            "lbaffd_vips_without_backends",
            "VIPs with no live backend, by what happens to new connections (drop/reject)",
            ["action"], registry=r)
        # companion mode (next to ovn-controller)
        self.flush_recoveries = Counter(
            "lbaffd_ovn_flush_recoveries",
            "Times lbaffd's flows were deleted by someone else (ovn-controller clears "
            "the bridge when it connects) and lbaffd put them back", registry=r)
        self.flush_recovery_seconds = Histogram(
            "lbaffd_ovn_flush_recovery_seconds",
            "From the first deletion reported by the switch to flows, groups and "
            "affinity entries back", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.entries_restored = Counter(
            "lbaffd_affinity_entries_restored",
            "Learned affinity entries put back after a flush, with their remaining "
            "idle time", registry=r)
        self.lbs_left_to_ovn = Gauge(
            "lbaffd_lbs_left_to_ovn",
            "Load balancers on this chassis that lbaffd leaves to OVN (--take-over)",
            registry=r)
        self.ct_zone_clash = Gauge(
            "lbaffd_ct_zone_clash",
            "1 when ovn-controller has assigned lbaffd's own conntrack zone to a port",
            registry=r)
        self.entries_skipped = Counter(
            "lbaffd_openflow_entries_skipped_total",
            "Entries of switch replies left out because they cannot be decoded (e.g. "
            "another client's group too large for OpenFlow's 16-bit lengths), per dump",
            ["kind"], registry=r)
        self.conntrack_flushes = Counter(
            "lbaffd_conntrack_flushes_total",
            "Conntrack flushes sent for a backend that left a VIP (NXT_CT_FLUSH), "
            "by reason: removed, down",
            ["reason"], registry=r)
        self.last_sync = Gauge(
            "lbaffd_last_successful_sync_timestamp_seconds",
            "Unix time of the last pass that left the switch in sync", registry=r)

    def serve(self, address: str, health: HealthSource,
              live: Callable[[], Iterator[str]] | None = None) -> None:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (empty:
        disabled) from a daemon thread.  ``/metrics`` is the registry in the
        text format, then ``live``'s lines (``exposition``), streamed."""
        if not address:
            return
        host, _, port = address.rpartition(":")
        registry = self.registry

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain")])
                return [why.encode() + b"\n"]
            if path == "/favicon.ico":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b""]
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            head = [generate_latest(registry)]
            return itertools.chain(head, chunked(live())) if live is not None else head

        server = make_server(host.strip("[]") or "127.0.0.1", int(port), app,
                             server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


class HealthSource(Protocol):
    def live(self) -> tuple[bool, str]: ...
    def ready(self) -> tuple[bool, str]: ...


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news."""


class LiveSource(Protocol):
    """What ``LiveCollector`` reads (``exposition.LiveSource``: the per-VIP rest)."""

    def live_channel(self) -> Any: ...
    def connections(self) -> dict[str, bool]: ...


class LiveCollector(Collector):
    """The few live metrics that are not per VIP (connections, messages sent);
    the per-VIP ones are streamed by ``exposition`` after the registry's."""

    def __init__(self, source: LiveSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("lbaffd_connection_up", "1 when the connection is up",
                               labels=["peer"])
        for peer, ok in sorted(self._source.connections().items()):
            up.add_metric([peer], 1 if ok else 0)
        yield up
        try:
            ch = self._source.live_channel()
        except Exception:
            return
        sent = CounterMetricFamily("lbaffd_openflow_messages_sent",
                                   "OpenFlow messages sent, by message type", labels=["type"])
        for kind, n in sorted(ch.sent_counts.items()):
            sent.add_metric([kind], n)
        yield sent
