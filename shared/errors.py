"""Which failures are worth retrying.

A consumer that hits a transient error (a server briefly away) returns the message to its
queue and tries again after a pause; anything else is a poison message and goes to the
dead-letter queue with its reason, so one bad message never blocks the queue.
"""
from __future__ import annotations

import amqp.exceptions
import kombu.exceptions
import redis.exceptions


class TransientError(Exception):
    """Raised by domain code for a condition that will pass (e.g. a lock held elsewhere)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    kombu.exceptions.OperationalError,
    amqp.exceptions.RecoverableConnectionError,
    amqp.exceptions.MessageNacked,  # the broker refused a publish for now (e.g. a full disk)
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)
