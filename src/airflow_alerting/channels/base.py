"""What every channel is: a name and a ``deliver`` that never raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from airflow_alerting.model import DeliveryResult, Notification, NotificationAction

#: what a channel that declares nothing can do: post new messages (it cannot edit or acknowledge)
POSTING_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.FOLLOW_UP,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.RESOLVE,
    }
)


def channel_actions(channel: object) -> frozenset[NotificationAction]:
    """The actions ``channel`` declares (:attr:`Channel.actions`), or :data:`POSTING_ACTIONS`."""
    actions = getattr(channel, "actions", None)
    return frozenset(actions) if actions is not None else POSTING_ACTIONS


def prepare_channel(channel: object) -> None:
    """Run the channel's optional ``prepare()`` on the calling thread; log, never raise.

    Under a task runner (and ``airflow dags test``) every Task SDK call (connections, Variables)
    goes through one supervisor channel that concurrent threads corrupt: a connection that exists
    was reported missing.  So whatever delivery needs from Airflow is resolved here, before the
    deliveries fan out to threads.
    """
    prepare = getattr(channel, "prepare", None)
    if prepare is None:
        return
    try:
        prepare()
    except Exception as err:  # delivery reports the problem with the channel's own words
        import logging

        logging.getLogger("airflow_alerting").warning(
            "channel %s could not prepare its delivery: %s", getattr(channel, "name", "?"), type(err).__name__
        )


@runtime_checkable
class Channel(Protocol):
    """A destination for notifications.

    Channels are deliberately thin: they render a :class:`~airflow_alerting.model.Notification`
    with their renderer and hand it to the official provider hook.  Retry, throttling and
    metrics are the manager's job.  ``deliver`` must not raise: it reports failures in the
    returned :class:`~airflow_alerting.model.DeliveryResult`, marking those worth retrying.
    """

    #: Optionally, ``prepare()``: resolve connections and settings on the calling thread, before
    #: deliveries run concurrently (:func:`prepare_channel`); ``deliver`` must then need no Task SDK call.
    #: Optionally, ``actions``: the :class:`~airflow_alerting.model.NotificationAction` values the
    #: channel can perform (:func:`channel_actions`); one that can edit messages lists ``UPDATE``
    #: and then gets in-place edits instead of ``FOLLOW_UP`` messages.

    name: str

    def deliver(self, notification: Notification) -> DeliveryResult: ...
