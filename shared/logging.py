"""structlog set-up shared by every service: one JSON object per line, context bound per message.

Both runtimes go through the standard library (nameko, kombu and eventlet log there), with
structlog's ``ProcessorFormatter`` rendering foreign and structlog lines alike. Consumers bind
``trace_id`` and ``ticket_id`` with :func:`bound_event_context`, so every line a handler writes
carries them. A redaction processor runs last-but-one: addresses and phone numbers are masked,
secrets and message bodies never reach the output whatever a caller passes.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, Mapping

import orjson
import structlog
import structlog.tracebacks

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+)")
_MASKED_KEYS = {"email", "from_email", "to", "recipient", "customer_email", "phone", "caller", "from_number", "to_number"}
_SECRET_KEYS = {"password", "token", "secret", "authorization", "api_key", "cookie", "session_token"}
_BODY_KEYS = {"text", "body", "html", "raw", "payload", "content"}


def mask_email(address: str) -> str:
    """``zhang.wei@example.com`` → ``z***@example.com``."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", address)


def mask_phone(number: str) -> str:
    """Keep the country code, the first three and last four digits: ``+86138****5678``."""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 7:
        return "*" * len(digits)
    head = "+" if number.strip().startswith("+") else ""
    return f"{head}{digits[:5]}{'*' * (len(digits) - 9)}{digits[-4:]}" if len(digits) > 9 else f"{head}{digits[:3]}****{digits[-2:]}"


def mask(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if "@" in value:
        return mask_email(value)
    if sum(c.isdigit() for c in value) >= 7:
        return mask_phone(value)
    return value


def redact(_logger: Any, _name: str, event: dict) -> dict:
    for key in list(event):
        lowered = key.lower()
        if lowered in _SECRET_KEYS:
            event[key] = "***"
        elif lowered in _BODY_KEYS:
            value = event[key]
            event[key] = f"<{len(value)} chars>" if isinstance(value, (str, bytes)) else "<omitted>"
        elif lowered in _MASKED_KEYS:
            event[key] = mask(event[key])
    return event


# Structured tracebacks *without* frame locals: structlog's default dict_tracebacks includes
# every frame's local variables, which would put passwords, message bodies and addresses into
# the log where `redact` (which sees only top-level keys) cannot reach them.
_STRUCTURED_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _shared_processors(service: str, replica: str) -> list:
    def add_service(_l: Any, _n: str, event: dict) -> dict:
        event.setdefault("service", service)
        event.setdefault("replica", replica)
        return event

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
    ]


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json", replica: str = "") -> None:
    """Route structlog and stdlib logging through one formatter. Call once, at process start."""
    shared = _shared_processors(service, replica)
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer(serializer=lambda obj, **kw: orjson.dumps(obj, default=str).decode())
        tail = [_STRUCTURED_TRACEBACKS, redact, renderer]
    else:
        tail = [redact, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "kombu", "amqp", "mail.log", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        # filter_by_level first: a line below the level is dropped before the processors build
        # it (contextvars merge, timestamp, ...), work that stdlib logging would throw away.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


class bound_event_context:  # noqa: N801 - used like the context manager function it replaced
    """Bind ``trace_id``/``ticket_id`` (and friends) for the lines written inside the block.

    Entered once per consumed message, so it is a plain class resetting the context variables'
    tokens: structlog's ``bound_contextvars`` copies the whole context to find what to restore.
    """

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: Any):
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._tokens: Mapping[str, Any] = {}

    def __enter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)

    def __exit__(self, *_exc: object) -> None:
        try:
            structlog.contextvars.reset_contextvars(**self._tokens)
        except (ValueError, RuntimeError):  # left in another context than entered: unbind instead
            structlog.contextvars.unbind_contextvars(*self._tokens)
