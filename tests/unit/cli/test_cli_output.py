"""Output helpers: untrusted text stays plain text, JSON is one document, durations read naturally."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_alerting.cli.output import clean, human_duration, print_json, print_table
from airflow_alerting.cli.runtime import duration, positive_int, timestamp


def test_clean_replaces_control_characters_and_newlines() -> None:
    assert clean("a\x1b[31mred\x1b[0m\nb\x9bc") == "a?[31mred?[0m b?c"
    assert clean(None) == "-"
    assert clean(datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc)) == "2026-01-02T03:04:05+00:00"


def test_tables_print_markup_in_data_literally(capsys: pytest.CaptureFixture[str]) -> None:
    print_table("T", ("a", "b"), [("[bold red]boom[/]", "\x1b[2Jcleared")])
    out = capsys.readouterr().out
    assert "[bold red]boom[/]" in out
    assert "\x1b" not in out and "?[2Jcleared" in out


def test_empty_tables_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    print_table("Silences", ("id",), [], empty="none")
    assert capsys.readouterr().out.strip() == "Silences: none"


def test_json_is_one_ascii_document(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"at": datetime(2026, 1, 1, tzinfo=timezone.utc), "took": timedelta(seconds=90), "x": "é\x85"})
    out = capsys.readouterr().out
    assert out.isascii()
    assert json.loads(out) == {"at": "2026-01-01T00:00:00+00:00", "took": 90.0, "x": "é\x85"}


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, "-"), (0, "0s"), (59.6, "1m"), (90, "1m30s"), (90061, "1d1h1m1s")]
)
def test_human_duration(seconds: float | None, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.mark.parametrize(
    ("text", "value"),
    [("90s", timedelta(seconds=90)), ("2h", timedelta(hours=2)), ("1d12h", timedelta(days=1, hours=12))],
)
def test_duration_accepts_compact_forms(text: str, value: timedelta) -> None:
    assert duration(text) == value


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-1h", "0s", "1h2d"])
def test_duration_refuses_everything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_timestamps_without_offset_are_utc() -> None:
    assert timestamp("2026-12-01T02:00") == datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
    assert timestamp("2026-12-01T02:00+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO 8601 time"):
        timestamp("next monday")


def test_positive_int() -> None:
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
