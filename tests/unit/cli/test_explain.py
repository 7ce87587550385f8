"""``explain``: JSON and human output, the ways to give an alert, bad input, ``python -m``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.cli.explain import EXPLAIN, main
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    Severity,
    notification_to_json,
)
from airflow_alerting.policy import AlertPolicy

OPTIONS: dict[str, Any] = {
    "exception": None,
    "message": None,
    "alert": None,
    "dag": None,
    "task": None,
    "tag": None,
    "owner": None,
    "param": None,
    "try_number": None,
    "max_tries": None,
    "map_index": None,
    "downstream": None,
    "kind": None,
    "policy": None,
    "state": "memory",
    "at": "2026-03-02T10:00:00Z",
    "slack": "api",
    "output": "json",
}


def run(**options: Any) -> int:
    return EXPLAIN.run(argparse.Namespace(**{**OPTIONS, **options}))


def explained(capsys: pytest.CaptureFixture[str], **options: Any) -> dict[str, Any]:
    assert run(**options) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_exception_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    document = explained(
        capsys, exception="KeyError", message="'customer_id'", dag="sales", task="load", tag=["tier:1"]
    )
    alert = Alert(
        "sales",
        task_id="load",
        exception_type="KeyError",
        message="'customer_id'",
        tags=frozenset({"tier:1"}),
    )
    expected = AlertPolicy().classifier.classify(alert)
    assert document["source"] == "sales.load"
    assert document["severity"] == expected.severity.label
    assert document["reasons"] == list(expected.reasons)
    assert document["at"] == datetime(2026, 3, 2, 10, tzinfo=timezone.utc).isoformat()
    assert document["correlation_key"] == "cause=KeyError: 'customer_id'"
    assert document["incident"]["new"] is True
    assert [c["action"] for c in document["channels"]] == ["announce"] * len(document["route"])
    assert document["state"] == "memory (fresh, empty)"
    assert set(document) >= {"fingerprint", "title", "escalation", "route_reason", "silence", "notes"}


def test_a_json_alert_inline_with_options_on_top(capsys: pytest.CaptureFixture[str]) -> None:
    alert = {
        "dag_id": "sales",
        "task_id": "load",
        "exception_type": "KeyError",
        "message": "'x'",
        "try_number": 1,
    }
    document = explained(capsys, alert=json.dumps(alert), max_tries=2, param=["business_impact=critical"])
    assert document["final_try"] is False  # try 1 of 3
    assert document["incident"] is None
    document = explained(capsys, alert=json.dumps(alert), param=["business_impact=critical"])
    assert document["severity"] == "critical"
    assert any("business impact" in reason for reason in document["reasons"])


def test_an_outbox_notification_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alert = Alert("billing", task_id="charge", exception_type="TimeoutError", message="timed out after 30s")
    notification = Notification(
        alert=alert,
        classification=Classification(Severity.HIGH, ("x",)),
        fingerprint="f",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST),
    )
    path = tmp_path / "notification.json"
    path.write_text(json.dumps(notification_to_json(notification)), encoding="utf-8")
    document = explained(capsys, alert=str(path))
    assert document["source"] == "billing.charge"
    assert document["title"].startswith("TimeoutError: timed out after")


def test_human_output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert run(exception="KeyError", message="[red]'customer_id'[/red]", output="table") == 0
    out = capsys.readouterr().out
    assert "adhoc_dag.adhoc_task  (task_failure, final try)" in out
    assert "severity: " in out and "fingerprint: " in out and "correlation key: " in out
    assert "What each channel would be told now" in out
    assert "[red]'customer_id'[/red]" in out  # untrusted text shown as typed


def test_the_configured_policy_and_state(capsys: pytest.CaptureFixture[str]) -> None:
    document = explained(capsys, exception="KeyError", message="'x'", state="configured")
    assert document["state"].startswith(("configured (", "memory ("))
    assert document["channels"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "give --exception and/or --message, or --alert"),
        ({"exception": "E", "at": "teatime"}, "--at: not an ISO 8601 time"),
        ({"exception": "E", "param": ["no-equals"]}, "--param 'no-equals': expected KEY=VALUE"),
        ({"alert": '{"dag": "d", "colour": 1}'}, "colour: unknown field"),
        ({"alert": '{"dag": "d", "task": "t",'}, "--alert: invalid JSON"),
        ({"alert": "/nonexistent/alert.json"}, "--alert: neither a JSON object nor a readable file"),
        ({"exception": "E", "policy": "/nonexistent/policy.yaml"}, "--policy /nonexistent/policy.yaml"),
        ({"alert": '{"dag": "d", "task": "t", "try": 0}'}, "try: must be >= 1"),
    ],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], options: dict[str, Any], words: str) -> None:
    assert run(**options) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert words in captured.err


def test_parsed_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--exception", "KeyError", "--message", "'x'", "--try", "1", "--max-tries", "1"]
    assert main([*argv, "--state", "memory", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["final_try"] is False


def test_as_a_subprocess() -> None:
    command = [sys.executable, "-m", "airflow_alerting.cli.explain", "--state", "memory"]
    good = subprocess.run(
        [*command, "--exception", "ValueError", "--message", "bad row 17", "--output", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=240,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["title"] == "ValueError: bad row <n>"
    bad = subprocess.run(
        [*command, "--exception", "ValueError", "--kind", "nonsense"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert bad.returncode == 2
    assert "--kind" in bad.stderr
