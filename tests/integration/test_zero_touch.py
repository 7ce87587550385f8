"""Zero-touch mode end to end: Airflow loads the cluster policy from the ``airflow.policy`` entry point.

The DAGs are in ``dags/zero_touch_dags.py``. The wiring is checked on the DAGs Airflow's own
``DagBag`` loads (it runs the policy hooks); the behaviour with ``airflow dags test``
subprocesses against the local Slack and SMTP servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import AlertNotifier, cluster_policy

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).parent / "dags" / "zero_touch_dags.py"
TASK_SLOTS = ("on_failure_callback", "on_retry_callback", "on_success_callback")


def _bag(monkeypatch: pytest.MonkeyPatch, *, on: bool) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__ALERTING__ZERO_TOUCH", "True" if on else "False")
    bag = DagBag(str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag


def _names(callbacks: Any) -> list[str]:
    """Callbacks by kind: ``AlertNotifier`` for ours and the user's notifiers, else the function name."""
    items = callbacks if isinstance(callbacks, list | tuple) else [] if callbacks is None else [callbacks]
    return ["AlertNotifier" if isinstance(c, AlertNotifier) else c.__name__ for c in items]


def _task(bag: Any, dag_id: str) -> Any:
    [only] = bag.dags.get(dag_id).tasks
    return only


def test_the_policy_is_registered_through_the_entry_point() -> None:
    from airflow import settings

    plugins = dict(settings.get_policy_plugin_manager().list_name_plugin())
    assert plugins.get("alerting") is cluster_policy


def test_on_it_attaches_alerting_to_a_dag_without_any(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=True)

    task = _task(bag, "zero_touch_plain")
    dag = bag.dags.get("zero_touch_plain")
    assert {slot: _names(getattr(task, slot)) for slot in TASK_SLOTS} == {
        slot: ["AlertNotifier"] for slot in TASK_SLOTS
    }
    assert _names(dag.on_failure_callback) == ["AlertNotifier"]
    assert dag.has_on_failure_callback  # what makes the scheduler run DAG-level callbacks


def test_off_it_attaches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=False)

    for dag_id in set(bag.dag_ids) - {"zero_touch_own_notifier"}:  # the one DAG with its own
        dag = bag.dags.get(dag_id)
        assert "AlertNotifier" not in _names(dag.on_failure_callback), dag_id
        for task in dag.tasks:
            for slot in TASK_SLOTS:
                assert "AlertNotifier" not in _names(getattr(task, slot)), (dag_id, slot)
    plain = bag.dags.get("zero_touch_plain")
    assert plain.on_failure_callback is None
    assert not plain.has_on_failure_callback


def test_a_teams_own_callbacks_are_kept_and_alerting_runs_after_them(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=True)

    task = _task(bag, "zero_touch_own_callbacks")
    assert _names(task.on_failure_callback) == ["team_callback", "AlertNotifier"]
    assert _names(bag.dags.get("zero_touch_own_callbacks").on_failure_callback) == [
        "team_callback",
        "AlertNotifier",
    ]


def test_a_dag_that_alerts_on_its_own_is_left_exactly_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=True)

    task = _task(bag, "zero_touch_own_notifier")
    dag = bag.dags.get("zero_touch_own_notifier")
    assert [getattr(n, "title", None) for n in task.on_failure_callback] == ["own notifier {{ ti.task_id }}"]
    assert _names(task.on_retry_callback) == []
    assert _names(task.on_success_callback) == ["team_callback"]
    assert [getattr(n, "title", None) for n in dag.on_failure_callback] == ["own notifier {{ ti.task_id }}"]


def test_the_opt_out_tag_skips_a_dag_and_its_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=True)

    task = _task(bag, "zero_touch_opted_out")
    assert {slot: _names(getattr(task, slot)) for slot in TASK_SLOTS} == {slot: [] for slot in TASK_SLOTS}
    assert bag.dags.get("zero_touch_opted_out").on_failure_callback is None


def test_applying_the_policy_again_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _bag(monkeypatch, on=True)
    task = _task(bag, "zero_touch_own_callbacks")
    dag = bag.dags.get("zero_touch_own_callbacks")

    cluster_policy.task_policy(task)
    cluster_policy.dag_policy(dag)

    assert _names(task.on_failure_callback) == ["team_callback", "AlertNotifier"]
    assert _names(dag.on_failure_callback) == ["team_callback", "AlertNotifier"]


def test_a_bad_setting_counts_as_off_and_never_rejects_the_dag(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__ZERO_TOUCH", "sometimes")
    from airflow.dag_processing.dagbag import DagBag

    with caplog.at_level("ERROR", logger="airflow_alerting"):
        bag = DagBag(str(DAG_FILE))

    assert not bag.import_errors
    assert _names(_task(bag, "zero_touch_plain").on_failure_callback) == []
    assert any("[alerting] zero_touch: 'sometimes'" in r.getMessage() for r in caplog.records)


# --- end to end: `airflow dags test` subprocesses against the local servers --------------------


def _dags_test(dag_id: str, *, on: bool, marker: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW__ALERTING__STATE_BACKEND": "variables",
        "AIRFLOW__ALERTING__ZERO_TOUCH": "True" if on else "False",
        "ZERO_TOUCH_MARKER": str(marker),
    }
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )


def _slack_mentions(alerting: Any, text: str) -> list[dict[str, Any]]:
    return [m for m in alerting.servers.slack.messages if text in json.dumps(m)]


RunDag = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.timeout(300)
def test_with_the_setting_on_a_dag_without_callbacks_alerts(alerting: Any, tmp_path: Path) -> None:
    result = _dags_test("zero_touch_plain", on=True, marker=tmp_path / "marker")

    assert result.returncode == 1, result.stderr[-2000:]
    assert _slack_mentions(alerting, "zero_touch_plain.extract"), alerting.servers.slack.messages
    assert any("warehouse.customers" in str(m) for m in alerting.servers.smtp.messages)


@pytest.mark.timeout(300)
def test_with_the_setting_off_the_same_dag_alerts_nowhere(alerting: Any, tmp_path: Path) -> None:
    result = _dags_test("zero_touch_plain", on=False, marker=tmp_path / "marker")

    assert result.returncode == 1, result.stderr[-2000:]
    assert alerting.servers.slack.messages == []
    assert alerting.servers.smtp.messages == []


@pytest.mark.timeout(300)
def test_a_dag_with_its_own_callbacks_keeps_them_and_is_alerted(alerting: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    result = _dags_test("zero_touch_own_callbacks", on=True, marker=marker)

    assert result.returncode == 1, result.stderr[-2000:]
    assert "team_callback zero_touch_own_callbacks.publish" in marker.read_text(encoding="utf-8")
    assert _slack_mentions(alerting, "zero_touch_own_callbacks.publish"), alerting.servers.slack.messages
