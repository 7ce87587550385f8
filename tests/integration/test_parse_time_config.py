"""DAG parse time: a bad channel option fails the DAG file's import naming the field; a bad
``[alerting]`` value does not fail it, but is logged as an error naming the option."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import config, metrics

pytestmark = pytest.mark.integration


def _dag_file(folder: Path, notifier: str, *, second_notifier: bool = False) -> Path:
    path = folder / "alerting_parse_dag.py"
    text = textwrap.dedent(
        f"""
        from datetime import datetime
        from airflow.sdk import DAG
        from airflow_alerting import AlertNotifier

        alerts = {notifier}
        with DAG("alerting_parse_dag", schedule=None, start_date=datetime(2026, 1, 1),
                 default_args={{"on_failure_callback": [alerts], "on_retry_callback": [alerts]}}):
            pass
        """
    )
    if second_notifier:
        text += "more_alerts = AlertNotifier(title='{{ ti.task_id }}')\n"
    path.write_text(text)
    return path


def _parse(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(folder))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(
        metrics,
        "count",
        lambda name, n=1, **tags: calls.extend([(name.removeprefix("alerting."), tags["option"])] * n),
    )
    monkeypatch.setattr(config, "_REPORTED", set(), raising=False)
    monkeypatch.setattr(config, "_CHECKED", {}, raising=False)
    for name in [n for n in os.environ if n.startswith("AIRFLOW__ALERTING__")]:
        monkeypatch.delenv(name)
    yield calls


BAD_CHANNELS = [
    pytest.param(
        {"ops_email": {"type": "email", "from_email": 42}},
        "policy.channels.ops_email.from_email: must be a non-empty string",
        id="from_email-not-a-string",
    ),
    pytest.param(
        {"ops_email": {"type": "email", "to": ["oncall", "a@example.com"]}},
        "policy.channels.ops_email.to[0]: is not an e-mail address",
        id="to-not-an-address",
    ),
    pytest.param(
        {"team_slack": {"type": "slack", "channel": 5}},
        "policy.channels.team_slack.channel: must be a non-empty string",
        id="slack-channel-not-a-string",
    ),
    pytest.param(
        {"pd": {"type": "pagerduty", "conn_id": ""}},
        "policy.channels.pd.conn_id: must be a non-empty string",
        id="empty-conn-id",
    ),
    pytest.param(
        {"team_slack": {"type": "slack", "webhook": "https://hooks.slack.com/x"}},
        "policy.channels.team_slack.webhook: unknown option for a slack channel",
        id="unknown-option",
    ),
]


@pytest.mark.parametrize(("channels", "expected"), BAD_CHANNELS)
def test_a_bad_channel_option_fails_the_dag_import_naming_the_field(
    tmp_path: Path, channels: dict[str, Any], expected: str
) -> None:
    _dag_file(tmp_path, f"AlertNotifier(policy={{'channels': {channels!r}}})")

    bag = _parse(tmp_path)

    assert "alerting_parse_dag" not in bag.dag_ids
    [error] = bag.import_errors.values()
    assert expected in error


def test_a_bad_channel_option_in_a_policy_file_given_to_the_notifier_fails_the_import(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("channels:\n  ops_email: {type: email, from_email: 42}\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    _dag_file(dags, f"AlertNotifier(policy={str(policy)!r})")

    bag = _parse(dags)

    [error] = bag.import_errors.values()
    assert "policy(policy.yaml).channels.ops_email.from_email: must be a non-empty string" in error


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        (
            "delivery_attempts",
            "three",
            "[alerting] delivery_attempts: 'three' must be a whole number (set in airflow.cfg or "
            "AIRFLOW__ALERTING__DELIVERY_ATTEMPTS); using the default 3 instead",
        ),
        (
            "state_backend",
            "redis",
            "[alerting] state_backend: 'redis' is not one of: variables, sql, memory (set in airflow.cfg "
            "or AIRFLOW__ALERTING__STATE_BACKEND); using the default 'variables' instead",
        ),
        (
            "policy_file",
            "/nonexistent/alerting-policy.yaml",
            "[alerting] policy_file: '/nonexistent/alerting-policy.yaml' is not a usable policy: "
            "policy(alerting-policy.yaml): cannot read policy file: No such file or directory (set in "
            "airflow.cfg or AIRFLOW__ALERTING__POLICY_FILE); using the default '' (the built-in default "
            "policy) instead",
        ),
    ],
)
def test_a_bad_alerting_option_is_logged_at_parse_time_and_the_dag_still_imports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    counted: list[tuple[str, ...]],
    option: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(f"AIRFLOW__ALERTING__{option.upper()}", value)
    # two notifiers in one file: the problem is still reported once
    _dag_file(tmp_path, "AlertNotifier()", second_notifier=True)

    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        bag = _parse(tmp_path)

    # deployment-wide configuration must not take every DAG that alerts down with it
    assert bag.import_errors == {}
    assert "alerting_parse_dag" in bag.dag_ids
    assert [r.getMessage() for r in caplog.records if r.name == "airflow_alerting.config"] == [expected]
    assert counted == [("config_errors", option)]


def test_a_good_configuration_is_silent_at_parse_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, counted: list[tuple[str, ...]]
) -> None:
    _dag_file(tmp_path, "AlertNotifier()")

    with caplog.at_level(logging.WARNING, logger="airflow_alerting"):
        bag = _parse(tmp_path)

    assert bag.import_errors == {}
    assert [r for r in caplog.records if r.name.startswith("airflow_alerting")] == []
    assert counted == []


# --- what a DAG file's import pays for --------------------------------------------------------

_PARSE_PATH_PROBE = """
import json, sys
import airflow.sdk
before = set(sys.modules)
from airflow_alerting import AlertNotifier
AlertNotifier()
print(json.dumps(sorted(set(sys.modules) - before)))
"""

#: what only an alert needs: loaded on the first alert, never while a DAG file is parsed
_ALERT_TIME_ONLY = (
    "croniter",
    "sqlalchemy",
    "slack_sdk",
    "httpx",
    "airflow_alerting.manager",
    "airflow_alerting.state",
    "airflow_alerting.channels",
    "airflow_alerting.render",
    "airflow_alerting.delivery",
    "airflow_alerting.outbox",
    "airflow.providers",
)


def test_parsing_a_dag_file_loads_no_alert_time_machinery(tmp_path: Path) -> None:
    # the structural half of the parse-cost benchmark (bench/scenarios/parse.py): timings are
    # never asserted, but a module that slipped onto the parse path is
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_PATH_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    slipped = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in _ALERT_TIME_ONLY)]
    assert slipped == []
    assert "airflow_alerting.notifications.alert" in loaded
