"""agent_desk settings: where the console listens, who may sign in, how sessions are signed."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from shared import ticket_status
from shared.config import CommonSettings, Variable, as_bool, read

# Only for a laptop demo: anyone who reads this file can forge a session with it.
DEV_SECRET = "dev-only-agent-desk-secret-change-me"

VARIABLES = (
    Variable("TM_DESK_HOST", "127.0.0.1", "address the agent console listens on"),
    Variable("TM_DESK_PORT", "8080", "port of the agent console (HTTP + WebSocket)"),
    Variable("TM_DESK_SECRET", None, "key that signs session cookies (required in production; a dev default logs a warning)"),
    Variable("TM_DESK_SECURE_COOKIE", "false", "mark the session cookie Secure (set true behind HTTPS)"),
    Variable("TM_DESK_SESSION_HOURS", "12", "hours a sign-in lasts"),
    Variable("TM_DESK_PRESENCE_GRACE_SECONDS", "60", "an agent with no console socket on any replica this long is set offline"),
    Variable("TM_DESK_TOKEN_DAYS", "90", "days an API token (Authorization: Bearer) lasts"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster: logins, names, roles"),
    Variable("TM_CONFIG_RELOAD_SECONDS", "5", "seconds between looks at the roster file: a changed roster is used without a restart"),
    Variable("TM_HISTORY_RECORD", "true", "this replica records every ticket event for reports and ticketmesh trace (false: another replica does)"),
    Variable("TM_HISTORY_EVENT_DAYS", "30", "days a ticket's event records (its path) are kept after its last event; older replays are not recorded"),
    Variable("TM_HISTORY_FACT_DAYS", "180", "days a ticket's report facts are kept after its last event (the longest span a report can look back)"),
    Variable("TM_HISTORY_MAX_EVENTS", "500", "event records kept per ticket (the oldest are dropped first)"),
    Variable("TM_REPORT_TIMEZONE", "UTC", "time zone of report days and of dates given without one (e.g. Asia/Shanghai)"),
    *ticket_status.VARIABLES,
    Variable("TM_PHONE_DEFAULT_REGION", "CN", "region for phone numbers a supervisor looks customers up by, when "
             "written without a country code"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    secret: str = field(repr=False)
    secret_is_dev_default: bool
    secure_cookie: bool
    session_seconds: int
    roster_file: str
    presence_grace_seconds: float = 60.0
    token_seconds: int = 90 * 24 * 3600
    config_reload_seconds: float = 5.0
    history_record: bool = True
    history_event_days: float = 30.0
    history_fact_days: float = 180.0
    history_max_events: int = 500
    report_timezone: str = "UTC"
    status_table: ticket_status.StatusTable = ticket_status.StatusTable()
    default_region: str = "CN"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name, cast=str):  # type: ignore[no-untyped-def]
            return read(environ, name, _DEFAULTS[name], cast)

        secret = environ.get("TM_DESK_SECRET", "")
        return cls(
            common=CommonSettings.from_env(environ),
            host=get("TM_DESK_HOST"),
            port=get("TM_DESK_PORT", int),
            secret=secret or DEV_SECRET,
            secret_is_dev_default=not secret,
            secure_cookie=get("TM_DESK_SECURE_COOKIE", as_bool),
            session_seconds=int(get("TM_DESK_SESSION_HOURS", float) * 3600),
            roster_file=get("TM_ROSTER_FILE"),
            presence_grace_seconds=get("TM_DESK_PRESENCE_GRACE_SECONDS", float),
            token_seconds=int(get("TM_DESK_TOKEN_DAYS", float) * 24 * 3600),
            config_reload_seconds=get("TM_CONFIG_RELOAD_SECONDS", _seconds),
            history_record=get("TM_HISTORY_RECORD", as_bool),
            history_event_days=get("TM_HISTORY_EVENT_DAYS", _days),
            history_fact_days=get("TM_HISTORY_FACT_DAYS", _days),
            history_max_events=get("TM_HISTORY_MAX_EVENTS", _positive_int),
            report_timezone=get("TM_REPORT_TIMEZONE", _timezone),
            status_table=ticket_status.from_env(environ),
            default_region=get("TM_PHONE_DEFAULT_REGION", str.upper),
        )


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected seconds >= 0")
    return value


def _days(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected days > 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value


def _timezone(raw: str) -> str:
    from services.agent_desk.reports import ReportError, zone

    try:
        zone(raw)
    except ReportError as exc:
        raise ValueError(str(exc)) from None
    return raw
