"""RecordingChannel: the actions it declares and what it returns."""

from __future__ import annotations

import pytest

from airflow_alerting.channels.base import POSTING_ACTIONS, channel_actions
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.testing import RecordingChannel


def notification(action: NotificationAction) -> Notification:
    return Notification(
        alert=Alert(dag_id="d", task_id="t"),
        classification=Classification(Severity.HIGH, ()),
        fingerprint="f",
        channel="rec",
        decision=Decision(True, DecisionReason.FIRST),
        action=action,
    )


def test_defaults_stay_backward_compatible() -> None:
    failure = DeliveryResult("rec", ok=False, retryable=True, detail="down")
    channel = RecordingChannel("rec", (failure,))

    assert channel_actions(channel) == POSTING_ACTIONS
    assert channel.deliver(notification(NotificationAction.ANNOUNCE)) is failure
    assert channel.notifications == [] and channel.attempts == 1


def test_editable_declares_everything_but_follow_up() -> None:
    channel = RecordingChannel("rec", editable=True)
    assert channel.actions == frozenset(NotificationAction) - {NotificationAction.FOLLOW_UP}


def test_explicit_actions() -> None:
    channel = RecordingChannel("rec", actions=[NotificationAction.ANNOUNCE])
    assert channel_actions(channel) == {NotificationAction.ANNOUNCE}
    with pytest.raises(ValueError, match="not both"):
        RecordingChannel("rec", actions=[NotificationAction.ANNOUNCE], editable=True)


def test_records_every_notification_and_answers_with_an_id_and_conversation() -> None:
    channel = RecordingChannel("rec", editable=True)
    actions = [NotificationAction.ANNOUNCE, NotificationAction.UPDATE, NotificationAction.UPDATE]

    results = [channel.deliver(notification(action)) for action in actions]

    assert [(r.ok, r.external_id, r.conversation) for r in results] == [
        (True, "rec-1", "rec"),
        (True, "rec-2", "rec"),
        (True, "rec-3", "rec"),
    ]
    assert [n.action for n in channel.by_action(NotificationAction.UPDATE)] == actions[1:]
    assert channel.by_action(NotificationAction.RESOLVE) == []
    assert len(channel.notifications) == 3
