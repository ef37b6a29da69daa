"""Routing: who is filtered out and why, and the ranking of the rest."""
import math

from services.dispatcher.routing import (
    AgentSnapshot,
    TicketNeeds,
    assigned_reason,
    queued_reason,
    rank_agents,
    rejection_summary,
)

NOW = 1_800_000_000.0
TICKET = TicketNeeds(ticket_id="TM-1", channel="chat", required_skills=("billing",), language="zh")


def agent(agent_id, **overrides):
    fields = dict(agent_id=agent_id, presence="online", skills={"billing": 3, "general": 3}, languages=("zh", "en"),
                  capacity={"chat": 4, "email": 10}, load={}, last_assigned_at=None)
    fields.update(overrides)
    return AgentSnapshot(**fields)


def test_each_filter_names_its_reason():
    agents = [
        agent("away", presence="away"),
        agent("off", presence="offline"),
        agent("no-skill", skills={"general": 5}),
        agent("english", languages=("en",)),
        agent("no-chat", capacity={"email": 10}),
        agent("full", load={"chat": 4}),
        agent("ok"),
    ]
    ranking = rank_agents(TICKET, agents, NOW)
    assert [c.agent_id for c in ranking.ranked] == ["ok"]
    assert ranking.considered == 7
    assert ranking.rejected == {
        "away": "presence: away",
        "off": "presence: offline",
        "no-skill": "skill: lacks billing",
        "english": "language: does not speak zh",
        "no-chat": "capacity: takes no chat",
        "full": "capacity: chat full (4/4)",
    }
    assert rejection_summary(ranking.rejected) == "2 capacity, 2 presence, 1 language, 1 skill"


def test_highest_spare_share_wins_not_highest_spare_count():
    small = agent("small", capacity={"chat": 2}, load={"chat": 1})   # 1/2 spare = 50%
    big = agent("big", capacity={"chat": 10}, load={"chat": 8})      # 2/10 spare = 20%
    ranking = rank_agents(TICKET, [big, small], NOW)
    assert [c.agent_id for c in ranking.ranked] == ["small", "big"]
    assert ranking.ranked[0].spare_share == 0.5


def test_ties_go_to_higher_proficiency_then_longest_idle():
    expert = agent("expert", skills={"billing": 5}, last_assigned_at=NOW - 10)
    novice_idle = agent("novice-idle", skills={"billing": 2}, last_assigned_at=NOW - 3600)
    novice_busy = agent("novice-busy", skills={"billing": 2}, last_assigned_at=NOW - 60)
    fresh = agent("fresh", skills={"billing": 2}, last_assigned_at=None)
    ranking = rank_agents(TICKET, [novice_busy, fresh, novice_idle, expert], NOW)
    assert [c.agent_id for c in ranking.ranked] == ["expert", "fresh", "novice-idle", "novice-busy"]
    assert math.isinf(ranking.ranked[1].idle_seconds)
    assert ranking.ranked[2].idle_seconds == 3600


def test_proficiency_sums_over_required_skills():
    ticket = TicketNeeds(ticket_id="TM-2", channel="email", required_skills=("billing", "technical"), language="en")
    a = agent("a", skills={"billing": 5, "technical": 1})
    b = agent("b", skills={"billing": 3, "technical": 4})
    ranking = rank_agents(ticket, [a, b], NOW)
    assert [(c.agent_id, c.proficiency) for c in ranking.ranked] == [("b", 7), ("a", 6)]


def test_reasons_read_as_sentences():
    ranking = rank_agents(TICKET, [agent("li.na", load={"chat": 1}), agent("away", presence="away")], NOW)
    reason = assigned_reason(TICKET, ranking.ranked[0], len(ranking.ranked))
    assert reason == "most spare chat capacity (3/4 free), billing proficiency 3, never assigned; 1 eligible"
    assert queued_reason(rank_agents(TICKET, [agent("away", presence="away")], NOW)) == "no eligible agent: 1 presence"
    assert queued_reason(rank_agents(TICKET, [], NOW)) == "no agents in the roster"


def test_shared_budget_counts_every_channel_and_per_channel_does_not():
    ticket = TicketNeeds(ticket_id="TM-3", channel="email", required_skills=("billing",), language="zh")
    one_chat = agent("a", capacity={"email": 10, "chat": 3, "phone": 1}, load={"chat": 1, "email": 6})
    # 1/3 + 6/10 = 0.93: no room for another email (0.1) in the shared budget
    assert rank_agents(ticket, [one_chat], NOW).rejected == {"a": "capacity: no room for a email (1/3 chat, 6/10 email)"}
    ranked = rank_agents(ticket, [one_chat], NOW, capacity_model="per_channel").ranked
    assert [(c.agent_id, c.spare, round(c.spare_share, 2)) for c in ranked] == [("a", 4, 0.4)]
    call = TicketNeeds(ticket_id="TM-4", channel="phone", required_skills=("billing",), language="zh")
    busy = agent("b", capacity={"email": 10, "phone": 1}, load={"email": 1})
    assert rank_agents(call, [busy], NOW).rejected["b"].startswith("capacity: no room for a phone")
    free = agent("c", capacity={"email": 10, "phone": 1})
    assert rank_agents(call, [free], NOW).ranked[0].spare == 1


def test_tier_group_declined_and_fairness_filters():
    ticket = TicketNeeds(ticket_id="TM-5", channel="chat", required_skills=("billing",), language="zh",
                         group="vip", tiers=("L2",), declined_by=frozenset({"d"}))
    agents = [agent("l1", group="vip"), agent("other", tier="L2", group="billing"), agent("d", tier="L2", group="vip"),
              agent("busy", tier="L2", group="vip", recent_assignments=5), agent("ok", tier="L2", group="vip")]
    ranking = rank_agents(ticket, agents, NOW, fairness_max=5)
    assert [c.agent_id for c in ranking.ranked] == ["ok"]
    assert ranking.rejected == {"l1": "tier: L1 not in L2", "other": "group: not in vip",
                                "d": "declined: passed on this ticket recently",
                                "busy": "fairness: 5 recent assignments (max 5)"}
    assert rank_agents(ticket, agents, NOW).ranked[0].agent_id == "busy"  # no cap without a policy


def test_preferred_skills_and_proficiency_add_to_the_score_and_sticky_goes_first():
    ticket = TicketNeeds(ticket_id="TM-6", channel="chat", required_skills=("billing",), language="zh",
                         preferred_skills=("vip_care",))
    plain = agent("plain", skills={"billing": 5})
    caring = agent("caring", skills={"billing": 5, "vip_care": 1})
    ranking = rank_agents(ticket, [plain, caring], NOW)
    assert [c.agent_id for c in ranking.ranked] == ["caring", "plain"]
    scores = [c.as_score() for c in ranking.ranked]
    assert scores[0] == {"agent_id": "caring", "score": 1.2, "spare_share": 1.0, "proficiency": 1.0, "preferred": 1.0,
                         "idle_seconds": None}
    # Spare capacity dominates the bonuses; the sticky owner beats both when eligible.
    fuller = agent("caring", skills={"billing": 5, "vip_care": 1}, load={"chat": 2})
    assert rank_agents(ticket, [plain, fuller], NOW).ranked[0].agent_id == "plain"
    sticky = TicketNeeds(**{**ticket.__dict__, "sticky_agent_id": "caring"})
    first = rank_agents(sticky, [plain, fuller], NOW).ranked[0]
    assert first.agent_id == "caring" and first.sticky
    gone = agent("caring", presence="away")
    assert rank_agents(sticky, [plain, gone], NOW).ranked[0].agent_id == "plain"


def test_ties_on_score_go_to_the_longest_idle():
    a = agent("a", last_assigned_at=NOW - 5)
    b = agent("b", last_assigned_at=NOW - 500)
    assert [c.agent_id for c in rank_agents(TICKET, [a, b], NOW).ranked] == ["b", "a"]


def test_requirement_keys_group_alike_tickets_and_say_who_serves_them():
    from services.dispatcher.routing import Requirement, requirement_key

    key = requirement_key("chat", ["general", "billing", "billing"], "zh", None, ["L2", "L1"])
    assert key == "chat|billing,general|zh|*|L1,L2"
    requirement = Requirement.parse(key)
    assert requirement == Requirement("chat", ("billing", "general"), "zh", None, ("L1", "L2"))
    assert requirement.served_by(agent("ok", tier="L2"))
    assert not requirement.served_by(agent("full", load={"chat": 4}))
    assert not requirement.served_by(agent("away", presence="away"))
    assert not requirement.served_by(agent("no-general", skills={"billing": 3}))
    assert not requirement.served_by(agent("duty", tier="duty_manager"))
    vip = Requirement.parse(requirement_key("email", ["billing"], "en", "vip", ["L1"]))
    assert vip.served_by(agent("v", group="vip")) and not vip.served_by(agent("b", group="billing"))
