"""The offline micro benchmarks still run (they are not part of the suite's
timing, but a refactoring once left ``bench.encode`` encoding the wrong thing)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import compile as bench_compile
from bench import encode as bench_encode


def test_compile_bench_runs_and_both_ways_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_compile.main(["--lbs", "40", "--repeat", "1"]) == 0
    assert "same state both ways: True" in capsys.readouterr().out


def test_encode_bench_runs() -> None:
    flows, groups = bench_encode.corpus(10)
    assert len(flows) > 100 and len(groups) == 10
    assert bench_encode.main(["--lbs", "10", "--repeat", "1"]) == 0


def test_soak_slope_is_least_squares() -> None:
    from bench.soak import slope

    assert slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == 2.0
    assert slope([(0.0, 4.0), (10.0, 4.0)]) == 0.0
    assert slope([(5.0, 1.0)]) == 0.0  # one point: no slope
    assert abs(slope([(0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (3.0, 1.0)]) - 0.2) < 1e-12


def _samples(rss: list[float], every: float = 5.0, fds: int = 13,
             threads: int = 8) -> list[Any]:
    from bench.soak import Sample

    return [Sample(i * every, r, i * 0.1, fds, threads) for i, r in enumerate(rss)]


def test_soak_analysis_flat_run_meets_the_targets() -> None:
    from bench.soak import analyse

    # 20 minutes flat at 100 MB with a 30 MB step at 10 min that is gone a minute later
    rss = [100.0] * 120 + [130.0] * 6 + [100.0] * 114
    got = analyse(_samples(rss), warmup=60.0, disruptions=[(600.0, "vswitchd_restart")])
    assert got["judged"]
    assert got["steps"][0]["came_back"] and got["steps"][0]["rss_peak_mb"] == 130.0
    assert all(got["targets"].values()), got["targets"]


def test_soak_analysis_flags_growth_and_a_step_that_stays() -> None:
    from bench.soak import analyse

    growing = [100.0 + i * 0.1 for i in range(240)]  # +6 MB per 10 min: ~5 %
    got = analyse(_samples(growing), warmup=60.0, disruptions=[])
    assert got["rss_slope_pct_per_10min"] > 4.0
    assert not got["targets"]["rss_slope_lt_1pct_per_10min"]
    stays = [100.0] * 120 + [130.0] * 120
    got = analyse(_samples(stays), warmup=60.0, disruptions=[(600.0, "sb_reconnect")])
    assert got["steps"][0]["judged"] and not got["steps"][0]["came_back"]
    assert not got["targets"]["every_step_came_back"]


def test_a_soak_sample_splits_rss_into_heap_and_mapped_files() -> None:
    """What a creep is made of: the heap (a leak, or the allocator's
    fragmentation) or the libraries' pages touched for the first time."""
    import os
    import time

    from bench.soak import Sample, _parts, analyse, read_sample

    s = read_sample(os.getpid(), time.monotonic(), reset_peak=False)
    assert s.anon_mb > 0 and s.file_mb > 0
    assert s.anon_mb + s.file_mb <= s.rss_mb + 0.01  # (RssShmem is the rest)
    assert s.rss_mb - (s.anon_mb + s.file_mb) < 5.0
    got = analyse([Sample(i * 5.0, 100.0, 0.0, 13, 8, 100.0, 80.0 + i / 100, 20.0)
                   for i in range(240)], warmup=60.0, disruptions=[])
    assert got["anon_first_last_quarter_median_mb"][1] > got["anon_first_last_quarter_median_mb"][0]
    assert got["file_first_last_quarter_median_mb"] == [20.0, 20.0]
    assert _parts(got).startswith(": heap 80.")


def test_soak_analysis_leaks_of_fds_and_threads_are_seen() -> None:
    from bench.soak import Sample, analyse

    samples = [Sample(i * 5.0, 100.0, 0.0, 13 + i // 60, 8 + i // 100) for i in range(240)]
    got = analyse(samples, warmup=0.0, disruptions=[])
    assert not got["targets"]["fds_constant"] and not got["targets"]["threads_constant"]
    # a scrape's thread and socket, even in most samples late on, are not a leak
    samples = [Sample(i * 5.0, 100.0, 0.0, 14 if i > 150 and i % 7 else 13,
                      9 if i % 3 == 0 or (i > 150 and i % 7) else 8) for i in range(240)]
    got = analyse(samples, warmup=0.0, disruptions=[])
    assert got["targets"]["threads_constant"] and got["targets"]["fds_constant"]
    # a connection the daemon lost to a disruption, while it reconnects, sets no baseline
    samples = [Sample(i * 5.0, 100.0, 0.0, 12 if 4 <= i < 6 else 13, 8) for i in range(40)]
    got = analyse(samples, warmup=0.0, disruptions=[(20.0, "vswitchd_restart")])
    assert got["fds_early_late"] == [13, 13] and got["targets"]["fds_constant"]
    # ... but one lost for good is seen
    samples = [Sample(i * 5.0, 100.0, 0.0, 12 if i >= 30 else 13, 8) for i in range(40)]
    got = analyse(samples, warmup=0.0, disruptions=[(150.0, "sb_reconnect")])
    assert not got["targets"]["fds_constant"]


def test_soak_endpoint_change_keeps_the_service_shape() -> None:
    """The soak's endpoint churn writes the NB ``vips`` of ``bench.cluster``'s
    services with one backend replaced: same VIPs and ports, that pod in."""
    from bench import cluster
    from bench.clusterload import _vips

    c = cluster.generate(200, seed=17, nodes=5)
    for svc in c.services:
        assert _vips(svc, c.pods, list(svc.backends)) == svc.vips(c.pods)
    svc = next(s for s in c.services if len(s.backends) > 1 and len(s.vip_ports) > 1)
    other = next(p for p in c.remote_pods if p.name not in svc.backends)
    names = [other.name, *svc.backends[1:]]
    got = _vips(svc, c.pods, names)
    assert got.keys() == svc.vips(c.pods).keys()
    addr = other.ip6 if svc.ipv6 else other.ip4
    for (_vport, bport), bes in zip(svc.vip_ports, got.values(), strict=True):
        assert bes.split(",")[0] in (f"{addr}:{bport}", f"[{addr}]:{bport}")
        assert len(bes.split(",")) == len(svc.backends)


def test_realistic_targets_name_the_switchs_own_group_dump_beside_the_restart() -> None:
    """The restart target's row says how long ovs-vswitchd took to build the
    group dump a restart reads (its floor on this switch), from the run's
    ``prefetch_ms``; without it the row stays as it was."""
    from bench.realistic import summary, targets

    run = {"lbaffd": {"restart": {"in_sync_s": 8.2, "of_writes": 0, "rss_peak_mb": 370.0,
                                  "prefetch_ms": {"flows_ms": 380.0, "groups_ms": 5556.0}}}}
    res: dict[str, Any] = {"n": 5000, "runs": [run]}
    res["summary"] = summary(res)
    row = next(t for t in targets(res) if t["target"] == "restart: in sync")
    assert row["measured"] == "8.20 s (the switch's group dump alone: 5.56 s)"
    assert row["met"] is False
    del run["lbaffd"]["restart"]["prefetch_ms"]
    res["summary"] = summary(res)
    row = next(t for t in targets(res) if t["target"] == "restart: in sync")
    assert row["measured"] == "8.20 s"


def test_realistic_summary_keeps_every_sample() -> None:
    from bench.realistic_events import summarize

    rows: list[dict[str, Any]] = [
        {"latency_ms": float(i), "cpu_ms": 1.0, "changes": 1, "worker_ms": i / 2,
         "input_ms": i - 0.5} for i in range(1, 51)]
    rows.append({"latency_ms": None, "cpu_ms": 0.0, "changes": 0, "worker_ms": None})
    out = summarize(rows)
    assert out["rows"] == rows and out["samples"] == 51 and out["with_switch_changes"] == 50
    assert out["p99_ms"] == out["max_ms"] == 50.0  # nearest rank: of 50 samples, the maximum
    assert out["input_p50_ms"] == 24.5 and out["worker_p99_ms"] == 25.0
    assert "northd_p50_ms" not in out and "after_northd_p50_ms" not in out
    # ovn-controller's health flip: ovn-northd's part and the rest after it
    flips = [{"latency_ms": 100.0 + i, "northd_ms": 90.0, "cpu_ms": 1.0, "changes": None}
             for i in range(1, 101)]
    out = summarize(flips)
    assert out["northd_p99_ms"] == 90.0
    assert out["after_northd_p50_ms"] == 60.0 and out["after_northd_p99_ms"] == 109.0


def test_a_sample_says_where_its_time_went() -> None:
    """``attribution``: an lbaffd sample's passes (and audits among them),
    the SB's delivery to lbaffd and the wait for the worker, from the log."""
    from bench.realistic_events import attribution

    t0 = 1_000_000.0

    def line(at: float, **kw: Any) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(t0 + at, UTC).isoformat().replace("+00:00", "Z")
        return {"event": "reconciled", "timestamp": stamp, "changes": 1, **kw}

    step = line(0.020, arrived_at=t0 + 0.004, wait_ms=1.5)
    assert attribution([step], t0) == {"passes": 1, "audit_passes": 0, "arrived_ms": 4.0,
                                       "wait_ms": 1.5}
    late_audit = line(0.758, audit=True)
    got = attribution([step, late_audit], t0)
    assert got["passes"] == 2 and got["audit_passes"] == 1 and got["first_ms"] == 20.0
    assert attribution([], t0) == {"passes": 0, "audit_passes": 0}


def test_realistic_merge_takes_every_run_and_refuses_other_content(tmp_path: Path) -> None:
    """``--merge``: the runs of files of the same content are summarized as
    one set (medians over all), runs without data are left out, and files
    of another content or sampling are refused."""
    from bench.realistic import merge, resummarize

    def part(name: str, colds: list[float | None], samples: int = 200) -> Path:
        runs = [{"lbaffd": {"cold": {"converge_s": c}} if c is not None else {}}
                for c in colds]
        res = {"n": 5000, "samples": samples, "sb_direct": True, "cluster": {"vips": 5219},
               "churn": {"seconds": 60.0}, "quick": False, "command": f"run {name}",
               "phases": ["events"] if name == "b" else ["raw", "events", "churn"],
               "runs_wanted": len(colds), "runs": runs, "errors": [{"phase": "x"}],
               "host": {"commit": name, "cpus": 2,
                        **({"cpu_model": "AMD EPYC"} if name == "b" else {})}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(res))
        return path

    merged = merge([part("a", [4.0, 6.0, None]), part("b", [5.5])])
    assert len(merged["runs"]) == 3 and merged["runs_wanted"] == 4
    assert merged["summary"]["lbaffd"]["cold_s"] == {"median": 5.5, "min": 4.0, "max": 6.0,
                                                     "runs": 3}
    assert merged["phases"] == ["raw", "events", "churn"]
    assert merged["host"]["commit"] == "a + b" and len(merged["errors"]) == 2
    assert merged["host"]["cpu_model"] == "? + AMD EPYC"  # (a file from before the field)
    # a run's samples summarized again: a figure its file predates is there
    flips = [{"latency_ms": 100.0 + i, "northd_ms": 90.0, "cpu_ms": 1.0, "changes": None}
             for i in range(1, 101)]
    run = {"ovn-controller": {"events": {"health_flip": {"p50_ms": 150.0, "rows": flips},
                                         "rss_peak_mb": 1182.1}}}
    resummarize(run)
    assert run["ovn-controller"]["events"]["health_flip"]["after_northd_p99_ms"] == 109.0
    assert run["ovn-controller"]["events"]["rss_peak_mb"] == 1182.1
    with pytest.raises(ValueError, match="samples"):
        merge([part("a", [4.0]), part("b", [5.0], samples=30)])
