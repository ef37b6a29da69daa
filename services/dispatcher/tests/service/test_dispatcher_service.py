"""The dispatcher in a nameko container against a real RabbitMQ vhost and Redis database."""
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from nameko.testing.services import entrypoint_waiter

from services.dispatcher.classify import RulesError
from services.dispatcher.service import DispatcherService
from services.dispatcher.store import TicketFacts
from shared import events as ev
from shared.errors import TransientError
from shared.roster import AgentProfile, hash_password
from shared.testing.plugin import poll_until

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
PASSWORD_HASH = hash_password("not-used-here", salt=b"fixed-test-salt!")
RULES_FILE = Path(__file__).resolve().parents[4] / "deploy" / "config" / "routing.yaml"
SLA_FILE = Path(__file__).resolve().parents[4] / "deploy" / "config" / "sla.yaml"


def write_roster(tmp_path, agents):
    path = tmp_path / "roster.yaml"
    entries = []
    for a in agents:
        entry = {"agent_id": a["agent_id"], "name": a["agent_id"], "password_hash": PASSWORD_HASH,
                 "skills": a.get("skills", {"general": 3}), "languages": a.get("languages", ["zh", "en"]),
                 "capacity": a.get("capacity", {"email": 2, "chat": 2, "phone": 1})}
        for optional in ("role", "group", "tier"):
            if optional in a:
                entry[optional] = a[optional]
        entries.append(entry)
    path.write_text(yaml.safe_dump({"agents": entries}, allow_unicode=True), encoding="utf-8")
    return str(path)


def received(ticket_id, *, channel="email", subject="咨询", text="你好", received_at=NOW,
             customer=None, linked_ticket_id=None):
    source = {"intake_email": "intake_email", "chat": "intake_chat", "phone": "intake_phone"}
    return ev.make_event(
        source.get(channel, "intake_email"), ev.TICKET_RECEIVED, now=NOW, trace_id=f"trace-{ticket_id}",
        event_id=f"rx-{ticket_id}", ticket_id=ticket_id, channel=channel,
        customer=customer or {"name": "张伟", "email": "zhang.wei@example.com"}, subject=subject, text=text,
        received_at=received_at, linked_ticket_id=linked_ticket_id,
    )


def presence(agent_id, state, at):
    return ev.make_event(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, now=at, trace_id="trace-presence",
                         agent_id=agent_id, presence=state)


def resolved(ticket_id, agent_id, channel="email"):
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=NOW, trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, agent_id=agent_id, channel=channel)


def collect(listener, done, timeout=15.0):
    """Every event the listener sees until ``done(events)`` holds."""
    seen = []

    def predicate(event_type, body):
        seen.append((event_type, body))
        return done(seen)

    listener.wait_for(predicate, timeout=timeout)
    return seen


def of(events, event_type, ticket_id=None):
    return [b for t, b in events if t == event_type and (ticket_id is None or b["ticket_id"] == ticket_id)]


def register(store, facts):
    """Record a received ticket the way routing does (lease, register, release)."""
    with store.routing(facts):
        pass


def plain_rules(routing=None, _cache={}):
    """The shipped classification rules with a test's own ``routing:`` section (default: none,
    so the shipped policy's sticky owners and relaxation do not steer unrelated tests)."""
    key = yaml.safe_dump(routing)
    if key not in _cache:
        data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
        data.pop("routing", None)
        if routing is not None:
            data["routing"] = routing
        handle, path = tempfile.mkstemp(prefix="tm-routing-", suffix=".yaml")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yaml.safe_dump(data, out, allow_unicode=True)
        _cache[key] = path
    return _cache[key]


def start_dispatcher(service_container, roster_file, rules_file=None):
    rules_file = rules_file or plain_rules()
    container = service_container(DispatcherService, TM_ROSTER_FILE=roster_file, TM_ROUTING_RULES_FILE=str(rules_file),
                                  TM_SLA_POLICY_FILE=str(SLA_FILE))
    container.start()
    return container


def go_online(publish, store, *agent_ids, at=NOW):
    for agent_id in agent_ids:
        publish(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, presence(agent_id, "online", at))
    poll_until(lambda: all(store.presence(a) == "online" for a in agent_ids), what="agents online")


def test_online_agent_with_capacity_gets_a_classified_ticket(service_container, tmp_path, publish, store, event_listener):
    roster = write_roster(tmp_path, [
        {"agent_id": "li.na", "skills": {"general": 3, "billing": 5}},
        {"agent_id": "sam.taylor", "skills": {"general": 5}, "languages": ["en"]},
    ])
    container = start_dispatcher(service_container, roster)
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "sam.taylor")

    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-10001", subject="申请退款", text="上个月重复扣费了"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED))

    assert [t for t, _ in events] == [ev.TICKET_CLASSIFIED, ev.TICKET_ASSIGNED]
    classified, assigned = events[0][1], events[1][1]
    assert classified["priority"] == "P3" and classified["required_skills"] == ["billing"]
    assert classified["language"] == "zh" and classified["tags"] == ["billing"]
    assert classified["trace_id"] == "trace-TM-10001"
    assert assigned["agent_id"] == "li.na" and assigned["channel"] == "email"
    decision = assigned["decision"]
    assert (decision["considered"], decision["eligible"]) == (2, 1)
    assert decision["rejected"] == {"sam.taylor": "skill: lacks billing"}
    assert "most spare email capacity (2/2 free)" in decision["reason"]
    assert store.load_of("li.na", "email") == 1
    assert store.open_tickets("li.na") == {"TM-10001"}

    accepted = ev.make_event(ev.AGENT_DESK, ev.TICKET_ACCEPTED, now=NOW, trace_id="trace-TM-10001",
                             ticket_id="TM-10001", agent_id="li.na")
    with entrypoint_waiter(container, "handle_ticket_accepted", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_ACCEPTED, accepted)
    assert store.ticket("TM-10001").accepted_by == "li.na"


def test_ticket_waits_until_an_agent_comes_online(service_container, tmp_path, publish, store, event_listener):
    start_dispatcher(service_container, write_roster(tmp_path, [{"agent_id": "chen.wei"}]))
    listener = event_listener(ev.DISPATCHER)

    publish(ev.INTAKE_CHAT, ev.TICKET_RECEIVED, received("TM-10002", channel="chat", text="在吗"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED))
    [queued] = of(events, ev.TICKET_QUEUED)
    assert queued["reason"] == "no eligible agent: 1 presence"
    assert store.waiting_ids() == ["TM-10002"]

    publish(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, presence("chen.wei", "online", NOW))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED))
    [assigned] = of(events, ev.TICKET_ASSIGNED)
    assert assigned["ticket_id"] == "TM-10002" and assigned["agent_id"] == "chen.wei"
    assert assigned["trace_id"] == "trace-TM-10002"
    assert store.waiting_ids() == []


def test_full_agent_gets_the_next_ticket_when_one_is_resolved_once(service_container, tmp_path, publish, store,
                                                                      event_listener):
    container = start_dispatcher(service_container, write_roster(tmp_path, [
        {"agent_id": "li.na", "capacity": {"email": 1}}]))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")

    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED))
    assert [b["ticket_id"] for b in of(events, ev.TICKET_ASSIGNED)] == ["TM-1"]
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-2", received_at=NOW.replace(minute=5)))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED))
    [queued] = of(events, ev.TICKET_QUEUED)
    assert queued["ticket_id"] == "TM-2" and queued["reason"] == "no eligible agent: 1 capacity"

    publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-1", "li.na"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED))
    assert [(b["ticket_id"], b["agent_id"]) for b in of(events, ev.TICKET_ASSIGNED)] == [("TM-2", "li.na")]
    assert store.load_of("li.na", "email") == 1

    # A redelivered ticket_resolved must not free the slot TM-2 now holds.
    with entrypoint_waiter(container, "handle_ticket_resolved", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-1", "li.na"))
    assert store.load_of("li.na", "email") == 1
    assert store.open_tickets("li.na") == {"TM-2"}


def handled_ok(ticket_id, times):
    """entrypoint_waiter callback: the ticket's handler completed without error ``times`` times."""
    done = []

    def callback(worker_ctx, result, exc_info):
        if exc_info is None and worker_ctx.args[0].ticket_id == ticket_id:
            done.append(1)
        return len(done) >= times

    return callback


def test_redelivered_ticket_received_is_assigned_once(service_container, tmp_path, publish, store, event_listener):
    container = start_dispatcher(service_container, write_roster(tmp_path, [
        {"agent_id": "li.na", "capacity": {"email": 5}}]))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")

    body = received("TM-7")
    with entrypoint_waiter(container, "handle_email_ticket_received", timeout=10, callback=handled_ok("TM-7", 1)):
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, body)
    with entrypoint_waiter(container, "handle_email_ticket_received", timeout=10, callback=handled_ok("TM-7", 1)):
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, body)  # a redelivery after the first was acked
    # Two copies of a new ticket at once (a producer's retried publish): one routes, the other
    # waits for it and then finds everything done.
    twin = received("TM-9")
    with entrypoint_waiter(container, "handle_email_ticket_received", timeout=10, callback=handled_ok("TM-9", 2)):
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, twin)
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, twin)
    # A later ticket as a marker: anything the copies emitted arrives before its events.
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-8"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-8"))

    for ticket_id in ("TM-7", "TM-9"):
        assert len(of(events, ev.TICKET_CLASSIFIED, ticket_id)) == 1, ticket_id
        assert len(of(events, ev.TICKET_ASSIGNED, ticket_id)) == 1, ticket_id
    assert store.load_of("li.na", "email") == 3
    assert store.open_tickets("li.na") == {"TM-7", "TM-8", "TM-9"}


def test_two_replicas_assign_each_ticket_once_and_respect_capacity(service_container, tmp_path, publish, store,
                                                                      event_listener):
    roster = write_roster(tmp_path, [{"agent_id": f"agent{i}", "capacity": {"email": 5}} for i in range(3)])
    start_dispatcher(service_container, roster)
    start_dispatcher(service_container, roster)  # same service name: the two share every queue
    listener = event_listener(ev.DISPATCHER, [ev.TICKET_ASSIGNED, ev.TICKET_QUEUED])
    go_online(publish, store, "agent0", "agent1", "agent2")

    for n in range(30):
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received(f"TM-{100 + n}", received_at=NOW.replace(second=n)))
    events = collect(listener, lambda seen: len({b["ticket_id"] for _, b in seen}) == 30, timeout=30)

    assigned = of(events, ev.TICKET_ASSIGNED)
    queued = of(events, ev.TICKET_QUEUED)
    assert len(assigned) == 15 and len({b["ticket_id"] for b in assigned}) == 15
    assert len(queued) == 15 and not ({b["ticket_id"] for b in queued} & {b["ticket_id"] for b in assigned})
    per_agent = {}
    for body in assigned:
        per_agent[body["agent_id"]] = per_agent.get(body["agent_id"], 0) + 1
    assert per_agent == {"agent0": 5, "agent1": 5, "agent2": 5}
    assert [store.load_of(f"agent{i}", "email") for i in range(3)] == [5, 5, 5]
    assert sorted(store.waiting_ids()) == sorted(b["ticket_id"] for b in queued)


def test_bad_rules_file_stops_the_start(service_container, tmp_path):
    rules = tmp_path / "routing.yaml"
    rules.write_text("rules:\n  - name: billing\n    then: {priority: urgent}\n", encoding="utf-8")
    container = service_container(DispatcherService, TM_ROSTER_FILE=write_roster(tmp_path, [{"agent_id": "li.na"}]),
                                  TM_ROUTING_RULES_FILE=str(rules))
    with pytest.raises(RulesError, match="rule 1 'billing': then.priority"):
        container.start()


def test_store_claim_is_idempotent_and_checks_presence_capacity_and_order(store):
    store.load_roster([AgentProfile(agent_id="a", name="A", password_hash=PASSWORD_HASH, capacity={"chat": 1}),
                       AgentProfile(agent_id="b", name="B", password_hash=PASSWORD_HASH, capacity={"chat": 1})])
    now = NOW.timestamp()
    for ticket_id in ("T-1", "T-2"):
        register(store, TicketFacts(ticket_id=ticket_id, trace_id="t", channel="chat", priority="P3",
                                    required_skills=("general",), language="zh", tags=(), received_at=NOW))
    assert store.claim("T-1", "a", "chat", now=now, decision={}).detail == "presence: unknown"
    assert store.set_presence("a", "online", at=now)
    assert not store.set_presence("a", "offline", at=now - 1)  # an older change arriving late
    assert store.presence("a") == "online"

    assert store.claim("T-1", "a", "chat", now=now, decision={}).status == "assigned"
    again = store.claim("T-1", "b", "chat", now=now, decision={})
    assert (again.status, again.detail) == ("existing", "a")
    full = store.claim("T-2", "a", "chat", now=now, decision={})
    assert (full.status, full.detail) == ("no", "capacity: chat full (1/1)")

    assert store.resolve("T-1", now=now).freed_capacity
    assert store.resolve("T-1", now=now).status == "already"
    assert store.load_of("a", "chat") == 0
    assert store.claim("T-1", "a", "chat", now=now, decision={}).status == "closed"
    assert store.claim("T-2", "a", "chat", now=now, decision={}).status == "assigned"


def test_waiting_queue_pages_in_priority_then_age_order_without_skipping_ties(store):
    def queue(ticket_id, priority, minute):
        facts = TicketFacts(ticket_id=ticket_id, trace_id="t", channel="email", priority=priority,
                            required_skills=("general",), language="en", tags=(), received_at=NOW.replace(minute=minute))
        register(store, facts)
        assert store.enqueue(facts) == "queued"

    queue("late-p1", "P1", 30)
    for n in range(4):
        queue(f"tie-{n}", "P3", 10)  # same priority, same second: equal scores
    queue("early-p3", "P3", 1)
    queue("p2", "P2", 59)
    queue("tie-0", "P3", 10)  # a redelivery does not queue twice

    order, cursor = [], None
    while True:
        ids, cursor = store.waiting_page(cursor, limit=2)
        if not ids:
            break
        order += ids
    assert order == ["late-p1", "p2", "early-p3", "tie-0", "tie-1", "tie-2", "tie-3"]
    assert store.waiting_count() == 7


def test_store_routing_leases_registers_and_marks_in_one_session_and_sees_a_new_roster(store, redis_client):
    def profile(agent_id, skills):
        return AgentProfile(agent_id=agent_id, name=agent_id, password_hash=PASSWORD_HASH, skills=skills,
                            capacity={"chat": 1})

    store.load_roster([profile("a", {"general": 3})])
    facts = TicketFacts(ticket_id="T-1", trace_id="t", channel="chat", priority="P3", required_skills=("general",),
                        language="zh", tags=(), received_at=NOW)
    with store.routing(facts) as routing:
        assert (routing.record.state, routing.record.facts) == ("new", facts)
        assert [(a.agent_id, dict(a.skills)) for a in routing.snapshots] == [("a", {"general": 3})]
        with pytest.raises(TransientError, match="being routed by another worker"):  # a duplicate delivery
            with store.routing(facts):
                pass
        routing.note_announced("classified")
        assert store.ticket("T-1").announced == frozenset()  # written when the lease is released
    assert store.ticket("T-1").announced == {"classified"}

    other = TicketFacts(**{**facts.__dict__, "channel": "email"})
    with store.routing(other) as again:  # the lease is free again; the first delivery's facts win
        assert again.record.facts.channel == "chat" and again.record.announced == {"classified"}

    store.load_roster([profile("a", {"billing": 2}), profile("b", {"general": 1})])  # e.g. another replica restarted
    assert [(a.agent_id, dict(a.skills)) for a in store.agent_snapshots()] == [("a", {"billing": 2}),
                                                                               ("b", {"general": 1})]


def test_open_ticket_never_expires_and_resolving_frees_the_slot_then_starts_the_ttl(store, redis_client):
    """An assigned ticket whose hash expired could never give its agent's slot back."""
    store.load_roster([AgentProfile(agent_id="a", name="A", password_hash=PASSWORD_HASH, capacity={"chat": 1})])
    now = NOW.timestamp()
    store.set_presence("a", "online", at=now)
    claimed, queued = (TicketFacts(ticket_id=t, trace_id="t", channel="chat", priority="P3", required_skills=("general",),
                                   language="zh", tags=(), received_at=NOW) for t in ("T-1", "T-2"))
    for facts in (claimed, queued):
        register(store, facts)
        assert redis_client.ttl(store.ticket_key(facts.ticket_id)) > 0  # a never-routed ticket still expires

    assert store.claim("T-1", "a", "chat", now=now, decision={}).assigned
    assert store.enqueue(queued) == "queued"
    assert redis_client.ttl(store.ticket_key("T-1")) == -1
    assert redis_client.ttl(store.ticket_key("T-2")) == -1

    assert store.resolve("T-1", now=now).freed_capacity
    assert redis_client.ttl(store.ticket_key("T-1")) > 0
    assert store.load_of("a", "chat") == 0 and store.open_tickets("a") == set()
    assert store.resolve("T-2", now=now).status == "closed"
    assert redis_client.ttl(store.ticket_key("T-2")) > 0 and store.waiting_ids() == []


def test_claim_whose_announcement_failed_is_announced_by_the_timer_with_no_other_event(
        service_container, tmp_path, store, event_listener):
    start_dispatcher(service_container, write_roster(tmp_path, [{"agent_id": "li.na"}]))
    listener = event_listener(ev.DISPATCHER, [ev.TICKET_ASSIGNED])
    now = datetime.now(timezone.utc)
    store.set_presence("li.na", "online", at=now.timestamp())
    facts = TicketFacts(ticket_id="TM-55", trace_id="trace-TM-55", channel="email", priority="P3",
                        required_skills=("general",), language="zh", tags=(), received_at=now)
    register(store, facts)
    # A claim recorded, then the worker's ticket_assigned publish failed: nothing announced it.
    decision = {"considered": 1, "eligible": 1, "reason": "only agent", "rejected": {}}
    assert store.claim("TM-55", "li.na", "email", now=now.timestamp(), decision=decision).assigned

    [(_, assigned)] = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED), timeout=10)
    assert (assigned["ticket_id"], assigned["agent_id"]) == ("TM-55", "li.na")
    assert {k: assigned["decision"][k] for k in decision} == decision and assigned["trace_id"] == "trace-TM-55"
    poll_until(lambda: "assigned" in store.ticket("TM-55").announced, what="announcement recorded")
    assert store.unannounced_before(now.timestamp() + 60) == []


def test_drain_ranks_only_the_freed_agent_against_the_queue_heads_they_serve(service_container, tmp_path, publish, store,
                                                                          event_listener):
    start_dispatcher(service_container, write_roster(tmp_path, [
        {"agent_id": "li.na", "capacity": {"email": 1}},
        {"agent_id": "chat.only", "capacity": {"chat": 3}},  # online, but takes no email
        {"agent_id": "off.duty", "capacity": {"email": 5}},  # never online
        {"agent_id": "en.only", "capacity": {"email": 5}, "languages": ["en"]},  # room, wrong language
    ]))
    listener = event_listener(ev.DISPATCHER, [ev.TICKET_ASSIGNED, ev.TICKET_QUEUED])
    go_online(publish, store, "li.na", "chat.only", "en.only")
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-2", received_at=NOW.replace(minute=5)))
    collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED, "TM-2"))

    publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-1", "li.na"))
    [assigned] = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-2")), ev.TICKET_ASSIGNED)
    decision = assigned["decision"]
    assert assigned["agent_id"] == "li.na"
    # The drain ranked only the agent who freed capacity, against the heads of the queues they serve.
    assert (decision["considered"], decision["eligible"]) == (1, 1)
    assert "queue drain for li.na (resolved:TM-1): oldest of the 1 queues they serve" in decision["reason"]


def test_claim_script_enforces_shared_budget_fairness_and_declines_and_force_only_checks_presence(store):
    from services.dispatcher.policy import RoutingPolicy

    store.policy = RoutingPolicy(fairness_window_seconds=3600, fairness_max=3, decline_cooldown_seconds=900)
    store.load_roster([AgentProfile(agent_id="a", name="A", password_hash=PASSWORD_HASH,
                                    capacity={"email": 4, "chat": 2})])
    now = NOW.timestamp()
    store.set_presence("a", "online", at=now)
    for n, channel in enumerate(["chat", "email", "email", "email", "chat", "email", "email"]):
        register(store, TicketFacts(ticket_id=f"T-{n}", trace_id="t", channel=channel, priority="P3",
                                    required_skills=("general",), language="zh", tags=(), received_at=NOW))

    def claim(n, channel, **kw):
        result = store.claim(f"T-{n}", "a", channel, now=now, decision={}, **kw)
        return result.status if result.assigned else result.detail

    assert claim(0, "chat") == "assigned"  # 1/2 used
    assert claim(1, "email") == "assigned"  # 3/4
    assert claim(2, "email") == "assigned"  # 4/4: full
    assert claim(3, "email") == "capacity: no room for a email (100% used)"
    assert store.resolve("T-1", now=now).freed_capacity  # 3/4 used, 3 assignments in the window
    assert claim(3, "email") == "fairness: 3 recent assignments (max 3)"
    store.policy = RoutingPolicy(decline_cooldown_seconds=900)
    assert claim(4, "chat") == "capacity: no room for a chat (75% used)"
    assert claim(3, "email") == "assigned"

    assert store.unassign("T-3", "a", "declined", now=now, score=1.0, declined=True).done
    assert claim(3, "email") == "declined: passed on this ticket recently"
    store.set_presence("a", "away", at=now + 1)
    assert claim(5, "email", force=True) == "assigned"  # over the budget and away: an explicit choice
    store.set_presence("a", "offline", at=now + 2)
    assert claim(6, "email", force=True) == "presence: offline"


def test_large_roster_is_ranked_from_the_availability_index_with_the_same_winner(store):
    from services.dispatcher.assigner import Assigner
    from services.dispatcher.routing import rank_agents

    emitted = []

    def emit(event_type, /, *, now, trace_id, **fields):
        emitted.append((event_type, ev.make_event(ev.DISPATCHER, event_type, now=now, trace_id=trace_id, **fields)))

    # 150 agents (> FULL_SCAN_AGENTS): only agent149 speaks fr; every 3rd agent is offline.
    agents = [AgentProfile(agent_id=f"agent{i:03d}", name="x", password_hash=PASSWORD_HASH,
                           skills={"general": 1 + i % 5}, languages=["fr"] if i == 149 else ["zh"],
                           capacity={"email": 2 + i % 4, "chat": 1}) for i in range(150)]
    store.load_roster(agents)
    now = datetime.now(timezone.utc)
    for i in range(150):
        store.set_presence(f"agent{i:03d}", "offline" if i % 3 == 0 and i != 149 else "online", at=now.timestamp())
    assigner = Assigner(store, emit, clock=lambda: datetime.now(timezone.utc))
    assert store.agent_snapshots() and store.uses_index()

    def facts(ticket_id, language="zh"):
        return TicketFacts(ticket_id=ticket_id, trace_id="t", channel="email", priority="P3",
                           required_skills=("general",), language=language, tags=(), received_at=now)

    for n in range(40):
        expected = rank_agents(facts(f"T-{n}").needs(), store.agent_snapshots(), now.timestamp()).ranked[0]
        assert assigner.receive(facts(f"T-{n}")) == "assigned"
        decision = store.ticket(f"T-{n}").decision
        assert decision["winner"] == expected.agent_id, n
        assert "online with room for email and general" in decision["reason"]
    # The only French speaker is deep in the index: later pages are read until someone fits.
    assert assigner.receive(facts("T-fr", language="fr")) == "assigned"
    assert store.ticket("T-fr").agent_id == "agent149"
    # An agent going offline leaves the index; one full for email leaves that channel's index.
    store.set_presence("agent149", "offline", at=now.timestamp() + 1)
    assert assigner.receive(facts("T-fr2", language="fr")) == "queued"
    assert store.decisions("T-fr2")[-1]["reason"].startswith("no eligible agent: 99 language")
    assert store.decisions("T-fr2")[-1]["rejected_counts"] == {"language": 99}
    index = store.client.zrange(store.index_key("email", "general"), 0, -1)
    assert "agent149" not in index and "agent000" not in index and len(index) == 99


def test_a_ticket_waits_in_its_requirement_queue_and_moves_when_its_needs_change(store):
    store.load_roster([AgentProfile(agent_id="a", name="A", password_hash=PASSWORD_HASH, capacity={"email": 1})])
    now = NOW.timestamp()
    facts = TicketFacts(ticket_id="T-1", trace_id="t", channel="email", priority="P3", required_skills=("general",),
                        language="zh", tags=(), received_at=NOW)
    register(store, facts)
    assert store.enqueue(facts, now=now) == "queued"
    assert store.requirements_waiting() == ["email|general|zh|*|L1"]
    assert [h[0] for h in store.queue_heads(store.requirements_waiting(), 5)] == ["T-1"]

    wider = '["L1", "L2"]'
    assert store.relax("T-1", 0, next_due=None, updates={"tiers": wider},
                       requirement="email|general|zh|*|L1,L2")
    assert store.requirements_waiting() == ["email|general|zh|*|L1,L2"]
    assert store.update_open_ticket("T-1", {"group": "vip"}, requirement="email|general|zh|vip|L1,L2")
    assert store.requirements_waiting() == ["email|general|zh|vip|L1,L2"]

    store.set_presence("a", "online", at=now)
    assert store.claim("T-1", "a", "email", now=now, decision={}).assigned
    assert store.requirements_waiting() == [] and store.waiting_ids() == []
    assert store.unassign("T-1", "a", "declined", now=now, score=facts.queue_score(), declined=True,
                          requirement="email|general|zh|vip|L1,L2").done
    assert store.requirements_waiting() == ["email|general|zh|vip|L1,L2"] and store.waiting_ids() == ["T-1"]
    assert store.resolve("T-1", now=now).status == "closed"
    assert store.requirements_waiting() == [] and store.waiting_ids() == []


def test_a_sticky_owner_far_down_a_large_rosters_index_still_gets_the_ticket(store):
    """Above FULL_SCAN_AGENTS the first index page holds the agents with most spare capacity;
    a returning customer's owner with less room is ranked with it, and preferred as owner."""
    from dataclasses import replace

    from services.dispatcher.assigner import Assigner

    agents = [AgentProfile(agent_id=f"agent{i:03d}", name="x", password_hash=PASSWORD_HASH, skills={"general": 3},
                           languages=["zh"], capacity={"email": 10}) for i in range(120)]
    store.load_roster(agents)
    now = datetime.now(timezone.utc)
    for i in range(120):
        store.set_presence(f"agent{i:03d}", "online", at=now.timestamp())
    assigner = Assigner(store, lambda *a, **k: None, clock=lambda: datetime.now(timezone.utc))

    def facts(ticket_id, sticky=None):
        return replace(TicketFacts(ticket_id=ticket_id, trace_id="t", channel="email", priority="P3",
                                   required_skills=("general",), language="zh", tags=(), received_at=now),
                       sticky_agent_id=sticky)

    # The owner holds five emails: 119 idle agents rank above them in the index.
    store.client.hset(store.load_key, "agent077:email", 5)
    store.reindex()
    page, _ = store.index_page("email", "general", page=0, now=now.timestamp())
    assert "agent077" not in {a.agent_id for a in page}

    assert assigner.receive(facts("T-back", sticky="agent077")) == "assigned"
    record = store.ticket("T-back")
    assert record.agent_id == "agent077" and record.decision["step"] == "sticky"
