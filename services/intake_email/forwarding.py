"""Who the customer of an inbound mail is: the sender, the Reply-To (if configured), or, when one
of our agents forwarded a customer's mail to the support address, the original sender.

Pure: no I/O, no clock. :func:`original_sender` reads the first forwarded header block of a
body, as mail clients write them:

- Gmail ``---------- Forwarded message ---------`` then ``From: Name <a@b>``;
- Apple Mail ``Begin forwarded message:`` then ``From: Name <a@b>``;
- Outlook ``-----Original Message-----`` or a ``____`` rule, or no separator at all, then
  ``From: Name [mailto:a@b]`` / ``From: Name <a@b>`` followed by ``Sent:``;
- Foxmail / 163 ``-------- 转发邮件信息 --------`` then ``发件人："张三" <a@b.cn>``;
- QQ Mail ``------------------ 原始邮件 ------------------`` then ``发件人: "张三"<a@b.cn>;``;
- Chinese Outlook, no separator: ``发件人: 张三 <a@b.cn>`` followed by ``发送时间:``.

The top-most block is the one the agent forwarded; a deeper one is the customer's own history.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

SCAN_LINES = 400  # the forwarded block sits near the top; a long body is not read to the end
EMAIL_MAX_CHARS = 320  # Customer.email in the events: a longer "address" is not one
NAME_MAX_CHARS = 200  # Customer.name
_BLOCK_LINES = 8  # the From line comes within a few lines of the separator

_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*Forwarded message\s*-{2,}|Begin forwarded message:?|-{2,}\s*Original Message\s*-{2,}"
    r"|_{10,}|-{2,}\s*转发邮件信息\s*-{2,}|-{2,}\s*原始邮件\s*-{2,}|-{2,}\s*Forwarded Message\s*-{2,}"
    r"|-{2,}\s*转发的邮件\s*-{2,})\s*$",
    re.IGNORECASE,
)
_FROM = re.compile(r"^\s*(?:\*\s*)?(?:From|发件人|寄件者|寄件人)\s*(?:\*\s*)?[:：]\s*(.+)$", re.IGNORECASE)
# Outlook without a separator: From followed by Sent/Date (or 发送时间) on the next lines.
_SENT = re.compile(r"^\s*(?:\*\s*)?(?:Sent|Date|发送时间|发送日期|日期|時間)\s*(?:\*\s*)?[:：]", re.IGNORECASE)
_ADDRESS = re.compile(r"(?:mailto:)?([^\s<>\"'\[\]()（）:;,，；：]+@[^\s<>\"'\[\]()（）:;,，；：]+\.[A-Za-z]{2,})",
                      re.IGNORECASE)
_QUOTE = re.compile(r"^(?:\s*>)+\s?")
_NAME_JUNK = " \t\"'“”<>[]()（）;；,，"


@dataclass(frozen=True)
class OriginalSender:
    email: str
    name: str


@dataclass(frozen=True)
class Customer:
    email: str
    name: str
    forwarded_by: str | None = None  # agent id when an agent forwarded the customer's mail


def original_sender(text: str) -> OriginalSender | None:
    """The sender of the first forwarded block in ``text``, or None when there is none."""
    lines = [_QUOTE.sub("", line) for line in text.splitlines()[:SCAN_LINES]]
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            for candidate in lines[i + 1:i + 1 + _BLOCK_LINES]:
                found = _FROM.match(candidate)
                if found:
                    return _parse_from(found.group(1))
            continue
        found = _FROM.match(line)
        if found and any(_SENT.match(nxt) for nxt in lines[i + 1:i + 4]):
            sender = _parse_from(found.group(1))
            if sender:
                return sender
    return None


def _parse_from(value: str) -> OriginalSender | None:
    found = _ADDRESS.search(value)
    if not found:
        return None
    address = found.group(1).strip(".").lower()
    if len(address) > EMAIL_MAX_CHARS:
        return None
    name = value[:found.start()].replace("[mailto", "").replace("mailto", "").strip(_NAME_JUNK)
    return OriginalSender(email=address, name=name[:NAME_MAX_CHARS] if name.lower() != address else "")


def customer_of(*, from_email: str, from_name: str, text: str, agents_by_email: Mapping[str, str],
                our_address: str) -> Customer:
    """Who the ticket is for.

    - a roster agent's mail with a forwarded block → the original sender, ``forwarded_by`` = the
      agent (unless the original is us or another agent: then it is the agent's own mail);
    - else the sender (already the Reply-To person when ``TM_EMAIL_SENDER_FROM_REPLY_TO`` is on:
      :func:`~services.intake_email.normalize.normalize` applies that rule, with the name).
    """
    agent = agents_by_email.get(from_email.lower())
    if agent:
        original = original_sender(text)
        if original and original.email not in agents_by_email and original.email != our_address.lower():
            return Customer(original.email, original.name, forwarded_by=agent)
    return Customer(from_email, from_name)
