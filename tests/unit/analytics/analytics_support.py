"""Shared by the analytics unit tests: a small storm replayed through the default policy on a
MemoryStore with a simulated clock.

Small (80 outage failures, 10 unrelated causes) so the module runs in seconds; the numbers the
tests expect are derived from the generated storm, never from the history being analysed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, NotificationAction
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.state.base import StateStore
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.testing.storm import ReplayReport, Storm

PAGERDUTY_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.ACKNOWLEDGE,
        NotificationAction.RESOLVE,
    }
)


@dataclass(frozen=True)
class Replayed:
    storm: Storm
    report: ReplayReport
    manager: AlertManager
    store: MemoryStore
    clock: FrozenClock
    channels: dict[str, RecordingChannel]
    #: when the storm started (the clock moved on while it was replayed and settled)
    start: datetime


def build_manager(store: StateStore, clock: FrozenClock) -> tuple[AlertManager, dict[str, RecordingChannel]]:
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=PAGERDUTY_ACTIONS),
    }
    manager = AlertManager(
        AlertPolicy(),
        store=store,
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    return manager, channels


@dataclass(frozen=True)
class Failure:
    """One generated failure of a trending scenario."""

    at: datetime
    cause: str
    alert: Alert


#: (dag, exception type, message template, failure offsets in minutes before "now")
#: "steady" fails every hour (one in the last hour); "rising" twice in the day, then eight
#: times in the last hour; "fresh" never before the last hour; "busy" twice an hour all day
#: and three times in the last hour (a high rate that is not rising).
SCENARIO: tuple[tuple[str, str, str, tuple[int, ...]], ...] = (
    (
        "steady",
        "psycopg2.OperationalError",
        "server closed the connection unexpectedly on host db-{n}.internal",
        tuple(range(30, 25 * 60, 60)),
    ),
    (
        "rising",
        "requests.exceptions.HTTPError",
        "503 Server Error: Service Unavailable for url: https://api.example.com/v1/orders?page={n}",
        (20 * 60, 9 * 60, *range(5, 60, 7)),
    ),
    ("fresh", "KeyError", "'customer_id' (row {n})", (50, 40, 30, 20, 10)),
    (
        "busy",
        "ValueError",
        "could not convert string to float: 'n/a' at line {n}",
        (*range(65, 25 * 60, 30), 45, 25, 15),
    ),
)


def scenario(now: datetime) -> list[Failure]:
    """The failures of :data:`SCENARIO`, oldest first, each a distinct task run."""
    failures = []
    for name, kind, template, offsets in SCENARIO:
        for n, minutes in enumerate(offsets):
            at = now - timedelta(minutes=minutes)
            alert = Alert(
                dag_id=f"{name}_dag",
                task_id=f"{name}_task",
                run_id=f"scheduled__{at.isoformat()}",
                exception_type=kind,
                message=template.format(n=n + 3),
                occurred_at=at,
            )
            failures.append(Failure(at, name, alert))
    return sorted(failures, key=lambda f: f.at)


def play(manager: AlertManager, clock: FrozenClock, failures: list[Failure]) -> None:
    """Handle each failure with the clock at its time."""
    for failure in failures:
        if failure.at > clock.now:
            clock.advance(failure.at - clock.now)
        manager.handle(failure.alert)
