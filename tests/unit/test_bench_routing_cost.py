"""``bench.routing_cost`` at a tiny size, so the benchmark cannot rot: it runs against real Redis,
reports every field the table and the JSON need, and its correctness checks hold (no timing is
asserted: figures from a shared test machine mean nothing)."""
from __future__ import annotations

import pytest

from bench.routing_cost import OPS, measure_routing_cost, ratio_lines, rows
from shared.testing.plugin import redis_url  # noqa: F401 - the fixture


def test_routing_cost_bench_runs_small_and_checks_its_assignments(redis_url):  # noqa: F811
    result = measure_routing_cost((redis_url, redis_url), small=10, large=200, queued=1000, decisions=40,
                                  drains=40, rounds=2, warmup=5)

    for size, agents in (("small", 10), ("large", 200)):
        setup = result[size]
        assert setup["agents"] == agents and setup["queued"] == 1000
        checks = setup["checks"]
        assert checks["new_assigned_once"] == 40 and checks["new_queued_once"] == 40
        # Every drain freed room that waiting tickets then took, and the backlog shrank by as many.
        assert checks["drained_assigned_once"] >= 40
        assert checks["backlog_before"] - checks["backlog_after"] == checks["drained_assigned_once"]
        assert checks["open_tickets_within_capacity"] > 0
        for op in OPS:
            row = setup[op]
            assert row["count"] == 40 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
            assert row["extra"]["mean_ms"] > 0
    assert set(result["ratio_large_to_small"]) == set(OPS)
    assert all(r["mean"] > 0 and r["p50"] > 0 for r in result["ratio_large_to_small"].values())
    assert isinstance(result["within_limit"], bool) and result["limit"] == 2.0
    assert len(rows(result)) == 6 and "routing cost 200 / 10 agents" in ratio_lines(result)


def test_routing_cost_bench_fails_loudly_when_an_assignment_is_wrong(redis_url, monkeypatch):  # noqa: F811
    # A drain that reports a ticket it never announced must not pass as a measurement.
    from bench import routing_cost

    real = routing_cost.Setup.resolve_and_drain

    def over_reporting(self, count):
        timings, assigned = real(self, count)
        return timings, [n + 1 for n in assigned]

    monkeypatch.setattr(routing_cost.Setup, "resolve_and_drain", over_reporting)
    with pytest.raises(AssertionError, match="drains report"):
        measure_routing_cost((redis_url, redis_url), small=10, large=60, queued=200, decisions=4, drains=4,
                             rounds=1, warmup=1)
