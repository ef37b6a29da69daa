"""Group chat robots: which events go to which robot, each vendor's payload and signing, and the
HTTP post with its outcome sorted into delivered / try again later / refused.

Config (``TM_NOTIFY_CONFIG_FILE``, default ``deploy/config/notify.yaml``)::

    customers:
      csat_survey: true                  # ask solved tickets' customers for a 1-5 score
      waiting_on_customer_notice: true   # mail the customer when a ticket waits on them
    robots:
      - name: duty-dingtalk              # unique; names the robot in logs and keys
        kind: dingtalk                   # dingtalk | feishu | lark | wecom | slack
        url_env: TM_ROBOT_DUTY_URL       # the webhook address (it holds the robot's token)
        secret_env: TM_ROBOT_DUTY_SECRET # optional: the signing secret ("加签" / "签名校验")
        language: zh-CN                  # zh-CN | en
        events: [sla_breached, "ticket_escalated:notify_supervisor"]
        max_per_minute: 20               # stay under the vendor's limit (DingTalk, WeCom: 20/min)
        timeout_seconds: 5

Webhook addresses carry the robot's credential (DingTalk ``access_token``, WeCom ``key``, the
Feishu hook id, Slack's path), so the file names environment variables and never holds an
address or a secret; a variable it names that is not set stops the service at start.

Event selectors: ``sla_warning``, ``sla_breached``, ``ticket_escalated`` (every step of a
ladder) and ``ticket_escalated:<action>`` (``notify_assignee``, ``notify_supervisor``,
``notify_duty_manager``, ``raise_priority``, ``reassign_next_tier``).

Signing, as each vendor documents it:

- DingTalk custom robot ("加签"): ``timestamp`` in milliseconds; ``sign`` = Base64 of
  HMAC-SHA256 with the secret as key over ``"{timestamp}\\n{secret}"``, URL-encoded; both go in
  the query string next to ``access_token``. DingTalk refuses a timestamp more than an hour off.
- Feishu / Lark custom bot ("签名校验"): ``timestamp`` in seconds; ``sign`` = Base64 of
  HMAC-SHA256 with ``"{timestamp}\\n{secret}"`` as the *key* over an empty message; both go in
  the JSON body next to ``msg_type`` and ``content``.
- WeCom (企业微信) group robot: no signing; the ``key`` in the address is the credential.
- Slack-style incoming webhooks: no signing (the address is the credential). With a secret,
  ours: ``X-Ticketmesh-Request-Timestamp: <epoch seconds>`` and ``X-Ticketmesh-Signature:
  v1=<hex HMAC-SHA256(secret, "v1:<timestamp>:<raw body>")>`` (Slack's own request-signing
  shape, under our names), for a relay of your own that wants to check where a post came from.

Outcomes: HTTP 200 with the vendor's success code (DingTalk/WeCom ``errcode`` 0, Feishu/Lark
``code`` or ``StatusCode`` 0, Slack ``ok``) is delivered. A connection error, a timeout, 429 or
5xx is :class:`RobotUnavailable` (transient: the event is retried). Anything else, including a
vendor error code such as a signature mismatch, is :class:`RobotRejected`: retrying changes
nothing until someone fixes the configuration.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names
from shared.errors import TransientError

RobotKind = Literal["dingtalk", "feishu", "lark", "wecom", "slack"]
SIGNED_KINDS = ("dingtalk", "feishu", "lark", "slack")
ESCALATION_ACTIONS = ("notify_assignee", "notify_supervisor", "notify_duty_manager", "raise_priority",
                      "reassign_next_tier")
SELECTORS = ("sla_warning", "sla_breached", "ticket_escalated",
             *(f"ticket_escalated:{action}" for action in ESCALATION_ACTIONS))
SIGNATURE_HEADER = "X-Ticketmesh-Signature"
TIMESTAMP_HEADER = "X-Ticketmesh-Request-Timestamp"
MAX_RESPONSE_CHARS = 300  # of a refusal, in the log and the dead-letter reason
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class NotifyConfigError(ConfigFileError):
    """The notify config cannot be used; the message names the file and the robot."""


class RobotUnavailable(TransientError):
    """The robot's server did not take the message this time (network, timeout, 429, 5xx)."""


class RobotRejected(Exception):
    """The robot's server refused the message; retrying the same request will not help."""


class _CustomersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    csat_survey: bool = True
    waiting_on_customer_notice: bool = True


class _RobotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    kind: RobotKind
    url_env: str = Field(pattern=_ENV_NAME.pattern)
    secret_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    language: Literal["zh-CN", "en"] = "zh-CN"
    events: list[str] = Field(min_length=1)
    max_per_minute: int = Field(default=20, ge=1, le=1000)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in SELECTORS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; expected one of {', '.join(SELECTORS)}")
        return value


class _NotifyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: _CustomersConfig = Field(default_factory=_CustomersConfig)
    robots: list[_RobotConfig] = Field(default_factory=list)


@dataclass(frozen=True)
class Robot:
    name: str
    kind: str
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    language: str = "zh-CN"
    events: frozenset[str] = frozenset()
    max_per_minute: int = 20
    timeout_seconds: float = 5.0

    def wants(self, event_type: str, action: str | None = None) -> bool:
        return event_type in self.events or (action is not None and f"{event_type}:{action}" in self.events)

    @property
    def host(self) -> str:
        """Where it posts, for logs (the address itself is a credential)."""
        return urlsplit(self.url).hostname or "?"


@dataclass(frozen=True)
class NotifyConfig:
    csat_survey: bool = True
    waiting_on_customer_notice: bool = True
    robots: tuple[Robot, ...] = ()

    def robots_for(self, event_type: str, action: str | None = None) -> list[Robot]:
        return [r for r in self.robots if r.wants(event_type, action)]


def load_notify_config(path: str | Path, environ: Mapping[str, str]) -> NotifyConfig:
    data = read_yaml(path, "notify config", NotifyConfigError)
    if data is None:
        data = {}
    if isinstance(data, Mapping):
        for index, robot in enumerate(data.get("robots") or []):
            if isinstance(robot, Mapping) and ({"url", "secret", "webhook"} & set(robot)):
                raise NotifyConfigError(f"notify config {path}: robot {index + 1} {robot.get('name', '')!r}: webhook "
                                        "addresses and secrets come from environment variables: use url_env and "
                                        "secret_env")
    try:
        parsed = _NotifyFile.model_validate(data)
    except ValidationError as exc:
        detail = describe_validation_error(data, exc, list_key="robots", entry_label="robot")
        raise NotifyConfigError(f"notify config {path}: {detail}") from None
    repeated = repeated_names([r.name for r in parsed.robots])
    if repeated:
        raise NotifyConfigError(f"notify config {path}: robot names must be unique: {', '.join(repeated)}")
    robots = []
    for index, entry in enumerate(parsed.robots):
        where = f"notify config {path}: robot {index + 1} {entry.name!r}"
        url = environ.get(entry.url_env, "").strip()
        if not url:
            raise NotifyConfigError(f"{where}: {entry.url_env} is not set (the robot's webhook address)")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise NotifyConfigError(f"{where}: {entry.url_env} is not an http(s) address")
        secret = None
        if entry.secret_env is not None:
            if entry.kind == "wecom":
                raise NotifyConfigError(f"{where}: WeCom robots have no signing; drop secret_env")
            secret = environ.get(entry.secret_env, "")
            if not secret:
                raise NotifyConfigError(f"{where}: {entry.secret_env} is not set (the robot's signing secret)")
        robots.append(Robot(name=entry.name, kind=entry.kind, url=url, secret=secret, language=entry.language,
                            events=frozenset(entry.events), max_per_minute=entry.max_per_minute,
                            timeout_seconds=entry.timeout_seconds))
    return NotifyConfig(csat_survey=parsed.customers.csat_survey,
                        waiting_on_customer_notice=parsed.customers.waiting_on_customer_notice, robots=tuple(robots))


# -- signing (pure: the time is passed in) ---------------------------------------------------

def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """Base64 HMAC-SHA256(key=secret, msg="{timestamp}\\n{secret}"), before URL-encoding."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Base64 HMAC-SHA256(key="{timestamp}\\n{secret}", msg=b"")."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def ticketmesh_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """``v1=<hex>`` over ``v1:<timestamp>:<body>`` (our scheme for Slack-style hooks)."""
    digest = hmac.new(secret.encode(), b"v1:" + str(timestamp_s).encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


# -- one message, as each vendor wants it ----------------------------------------------------

@dataclass(frozen=True)
class RobotRequest:
    url: str = field(repr=False)
    headers: dict[str, str]
    body: bytes


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build_request(robot: Robot, title: str, text: str, *, now: datetime) -> RobotRequest:
    """The HTTP request posting ``title`` and ``text`` (plain lines) to ``robot``."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    url = robot.url
    if robot.kind == "dingtalk":
        lines = "\n\n".join(line for line in text.splitlines() if line.strip())  # markdown: a paragraph each
        body = _json({"msgtype": "markdown", "markdown": {"title": title, "text": f"#### {title}\n\n{lines}"}})
        if robot.secret:
            timestamp_ms = int(now.timestamp() * 1000)
            sign = quote(dingtalk_sign(robot.secret, timestamp_ms), safe="")
            url = f"{url}{'&' if '?' in url else '?'}timestamp={timestamp_ms}&sign={sign}"
    elif robot.kind in ("feishu", "lark"):
        payload: dict[str, Any] = {"msg_type": "text", "content": {"text": f"{title}\n{text}"}}
        if robot.secret:
            timestamp_s = int(now.timestamp())
            payload = {"timestamp": str(timestamp_s), "sign": feishu_sign(robot.secret, timestamp_s), **payload}
        body = _json(payload)
    elif robot.kind == "wecom":
        body = _json({"msgtype": "markdown", "markdown": {"content": f"**{title}**\n{text}"}})
    elif robot.kind == "slack":
        body = _json({"text": f"*{title}*\n{text}"})
        if robot.secret:
            timestamp_s = int(now.timestamp())
            headers[TIMESTAMP_HEADER] = str(timestamp_s)
            headers[SIGNATURE_HEADER] = ticketmesh_signature(robot.secret, timestamp_s, body)
    else:  # the config model admits no other kind
        raise ValueError(f"unknown robot kind {robot.kind!r}")
    return RobotRequest(url=url, headers=headers, body=body)


def check_response(robot: Robot, status: int, text: str) -> None:
    """Return if the vendor took the message; raise RobotUnavailable or RobotRejected."""
    short = " ".join(text.split())[:MAX_RESPONSE_CHARS]
    if status == 429 or status >= 500:
        raise RobotUnavailable(f"robot {robot.name}: HTTP {status} {short}")
    if status != 200:
        raise RobotRejected(f"robot {robot.name}: HTTP {status} {short}")
    if robot.kind == "slack":
        if text.strip() != "ok":
            raise RobotRejected(f"robot {robot.name}: unexpected answer {short!r}")
        return
    try:
        answer = json.loads(text)
    except ValueError:
        raise RobotRejected(f"robot {robot.name}: answer is not JSON: {short!r}") from None
    if not isinstance(answer, dict):
        raise RobotRejected(f"robot {robot.name}: unexpected answer {short!r}")
    if robot.kind in ("feishu", "lark"):
        code = answer.get("code", answer.get("StatusCode"))
    else:
        code = answer.get("errcode")
    if code != 0:
        raise RobotRejected(f"robot {robot.name}: refused with code {code}: {short}")


class RobotPoster:
    """Posts to robots over one aiohttp session (``start``/``close`` around the service's life)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, robot: Robot, title: str, text: str, *, now: datetime) -> None:
        if self._session is None or self._session.closed:
            # Shutting down (the HTTP side closes before the consumer drains): the event goes
            # back to its queue for another replica, or for us after the restart.
            raise RobotUnavailable(f"robot {robot.name}: the notifier is stopping")
        request = build_request(robot, title, text, now=now)
        try:
            async with self._session.post(request.url, data=request.body, headers=request.headers,
                                          timeout=aiohttp.ClientTimeout(total=robot.timeout_seconds)) as response:
                answer = await response.text(errors="replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # str(exc) of a connection error can include the address; name the host only.
            raise RobotUnavailable(f"robot {robot.name}: {type(exc).__name__} posting to {robot.host}") from None
        check_response(robot, status, answer)
