"""A development SMTP sink: every mail the mesh sends lands here instead of in a real inbox.

It is two small servers sharing one folder:

- an SMTP server (aiosmtpd) that accepts any mail for anyone and writes it, unchanged, as one
  ``.eml`` file per message into ``maildir``. The envelope (MAIL FROM / RCPT TO) is recorded
  in ``X-Sink-*`` headers put in front of the message, because Bcc recipients and bounces are
  only visible there;
- an optional web page (aiohttp) that lists what arrived, newest first, with the decoded text
  of each message (``GET /``, ``GET /messages/<id>``) and the same as JSON
  (``GET /api/messages``).

Run it for the demo::

    python -m devenv.smtp_sink --dir var/outbox --smtp-port 2525 --web-port 8025

and use it in tests::

    sink = SmtpSink(tmp_path, smtp_port=free_port(), web_port=None)
    await sink.start()
    ...
    assert sink.messages()[0].subject.startswith("[#TM-")
    await sink.stop()

aiosmtpd runs its server in a thread of its own and needs an explicit port: with port 0 the
controller cannot connect back to itself to check it is up, so 0 is refused here up front.
"""
from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import json
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

SINK_HOST = "127.0.0.1"
# Headers a person debugging notifications wants to see without opening the raw file.
HEADERS_OF_INTEREST = (
    "Message-ID", "In-Reply-To", "References", "Reply-To", "Date", "Auto-Submitted",
    "X-Auto-Response-Suppress", "Precedence", "Content-Type",
)
_ENVELOPE_FROM = "X-Sink-Mail-From"
_ENVELOPE_TO = "X-Sink-Rcpt-To"
_RECEIVED_AT = "X-Sink-Received-At"
_MESSAGE_ID = re.compile(r"^[0-9]{20}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class SinkMessage:
    """One received mail, decoded for reading."""

    id: str
    received_at: datetime
    envelope_from: str
    envelope_to: list[str]
    from_: str
    to: list[str]
    subject: str
    text: str
    headers: dict[str, str]
    message: EmailMessage = field(repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "received_at": self.received_at.isoformat(), "from": self.from_, "to": self.to,
            "envelope_from": self.envelope_from, "envelope_to": self.envelope_to,
            "subject": self.subject, "text": self.text, "headers": self.headers,
        }


def _readable_text(message: EmailMessage) -> str:
    """The plain-text body, decoded from its charset; HTML-only mail gets its tags stripped."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError):  # unknown or lying charset: show what we can
        content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        content = html.unescape(re.sub(r"<[^>]+>", "", content))
    return content.replace("\r\n", "\n")


def parse_eml(path: Path) -> SinkMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    received_raw = str(message.get(_RECEIVED_AT, ""))
    try:
        received_at = datetime.fromisoformat(received_raw)
    except ValueError:
        received_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return SinkMessage(
        id=path.stem,
        received_at=received_at,
        envelope_from=str(message.get(_ENVELOPE_FROM, "")),
        envelope_to=[a for a in str(message.get(_ENVELOPE_TO, "")).split(", ") if a],
        from_=str(message.get("From", "")),
        to=[str(a) for a in message.get_all("To", [])],
        subject=str(message.get("Subject", "")),
        text=_readable_text(message),
        headers={name: str(message[name]) for name in HEADERS_OF_INTEREST if message[name] is not None},
        message=message,
    )


class _SaveToMaildir:
    """aiosmtpd handler: write each message to a new file, atomically (tmp name, then rename)."""

    def __init__(self, maildir: Path, accept_delay: float = 0.0):
        self.maildir = maildir
        self.accept_delay = accept_delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.accept_delay:
            # A slow relay (tests): the message is in, the commit and the 250 come later, so a
            # client stopping now has a mail in flight.
            await asyncio.sleep(self.accept_delay)
        now = datetime.now(timezone.utc)
        prefix = (
            f"{_RECEIVED_AT}: {now.isoformat()}\r\n"
            f"{_ENVELOPE_FROM}: {envelope.mail_from}\r\n"
            f"{_ENVELOPE_TO}: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode("utf-8")
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = self.maildir / f".{name}.tmp"
        tmp.write_bytes(prefix + envelope.content)
        tmp.rename(self.maildir / f"{name}.eml")
        return "250 Message accepted for delivery"


class SmtpSink:
    """SMTP in, ``.eml`` files out, and a page to read them. ``web_port=None``: no page."""

    def __init__(self, maildir: Path, smtp_port: int, web_port: int | None = None, host: str = SINK_HOST,
                 accept_delay: float = 0.0):
        if not smtp_port:
            raise ValueError("aiosmtpd needs an explicit SMTP port (0 makes its self-check fail)")
        self.maildir = Path(maildir)
        self.host = host
        self.smtp_port = smtp_port
        self.web_port = web_port
        self.accept_delay = accept_delay
        self._controller: Controller | None = None
        self._web_runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.maildir.mkdir(parents=True, exist_ok=True)
        controller = Controller(
            _SaveToMaildir(self.maildir, self.accept_delay), hostname=self.host, port=self.smtp_port,
            server_kwargs={"enable_SMTPUTF8": True},
        )
        # Controller.start() blocks until its thread answers; keep our loop free meanwhile.
        await asyncio.to_thread(controller.start)
        self._controller = controller
        if self.web_port is not None:
            self._web_runner = web.AppRunner(self._web_app())
            await self._web_runner.setup()
            await web.TCPSite(self._web_runner, self.host, self.web_port).start()

    async def stop(self) -> None:
        if self._web_runner is not None:
            await self._web_runner.cleanup()
            self._web_runner = None
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
            self._controller = None

    async def __aenter__(self) -> "SmtpSink":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def messages(self) -> list[SinkMessage]:
        """Every received message, oldest first (file names sort by arrival time)."""
        if not self.maildir.is_dir():
            return []
        return [parse_eml(path) for path in sorted(self.maildir.glob("*.eml"))]

    def message(self, message_id: str) -> SinkMessage | None:
        if not _MESSAGE_ID.match(message_id):  # never let a URL pick a path outside maildir
            return None
        path = self.maildir / f"{message_id}.eml"
        return parse_eml(path) if path.is_file() else None

    # -- web page -------------------------------------------------------------------------

    def _web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._list_page)
        app.router.add_get("/messages/{id}", self._message_page)
        app.router.add_get("/api/messages", self._api_messages)
        return app

    async def _api_messages(self, _request: web.Request) -> web.Response:
        body = [m.as_json() for m in reversed(self.messages())]
        return web.Response(text=json.dumps(body, ensure_ascii=False), content_type="application/json")

    async def _list_page(self, _request: web.Request) -> web.Response:
        rows = "".join(
            "<tr><td>{time}</td><td>{from_}</td><td>{to}</td><td><a href=\"/messages/{id}\">{subject}</a></td></tr>".format(
                time=html.escape(m.received_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")),
                from_=html.escape(m.from_), to=html.escape(", ".join(m.to)), id=html.escape(m.id),
                subject=html.escape(m.subject or "(no subject)"),
            )
            for m in reversed(self.messages())
        ) or '<tr><td colspan="4">No mail yet.</td></tr>'
        return _page("Outbox", f"<h1>Outbox ({html.escape(str(self.maildir))})</h1>"
                     "<table><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th></tr>"
                     f"{rows}</table>")

    async def _message_page(self, request: web.Request) -> web.Response:
        msg = self.message(request.match_info["id"])
        if msg is None:
            raise web.HTTPNotFound(text="no such message")
        header_rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in [("From", msg.from_), ("To", ", ".join(msg.to)), ("Subject", msg.subject),
                         ("Envelope to", ", ".join(msg.envelope_to)), *msg.headers.items()]
        )
        return _page(msg.subject or "(no subject)",
                     f'<p><a href="/">&larr; all mail</a></p><h1>{html.escape(msg.subject)}</h1>'
                     f"<table>{header_rows}</table><pre>{html.escape(msg.text)}</pre>")


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        text=("<!doctype html><html><head><meta charset=\"utf-8\">"
              f"<title>{html.escape(title)} – smtp sink</title><style>"
              "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
              "td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}"
              "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}"
              f"</style></head><body>{body}</body></html>"),
        content_type="text/html", charset="utf-8",
    )


async def _serve(args: argparse.Namespace) -> None:
    sink = SmtpSink(Path(args.dir), smtp_port=args.smtp_port, web_port=args.web_port, host=args.host)
    await sink.start()
    print(f"smtp sink: SMTP on {args.host}:{args.smtp_port}, mail saved to {args.dir}"
          + (f", web page on http://{args.host}:{args.web_port}/" if args.web_port else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sink.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devenv.smtp_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="var/outbox", help="folder for the .eml files (created if missing)")
    parser.add_argument("--host", default=SINK_HOST)
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--web-port", type=int, default=8025, help="0 to run without the web page")
    args = parser.parse_args(argv)
    args.web_port = args.web_port or None
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
