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
