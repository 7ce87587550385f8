"""The commands' logic in-process, over the per-process memory store (the subprocess tests use SQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.cli.console import main
from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import Occurrence
from airflow_alerting.model import Severity


@pytest.fixture(autouse=True)
def memory_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_alerting.state as state

    monkeypatch.setenv("AIRFLOW__ALERTING__STATE_BACKEND", "memory")
    monkeypatch.setattr(state, "_MEMORY_STORES", {})


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    assert main([*argv, "-o", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def test_silence_lifecycle(capsys: pytest.CaptureFixture[str]) -> None:
    added = _json(["silence", "add", "--task", "load_*", "--duration", "30m", "--author", "ops"], capsys)
    assert added["task_ids"] == ["load_*"] and added["state"] == "active"
    starts = datetime.fromisoformat(added["starts_at"])
    assert datetime.fromisoformat(added["ends_at"]) - starts == timedelta(minutes=30)
    later = _json(["silence", "add", "--dag", "*", "--start", "2099-01-01T00:00", "--duration", "1h"], capsys)
    assert later["state"] == "scheduled"

    listed = _json(["silence", "list"], capsys)
    assert [s["id"] for s in listed["silences"]] == [added["id"], later["id"]]

    assert _json(["silence", "expire", added["id"]], capsys)["expired"] is True
    assert [s["id"] for s in _json(["silence", "list"], capsys)["silences"]] == [later["id"]]
    assert len(_json(["silence", "list", "--all"], capsys)["silences"]) == 2

    code, err = _fails(["silence", "expire", added["id"]], capsys)
    assert code == 1 and f"silence {added['id']} already ended" in err
    code, err = _fails(["silence", "expire", "nope"], capsys)
    assert code == 2 and "argument SILENCE_ID: no silence 'nope'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "1h"], "argument --dag/--task/--tag/--severity/--incident-key/--fingerprint"),
        (["--dag", "x"], "argument --duration/--until: give exactly one"),
        (["--dag", "x", "--duration", "1h", "--until", "2099-01-01T00:00"], "give exactly one"),
        (
            ["--dag", "x", "--start", "2099-01-02T00:00", "--until", "2099-01-01T00:00"],
            "argument --until/--duration: silence.ends_at: must be after starts_at",
        ),
    ],
)
def test_silence_add_refuses_bad_input(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _fails(["silence", "add", *argv], capsys)
    assert code == 2 and message in err


def _open_incident() -> str:
    from airflow_alerting.config import read_settings
    from airflow_alerting.state import store_from_settings

    store = store_from_settings(read_settings().settings)
    now = datetime.now(timezone.utc)
    occurrence = Occurrence(
        key="cause=ConnectionError: refused",
        title="ConnectionError: refused",
        dag_id="etl",
        task_id="load",
        map_index=-1,
        run_id="r1",
        severity=Severity.HIGH,
        at=now - timedelta(minutes=5),
    )
    return store.join_incident(occurrence, IncidentRules()).incident.id


def test_incident_lifecycle(capsys: pytest.CaptureFixture[str]) -> None:
    incident_id = _open_incident()
    listed = _json(["incidents", "list"], capsys)
    assert [(i["id"], i["state"], i["severity"]) for i in listed["incidents"]] == [
        (incident_id, "open", "high")
    ]

    acked = _json(["incidents", "ack", incident_id, "--by", "carol"], capsys)
    assert acked["incident"]["state"] == "acknowledged" and acked["incident"]["acknowledged_by"] == "carol"
    assert acked["channels"] == []  # it was announced nowhere, so nobody is told
    code, err = _fails(["incidents", "ack", incident_id], capsys)
    assert code == 1 and f"cannot acknowledge incident {incident_id}: it is already acknowledged" in err

    resolved = _json(["incidents", "resolve", incident_id], capsys)
    assert resolved["incident"]["state"] == "resolved"
    assert _json(["incidents", "list"], capsys)["incidents"] == []
    assert [i["id"] for i in _json(["incidents", "list", "--state", "resolved"], capsys)["incidents"]] == [
        incident_id
    ]
    shown = _json(["incidents", "show", incident_id], capsys)
    assert shown["members"][0]["task_id"] == "load" and shown["resolved_at"] is not None

    code, err = _fails(["incidents", "show", "missing"], capsys)
    assert code == 2 and "argument INCIDENT_ID: no incident 'missing'" in err


def test_incident_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    incident_id = _open_incident()
    assert main(["incidents", "show", incident_id]) == 0
    out = capsys.readouterr().out
    assert (
        f"Incident {incident_id}" in out and "etl.load" in out and "1 failure in 1 task across 1 DAG" in out
    )


def test_state_commands_over_the_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    _open_incident()
    init = _json(["state", "init"], capsys)
    assert init == {"backend": "memory", "tables": [], "message": "the memory state store needs no setup"}
    checked = _json(["state", "check"], capsys)
    assert checked["backend"] == "memory" and checked["tables"] is None
    assert checked["incidents"] == {"open": 1, "acknowledged": 0, "resolved": 0}
    pruned = _json(["state", "prune"], capsys)
    assert pruned["backend"] == "memory" and pruned["pruned"] == 0  # the incident is not stale


def test_state_init_creates_sql_tables_like_the_old_module(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["state", "init", "--url", url, "--table-prefix", "t_"]) == 0
    assert capsys.readouterr().out.startswith(f"tables ready at {url}: t_channel_state, t_occurrence")
    code, err = _fails(["state", "init", "--url", url, "--table-prefix", "1bad"], capsys)
    assert code == 2 and "argument --table-prefix" in err
    code, err = _fails(["state", "init", "--url", url, "--conn-id", "x"], capsys)
    assert code == 2 and "argument --conn-id/--url: give one of them, not both" in err


def test_history_and_stats_over_an_empty_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("airflow_alerting.analytics")
    history = _json(["history"], capsys)
    assert history == {"complete": False, "since": None, "entries": []}
    stats = _json(["stats", "--since", "2h"], capsys)
    assert stats["backend"] == "memory" and stats["complete"] is False
    assert stats["suppression"]["decisions"] == 0 and stats["response_times"]["incidents"] == 0
    assert main(["stats"]) == 0
    captured = capsys.readouterr()
    assert "keeps only its last decisions" in captured.err and "Noisiest DAGs: none" in captured.out


def test_state_check_of_an_unreachable_sql_store_fails(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'state.db'}"
    code, err = _fails(["state", "check", "--url", url], capsys)
    assert code == 1 and err.startswith("error: the sql state store at sqlite:///") and "unavailable" in err


def test_resolving_twice_fails(capsys: pytest.CaptureFixture[str]) -> None:
    incident_id = _open_incident()
    assert main(["incidents", "resolve", incident_id]) == 0
    capsys.readouterr()
    code, err = _fails(["incidents", "resolve", incident_id], capsys)
    assert code == 1 and f"cannot resolve incident {incident_id}: it is already resolved" in err
