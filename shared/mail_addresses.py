"""Mail addresses: which are well-formed, and which belong to machines.

One set of rules for both directions of the mail loop: intake_email does not tell a machine
that its mail was refused, and the notifier sends no automatic mail to one (its loop safety).
A machine's mailbox is ``mailer-daemon``, ``postmaster``, ``abuse``, ``root``, ``nobody``,
``notification(s)``, anything with ``noreply`` / ``no-reply`` / ``donotreply`` in it, bounce
and list-robot addresses (``bounce*``, ``*-bounces``, ``owner-*``, ``*-request``, VERP forms
such as ``bounces+123@``) and Chinese providers' system senders (QQ Mail's ``10000@qq.com``);
Zammad's ``send_no_auto_response_reg_exp`` plus the spellings it misses.
"""
from __future__ import annotations

import re
from email.errors import MessageError
from email.headerregistry import Address

_ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+\.[^@\s<>\"(),;:\\\[\]]+$")
# Local parts (before any +tag) that only machines read.
_SYSTEM_LOCAL_EXACT = frozenset({
    "mailer-daemon", "mailerdaemon", "mailer_daemon", "postmaster", "abuse", "root", "bounce", "bounces",
    "listserv", "majordomo", "mailman", "daemon", "nobody", "notification", "notifications",
})
_NO_REPLY = re.compile(r"no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply", re.IGNORECASE)
# VERP and list robots: bounce-123@, bounces+abc=x@, list-bounces@, owner-list@, list-request@.
_ROBOT_LOCAL = re.compile(r"^(bounces?[-+=].*|.+-bounces?|owner-.+|.+-owner|.+-request)$", re.IGNORECASE)
# System senders of big Chinese mail providers that are not caught by the rules above.
_PROVIDER_SYSTEM = frozenset({"10000@qq.com", "10000@foxmail.com"})


def normalize_address(address: str) -> str:
    return address.strip().lower()


def is_valid_address(address: str) -> bool:
    """One plain ``local@domain.tld`` the mail headers can carry (no display name, no list)."""
    stripped = address.strip()
    if not _ADDRESS.match(stripped):
        return False
    try:
        Address(addr_spec=stripped)
    except (ValueError, IndexError, MessageError):  # what the stdlib raises for a malformed address
        return False
    return True


def is_system_address(address: str) -> bool:
    """A machine's mailbox: nothing it sends back is a person's answer (module doc)."""
    normalized = normalize_address(address)
    if normalized in _PROVIDER_SYSTEM:
        return True
    local = normalized.rsplit("@", 1)[0]
    base = local.split("+", 1)[0]
    return base in _SYSTEM_LOCAL_EXACT or bool(_NO_REPLY.search(local)) or bool(_ROBOT_LOCAL.match(local))
