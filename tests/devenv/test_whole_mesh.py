"""The whole mesh as ./dev up runs it: seven processes, a private Dovecot and the SMTP sink,
and the demo's traffic on all three channels becoming tickets the dispatcher routes."""
import time
from datetime import datetime, timezone

from devenv.config import DevSettings
from devenv.demo import CALLS, CHATS, EMAILS, send_chat, send_email, send_missed_call
from devenv.mesh import SERVICES, Mesh, isolated_env
from devenv.servers import wait_until
from shared.testing.mesh_fixtures import sink_messages


def test_demo_traffic_on_all_three_channels_becomes_routed_tickets(amqp_uri, redis_url, tmp_path, dovecot,
                                                                   sink_settings, event_listener):
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink_settings.smtp_port)
    demo = DevSettings.from_env(env)
    received = {source: event_listener(source, ["ticket_received"]) for source in ("intake_email", "intake_chat", "intake_phone")}
    routed = event_listener("dispatcher", ["ticket_queued", "ticket_assigned"])
    started = time.monotonic()
    with Mesh(env, tmp_path / "log").start() as mesh:
        assert sorted(mesh.processes) == sorted(SERVICES)
        assert time.monotonic() - started < 45
        mail, chat, call = EMAILS[0], CHATS[1], CALLS[0]
        send_email(demo, mail, datetime.now(timezone.utc))
        send_chat(demo, chat)
        send_missed_call(demo, call)
        _, email_ticket = received["intake_email"].wait_for(lambda t, b: True, timeout=20)
        _, chat_ticket = received["intake_chat"].wait_for(lambda t, b: True, timeout=10)
        _, phone_ticket = received["intake_phone"].wait_for(lambda t, b: True, timeout=10)
        assert email_ticket["subject"] == mail.subject  # GB18030 subject decoded end to end
        assert email_ticket["customer"]["email"] == mail.from_address
        assert chat_ticket["text"] == chat.text
        assert phone_ticket["customer"]["phone"] == call.caller
        ids = {email_ticket["ticket_id"], chat_ticket["ticket_id"], phone_ticket["ticket_id"]}
        seen: set[str] = set()

        def all_three_routed(_event_type: str, body: dict) -> bool:
            seen.add(body["ticket_id"])
            return ids <= seen

        routed.wait_for(all_three_routed, timeout=15)
        # The notifier acknowledged the email customer through the sink.
        assert wait_until(lambda: any(mail.from_address in " ".join(m["to"]) for m in sink_messages(sink_settings)),
                          timeout=15), "no acknowledgement reached the SMTP sink"
        assert mesh.exited() == {}
    for service in SERVICES:
        assert "service_started" in (tmp_path / "log" / f"{service}.log").read_text()
