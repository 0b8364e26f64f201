"""``python -m bench.realistic --quick`` end to end: both daemons on a small
cluster-shaped SB written through the NB and real ovn-northd, every phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import realistic

pytestmark = pytest.mark.integration


def test_realistic_bench_quick_smoke(tmp_path: Path) -> None:
    # LB removed first: its samples make the LBs they remove when no LB
    # added ran before them
    events = "lb_removed,backend_added,health_flip,remote_port_added,local_port_added,lb_added"
    rc = realistic.main(["--quick", "--samples", "2", "--churn-seconds", "2",
                         "--events", events, "--out", str(tmp_path)])
    res = json.loads((tmp_path / "tmp-quick-realistic-latest.json").read_text())
    assert rc == 0, res["errors"]
    run = res["runs"][0]
    lb, ovn = run["lbaffd"], run["ovn-controller"]
    # both realized the same LB set on their switch: groups for every VIP
    assert lb["cold"]["groups"] == res["cluster"]["vips"]
    assert ovn["cold"]["groups"] > 0 and ovn["cold"]["converge_s"] > 0
    assert lb["cold"]["service_monitors"] == ovn["cold"]["service_monitors"] > 0
    # lbaffd's own set replays byte for byte through ovs-ofctl
    assert lb["raw"]["identical_dump"] and lb["raw"]["flows"] == lb["cold"]["flows"]
    for name in ("backend_added", "lb_added", "lb_removed", "local_port_added"):
        ev = lb["events"][name]
        assert ev["samples"] == 2 and ev["with_switch_changes"] == 2 and ev["p99_ms"] > 0
    assert lb["events"]["remote_port_added"]["changes_max"] == 0
    # ovn-controller's health flips went through ovn-northd (woken by the
    # NB bump written after its resume) and were reported by ovn-controller
    flips = ovn["events"]["health_flip"]["rows"]
    assert len(flips) == 2
    assert all(r["latency_ms"] > 0 and r["northd_ms"] > 0 for r in flips)
    assert lb["churn"]["lb_changes"] > 0 and lb["churn"]["lb_lag_p99_ms"] > 0
    assert lb["restart"]["of_writes"] == 0 and lb["restart"]["switch_unchanged"]
    assert ovn["restart"]["in_sync_s"] > 0
    assert lb["events_audit"]["lb_added"]["samples"] == 2
    assert len(res["targets"]) == 24
    assert (tmp_path / "tmp-quick-realistic-latest.md").read_text().count("| ") > 40


def test_fanout_bench_smoke(tmp_path: Path) -> None:
    """``python -m bench.fanout`` on 6 clients: conditions reach fewer of them."""
    from bench import fanout

    assert fanout.main(["--hosts", "6", "--pods", "3", "--lbs", "12", "--updates", "12",
                        "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "fanout-latest.json").read_text())
    rows = res["rows"]
    for via in ("direct", "relay"):
        every, cond = rows[f"{via}, monitor all"], rows[f"{via}, conditions"]
        assert every["clients_reached_per_update"] == 1.0
        assert cond["clients_reached_per_update"] < 0.5
        assert cond["bytes_per_update"] < every["bytes_per_update"]
        assert cond["initial_bytes"] < every["initial_bytes"]
    assert len(res["extrapolation"]) == 8
