"""Render every template, in every locale, through the real mail builders with sample data.

The notifier runs this at start (templates can be replaced from ``TM_NOTIFY_TEMPLATES_DIR``,
and a template that names a value it is not given fails here, not on a customer's ticket
later), and the unit tests run it to hold that every kind exists in both languages.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

from services.notifier import messages as m
from shared import events as ev

SAMPLE_NOW = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)
SAMPLE_TICKET = "TM-10001"
SAMPLE_STATUS_URL = "https://help.example.com/status/TM-10001.status.x.sig"
SAMPLE_CSAT_URL = "https://help.example.com/csat/TM-10001.csat.x.sig"
_SENDER = m.Sender("support@ticketmesh.test", "TicketMesh")


def _event(producer: str, event_type: str, /, **fields: object) -> ev.Envelope:
    body = ev.make_event(producer, event_type, now=SAMPLE_NOW, trace_id="trace-sample", **fields)
    return ev.parse_event(producer, event_type, body)


def _samples(locale: str) -> dict[str, object]:
    language = "zh-CN" if locale == m.ZH_CN else "en"
    customer = {"name": "张伟" if locale == m.ZH_CN else "Ann Lee", "email": "customer@example.com",
                "language": language}
    ticket = _event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_id=SAMPLE_TICKET, channel="email", customer=customer,
                    subject="发票抬头错误" if locale == m.ZH_CN else "Wrong invoice title", text="…",
                    received_at=SAMPLE_NOW.isoformat(), source={"message_id": "<q@example.com>"})
    lines = [{"author": "customer", "name": customer["name"], "text": "…", "sent_at": SAMPLE_NOW.isoformat(),
              "files": ["发票.pdf"]},
             {"author": "agent", "name": "李娜", "text": "…", "sent_at": SAMPLE_NOW.isoformat()}]
    chat = dict(ticket_id=SAMPLE_TICKET, customer=customer, to="customer@example.com",
                subject="发票抬头错误" if locale == m.ZH_CN else "Wrong invoice title")
    sla = dict(ticket_id=SAMPLE_TICKET, clock="first_response", policy="P2", target_seconds=3600,
               due_at=(SAMPLE_NOW + timedelta(minutes=12)).isoformat(), agent_id="li.na")
    return {
        "ticket": ticket,
        "reply": _event(ev.AGENT_DESK, ev.AGENT_REPLIED, ticket_id=SAMPLE_TICKET, agent_id="li.na", channel="email",
                        text="…", reply_id="r1", customer=customer),
        "warning": _event(ev.SLA_WATCHER, ev.SLA_WARNING, elapsed_fraction=0.8, **sla),
        "breach": _event(ev.SLA_WATCHER, ev.SLA_BREACHED, **sla),
        "escalated": _event(ev.SLA_WATCHER, ev.TICKET_ESCALATED, ticket_id=SAMPLE_TICKET, clock="first_response",
                            policy="P2", level=1, reason="first response breached", action="notify_supervisor",
                            agent_id="li.na"),
        "assigned": _event(ev.DISPATCHER, ev.TICKET_ASSIGNED, ticket_id=SAMPLE_TICKET, agent_id="li.na",
                           channel="email", priority="P2", required_skills=["billing"],
                           decision={"considered": 1, "eligible": 1, "reason": "reassign", "step": "reassign"}),
        "transcript": _event(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, entries=lines, **chat),
        "missed": _event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, replies=lines[1:], up_to_seq=2, **chat),
        "rejected": _event(ev.INTAKE_EMAIL, ev.MAIL_REJECTED, to="customer@example.com", name="张伟",
                           reason="too_large", subject="合同", size=31_457_280, limit=10_485_760, language=language,
                           received_at=SAMPLE_NOW.isoformat()),
    }


def render_every_template(locales: tuple[str, ...] = m.LOCALES) -> dict[tuple[str, str], EmailMessage | tuple[str, str]]:
    """``(kind, locale)`` → the mail (or a robot's ``(title, text)``); raises on any broken template."""
    out: dict[tuple[str, str], EmailMessage | tuple[str, str]] = {}
    for locale in locales:
        s = _samples(locale)
        contact = m.Contact.from_ticket(s["ticket"])  # type: ignore[arg-type]
        colleague = m.Colleague(address="li.na@agents.example.com", name="李娜", locale=locale, agent_id="li.na")
        common = dict(sender=_SENDER, now=SAMPLE_NOW)
        thread = m.Thread(subject=contact.subject, customer_message_id="<q@example.com>")
        out[(m.KIND_TICKET_ACK, locale)] = m.ticket_ack(
            contact, notification="n-ack", status_url=SAMPLE_STATUS_URL,
            expected_by=SAMPLE_NOW + timedelta(hours=1), **common)
        out[(m.KIND_AGENT_REPLY, locale)] = m.agent_reply(
            s["reply"], agent_name="李娜", thread=thread, notification="n-reply", **common)  # type: ignore[arg-type]
        out[(m.KIND_TICKET_WAITING, locale)] = m.ticket_waiting(
            contact, agent_name="李娜", thread=thread, status_url=SAMPLE_STATUS_URL, notification="n-wait", **common)
        out[(m.KIND_TICKET_RESOLVED, locale)] = m.ticket_resolved(
            contact, agent_name="李娜", thread=thread, status_url=SAMPLE_STATUS_URL, csat_url=SAMPLE_CSAT_URL,
            notification="n-resolved", **common)
        m.ticket_resolved(contact, agent_name="", thread=m.Thread(), status_url=SAMPLE_STATUS_URL, csat_url=None,
                          notification="n-resolved-2", **common)  # the variant without a survey
        out[(m.KIND_MAIL_REJECTED, locale)] = m.rejection_notice(
            s["rejected"], notification="n-rejected", **common)  # type: ignore[arg-type]
        out[(m.KIND_SLA_BREACHED, locale)] = m.sla_breach_notice(
            s["breach"], to=colleague.address, locale=locale, assignee_name="李娜", notification="n-breach",  # type: ignore[arg-type]
            zone=timezone.utc, **common)
        out[(m.KIND_SLA_WARNING, locale)] = m.sla_warning_notice(
            s["warning"], to=colleague, subject=contact.subject, notification="n-warn", zone=timezone.utc,  # type: ignore[arg-type]
            **common)
        for audience in ("assignee", "supervisor", "duty_manager"):
            out[(m.KIND_ESCALATION, locale)] = m.escalation_notice(
                s["escalated"], to=colleague, audience=audience, assignee_name="李娜", subject=contact.subject,  # type: ignore[arg-type]
                notification="n-esc", **common)
        out[(m.KIND_ASSIGNMENT, locale)] = m.assignment_notice(
            s["assigned"], to=colleague, subject=contact.subject, notification="n-assign", **common)  # type: ignore[arg-type]
        out[(m.KIND_CHAT_TRANSCRIPT, locale)] = m.chat_transcript(
            s["transcript"], notification="n-transcript", zone=timezone.utc, **common)  # type: ignore[arg-type]
        out[(m.KIND_CHAT_REPLY_MISSED, locale)] = m.missed_chat_replies(
            s["missed"], notification="n-missed", zone=timezone.utc, **common)  # type: ignore[arg-type]
        robot_values = dict(ticket_id=SAMPLE_TICKET, clock="first_response", policy="P2", due_at="2026-03-02 16:42",
                            agent_id="li.na", assignee_name="李娜")
        out[("robot_sla_warning", locale)] = m.robot_text("robot_sla_warning", locale, percent="80", **robot_values)
        out[("robot_sla_breached", locale)] = m.robot_text("robot_sla_breached", locale, **robot_values)
        out[("robot_ticket_escalated", locale)] = m.robot_text(
            "robot_ticket_escalated", locale, ticket_id=SAMPLE_TICKET, level=2, action="notify_duty_manager",
            reason="", trigger="breach", policy="P2", agent_id=None, assignee_name="")
    return out
