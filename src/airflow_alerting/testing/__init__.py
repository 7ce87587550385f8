"""Test doubles for alerting, shipped so users can test their own DAGs' alerting too.

- :class:`RecordingChannel`: a channel that records notifications (and can be told to fail)
- :class:`FrozenClock`: an injectable clock that only moves when told to
- :class:`~airflow_alerting.state.memory.MemoryStore`: in-process state
- :mod:`airflow_alerting.testing.servers`: local servers speaking Slack, PagerDuty and SMTP
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from airflow_alerting.channels.base import POSTING_ACTIONS
from airflow_alerting.model import DeliveryResult, Notification, NotificationAction
from airflow_alerting.state.memory import MemoryStore

__all__ = ["FrozenClock", "MemoryStore", "RecordingChannel"]


@dataclass
class FrozenClock:
    """A clock for tests: call it for "now"; :meth:`advance` moves it.

    :param now: the starting time (timezone-aware)
    """

    now: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` or by keyword arguments of :class:`~datetime.timedelta`."""
        self.now += delta if delta is not None else timedelta(**kwargs)
        return self.now


class RecordingChannel:
    """A channel that records every notification it is given.

    Successful deliveries return ``external_id="<name>-<n>"`` (n counts recorded notifications)
    and ``conversation=<name>``, which is what the manager stores as the incident's announcement.

    :param name: the channel name the policy routes to
    :param failures: results to return (in order) before succeeding, e.g. a retryable failure
    :param actions: the :class:`~airflow_alerting.model.NotificationAction` values it declares
        (:attr:`actions`); default :data:`~airflow_alerting.channels.base.POSTING_ACTIONS`
    :param editable: declare what a channel that edits messages can do: every action except
        ``FOLLOW_UP`` (like Slack's Web API); not combinable with ``actions``
    """

    def __init__(
        self,
        name: str,
        failures: tuple[DeliveryResult, ...] = (),
        *,
        actions: Iterable[NotificationAction] | None = None,
        editable: bool = False,
    ) -> None:
        if actions is not None and editable:
            raise ValueError("give either actions or editable=True, not both")
        self.name = name
        if actions is not None:
            self.actions = frozenset(actions)
        elif editable:
            self.actions = frozenset(NotificationAction) - {NotificationAction.FOLLOW_UP}
        else:
            self.actions = POSTING_ACTIONS
        self.notifications: list[Notification] = []
        self.attempts = 0
        self._failures = deque(failures)
        self._lock = threading.Lock()

    def fail_next(self, *, retryable: bool = True, detail: str = "injected failure", count: int = 1) -> None:
        """Make the next ``count`` deliveries fail."""
        with self._lock:
            for _ in range(count):
                self._failures.append(DeliveryResult(self.name, ok=False, retryable=retryable, detail=detail))

    def deliver(self, notification: Notification) -> DeliveryResult:
        with self._lock:
            self.attempts += 1
            if self._failures:
                return self._failures.popleft()
            self.notifications.append(notification)
            return DeliveryResult(
                self.name,
                ok=True,
                external_id=f"{self.name}-{len(self.notifications)}",
                conversation=self.name,
            )

    def by_action(self, action: NotificationAction) -> list[Notification]:
        """The recorded notifications with ``action``, oldest first.

        :param action: e.g. ``NotificationAction.UPDATE``
        :return: a new list
        """
        with self._lock:
            return [n for n in self.notifications if n.action == action]
