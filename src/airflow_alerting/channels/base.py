"""What every channel is: a name and a ``deliver`` that never raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from airflow_alerting.model import DeliveryResult, Notification


@runtime_checkable
class Channel(Protocol):
    """A destination for notifications.

    Channels are deliberately thin: they render a :class:`~airflow_alerting.model.Notification`
    with their renderer and hand it to the official provider hook.  Retry, throttling and
    metrics are the manager's job.  ``deliver`` must not raise: it reports failures in the
    returned :class:`~airflow_alerting.model.DeliveryResult`, marking those worth retrying.
    """

    name: str

    def deliver(self, notification: Notification) -> DeliveryResult: ...
