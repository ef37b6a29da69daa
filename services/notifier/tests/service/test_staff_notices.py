"""What agents and supervisors hear by mail (agent_desk pushes to those whose console is open),
against a real SMTP sink, RabbitMQ vhost and Redis. Addresses and languages come from the demo
roster: li.na (zh), sam.taylor (en), wang.fang (duty manager, zh).

TM_PREFETCH=1: a later "sentinel" event's mail on the same queue proves the earlier ones were
handled.
"""
from __future__ import annotations

from datetime import timedelta

from services.notifier.tests.factories import NOW
from services.notifier.tests.update_factories import presence, sla_warning, ticket_assigned, ticket_escalated
from shared import mail_tokens
from shared.testing.asyncio_helpers import wait_until

from .update_fixtures import SUPERVISOR, Clock, make_notifier, mails_to, one_mail_to  # noqa: F401

LI_NA = "li.na@agents.ticketmesh.test"
SAM = "sam.taylor@agents.ticketmesh.test"
WANG_FANG = "wang.fang@agents.ticketmesh.test"


async def _presence_is(redis_client, agent_id: str, value: str) -> None:
    await wait_until(lambda: redis_client.hget(f"tm:notifier:presence:{agent_id}", "presence") == value,
                     message=f"{agent_id} {value}")


async def test_sla_warning_reaches_an_offline_assignee_by_mail_and_an_online_one_not(sink, make_notifier, publish,
                                                                                    redis_client):
    await sink.start()
    await make_notifier(Clock(NOW))
    await publish("agent_desk", "agent_presence_changed", presence("li.na", "online"))
    await _presence_is(redis_client, "li.na", "online")
    await publish("sla_watcher", "sla_warning", sla_warning("TM-30001"))  # online: agent_desk pushes it
    await publish("sla_watcher", "sla_warning", sla_warning("TM-30002", agent_id="sam.taylor"))  # sentinel (unknown = offline)
    await one_mail_to(sink, SAM, "sentinel warning")
    assert mails_to(sink, LI_NA) == []

    await publish("agent_desk", "agent_presence_changed", presence("li.na", "offline", at=NOW + timedelta(minutes=1)))
    await _presence_is(redis_client, "li.na", "offline")
    # A late, older "online" must not make us believe she is back.
    await publish("agent_desk", "agent_presence_changed", presence("li.na", "online", at=NOW + timedelta(seconds=30)))
    await publish("agent_desk", "agent_presence_changed", presence("sam.taylor", "online"))  # sentinel
    await _presence_is(redis_client, "sam.taylor", "online")
    assert redis_client.hget("tm:notifier:presence:li.na", "presence") == "offline"

    await publish("sla_watcher", "sla_warning", sla_warning("TM-30003"))
    mail = await one_mail_to(sink, LI_NA, "催办 mail")
    assert mail.subject == "[#TM-30003] 催办：首次响应将于 12 分钟后到期"
    assert "2026-03-02 16:42 (UTC+08:00)" in mail.text and "80%" in mail.text
    assert "Reply-To" not in mail.headers and mail.headers["Auto-Submitted"] == "auto-generated"
    assert mail_tokens.ticket_from_message_id(mail_tokens.DEV_SECRET.encode(), mail.headers["Message-ID"]) is None
    english = (await wait_until(lambda: mails_to(sink, SAM), message="sam's first mail"))[0]
    assert english.subject == "[#TM-30002] Reminder: first response due in 12 minutes"


async def test_escalation_steps_mail_the_assignee_supervisor_and_duty_managers(sink, make_notifier, publish,
                                                                             redis_client):
    await sink.start()
    await make_notifier(Clock(NOW))
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30010", "notify_supervisor"))
    supervisor = await one_mail_to(sink, SUPERVISOR, "supervisor notice")
    assert supervisor.subject == "[#TM-30010] Escalated (level 1): breached"  # TM_SUPERVISOR_LANGUAGE=en
    assert "Li Na" not in supervisor.text and "李娜 (li.na)" in supervisor.text

    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30011", "notify_assignee", agent_id="sam.taylor"))
    assignee = await one_mail_to(sink, SAM, "assignee notice")
    assert "Please sign in to the agent console" in assignee.text

    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30012", "notify_duty_manager", level=2))
    manager = await one_mail_to(sink, WANG_FANG, "duty manager notice")
    assert manager.subject == "[#TM-30012] 升级（第 2 级）：已超时" and "值班经理" in manager.text

    # The duty manager at her console gets the push instead; raise_priority is the dispatcher's.
    await publish("agent_desk", "agent_presence_changed", presence("wang.fang", "online"))
    await _presence_is(redis_client, "wang.fang", "online")
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30013", "notify_duty_manager", level=2))
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30014", "raise_priority"))
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-30015", "notify_supervisor"))  # sentinel
    await wait_until(lambda: len(mails_to(sink, SUPERVISOR)) == 2, message="sentinel notice")
    assert len(mails_to(sink, WANG_FANG)) == 1 and len(sink.messages()) == 4


async def test_a_ticket_handed_to_an_offline_agent_is_mailed_an_offer_is_not(sink, make_notifier, publish):
    await sink.start()
    await make_notifier(Clock(NOW))
    # An offer runs out in a minute: only someone at the console can take it.
    await publish("dispatcher", "ticket_assigned",
                  ticket_assigned("TM-30020", "li.na", offer_expires_at=NOW + timedelta(seconds=60)))
    await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-30021", "li.na"))
    mail = await one_mail_to(sink, LI_NA, "assignment notice")
    assert mail.subject == "[#TM-30021] 新工单已分配给您（P2）"
