"""Delivery: every channel concurrently, with retries, under one deadline; nothing raises.

A hung channel yields a retryable failure when the deadline passes, so the callback
returns on time and the notification goes to the outbox.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from airflow_alerting import metrics
from airflow_alerting.model import DeliveryResult, Notification
from airflow_alerting.render.redact import sanitize
from airflow_alerting.workers import WORKERS

if TYPE_CHECKING:
    from airflow_alerting.channels.base import Channel

log = logging.getLogger("airflow_alerting")


@dataclass(frozen=True)
class DeliveryOptions:
    """How hard the manager tries to deliver.

    :param attempts: tries per channel for retryable failures
    :param deadline: seconds for the whole alert (all channels, all attempts)
    :param backoff_base: first retry delay in seconds, doubled each attempt, with jitter
    :param backoff_cap: longest single retry delay
    """

    attempts: int = 3
    deadline: float = 15.0
    backoff_base: float = 0.5
    backoff_cap: float = 5.0


def deliver_all(
    notifications: Sequence[Notification],
    deadline: float,
    *,
    channel: Callable[[str], Channel | None],
    options: DeliveryOptions,
) -> list[DeliveryResult]:
    """Deliver concurrently until ``deadline`` (monotonic); one result per notification, in order.

    :param channel: looks a channel up by name
    """
    if not notifications:
        return []
    from airflow_alerting.channels.base import prepare_channel

    # Task SDK look-ups are not thread-safe: resolve them here, one channel after another
    for name in dict.fromkeys(n.channel for n in notifications):
        target = channel(name)
        if target is not None:
            prepare_channel(target)
    # each delivery on a thread of its own (reused from earlier alerts when one is idle): a hung
    # channel holds only its own thread, and the callback never waits for it past the deadline
    futures = [
        WORKERS.submit(deliver_one, n, deadline, channel=channel, options=options) for n in notifications
    ]
    wait_futures(futures, timeout=max(0.0, deadline - time.monotonic()))
    results = []
    for notification, future in zip(notifications, futures, strict=True):
        if future.done() and future.exception() is None:
            results.append(future.result())
            continue
        if future.done():
            detail = f"channel crashed: {type(future.exception()).__name__}"
        else:
            future.cancel()  # one not started yet never will be: it is reported (and queued) as late
            detail = "deadline exceeded"
        results.append(DeliveryResult(notification.channel, ok=False, retryable=True, detail=detail))
    return results


def deliver_one(
    notification: Notification,
    deadline: float,
    *,
    channel: Callable[[str], Channel | None],
    options: DeliveryOptions,
) -> DeliveryResult:
    """Deliver one notification, retrying retryable failures with jittered backoff until ``deadline``."""
    target = channel(notification.channel)
    if target is None:
        return DeliveryResult(notification.channel, ok=False, detail="no such channel configured")
    attempt = 0
    started = time.monotonic()
    while True:
        attempt += 1
        try:
            result = target.deliver(notification)
        except Exception as err:  # a channel must not raise, but a buggy one must not cost the others
            log.error("channel %s raised: %s", notification.channel, scrubbed_traceback(err))
            result = DeliveryResult(
                notification.channel, ok=False, retryable=False, detail=f"channel raised {type(err).__name__}"
            )
        if result.ok or not result.retryable or attempt >= options.attempts:
            break
        delay = min(options.backoff_cap, options.backoff_base * (2 ** (attempt - 1)))
        # jitter: workers failing together must not retry together
        delay = random.uniform(delay / 2, delay)
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        if time.monotonic() + delay >= deadline:
            break
        time.sleep(delay)
    metrics.delivery_timed(notification.channel, time.monotonic() - started, result.ok)
    return replace(result, attempts=attempt)


def scrubbed_traceback(err: BaseException) -> str:
    """The traceback with secrets masked: exception text can carry URLs with passwords or tokens."""
    import traceback

    return sanitize("".join(traceback.format_exception(err)))[-4000:]
