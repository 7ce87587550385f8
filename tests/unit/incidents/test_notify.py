"""What one channel is told about an incident: the throttle window and the planned action."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import Announcement, Incident, IncidentState
from airflow_alerting.incidents.notify import incident_window, plan
from airflow_alerting.model import Decision, DecisionReason, NotificationAction, Severity

A = NotificationAction
R = DecisionReason
S = IncidentState
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RULES = IncidentRules(repeat_interval=timedelta(hours=4), retention=timedelta(days=7))

# copies of the channels' declarations, so this test needs no channel imports
EDITABLE = frozenset(A) - {A.FOLLOW_UP}  # Slack API
POSTING = frozenset({A.ANNOUNCE, A.FOLLOW_UP, A.ESCALATE, A.RENOTIFY, A.RESOLVE})  # e-mail, webhooks
PAGER = frozenset({A.ANNOUNCE, A.ESCALATE, A.RENOTIFY, A.ACKNOWLEDGE, A.RESOLVE})  # PagerDuty


def incident(severity: Severity = Severity.HIGH, state: S = S.OPEN, announced: bool = False) -> Incident:
    announcements = {"ch": Announcement(channel="ch", ref="ts-1")} if announced else {}
    return Incident(
        id="i",
        key="k",
        title="t",
        severity=severity,
        opened_at=T0,
        last_seen_at=T0,
        state=state,
        announcements=MappingProxyType(announcements),
    )


# (id, severity, state, actions, severity window, expected)
WINDOW_CASES = [
    (
        "critical unacked repeats",
        Severity.CRITICAL,
        S.OPEN,
        EDITABLE,
        timedelta(minutes=5),
        timedelta(hours=4),
    ),
    ("critical unacked posting", Severity.CRITICAL, S.OPEN, POSTING, timedelta(0), timedelta(hours=4)),
    (
        "critical acked once",
        Severity.CRITICAL,
        S.ACKNOWLEDGED,
        POSTING,
        timedelta(minutes=5),
        timedelta(days=7),
    ),
    ("editable once", Severity.HIGH, S.OPEN, EDITABLE, timedelta(minutes=5), timedelta(days=7)),
    ("acked once", Severity.HIGH, S.ACKNOWLEDGED, POSTING, timedelta(minutes=5), timedelta(days=7)),
    ("posting severity window", Severity.HIGH, S.OPEN, POSTING, timedelta(minutes=5), timedelta(minutes=5)),
    ("pager severity window", Severity.MEDIUM, S.OPEN, PAGER, timedelta(minutes=9), timedelta(minutes=9)),
    ("zero window never zero", Severity.HIGH, S.OPEN, POSTING, timedelta(0), timedelta(hours=4)),
]


@pytest.mark.parametrize(
    ("severity", "state", "actions", "window", "expected"),
    [c[1:] for c in WINDOW_CASES],
    ids=[c[0] for c in WINDOW_CASES],
)
def test_incident_window(
    severity: Severity, state: S, actions: frozenset[A], window: timedelta, expected: timedelta
) -> None:
    got = incident_window(incident(severity, state), severity_window=window, actions=actions, rules=RULES)
    assert got == expected


# (id, send, decision reason, announced, actions, severity, state, expected action, expected reason)
PLAN_CASES = [
    # held back
    (
        "held throttled announced folds",
        False,
        R.THROTTLED,
        True,
        POSTING,
        Severity.HIGH,
        S.OPEN,
        None,
        R.CORRELATED,
    ),
    (
        "held throttled unannounced",
        False,
        R.THROTTLED,
        False,
        POSTING,
        Severity.HIGH,
        S.OPEN,
        None,
        R.THROTTLED,
    ),
    (
        "held in flight announced",
        False,
        R.IN_FLIGHT,
        True,
        EDITABLE,
        Severity.HIGH,
        S.OPEN,
        None,
        R.IN_FLIGHT,
    ),
    ("held silenced", False, R.SILENCED, True, EDITABLE, Severity.HIGH, S.OPEN, None, R.SILENCED),
    (
        "held duplicate",
        False,
        R.DUPLICATE_CALLBACK,
        False,
        PAGER,
        Severity.LOW,
        S.OPEN,
        None,
        R.DUPLICATE_CALLBACK,
    ),
    # first message on the channel
    ("announce first", True, R.FIRST, False, POSTING, Severity.HIGH, S.OPEN, A.ANNOUNCE, R.FIRST),
    ("announce editable", True, R.FIRST, False, EDITABLE, Severity.LOW, S.OPEN, A.ANNOUNCE, R.FIRST),
    ("announce pager", True, R.FIRST, False, PAGER, Severity.CRITICAL, S.OPEN, A.ANNOUNCE, R.FIRST),
    (
        "announce even on escalation",
        True,
        R.ESCALATED,
        False,
        POSTING,
        Severity.HIGH,
        S.OPEN,
        A.ANNOUNCE,
        R.ESCALATED,
    ),
    (
        "announce after window",
        True,
        R.WINDOW_ELAPSED,
        False,
        PAGER,
        Severity.CRITICAL,
        S.OPEN,
        A.ANNOUNCE,
        R.WINDOW_ELAPSED,
    ),
    # escalation
    (
        "escalate posting",
        True,
        R.ESCALATED,
        True,
        POSTING,
        Severity.CRITICAL,
        S.OPEN,
        A.ESCALATE,
        R.ESCALATED,
    ),
    ("escalate editable", True, R.ESCALATED, True, EDITABLE, Severity.HIGH, S.OPEN, A.ESCALATE, R.ESCALATED),
    (
        "escalate pager",
        True,
        R.ESCALATED,
        True,
        PAGER,
        Severity.CRITICAL,
        S.ACKNOWLEDGED,
        A.ESCALATE,
        R.ESCALATED,
    ),
    # repeat of an unacknowledged critical
    (
        "renotify posting",
        True,
        R.WINDOW_ELAPSED,
        True,
        POSTING,
        Severity.CRITICAL,
        S.OPEN,
        A.RENOTIFY,
        R.REPEATED,
    ),
    (
        "renotify editable",
        True,
        R.WINDOW_ELAPSED,
        True,
        EDITABLE,
        Severity.CRITICAL,
        S.OPEN,
        A.RENOTIFY,
        R.REPEATED,
    ),
    (
        "renotify pager",
        True,
        R.WINDOW_ELAPSED,
        True,
        PAGER,
        Severity.CRITICAL,
        S.OPEN,
        A.RENOTIFY,
        R.REPEATED,
    ),
    # acknowledged critical is not repeated: edit / follow up / nothing
    (
        "acked critical edits",
        True,
        R.WINDOW_ELAPSED,
        True,
        EDITABLE,
        Severity.CRITICAL,
        S.ACKNOWLEDGED,
        A.UPDATE,
        R.UPDATED,
    ),
    (
        "acked critical follows up",
        True,
        R.WINDOW_ELAPSED,
        True,
        POSTING,
        Severity.CRITICAL,
        S.ACKNOWLEDGED,
        A.FOLLOW_UP,
        R.WINDOW_ELAPSED,
    ),
    (
        "acked critical pager silent",
        True,
        R.WINDOW_ELAPSED,
        True,
        PAGER,
        Severity.CRITICAL,
        S.ACKNOWLEDGED,
        None,
        R.CORRELATED,
    ),
    # non-critical later messages
    ("high edits", True, R.WINDOW_ELAPSED, True, EDITABLE, Severity.HIGH, S.OPEN, A.UPDATE, R.UPDATED),
    ("high no window edits", True, R.NO_WINDOW, True, EDITABLE, Severity.HIGH, S.OPEN, A.UPDATE, R.UPDATED),
    (
        "high follows up",
        True,
        R.WINDOW_ELAPSED,
        True,
        POSTING,
        Severity.HIGH,
        S.OPEN,
        A.FOLLOW_UP,
        R.WINDOW_ELAPSED,
    ),
    ("high pager folds", True, R.WINDOW_ELAPSED, True, PAGER, Severity.HIGH, S.OPEN, None, R.CORRELATED),
    (
        "critical no window is not a repeat",
        True,
        R.NO_WINDOW,
        True,
        POSTING,
        Severity.CRITICAL,
        S.OPEN,
        A.FOLLOW_UP,
        R.NO_WINDOW,
    ),
]


@pytest.mark.parametrize(
    ("send", "reason", "announced", "actions", "severity", "state", "action", "expected_reason"),
    [c[1:] for c in PLAN_CASES],
    ids=[c[0] for c in PLAN_CASES],
)
def test_plan(
    send: bool,
    reason: R,
    announced: bool,
    actions: frozenset[A],
    severity: Severity,
    state: S,
    action: A | None,
    expected_reason: R,
) -> None:
    got = plan(Decision(send=send, reason=reason), incident(severity, state, announced), "ch", actions)
    assert got == (action, expected_reason)


def test_plan_announced_on_another_channel_is_not_announced_here() -> None:
    inc = incident(announced=True)  # announced on "ch" only
    assert plan(Decision(send=True, reason=R.WINDOW_ELAPSED), inc, "other", POSTING) == (
        A.ANNOUNCE,
        R.WINDOW_ELAPSED,
    )
