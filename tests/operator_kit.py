"""What the operator kit's tests share: the Grafana dashboard loaded as a
dashboard model (Grafana's own grafana-foundation-sdk, not string checks), the
PromQL of its queries and of the alert rules, the metric names those select
(promql-parser, Prometheus' grammar), and the names a live scrape exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/lbaffd.json"
RULES = ROOT / "deploy/prometheus/lbaffd-rules.yaml"
RULE_CR = ROOT / "deploy/prometheus/lbaffd-prometheusrule.yaml"
RULE_TESTS = ROOT / "tests/prometheus/lbaffd-rules.test.yaml"

# Grafana's own variables, replaced by a value of their kind before parsing.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}


def load_dashboard(path: Path = DASHBOARD) -> Dashboard:
    """The file as Grafana's dashboard model, with typed panel options and
    data queries (the SDK's panel and datasource plugins registered)."""
    register_default_plugins()
    return Dashboard.from_json(json.loads(path.read_text()))


def dashboard_json(dash: Dashboard) -> dict[str, Any]:
    """The model written back (what the SDK understood of the file)."""
    out: dict[str, Any] = json.loads(json.dumps(dash, cls=JSONEncoder))
    return out


def dropped_keys(raw: Any, back: Any, path: str = "") -> Iterator[str]:
    """Keys of ``raw`` the model did not keep: fields it does not know."""
    if isinstance(raw, dict) and isinstance(back, dict):
        for key, value in raw.items():
            if key not in back:
                yield f"{path}/{key}"
            else:
                yield from dropped_keys(value, back[key], f"{path}/{key}")
    elif isinstance(raw, list) and isinstance(back, list):
        for i, (a, b) in enumerate(zip(raw, back, strict=False)):
            yield from dropped_keys(a, b, f"{path}[{i}]")


def panels(dash: Dashboard) -> Iterator[Panel]:
    for p in dash.panels or []:
        if isinstance(p, RowPanel):
            yield from (q for q in p.panels or [] if isinstance(q, Panel))
        else:
            yield p


def panel_queries(dash: Dashboard) -> Iterator[tuple[str, prometheus.Dataquery]]:
    """(panel title, query) of every panel target; AssertionError on a target
    that is not a Prometheus query."""
    for p in panels(dash):
        for t in p.targets or []:
            assert isinstance(t, prometheus.Dataquery), (p.title, t)
            yield p.title or "", t


def variable_queries(dash: Dashboard) -> Iterator[str]:
    """The PromQL inside the query variables' ``label_values(...)``."""
    for v in dash.templating.list_val if dash.templating else []:
        if v.type_val != "query":
            continue
        query = v.query["query"] if isinstance(v.query, dict) else v.query
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", str(query))
        assert inner is not None, query
        yield inner.group(1)


def expand(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's ``$name`` / ``${name}`` replaced."""
    values = {**GRAFANA_BUILTINS, **variables}

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1) or m.group(2)]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects, from Prometheus' PromQL grammar."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.add(node.name)
            return
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for arg in getattr(node, "args", None) or ():
            walk(arg)

    walk(promql_parser.parse(expr))
    return found


def dashboard_metric_names(dash: Dashboard) -> set[str]:
    variables = {v.name: ".+" for v in (dash.templating.list_val if dash.templating else [])}
    exprs = [q.expr for _, q in panel_queries(dash)] + list(variable_queries(dash))
    return set().union(*(metric_names(expand(e, variables)) for e in exprs))


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def rules_metric_names(groups: list[dict[str, Any]]) -> set[str]:
    """Names the rules read, less the ones they record themselves."""
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    used = set().union(*(metric_names(str(r["expr"])) for g in groups for r in g["rules"]))
    return used - recorded


def exported_families(scrape: str) -> set[str]:
    """The families of a scrape, counters named with ``_total`` (as the man
    page lists them); prometheus_client's ``<counter>_created`` gauges (a
    labelled counter's creation times, in the 0.0.4 text format) are part of
    their counter."""
    fams = list(text_string_to_metric_families(scrape))
    counters = {f.name for f in fams if f.type in ("counter", "histogram")}
    return {f.name + "_total" if f.type == "counter" else f.name for f in fams
            if not (f.name.endswith("_created") and f.name[:-len("_created")] in counters)}


def exported_names(scrape: str) -> set[str]:
    """Every series name a scrape of the daemon offers, its families' HELP and
    TYPE included (a labelled counter nobody has incremented yet has no
    sample, but exists): counters with ``_total``, histograms with
    ``_bucket``/``_sum``/``_count``."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count")}
    for fam in text_string_to_metric_families(scrape):
        names.update(fam.name + s for s in suffixes.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names
