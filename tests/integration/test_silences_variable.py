"""Silences kept in an Airflow Variable (``[alerting] silences_variable``), in real Airflow.

Operators mute a maintenance window without a deploy: the Variable is read when an alert fires.
Silenced failures still join their incident and are counted; a broken Variable keeps the last
good list rather than silencing everything or nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from airflow_alerting.model import DecisionReason

pytestmark = pytest.mark.integration

VARIABLE = "alerting_test_silences"


def _set_variable(key: str, value: str) -> None:
    from airflow.models import Variable

    Variable.set(key, value)


def _silence(alerting: Any, **match: Any) -> dict[str, Any]:
    now = alerting.clock()
    return {
        "starts_at": (now - timedelta(minutes=5)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "comment": "warehouse upgrade",
        "author": "ops",
        **match,
    }


def test_a_silence_in_a_variable_mutes_a_dag_and_counts_it(
    alerting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__SILENCES_VARIABLE", VARIABLE)
    _set_variable(VARIABLE, json.dumps([_silence(alerting, dag_ids=["scenario_med*"])]))
    try:
        alerting.run("scenario_medium")
    finally:
        _set_variable(VARIABLE, "")

    assert alerting.servers.slack.messages == [], "the silenced DAG tells nobody"
    held = [e for e in alerting.history() if e.reason == DecisionReason.SILENCED.value]
    assert held and "warehouse upgrade" in held[-1].detail
    from airflow_alerting.state.variables import VariableStore

    [incident] = VariableStore(verify_delay=0).incidents()
    assert incident.silenced == incident.failures == 1, "silenced failures are counted, not dropped"


def test_an_expired_or_non_matching_silence_lets_alerts_through(
    alerting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__SILENCES_VARIABLE", VARIABLE)
    now = alerting.clock()
    expired = {
        **_silence(alerting, dag_ids=["*"]),
        "starts_at": (now - timedelta(hours=2)).isoformat(),
        "ends_at": (now - timedelta(hours=1)).isoformat(),
    }
    other = _silence(alerting, dag_ids=["some_other_dag"])
    _set_variable(VARIABLE, json.dumps([expired, other]))
    try:
        alerting.run("scenario_medium")
    finally:
        _set_variable(VARIABLE, "")

    assert len(alerting.servers.slack.messages) == 1


def test_an_invalid_silences_variable_is_reported_and_silences_nothing(
    alerting: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__SILENCES_VARIABLE", VARIABLE)
    _set_variable(VARIABLE, json.dumps([{"starts_at": "yesterday", "dag_ids": ["*"]}]))
    try:
        with caplog.at_level("ERROR", logger="airflow_alerting"):
            alerting.run("scenario_medium")
    finally:
        _set_variable(VARIABLE, "")

    assert len(alerting.servers.slack.messages) == 1, "a broken silence list must not mute alerts"
    assert f"Variable {VARIABLE}[0].starts_at" in caplog.text
