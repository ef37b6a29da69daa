"""The dispatcher's /healthz, /readyz and /metrics (shared/nameko_health.py), with agents by presence."""
from __future__ import annotations

from collections import Counter

import redis

from services.dispatcher.store import DispatchStore
from shared import metrics
from shared.nameko_health import HealthEndpoints


class DispatcherHealth(HealthEndpoints):
    def refresh_gauges(self, client: redis.Redis) -> None:
        # One HVALS of the presence hash: one field per agent of the roster, cheap at any scrape rate.
        metrics.set_agents(Counter(client.hvals(DispatchStore.presence_key)))
