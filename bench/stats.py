"""Figures the benchmark reports: throughput and latency percentiles of one measured run."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    count: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    extra: dict

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(name: str, count: int, seconds: float, latencies: list[float], **extra: object) -> Measurement:
    ordered = sorted(latencies)
    return Measurement(name, count, round(seconds, 3), round(count / seconds, 1) if seconds else 0.0,
                       round(percentile(ordered, 0.50) * 1000, 2), round(percentile(ordered, 0.99) * 1000, 2),
                       dict(extra))
