"""Builders shared by the ``test_manager_*`` modules: the alert manager with test doubles.

No Airflow, no network, no sleeping clock: recording channels, an in-memory store and a frozen clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, AlertKind, AlertOutcome, DecisionReason, Notification, Severity
from airflow_alerting.policy import AlertPolicy, EscalationPolicy
from airflow_alerting.render.redact import airflow_redact
from airflow_alerting.state.base import StateStore
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

CHANNELS = ("email", "slack", "pagerduty")
FAST = DeliveryOptions(attempts=3, deadline=5, backoff_base=0.01, backoff_cap=0.02)
NO_ESCALATION = AlertPolicy(escalation=EscalationPolicy(after=0))

# the design's matrix (DESIGN.md), independent of routing.DEFAULT_MATRIX
EXPECTED_CHANNELS = {
    Severity.CRITICAL: {"email", "slack", "pagerduty"},
    Severity.HIGH: {"email", "slack"},
    Severity.MEDIUM: {"slack"},
    Severity.LOW: set(),
}


class StatsRecorder:
    """Stands in for Airflow's Stats so the manager never imports Airflow here."""

    def __init__(self) -> None:
        self.counters: list[str] = []

    def incr(self, name: str, count: int = 1) -> None:
        self.counters.extend([name] * count)

    def timing(self, name: str, value: float) -> None:
        pass


def warm_airflow_masker() -> None:
    """Import Airflow's secret masker now, outside any delivery deadline.

    The first :func:`~airflow_alerting.render.redact.sanitize` imports ``airflow.sdk``, which
    takes seconds on a busy machine; paid inside a delivery thread it would exceed the deadline of
    whichever test renders first (the whole suite hid this: some earlier test had paid for it).
    """
    airflow_redact("")


def record_stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    """Route the manager's metrics to a fresh :class:`StatsRecorder` for one test.

    Each test module wraps this in its own autouse ``stats`` fixture: an autouse fixture in a
    conftest would stub the metrics of every other unit test too.
    """
    recorder = StatsRecorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    return recorder


@dataclass
class Harness:
    manager: AlertManager
    clock: FrozenClock
    store: StateStore
    channels: dict[str, Any] = field(default_factory=dict)

    def got(self, name: str) -> list[Notification]:
        return list(self.channels[name].notifications)

    def counts(self) -> dict[str, int]:
        return {name: len(ch.notifications) for name, ch in self.channels.items()}


def harness(
    policy: AlertPolicy | None = None,
    *,
    store: StateStore | None = None,
    channels: dict[str, Any] | None = None,
    delivery: DeliveryOptions = FAST,
) -> Harness:
    clock = FrozenClock()
    chans: dict[str, Any] = {name: RecordingChannel(name) for name in CHANNELS}
    chans.update(channels or {})
    store = store if store is not None else MemoryStore()
    manager = AlertManager(policy, store=store, channels=chans, clock=clock, delivery=delivery)
    return Harness(manager, clock, store, chans)


def failure(run: int = 1, **overrides: Any) -> Alert:
    """A final-try task failure; a different ``run`` is a different occurrence of the same problem."""
    fields: dict[str, Any] = {
        "dag_id": "sales_etl",
        "task_id": "load_orders",
        "run_id": f"run_{run}",
        "exception_type": "PermissionError",
        "exception_mro": ("PermissionError", "OSError", "Exception"),
        "message": "role LOADER lacks USAGE on warehouse",
    }
    fields.update(overrides)
    return Alert(**fields)


def medium_failure(run: int = 1, **overrides: Any) -> Alert:
    return failure(
        run,
        exception_type="AssertionError",
        exception_mro=("AssertionError", "Exception"),
        message=f"row count mismatch: {run} != 100",
        **overrides,
    )


def success(run: int = 99, **overrides: Any) -> Alert:
    return failure(
        run, kind=AlertKind.TASK_SUCCESS, exception_type=None, exception_mro=(), message="", **overrides
    )


def by_channel(outcome: AlertOutcome) -> dict[str, Any]:
    return {c.channel: c for c in outcome.channels}


def reasons(outcome: AlertOutcome) -> dict[str, DecisionReason]:
    return {c.channel: c.decision.reason for c in outcome.channels}
