"""``bench.sla_sweep`` at a tiny size, so the benchmark cannot rot: it runs against real Redis,
reports every field the table and the JSON need, and its exactly-once checks hold (no timing is
asserted: figures from a shared test machine mean nothing)."""
from __future__ import annotations

import pytest

from bench import sla_sweep
from bench.sla_sweep import measure_sla_sweep, ratio_lines, rows
from shared.testing.plugin import redis_url  # noqa: F401 - the fixture


def test_sla_sweep_bench_runs_small_and_checks_each_item_fired_once(redis_url):  # noqa: F811
    result = measure_sla_sweep((redis_url, redis_url), small=50, large=500, rounds=2, ticks=8, due_per_tick=5,
                               lateness_items=20, lateness_seconds=1.0)
    for size, clocks in (("small", 50), ("large", 500)):
        setup = result[size]
        assert setup["open_clocks"] == clocks
        assert setup["check"]["armed"] == 2 * 5 + 20   # two busy ticks of 5, then the lateness run
        assert setup["lateness"]["items"] == 20 and setup["lateness"]["p99_ms"] >= setup["lateness"]["p50_ms"]
        for kind in ("idle_tick", "busy_tick"):
            assert setup[kind]["p99_ms"] >= setup[kind]["p50_ms"] > 0 and setup[kind]["extra"]["mean_ms"] > 0
    assert set(result["ratio_large_to_small"]) == {"idle_tick", "busy_tick"}
    assert isinstance(result["within_limit"], bool) and result["limit"] == 2.0
    assert len(rows(result)) == 4 and "sla sweep cost 500 / 50 open clocks" in ratio_lines(result)


def test_sla_sweep_bench_fails_loudly_when_an_item_fires_twice(redis_url, monkeypatch):  # noqa: F811
    real = sla_sweep.Recorder.__call__

    def twice(self, event_type, /, **fields):
        body = real(self, event_type, **fields)
        if event_type == "sla_breached":
            real(self, event_type, **fields)
        return body

    monkeypatch.setattr(sla_sweep.Recorder, "__call__", twice)
    with pytest.raises(AssertionError, match="not exactly once"):
        measure_sla_sweep((redis_url, redis_url), small=10, large=20, rounds=1, ticks=4, due_per_tick=2,
                          lateness_items=2, lateness_seconds=0.5)
