"""AlertNotifier in real Airflow: parse-time policy errors, policies from Variables, async use."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_alerting import AlertManager, AlertNotifier
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

pytestmark = pytest.mark.integration


def test_a_bad_policy_fails_the_dag_at_parse_time_naming_the_field(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "bad_policy_dag.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from airflow.sdk import DAG
            from airflow_alerting import AlertNotifier

            alerts = AlertNotifier(policy={"throttle": {"windows": {"high": "-5m"}}})
            with DAG("bad_policy_dag", schedule=None, start_date=datetime(2026, 1, 1),
                     default_args={"on_failure_callback": [alerts]}):
                pass
            """
        )
    )

    bag = DagBag(str(tmp_path))

    assert "bad_policy_dag" not in bag.dag_ids
    [error] = bag.import_errors.values()
    assert "policy.throttle.windows.high: must not be negative" in error


def _set_variable(key: str, value: str) -> None:
    from airflow.models import Variable

    Variable.set(key, value)


def test_a_policy_in_a_variable_routes_without_redeploying(
    alerting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__POLICY_VARIABLE", "alerting_test_policy")
    _set_variable("alerting_test_policy", "routing:\n  matrix:\n    medium: [email]\n")
    try:
        alerting.run("scenario_medium")
    finally:
        _set_variable("alerting_test_policy", "")

    assert len(alerting.servers.smtp.messages) == 1
    assert alerting.servers.slack.messages == []


def test_an_invalid_variable_policy_is_logged_and_the_defaults_still_alert(
    alerting: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__POLICY_VARIABLE", "alerting_test_policy")
    _set_variable("alerting_test_policy", "routing:\n  matrix:\n    medium: [sms]\n")
    try:
        with caplog.at_level("ERROR", logger="airflow_alerting"):
            alerting.run("scenario_medium")
    finally:
        _set_variable("alerting_test_policy", "")

    assert len(alerting.servers.slack.messages) == 1, "the default matrix still routes medium to Slack"
    assert "policy.routing.matrix.medium[0]: undeclared channel 'sms'" in caplog.text


def test_async_notify_runs_the_pipeline_for_deadline_alerts() -> None:
    channels = {name: RecordingChannel(name) for name in ("email", "slack", "pagerduty")}
    manager = AlertManager(store=MemoryStore(), channels=channels, clock=FrozenClock())
    notifier = AlertNotifier(manager=manager, severity="high")
    # a Deadline Alert's context: a DAG run that missed its deadline, no task instance
    context = {"dag": SimpleNamespace(dag_id="nightly_export", tags=["tier:2"]), "reason": "deadline missed"}

    asyncio.run(notifier.async_notify(context))

    assert [n.alert.dag_id for n in channels["slack"].notifications] == ["nightly_export"]
    assert [n.alert.dag_id for n in channels["email"].notifications] == ["nightly_export"]
    assert channels["pagerduty"].notifications == []
