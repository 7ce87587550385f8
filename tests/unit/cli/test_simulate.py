"""``simulate``: JSON and table output, ``--compare``, exit codes, and the ``python -m`` entry point."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.cli.simulate import SIMULATE, main
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation import read_events, simulate

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
REFUSED = "could not connect to server: Connection refused (host db-{n}.internal)"


def events_file(tmp_path: Path, *, extra: tuple[str, ...] = ()) -> Path:
    lines = [
        json.dumps(
            {
                "time": (T0 + timedelta(seconds=20 * i)).isoformat(),
                "dag": f"dag_{i % 3}",
                "task": f"t{i}",
                "exception": "psycopg2.OperationalError",
                "message": REFUSED.format(n=i),
            }
        )
        for i in range(6)
    ]
    lines.append(
        json.dumps(
            {
                "time": (T0 + timedelta(minutes=3)).isoformat(),
                "dag": "reports",
                "task": "render",
                "exception": "ValueError",
                # rich markup in untrusted text must come out as typed, not as styling
                "message": "bad template [bold red]{{ x }}[/bold red]",
            }
        )
    )
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


def policy_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(**options: Any) -> int:
    values = {"policy": None, "compare": None, "slack": "api", "settle": None, "silences": None, "top": 10}
    values["output"] = "table"
    values.update(options)
    return SIMULATE.run(argparse.Namespace(**values))


def test_json_output_is_the_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = events_file(tmp_path)
    policy = policy_file(tmp_path, "p.yaml", "throttle:\n  windows:\n    medium: 30m\n")
    assert run(file=str(path), policy=str(policy), output="json") == 0
    document = json.loads(capsys.readouterr().out)
    expected = simulate(read_events(path), AlertPolicy.from_yaml(policy), label="p.yaml").to_json()
    for volatile in ("incidents",):  # incident ids are random; their counts are not
        assert [(i["failures"], i["title"]) for i in document[volatile]] == [
            (i["failures"], i["title"]) for i in expected[volatile]
        ]
        document.pop(volatile), expected.pop(volatile)
    assert document == expected
    assert document["policy"] == "p.yaml"
    assert document["failures"] == 7


def test_table_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # titles on one line
    policy = policy_file(tmp_path, "p.yaml", "{}\n")
    assert run(file=str(events_file(tmp_path)), policy=str(policy)) == 0
    out = capsys.readouterr().out
    assert "7 events (7 final failures, 0 retries, 0 recoveries)" in out
    for heading in ("Per channel: sent vs folded", "Incidents (2)", "Causes (2)"):
        assert heading in out
    assert "psycopg2.OperationalError: could not connect to server" in out
    assert "[bold red]" in out  # shown as typed


def test_compare_two_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = events_file(tmp_path)
    cause = policy_file(tmp_path, "cause.yaml", "{}\n")
    per_task = policy_file(tmp_path, "per_task.yaml", "incidents:\n  correlate_by: []\n")
    assert run(file=str(path), policy=str(cause), compare=str(per_task), output="json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["policies"] == ["cause.yaml", "per_task.yaml"]
    assert document["incidents"] == [2, 7]
    slack = next(c for c in document["channels"] if c["name"] == "slack")
    assert slack["messages_change"] == slack["messages"][1] - slack["messages"][0] > 0
    assert run(file=str(path), policy=str(cause), compare=str(per_task)) == 0
    out = capsys.readouterr().out
    assert "A = cause.yaml, B = per_task.yaml" in out
    assert "messages A" in out and "Incidents: A vs B" in out


def test_without_policy_the_configured_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(file=str(events_file(tmp_path)), output="json", settle="5m") == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "configured (default policy)"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (('{"time": "2026-03-02T09:40:00Z", "dag": "d",',), "line 8: invalid JSON"),
        (('{"time": "noon", "dag": "d", "task": "t"}',), "line 8: time: not an ISO 8601 time"),
        (("", '{"time": "2026-03-02T09:40:00Z", "dag": "d", "tsk": "t"}'), "line 9: tsk: unknown field"),
    ],
)
def test_a_bad_line_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], words: str
) -> None:
    assert run(file=str(events_file(tmp_path, extra=extra)), policy=None) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert words in captured.err


def test_other_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = events_file(tmp_path)
    assert run(file=str(tmp_path / "missing.jsonl")) == 2
    assert "missing.jsonl: cannot read" in capsys.readouterr().err
    bad = policy_file(tmp_path, "bad.yaml", "throttle:\n  windows:\n    high: soon\n")
    assert run(file=str(path), policy=str(bad)) == 2
    assert "throttle.windows.high" in capsys.readouterr().err
    assert run(file=str(path), policy=str(tmp_path / "nope.yaml")) == 2
    assert "--policy" in capsys.readouterr().err
    assert run(file=str(path), policy=str(policy_file(tmp_path, "ok.yaml", "{}\n")), settle="soon") == 2
    assert "--settle 'soon'" in capsys.readouterr().err
    assert run(file=str(path), policy=str(tmp_path / "ok.yaml"), top=-1) == 2
    assert "--top -1" in capsys.readouterr().err


def test_silences_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = events_file(tmp_path)
    policy = policy_file(tmp_path, "p.yaml", "{}\n")
    silences = tmp_path / "silences.yaml"
    silences.write_text(
        "- id: reports-freeze\n"
        "  starts_at: '2026-03-02T09:00:00+00:00'\n"
        "  ends_at: '2026-03-02T11:00:00+00:00'\n"
        "  dag_ids: [reports]\n",
        encoding="utf-8",
    )
    assert run(file=str(path), policy=str(policy), silences=str(silences), output="json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["held"]["silenced"] == sum(c["silenced"] for c in document["channels"]) >= 1
    silences.write_text("- id: x\n  starts_at: '2026-03-02T09:00:00+00:00'\n", encoding="utf-8")
    assert run(file=str(path), policy=str(policy), silences=str(silences)) == 2
    assert "--silences silences.yaml" in capsys.readouterr().err


def test_parsed_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = policy_file(tmp_path, "p.yaml", "{}\n")
    assert (
        main([str(events_file(tmp_path)), "--policy", str(policy), "-o", "json", "--slack", "webhook"]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    slack = next(c for c in document["channels"] if c["name"] == "slack")
    assert slack["edits"] == 0  # an incoming webhook cannot edit


BIN = Path(sys.executable).parent
FRONT_ENDS = {
    "python -m": [sys.executable, "-m", "airflow_alerting.cli.simulate"],
    "airflow-alerting": [str(BIN / "airflow-alerting"), "simulate"],
    "airflow alerting": [str(BIN / "airflow"), "alerting", "simulate"],
}


@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_as_a_subprocess(tmp_path: Path, front_end: str) -> None:
    command = FRONT_ENDS[front_end]
    if not Path(command[0]).exists():
        pytest.skip(f"{command[0]} is not installed")
    policy = policy_file(tmp_path, "p.yaml", "{}\n")
    env = {**os.environ, "COLUMNS": "120"}
    good = subprocess.run(
        [*command, str(events_file(tmp_path)), "--policy", str(policy), "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["failures"] == 7
    bad_file = events_file(tmp_path, extra=("not json at all",))
    bad = subprocess.run(
        [*command, str(bad_file), "--policy", str(policy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert bad.returncode == 2
    assert "line 8: invalid JSON" in bad.stderr
    assert bad.stdout == ""
