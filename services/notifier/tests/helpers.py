"""Helpers of the notifier's service tests: settings, and reading what the notifier did."""
from __future__ import annotations

from pathlib import Path

from devenv.smtp_sink import SmtpSink
from services.notifier import messages
from services.notifier.config import Settings
from services.notifier.outbox import Outbox

ROSTER = Path(__file__).resolve().parents[3] / "deploy" / "demo" / "roster.yaml"

FAST_RETRIES = {"TM_NOTIFIER_RETRY_BASE_SECONDS": "0.05", "TM_NOTIFIER_RETRY_CAP_SECONDS": "0.2"}


def notifier_settings(amqp_uri: str, redis_url: str, smtp_port: int, **extra: str) -> Settings:
    return Settings.from_env({
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_PREFETCH": "1", "TM_NOTIFIER_PORT": "0",
        "TM_SMTP_PORT": str(smtp_port), "TM_SMTP_TIMEOUT": "3", "TM_ROSTER_FILE": str(ROSTER),
        "TM_SUPERVISOR_EMAIL": "wang.fang@agents.ticketmesh.test", "TM_NOTIFIER_SENDERS": "1",
        # Ack on ticket_received (test_customer_updates waits for the classification).
        "TM_NOTIFY_ACK_WAIT_SECONDS": "0",
        **FAST_RETRIES, **extra,
    })


def mails_to(sink: SmtpSink, address: str) -> list:
    return [m for m in sink.messages() if address in m.envelope_to]


def outbox_record(redis_client, event_body: dict, kind: str) -> dict:
    nid = messages.notification_id(event_body["event_id"], kind)
    return redis_client.hgetall(Outbox.record_key(nid))
