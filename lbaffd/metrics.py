"""Prometheus metrics, in a registry owned by the daemon (no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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
        self.last_sync = Gauge(
            "lbaffd_last_successful_sync_timestamp_seconds",
            "Unix time of the last pass that left the switch in sync", registry=r)
        self.connected = Gauge(
            "lbaffd_connection_up", "1 when the connection is up", ["peer"], registry=r)

    def serve(self, address: str) -> None:
        """Serve /metrics on ``host:port`` (empty: disabled)."""
        if not address:
            return
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
