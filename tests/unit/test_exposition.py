"""The streamed per-VIP families are what prometheus_client itself writes for
the same family (text format 0.0.4), odd label values included."""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import parse_all
from lbaffd.model.plan import make_plan, plan_vips
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.ops.exposition import chunked, family
from lbaffd.ops.observe import Counters, backend_rows

ROWS = [
    (("lb1", "10.0.0.100:80", "10.0.0.21:8080"), 3.0),
    (("lb \"quoted\"", "[fd00::1]:80", "back\\slash\nnewline"), 12345678901.0),
    (("ünïcode", "10.0.0.1", "x"), 0.5),
    (("big", "v", "b"), float(2**63)),
]


class _One(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def reference(kind: str, name: str, doc: str, labels: list[str],
              rows: list[tuple[tuple[str, ...], float]]) -> str:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    m = cls(name, doc, labels=labels)
    for values, value in rows:
        m.add_metric(list(values), value)
    registry = CollectorRegistry()
    registry.register(_One(m))
    return generate_latest(registry).decode()


@pytest.mark.parametrize("kind", ["counter", "gauge"])
def test_family_is_what_prometheus_client_writes(kind: str) -> None:
    doc = "A doc with a \\ backslash\nand a newline"
    ours = "".join(family("lbaffd_x", doc, kind, ("lb", "vip", "backend"), ROWS))
    assert ours == reference(kind, "lbaffd_x", doc, ["lb", "vip", "backend"], ROWS)
    (parsed,) = text_string_to_metric_families(ours)
    assert [s.value for s in parsed.samples] == [v for _, v in ROWS]
    assert parsed.samples[1].labels["backend"] == "back\\slash\nnewline"


def test_family_without_labels() -> None:
    ours = "".join(family("lbaffd_t", "Seconds", "gauge", (), [((), 0.25)]))
    assert ours == reference("gauge", "lbaffd_t", "Seconds", [], [((), 0.25)])


def test_chunked_keeps_every_byte() -> None:
    lines = [f"line {i}\n" for i in range(10000)]
    chunks = list(chunked(lines, size=1000))
    assert len(chunks) > 50 and all(len(c) < 1100 for c in chunks)
    assert b"".join(chunks) == "".join(lines).encode()


def test_backend_rows_sorted_and_one_series_per_label_set() -> None:
    """Two LBs of one name with the same VIP key make one series per backend
    (duplicate series would make the scrape invalid); rows sort by labels."""
    dp1, dp2 = DatapathRow("dp-1", 1, "ls1"), DatapathRow("dp-2", 2, "ls2")
    rows = [LoadBalancerRow(uuid=f"lb-{i}", name="same", datapaths=(dp,),
                            vips=MappingProxyType({"10.0.0.100:80": backends}))
            for i, (dp, backends) in enumerate([("dp-1", "10.0.0.22:80,10.0.0.21:80"),
                                                ("dp-2", "10.0.0.21:80")])]
    lbs, _ = parse_all(rows, {"dp-1": dp1, "dp-2": dp2}, {})
    topo = Topology((LocalPort(1, "a", dp1), LocalPort(2, "b", dp2)), MappingProxyType({}))
    planned, _ = plan_vips(lbs, topo)
    ids = own.allocate_group_ids([own.vip_owner(lb.uuid, v.key) for lb, v, _ in planned], {})
    plans = [make_plan(lb, v, dps, topo, ids, "balanced", 1) for lb, v, dps in planned]
    counts = {p.group_id: [10 * (i + 1) * (j + 1) for j in range(2 * len(p.vip.backends))]
              for i, p in enumerate(plans)}
    got = list(backend_rows(plans, counts))
    assert [k for k, _ in got] == [("same", "10.0.0.100:80", "10.0.0.21:80"),
                                   ("same", "10.0.0.100:80", "10.0.0.22:80")]
    first = next(p for p in plans if len(p.vip.backends) == 2)
    other = next(p for p in plans if p is not first)
    i21 = [str(b) for b in first.vip.backends].index("10.0.0.21:80")
    c1, c2 = counts[first.group_id], counts[other.group_id]
    assert got[0][1] == Counters(c1[2 * i21] + c2[0], c1[2 * i21 + 1] + c2[1])
