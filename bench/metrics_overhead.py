"""Per-event cost of the metrics hooks (shared/metrics.py): ``python bench/metrics_overhead.py``."""
import time, timeit
from datetime import datetime, timezone
from shared import metrics
metrics.configure("bench", "r1")
occ = datetime.now(timezone.utc)
def consume_hooks():
    metrics.event_in("agent_desk", "agent_presence_changed", occ, time.time())
    started = time.perf_counter()
    metrics.handler_done("agent_presence_changed", time.perf_counter() - started)
def publish_hook():
    metrics.event_out("ticket_assigned")
n = 200_000
for name, fn in (("consume side (in + lag + handler timing)", consume_hooks), ("publish side (out)", publish_hook)):
    best = min(timeit.repeat(fn, number=n, repeat=5)) / n
    print(f"{name}: {best*1e6:.2f} µs/event")
import json
from shared import events as ev
body = ev.make_event("agent_desk", "agent_presence_changed", now=occ, trace_id="t", agent_id="a1", presence="online")
raw = json.dumps(body).encode()
def parse():
    ev.parse_event("agent_desk", "agent_presence_changed", json.loads(raw))
print(f"for scale, json.loads + parse_event of a small event: {min(timeit.repeat(parse, number=50_000, repeat=5))/50_000*1e6:.2f} µs")
