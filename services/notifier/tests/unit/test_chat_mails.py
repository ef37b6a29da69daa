"""The two chat mails: the transcript the customer asked for, and agent replies they missed."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from shared import events as ev

from services.notifier import messages

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)
SENDER = messages.Sender("support@ticketmesh.test", "TicketMesh")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def entry(author, text, name="", files=()):
    return {"author": author, "name": name, "text": text, "sent_at": NOW.isoformat(), "files": list(files)}


def transcript(language="zh", **over):
    fields = dict(ticket_id="TM-10001", customer={"name": "王芳", "language": language, "chat_visitor_id": "v_1"},
                  to="wang.fang@example.com", subject="发票抬头写错了",
                  entries=[entry("customer", "发票抬头写错了 <b>", "王芳", ["发票.pdf"]),
                           entry("agent", "已为您重开发票。", "李娜")])
    fields.update(over)
    body = ev.make_event(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, now=NOW, trace_id="t", **fields)
    return ev.parse_event(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, body)


def test_transcript_mail_lists_every_line_with_local_time_and_is_marked_generated():
    mail = messages.chat_transcript(transcript(), sender=SENDER, notification="n" * 32, now=NOW, zone=SHANGHAI)
    body = mail.get_content()
    assert mail["Subject"] == "[#TM-10001] 您的在线咨询记录：发票抬头写错了"
    assert mail["To"].addresses[0].addr_spec == "wang.fang@example.com"
    assert "[2026-03-02 16:30:00 CST] 王芳：\n发票抬头写错了 <b>\n（附件：发票.pdf）" in body
    assert "[2026-03-02 16:30:00 CST] 李娜：\n已为您重开发票。" in body
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Reply-To"].addresses[0].addr_spec.startswith("support+TM-10001.")


def test_transcript_mail_in_english_names_unnamed_lines():
    mail = messages.chat_transcript(
        transcript("en", subject="", entries=[entry("customer", "Hi"), entry("agent", "Hello!")]),
        sender=SENDER, notification="n" * 32, now=NOW, zone=timezone.utc)
    body = mail.get_content()
    assert mail["Subject"] == "[#TM-10001] Your chat transcript"
    assert "You:\nHi" in body and "Support:\nHello!" in body


def test_missed_replies_mail_is_from_people_not_automatic():
    body = ev.make_event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, now=NOW, trace_id="t", ticket_id="TM-10001",
                         customer={"name": "Ann", "language": "en"}, to="ann@example.com", subject="Parcel late",
                         replies=[entry("agent", "It ships today.", "Li Na")], up_to_seq=3)
    missed = ev.parse_event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, body)
    mail = messages.missed_chat_replies(missed, sender=SENDER, notification="n" * 32, now=NOW, zone=timezone.utc)
    assert mail["Subject"] == "[#TM-10001] We replied to your chat: Parcel late"
    assert "Li Na:\nIt ships today." in mail.get_content()
    assert mail["Auto-Submitted"] is None and mail["Message-ID"].startswith("<tm.TM-10001.")
