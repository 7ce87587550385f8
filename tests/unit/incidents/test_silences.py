"""Silences: validation, matching each criterion, JSON round trip, parsing the Variable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_alerting.incidents.silences import (
    Silence,
    SilenceError,
    active_silences,
    matching_silence,
    parse_silences,
)
from airflow_alerting.model import Alert, Severity

START = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=2)
DURING = START + timedelta(hours=1)
ALERT = Alert(dag_id="etl_sales", task_id="load_orders", tags=frozenset({"Team:Data", "nightly"}))


def silence(**kw) -> Silence:
    kw.setdefault("id", "s1")
    kw.setdefault("starts_at", START)
    kw.setdefault("ends_at", END)
    return Silence(**kw)


# --- validation ---------------------------------------------------------------------------------

# (id, kwargs, message fragment)
INVALID = [
    ("naive start", {"starts_at": START.replace(tzinfo=None), "dag_ids": ("*",)}, "timezone-aware"),
    ("naive end", {"ends_at": END.replace(tzinfo=None), "dag_ids": ("*",)}, "timezone-aware"),
    ("end equals start", {"ends_at": START, "dag_ids": ("*",)}, "ends_at: must be after"),
    (
        "end before start",
        {"ends_at": START - timedelta(seconds=1), "dag_ids": ("*",)},
        "ends_at: must be after",
    ),
    ("no matcher", {}, "at least one matcher"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_silence_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SilenceError, match=fragment):
        silence(**kwargs)


@pytest.mark.parametrize(
    "matcher",
    [
        {"dag_ids": ("*",)},
        {"task_ids": ("x",)},
        {"tags": ("x",)},
        {"severities": (Severity.LOW,)},
        {"incident_keys": ("x",)},
        {"fingerprints": ("x",)},
    ],
)
def test_any_single_matcher_is_enough(matcher: dict) -> None:
    assert silence(**matcher).id == "s1"


# --- matches ------------------------------------------------------------------------------------

# (id, silence kwargs, alert, severity, incident key, fingerprint, now, matches)
MATCH_CASES = [
    ("dag glob", {"dag_ids": ("etl_*",)}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("dag glob miss", {"dag_ids": ("ml_*",)}, ALERT, Severity.HIGH, "k", "fp", DURING, False),
    ("dag glob case-sensitive", {"dag_ids": ("ETL_*",)}, ALERT, Severity.HIGH, "k", "fp", DURING, False),
    ("any dag glob", {"dag_ids": ("ml_*", "*_sales")}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("task glob", {"task_ids": ("load_*",)}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("task glob miss", {"task_ids": ("extract_*",)}, ALERT, Severity.HIGH, "k", "fp", DURING, False),
    (
        "task glob vs dag alert",
        {"task_ids": ("*",)},
        Alert(dag_id="etl_sales"),
        Severity.HIGH,
        "k",
        "fp",
        DURING,
        False,
    ),
    ("tag case-insensitive", {"tags": ("team:data",)}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("tag upper", {"tags": ("NIGHTLY",)}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("tag any of", {"tags": ("x", "nightly")}, ALERT, Severity.HIGH, "k", "fp", DURING, True),
    ("tag miss", {"tags": ("team:ml",)}, ALERT, Severity.HIGH, "k", "fp", DURING, False),
    (
        "severity in",
        {"severities": (Severity.LOW, Severity.HIGH)},
        ALERT,
        Severity.HIGH,
        "k",
        "fp",
        DURING,
        True,
    ),
    ("severity out", {"severities": (Severity.LOW,)}, ALERT, Severity.HIGH, "k", "fp", DURING, False),
    (
        "incident key glob",
        {"incident_keys": ("cause=Operational*",)},
        ALERT,
        Severity.HIGH,
        "cause=OperationalError: x",
        "fp",
        DURING,
        True,
    ),
    (
        "incident key miss",
        {"incident_keys": ("cause=Timeout*",)},
        ALERT,
        Severity.HIGH,
        "cause=OperationalError: x",
        "fp",
        DURING,
        False,
    ),
    ("fingerprint exact", {"fingerprints": ("abc",)}, ALERT, Severity.HIGH, "k", "abc", DURING, True),
    (
        "fingerprint is not a glob",
        {"fingerprints": ("ab*",)},
        ALERT,
        Severity.HIGH,
        "k",
        "abc",
        DURING,
        False,
    ),
    (
        "all criteria AND",
        {"dag_ids": ("etl_*",), "severities": (Severity.LOW,)},
        ALERT,
        Severity.HIGH,
        "k",
        "fp",
        DURING,
        False,
    ),
    (
        "all criteria match",
        {"dag_ids": ("etl_*",), "tags": ("nightly",), "fingerprints": ("fp",)},
        ALERT,
        Severity.HIGH,
        "k",
        "fp",
        DURING,
        True,
    ),
    ("start inclusive", {"dag_ids": ("*",)}, ALERT, Severity.HIGH, "k", "fp", START, True),
    (
        "before start",
        {"dag_ids": ("*",)},
        ALERT,
        Severity.HIGH,
        "k",
        "fp",
        START - timedelta(microseconds=1),
        False,
    ),
    ("end exclusive", {"dag_ids": ("*",)}, ALERT, Severity.HIGH, "k", "fp", END, False),
    (
        "just before end",
        {"dag_ids": ("*",)},
        ALERT,
        Severity.HIGH,
        "k",
        "fp",
        END - timedelta(microseconds=1),
        True,
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "alert", "severity", "key", "fingerprint", "now", "expected"),
    [c[1:] for c in MATCH_CASES],
    ids=[c[0] for c in MATCH_CASES],
)
def test_matches(
    kwargs: dict, alert: Alert, severity: Severity, key: str, fingerprint: str, now: datetime, expected: bool
) -> None:
    s = silence(**kwargs)
    assert s.matches(alert, severity=severity, incident_key=key, fingerprint=fingerprint, now=now) is expected


def test_matching_silence_first_match_and_active() -> None:
    miss = silence(id="miss", dag_ids=("ml_*",))
    hit = silence(id="hit", dag_ids=("etl_*",))
    later = silence(id="later", dag_ids=("*",), starts_at=END, ends_at=END + timedelta(hours=1))
    got = matching_silence(
        [miss, hit, later], ALERT, severity=Severity.LOW, incident_key="k", fingerprint="f", now=DURING
    )
    assert got is hit
    assert (
        matching_silence([miss], ALERT, severity=Severity.LOW, incident_key="k", fingerprint="f", now=DURING)
        is None
    )
    # scheduled ones are kept, ended ones dropped
    assert [s.id for s in active_silences([miss, later], END)] == ["later"]


# --- JSON round trip and parsing ----------------------------------------------------------------

FULL = silence(
    comment="db upgrade",
    author="ops",
    dag_ids=("etl_*",),
    task_ids=("load_*",),
    tags=("team:data",),
    severities=(Severity.LOW, Severity.CRITICAL),
    incident_keys=("cause=*",),
    fingerprints=("abc",),
)


def test_json_round_trip() -> None:
    data = FULL.to_json()
    assert data["severities"] == ["low", "critical"]
    assert data["starts_at"] == "2026-12-01T02:00:00+00:00"
    assert Silence.from_json(data) == FULL


def test_from_json_defaults_and_single_string() -> None:
    s = Silence.from_json({"starts_at": START.isoformat(), "ends_at": END.isoformat(), "dag_ids": "etl_*"})
    assert s.dag_ids == ("etl_*",) and s.id  # a generated id
    assert (s.comment, s.author, s.task_ids) == ("", "", ())


def test_parse_silences_json() -> None:
    text = (
        '[{"id": "a", "starts_at": "2026-12-01T02:00:00+00:00", "ends_at": "2026-12-01T04:00:00+00:00",'
        ' "dag_ids": ["etl_*"], "severities": ["LOW"]}]'
    )
    (s,) = parse_silences(text)
    assert (s.id, s.starts_at, s.ends_at, s.dag_ids, s.severities) == (
        "a",
        START,
        END,
        ("etl_*",),
        (Severity.LOW,),
    )


def test_parse_silences_yaml() -> None:
    text = """
- id: a
  starts_at: "2026-12-01T02:00:00+00:00"
  ends_at: 2026-12-01T04:00:00+00:00   # YAML reads this one as a datetime itself
  tags: [team:data]
- id: b
  starts_at: "2026-12-01T02:00:00Z"
  ends_at: "2026-12-01T04:00:00Z"
  fingerprints: abc
"""
    a, b = parse_silences(text)
    assert (a.id, a.starts_at, a.ends_at, a.tags) == ("a", START, END, ("team:data",))
    assert (b.id, b.starts_at, b.ends_at, b.fingerprints) == ("b", START, END, ("abc",))


@pytest.mark.parametrize("text", ["", "null", "   "])
def test_parse_silences_empty(text: str) -> None:
    assert parse_silences(text) == []


GOOD = '{"starts_at": "2026-12-01T02:00:00+00:00", "ends_at": "2026-12-01T04:00:00+00:00", "dag_ids": ["*"]}'

# (id, second item JSON, expected message prefix)
ERROR_CASES = [
    (
        "end before start",
        '{"starts_at": "2026-12-01T04:00:00+00:00", "ends_at": "2026-12-01T02:00:00+00:00",'
        ' "dag_ids": ["*"]}',
        "silences[1].ends_at: must be after starts_at",
    ),
    (
        "missing start",
        '{"ends_at": "2026-12-01T02:00:00+00:00", "dag_ids": ["*"]}',
        "silences[1].starts_at: required",
    ),
    (
        "bad time",
        '{"starts_at": "tomorrow", "ends_at": "2026-12-01T02:00:00+00:00", "dag_ids": ["*"]}',
        "silences[1].starts_at: not an ISO 8601 time",
    ),
    (
        "naive time",
        '{"starts_at": "2026-12-01T02:00:00", "ends_at": "2026-12-01T04:00:00+00:00", "dag_ids": ["*"]}',
        "silences[1].starts_at: needs a UTC offset",
    ),
    ("unknown field", GOOD[:-1] + ', "dag_id": "x"}', "silences[1].dag_id: unknown field"),
    (
        "no matcher",
        '{"starts_at": "2026-12-01T02:00:00+00:00", "ends_at": "2026-12-01T04:00:00+00:00"}',
        "silences[1]: needs at least one matcher",
    ),
    ("bad severity", GOOD[:-1] + ', "severities": ["urgent"]}', "silences[1].severities: unknown severity"),
    ("non-string list", GOOD[:-1] + ', "tags": [1]}', "silences[1].tags: must be a list of strings"),
    ("not a mapping", '"etl_*"', "silences[1]: must be a mapping"),
]


@pytest.mark.parametrize(("item", "prefix"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_parse_silences_errors_name_item_and_field(item: str, prefix: str) -> None:
    with pytest.raises(SilenceError) as info:
        parse_silences(f"[{GOOD}, {item}]")
    assert str(info.value).startswith(prefix)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [('{"a": 1}', "silences: must be a list"), ("[unclosed", "silences: neither JSON nor YAML")],
)
def test_parse_silences_document_errors(text: str, fragment: str) -> None:
    with pytest.raises(SilenceError, match=fragment):
        parse_silences(text)


def test_parse_silences_names_custom_source() -> None:
    with pytest.raises(SilenceError, match=r"^alerting_silences\[0\]\.ends_at: must be after"):
        parse_silences(
            '[{"starts_at": "2026-12-01T04:00:00+00:00", "ends_at": "2026-12-01T02:00:00+00:00",'
            ' "tags": ["x"]}]',
            source="alerting_silences",
        )
