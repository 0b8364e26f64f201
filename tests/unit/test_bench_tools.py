"""The offline micro benchmarks still run (they are not part of the suite's
timing, but a refactoring once left ``bench.encode`` encoding the wrong thing)."""

from __future__ import annotations

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
