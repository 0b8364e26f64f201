"""Prometheus metrics, in a registry owned by the daemon (no module globals)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lbaffd import observe
from lbaffd.pipeline import Pipeline
from lbaffd.status import Status


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.parse_errors = Counter(
            "lbaffd_parse_errors_total", "Bad SB load-balancer input seen, by reason",
            ["reason"], registry=r)
        self.reconciles = Counter(
            "lbaffd_reconcile_total", "Reconcile passes, by result", ["result"], registry=r)
        self.reconcile_seconds = Histogram(
            "lbaffd_reconcile_duration_seconds", "Time of one reconcile pass "
            "(read switch, compile, diff, bundle, barrier)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.changes = Counter(
            "lbaffd_openflow_changes_total", "Flow and group changes sent, by kind",
            ["kind"], registry=r)
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
        self.last_sync = Gauge(
            "lbaffd_last_successful_sync_timestamp_seconds",
            "Unix time of the last pass that left the switch in sync", registry=r)

    def serve(self, address: str, health: HealthSource) -> None:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (empty:
        disabled) from a daemon thread."""
        if not address:
            return
        host, _, port = address.rpartition(":")
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain")])
                return [why.encode() + b"\n"]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

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
    def status(self) -> Status: ...
    def live_channel(self) -> Any: ...
    def connections(self) -> dict[str, bool]: ...


class LiveCollector(Collector):
    """Metrics read at scrape time: from the switch (affinity entries, backend
    counters) and from the channel (messages sent).  A scrape while the switch
    is unreachable simply omits them."""

    def __init__(self, source: LiveSource, pipeline: Pipeline) -> None:
        self._source = source
        self._pipeline = pipeline

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
        status = self._source.status()
        share = GaugeMetricFamily(
            "lbaffd_vip_expected_share",
            "Expected largest/smallest backend share of a VIP's new connections "
            "(OVS dp_hash slot model; even for the client hash)", labels=["lb", "vip", "bound"])
        for p in status.plans:
            if p.expected_shares:
                share.add_metric([p.lb.name, p.vip.key, "max"], max(p.expected_shares))
                share.add_metric([p.lb.name, p.vip.key, "min"], min(p.expected_shares))
        yield share
        sent = CounterMetricFamily("lbaffd_openflow_messages_sent",
                                   "OpenFlow messages sent, by message type", labels=["type"])
        for kind, n in sorted(ch.sent_counts.items()):
            sent.add_metric([kind], n)
        yield sent
        start = time.monotonic()
        entries = observe.read_affinity_entries(ch)
        per_vip = GaugeMetricFamily("lbaffd_affinity_entries",
                                    "Live learned affinity entries", labels=["lb", "vip"])
        for (lb, vip), n in sorted(observe.entries_per_vip(entries, status.plans).items()):
            per_vip.add_metric([lb, vip], n)
        yield per_vip
        counters = observe.read_backend_counters(ch, status.plans, self._pipeline)
        pk = CounterMetricFamily("lbaffd_backend_packets",
                                 "First packets of new connections sent to the backend "
                                 "(select-group bucket + affinity hit flow)",
                                 labels=["lb", "vip", "backend"])
        by = CounterMetricFamily("lbaffd_backend_bytes", "Bytes of those packets",
                                 labels=["lb", "vip", "backend"])
        for key, c in sorted(counters.items()):
            pk.add_metric(list(key), c.packets)
            by.add_metric(list(key), c.bytes)
        yield pk
        yield by
        took = GaugeMetricFamily("lbaffd_scrape_switch_read_seconds",
                                 "Time spent reading live state from the switch for this scrape")
        took.add_metric([], time.monotonic() - start)
        yield took
