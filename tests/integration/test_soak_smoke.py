"""``python -m bench.soak`` still runs: a short soak (N=30, 40 s) with every
kind of event, against the real daemons, and its analysis of the samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import soak

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_soak_runs_every_event_and_is_analysed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the soak needs root (network namespaces, ovs-vswitchd)")
    result = soak.soak(n=30, duration=40.0, warmup=10.0, idle=10.0, seed=2, audit_interval=5.0)
    assert result["vips"] >= 30 and result["backend_slots"] > result["vips"]
    # every kind of event ran, none failed
    assert set(result["event_counts"]) >= {*soak.PERIODS, "vswitchd_restart", "sb_reconnect"}, (
        result["event_counts"])
    assert result["event_failures"] == {}
    assert [d["event"] for d in result["disruptions"]] == ["vswitchd_restart", "sb_reconnect"]
    assert result["traffic"]["ok"] > 0
    # a failed connection is kept with its reason (the first ones)
    assert len(result["traffic_failures"]) == min(result["traffic"]["failed"],
                                                  soak.MAX_FAILURES_KEPT)
    # sampled throughout, and analysed
    samples = result["samples"]
    assert len(samples) >= 40 / soak.SAMPLE_EVERY
    assert all(s["rss_mb"] > 20 and s["threads"] > 1 and s["fds"] > 3 for s in samples)
    analysis = result["analysis"]
    assert analysis["judged"] and set(analysis["targets"]) == {
        "rss_slope_lt_1pct_per_10min", "fds_constant", "threads_constant",
        "every_step_came_back"}
    assert analysis["targets"]["fds_constant"] and analysis["targets"]["threads_constant"], (
        analysis["fds_early_late"], analysis["threads_early_late"], result["disruptions"],
        [(s["t"], s["fds"], s["threads"]) for s in samples])
    # the idle window: audits only, none recompiled
    idle = result["idle"]
    assert idle["audits"] >= 1 and idle["recompiles"] == 0, idle
    assert result["passes"]["full"]["count"] >= 4  # recomputes, ports, health, restarts
    # the graph and the README text are made from it
    png = tmp_path / "soak.png"
    assert soak.plot(result, png) and png.stat().st_size > 1000
    result.update(when="now", cpus=2, load="0", commit="x")
    text = soak.render(result, "soak.png")
    assert "a shorter run" in text and "RSS slope" in text and "![" in text
