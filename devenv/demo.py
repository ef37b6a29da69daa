"""What ``./dev up`` shows a newcomer: a banner with the URLs and demo logins, then a little
customer traffic on all three channels — an email into the support mailbox, a chat message,
a missed call — in Chinese and English, one contact every ``DEMO_INTERVAL_SECONDS``.
"""
from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.header import Header
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Callable, Iterator, Mapping

from devenv.config import DevSettings

DEMO_INTERVAL_SECONDS = 15.0
# The demo's own policies (minutes-long SLA targets; routing tuned for people watching — see the
# files), used unless the environment names other files.
DEMO_FILES = {"TM_SLA_POLICY_FILE": "deploy/demo/sla.yaml", "TM_ROUTING_RULES_FILE": "deploy/demo/routing.yaml"}
DEMO_MAX_CONTACTS = 24          # about six minutes of traffic, then the mesh just keeps running
HTTP_TIMEOUT_SECONDS = 10.0
IMAP_USER, IMAP_PASSWORD = "support", "support-demo"

# The roster stores only hashes; these are the demo passwords the hashes were made from.
DEMO_PASSWORDS = {"li.na": "demo-lina", "chen.wei": "demo-chenwei", "sam.taylor": "demo-sam", "wang.fang": "demo-wangfang"}


@dataclass(frozen=True)
class DemoEmail:
    from_name: str
    from_address: str
    subject: str
    body: str
    charset: str          # what the customer's mail program used


@dataclass(frozen=True)
class DemoChat:
    name: str
    email: str
    language: str
    text: str


@dataclass(frozen=True)
class DemoCall:
    caller: str
    dialled: str


EMAILS = (
    DemoEmail("王小明", "wang.xiaoming@example.com", "退款申请：订单 20261122-0815 重复扣款",
              "您好：\n\n我昨天在贵公司网站下单，银行卡被扣了两次款（各 399 元）。\n请尽快帮我办理其中一笔的退款，谢谢！\n\n王小明", "gb18030"),
    DemoEmail("Emily Clark", "emily.clark@example.com", "Cannot log in after resetting my password",
              "Hello,\n\nI reset my password this morning but the login page still says my password is wrong.\n"
              "Could you help? This is urgent, I need to download an invoice today.\n\nEmily", "utf-8"),
    DemoEmail("陈静", "chen.jing@example.com", "发票抬头开错了，需要重开",
              "客服你好，\n上周收到的增值税发票抬头写错了公司名称，麻烦帮忙作废重开。\n谢谢！", "gbk"),
)
CHATS = (
    DemoChat("刘洋", "liu.yang@example.com", "zh", "你好，我的快递三天没有更新物流信息了，能帮我查一下吗？"),
    DemoChat("Tom Baker", "tom.baker@example.com", "en", "Hi, how do I change the billing address on my account?"),
    DemoChat("赵敏", "zhao.min@example.com", "zh", "APP 一直闪退，重装了也没用，怎么办？"),
)
CALLS = (
    DemoCall("+8613812345678", "+864008001234"),
    DemoCall("+8615900001234", "+864008001234"),
    DemoCall("+8618611112222", "+864008001234"),
)


def demo_files(settings: DevSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The SLA and routing files ``./dev up`` runs on: the demo's, unless ``environ`` names others."""
    return {var: environ.get(var) or str(settings.repo_root / path) for var, path in DEMO_FILES.items()}


def demo_logins(roster_file: Path) -> list[str]:
    """One line per demo login, checked against the roster's password hashes."""
    from shared.roster import load_roster, verify_password

    lines = []
    for agent in load_roster(roster_file).agents:
        password = DEMO_PASSWORDS.get(agent.agent_id)
        if password is None or not verify_password(password, agent.password_hash):
            lines.append(f"{agent.agent_id:<11} (no demo password; see {roster_file})")
            continue
        role = "supervisor" if agent.role == "supervisor" else "agent"
        skills = ", ".join(s for s in agent.skills if s != "general") or "general"
        lines.append(f"{agent.agent_id:<11} / {password:<14} {agent.name} — {role} {agent.tier}, {skills}, "
                     f"speaks {', '.join(agent.languages)}")
    return lines


def banner(settings: DevSettings) -> str:
    rule = "=" * 78
    logins = "\n".join(f"      {line}" for line in demo_logins(settings.roster_file))
    return f"""
{rule}
  ticketmesh is running.

  Agent console   http://127.0.0.1:{settings.desk_port}/
  Chat widget     http://127.0.0.1:{settings.chat_port}/        (be the customer)
  Sent mail       http://127.0.0.1:{settings.sink_web_port}/        (SMTP sink: acknowledgements, replies)
  Support inbox   imap://127.0.0.1:{settings.imap_port}   user {IMAP_USER} / {IMAP_PASSWORD}
  Phone (CTI)     POST http://127.0.0.1:{settings.phone_port}/api/v1/cti/{settings.cti_token}

  Demo logins (agent id / password):
{logins}

  Sign in as li.na and click Online (在线). A demo email, chat message or
  missed call arrives every {DEMO_INTERVAL_SECONDS:.0f} s, in Chinese and English, and is offered
  to you live with a countdown: Accept within 60 s, reply, Resolve. Or Decline
  with a reason: it goes to another agent (back to you after a minute if no
  one else can take it). A second agent needs its own cookies: use a private
  window, or http://localhost:{settings.desk_port}/, and sign in as chen.wei.
  Leave a ticket unanswered: its first-response clock warns at half time and
  breaches after 2-5 min (deploy/demo/sla.yaml); the supervisor is mailed
  ("Sent mail") and the ticket escalates to L2 (English ones: sam.taylor).
  As wang.fang, the Supervisor tab (主管视图) shows queues, agents' load, SLA
  risk and why each ticket went where, and reassigns tickets.
  The demo's routing policy: deploy/demo/routing.yaml.

  Logs: {settings.log_dir}/<service>.log (one JSON object per line)
  Stop: Ctrl-C (stops everything ./dev up started, and only that)
{rule}
"""


# --- one contact per channel ---------------------------------------------------------------------

def build_email(mail: DemoEmail, *, to: str, now: datetime) -> bytes:
    """A customer's mail as their program would send it: subject and body in ``mail.charset``."""
    message = MIMEText(mail.body, "plain", mail.charset)
    message["Subject"] = Header(mail.subject, mail.charset)
    message["From"] = formataddr((mail.from_name, mail.from_address), charset=mail.charset)
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="example.com")
    return message.as_bytes()


def send_email(settings: DevSettings, mail: DemoEmail, now: datetime) -> str:
    from imapclient import IMAPClient

    raw = build_email(mail, to="support@ticketmesh.test", now=now)
    with IMAPClient(settings.demo_imap_host, port=settings.imap_port, ssl=False, timeout=HTTP_TIMEOUT_SECONDS) as client:
        client.login(IMAP_USER, IMAP_PASSWORD)
        client.append("INBOX", raw, msg_time=now)
    return f"email  from {mail.from_name} <{mail.from_address}>: {mail.subject} ({mail.charset.upper()})"


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body, ensure_ascii=False).encode(), method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw[:200].decode("utf-8", "replace")}


def post_chat(settings: DevSettings, chat: DemoChat) -> str:
    """A new visitor's first chat message through the widget's HTTP API; returns the ticket id."""
    status, body = post_json(f"http://{settings.demo_chat_host}:{settings.chat_port}/api/chat/messages", {
        "visitor_id": f"demo-visitor-{uuid.uuid4().hex[:8]}",
        "client_message_id": uuid.uuid4().hex,
        "text": chat.text, "name": chat.name, "email": chat.email, "language": chat.language,
    })
    if status >= 300:
        raise RuntimeError(f"chat API answered {status}: {body}")
    return str(body.get("ticket_id", "?"))


def send_chat(settings: DevSettings, chat: DemoChat) -> str:
    return f"chat   from {chat.name}: {chat.text} → {post_chat(settings, chat)}"


def send_missed_call(settings: DevSettings, call: DemoCall) -> str:
    url = f"http://{settings.demo_phone_host}:{settings.phone_port}/api/v1/cti/{settings.cti_token}"
    call_id = f"demo-{uuid.uuid4().hex[:12]}"
    for event in ({"event": "newCall", "direction": "in", "from": call.caller, "to": call.dialled,
                   "callId": call_id, "user": [], "queue": "support"},
                  {"event": "hangup", "direction": "in", "from": call.caller, "to": call.dialled,
                   "callId": call_id, "cause": "cancel"}):
        status, body = post_json(url, event)
        if status >= 300:
            raise RuntimeError(f"CTI webhook answered {status} to {event['event']}: {body}")
    return f"phone  missed call from {call.caller} (rang, caller hung up)"


def contacts(settings: DevSettings) -> Iterator[tuple[str, Callable[[], str]]]:
    """The demo contacts in order: email, chat, call, email, … cycling through each list."""
    emails, chats, calls = itertools.cycle(EMAILS), itertools.cycle(CHATS), itertools.cycle(CALLS)
    while True:
        mail, chat, call = next(emails), next(chats), next(calls)
        yield "email", lambda mail=mail: send_email(settings, mail, datetime.now(timezone.utc).astimezone())
        yield "chat", lambda chat=chat: send_chat(settings, chat)
        yield "phone", lambda call=call: send_missed_call(settings, call)


def play(settings: DevSettings, *, wait: Callable[[float], bool], max_contacts: int = DEMO_MAX_CONTACTS,
         interval: float = DEMO_INTERVAL_SECONDS) -> int:
    """Inject contacts until ``max_contacts`` or until ``wait(interval)`` returns False.

    Prints one line per contact; a failed injection is reported and the demo goes on.
    Returns how many were injected.
    """
    injected = 0
    for number, (channel, inject) in enumerate(itertools.islice(contacts(settings), max_contacts), start=1):
        stamp = datetime.now().strftime("%H:%M:%S")
        try:
            line = inject()
            injected += 1
            print(f"[demo {stamp}] #{number:<2} {line}", flush=True)
        except Exception as exc:  # noqa: BLE001 - the demo reports and carries on
            print(f"[demo {stamp}] #{number:<2} {channel}: could not inject ({exc})", flush=True)
        if number < max_contacts and not wait(interval):
            break
    print(f"[demo] {injected} demo contacts injected; no more demo traffic. The mesh keeps running (Ctrl-C stops it).",
          flush=True)
    return injected


def main() -> int:
    """``python -m devenv.demo``: only the demo traffic, against a mesh running elsewhere (the
    compose file's ``demo`` service); ``TM_DEMO_*_HOST`` say where the intakes are."""
    import time

    def wait(seconds: float) -> bool:
        time.sleep(seconds)
        return True

    return 0 if play(DevSettings.from_env(), wait=wait) else 1


if __name__ == "__main__":
    raise SystemExit(main())
