"""bench.redis_memory's reading of the key table in docs/architecture.md and its bound rule."""
from bench.redis_memory import Census, PatternCount, check_key_bounds, classify, documented_patterns

TABLE = """
## Redis keys, by owner

| owner | key (all under `tm:`) | what | lifetime |
|---|---|---|---|
| svc | `svc:ticket:<ticket>` | a view | 30 days |
| | `svc:customer:<key>`, `…:open` | customer | 90 days |
| | `svc:index`, `svc:lease:<agent>` | index | forever / 30 s claim |

## Next
"""


def test_the_table_gives_each_key_its_own_lifetime_and_continues_ellipsis_keys():
    patterns = {p.pattern: p for p in documented_patterns(TABLE)}
    assert set(patterns) == {"svc:ticket:<ticket>", "svc:customer:<key>", "svc:customer:<key>:open", "svc:open",
                             "svc:index", "svc:lease:<agent>"}
    assert patterns["svc:index"].may_lack_ttl and not patterns["svc:lease:<agent>"].may_lack_ttl
    assert not patterns["svc:ticket:<ticket>"].may_lack_ttl
    found = classify("tm:svc:customer:ab12:open", list(patterns.values()))
    assert found.pattern == "svc:customer:<key>:open"
    assert classify("tm:other:thing", list(patterns.values())) is None


def test_keys_without_ttl_are_flagged_unless_documented_as_bounded():
    patterns = documented_patterns(TABLE)
    found = Census(patterns={"svc:index": PatternCount(1, 10, 1, "tm:svc:index"),
                             "svc:ticket:<ticket>": PatternCount(2, 10, 1, "tm:svc:ticket:TM-1"),
                             "UNDOCUMENTED tm:x:<ticket>": PatternCount(1, 10, 1, "tm:x:TM-1"),
                             "UNDOCUMENTED tm:y:<ticket>": PatternCount(1, 10, 0, "")},
                   lifetimes={"svc:index": "forever", "svc:ticket:<ticket>": "30 days",
                              "UNDOCUMENTED tm:x:<ticket>": "", "UNDOCUMENTED tm:y:<ticket>": ""})
    problems = check_key_bounds(found, patterns)
    assert len(problems) == 2
    assert "tm:svc:ticket:TM-1" in problems[0] + problems[1] and "tm:x:TM-1" in problems[0] + problems[1]


def test_the_real_table_documents_the_per_ticket_keys():
    patterns = documented_patterns()
    for key in ("tm:agent_desk:ticket:TM-10001", "tm:dispatcher:ticket:TM-10001", "tm:history:events:TM-10001"):
        assert classify(key, patterns) is not None, key
