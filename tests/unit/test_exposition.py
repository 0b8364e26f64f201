"""The streamed per-VIP families are what prometheus_client itself writes for
the same family (text format 0.0.4), odd label values included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from lbaffd.exposition import chunked, family

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
