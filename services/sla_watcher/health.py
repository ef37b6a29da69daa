"""The SLA watcher's /healthz, /readyz and /metrics (shared/nameko_health.py), with the clocks due."""
from __future__ import annotations

import time

import redis

from services.sla_watcher.store import SlaStore
from shared import metrics
from shared.nameko_health import HealthEndpoints


class SlaWatcherHealth(HealthEndpoints):
    def refresh_gauges(self, client: redis.Redis) -> None:
        # Due now and not fired yet: a growing number means the sweep is not keeping up.
        metrics.set_sla_due(client.zcount(SlaStore.due_key, "-inf", repr(time.time())))
