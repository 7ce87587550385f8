"""Airflow's retry and duplicate callbacks through the alert manager.

A retry reaches no channel and does not count towards escalation; a repeated callback is ignored.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

import pytest
from manager_support import (
    CHANNELS,
    StatsRecorder,
    failure,
    harness,
    medium_failure,
    reasons,
    record_stats,
    warm_airflow_masker,
)

from airflow_alerting.model import Alert, AlertKind, DecisionReason, Severity
from airflow_alerting.policy import AlertPolicy


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


@pytest.mark.parametrize(
    "alert",
    [
        pytest.param(failure(kind=AlertKind.TASK_RETRY, try_number=1, max_tries=2), id="retry_callback"),
        pytest.param(failure(try_number=1, max_tries=2), id="failure_callback_with_retries_left"),
        pytest.param(
            failure(
                kind=AlertKind.TASK_RETRY,
                try_number=1,
                max_tries=2,
                tags=frozenset({"tier:1"}),
                message="No space left on device",
            ),
            id="retry_of_a_critical_cause",
        ),
    ],
)
def test_a_retry_never_reaches_a_channel(alert: Alert) -> None:
    h = harness()

    outcome = h.manager.handle(alert)
    silent = harness(AlertPolicy.from_dict({"classification": {"retry": "silent"}}))
    silenced = silent.manager.handle(alert)

    assert h.counts() == dict.fromkeys(CHANNELS, 0)
    assert outcome.sent_to == ()
    assert reasons(outcome) == {"-": DecisionReason.NOT_ROUTED}
    assert silent.counts() == dict.fromkeys(CHANNELS, 0)
    assert reasons(silenced) == {"-": DecisionReason.SILENCED}


def test_retries_do_not_count_towards_escalation() -> None:
    h = harness()
    for try_number in (1, 2, 3):
        h.manager.handle(medium_failure(1, try_number=try_number, max_tries=3))
        h.clock.advance(minutes=1)

    final = h.manager.handle(medium_failure(1, try_number=4, max_tries=3))

    assert final.escalation is None
    assert reasons(final) == {"slack": DecisionReason.FIRST}


@pytest.mark.parametrize("severity", [None, Severity.CRITICAL], ids=["classified", "critical"])
def test_duplicate_callback_is_ignored(severity: Severity | None) -> None:
    h = harness()
    alert = failure()
    h.manager.handle(alert, severity=severity)
    before = h.counts()

    duplicate = h.manager.handle(alert, severity=severity)

    assert h.counts() == before
    assert reasons(duplicate) == {"-": DecisionReason.DUPLICATE_CALLBACK}
    assert duplicate.sent_to == ()


def test_duplicate_dag_failure_callback_is_ignored_whatever_its_last_task_try() -> None:
    h = harness()
    dag_failure = failure(
        kind=AlertKind.DAG_FAILURE,
        task_id=None,
        exception_type=None,
        exception_mro=(),
        message="DAG run failed (timed_out)",
        try_number=1,
        max_tries=2,
    )
    h.manager.handle(dag_failure, severity=Severity.CRITICAL)

    duplicate = h.manager.handle(dag_failure, severity=Severity.CRITICAL)

    assert reasons(duplicate) == {"-": DecisionReason.DUPLICATE_CALLBACK}
