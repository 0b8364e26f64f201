"""The Grafana dashboard as Grafana's dashboard model, and the metric names its
queries and the alert rules select (the live scrape is checked against them
in tests/integration/test_operator_kit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.models.dashboard import RowPanel

from tests.operator_kit import (
    DASHBOARD,
    dashboard_json,
    dashboard_metric_names,
    dropped_keys,
    load_dashboard,
    metric_names,
    panel_queries,
    panels,
    rule_groups,
    rules_metric_names,
)


def test_dashboard_loads_as_the_grafana_model_keeping_every_field() -> None:
    dash = load_dashboard()
    raw = json.loads(DASHBOARD.read_text())
    assert list(dropped_keys(raw, dashboard_json(dash))) == []
    assert dash.uid == "lbaffd" and dash.title and dash.templating is not None
    assert [v.name for v in dash.templating.list_val] == ["datasource", "instance", "vip"]
    for p in panels(dash):
        assert runtime.panelcfg_config(p.type_val) is not None, p.type_val
        assert not isinstance(p.options, dict), (p.title, p.options)  # typed by its plugin
        assert p.description, p.title


def test_every_query_is_promql_on_the_selected_prometheus() -> None:
    dash = load_dashboard()
    queries = list(panel_queries(dash))
    assert len(queries) >= 25
    for title, q in queries:
        assert q.expr and metric_names(q.expr.replace("$__rate_interval", "5m")
                                       .replace("$__range", "6h")
                                       .replace("$instance", ".+").replace("$vip", ".+")), title
        assert q.datasource == {"type": "prometheus", "uid": "${datasource}"}, title
        assert 'instance=~"$instance"' in q.expr, (title, q.expr)
    for p in panels(dash):
        refs = [t.ref_id for t in p.targets or []]
        assert len(refs) == len(set(refs)), p.title


def test_layout_fits_the_grid_without_overlaps() -> None:
    dash = load_dashboard()
    cells: set[tuple[int, int]] = set()
    ids: list[int] = []
    for p in dash.panels or []:
        assert p.grid_pos is not None
        g = p.grid_pos
        assert g.x >= 0 and g.x + g.w <= 24 and g.h > 0
        mine = {(x, y) for x in range(g.x, g.x + g.w) for y in range(g.y, g.y + g.h)}
        assert not cells & mine, p.title
        cells |= mine
        assert p.id_val is not None
        ids.append(p.id_val)
        if isinstance(p, RowPanel):
            assert g.h == 1
    assert len(ids) == len(set(ids))


def test_panels_cover_what_an_operator_asked_for() -> None:
    """Issue 18: connections, passes and duration, OpenFlow changes, desired vs
    installed, affinity entries per VIP (top N), backend share against the
    model, refusals, parse errors, recoveries."""
    used = dashboard_metric_names(load_dashboard())
    for name in ("lbaffd_connection_up", "lbaffd_reconcile_total",
                 "lbaffd_reconcile_duration_seconds_bucket", "lbaffd_openflow_changes_total",
                 "lbaffd_desired_flows", "lbaffd_installed_flows", "lbaffd_affinity_entries",
                 "lbaffd_backend_packets_total", "lbaffd_vip_expected_share",
                 "lbaffd_vip_refusals_total", "lbaffd_vips_without_backends",
                 "lbaffd_parse_errors_total", "lbaffd_last_successful_sync_timestamp_seconds",
                 "lbaffd_switch_repairs_total", "lbaffd_ovn_flush_recoveries_total",
                 "lbaffd_affinity_entries_restored_total"):
        assert name in used, name
    exprs = [q.expr for _, q in panel_queries(load_dashboard())]
    assert any(e.startswith("topk(10, ") and "lbaffd_affinity_entries" in e for e in exprs)


def test_metric_names_come_from_the_promql_grammar() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="1"}[5m]))) '
            '/ on () group_left scalar(b:rec) > -(c) + topk(3, d offset 1m)')
    assert metric_names(expr) == {"a_bucket", "b:rec", "c", "d"}
    with pytest.raises(ValueError):
        metric_names("rate(a_total[5m]")


def test_rules_select_only_lbaffd_metrics_and_their_own_records() -> None:
    names = rules_metric_names(rule_groups())
    assert names and all(n.startswith("lbaffd_") for n in names), names


def test_a_field_the_model_does_not_know_is_caught(tmp_path: Path) -> None:
    """The load check above is only worth something if it sees a typo."""
    raw = json.loads(DASHBOARD.read_text())
    raw["panels"][1]["gridPoss"] = raw["panels"][1].pop("gridPos")
    raw["templating"]["list"][1]["multy"] = True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    assert sorted(dropped_keys(raw, dashboard_json(load_dashboard(bad)))) == [
        "/panels[1]/gridPoss", "/templating/list[1]/multy"]


def test_a_query_on_another_datasource_is_caught(tmp_path: Path) -> None:
    raw = json.loads(DASHBOARD.read_text())
    raw["panels"][1]["datasource"] = {"type": "loki", "uid": "logs"}
    for t in raw["panels"][1]["targets"]:
        t["datasource"] = {"type": "loki", "uid": "logs"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(AssertionError):
        list(panel_queries(load_dashboard(bad)))
