"""Correlation keys and titles: each correlate_by part, the fingerprint opt-out, secrets kept out."""

from __future__ import annotations

import pytest

from airflow_alerting.incidents.correlate import correlation_key, validate_correlate_by
from airflow_alerting.model import Alert, AlertKind, Classification, Severity

ALERT = Alert(
    dag_id="etl",
    task_id="load",
    exception_type="ValueError",
    message="bad row",
    tags=frozenset({"Team:Data", "nightly"}),
)
CLS = Classification(Severity.HIGH, (), rules=("db_down", "fallback"))
CAUSE = "ValueError: bad row"

# (id, correlate_by, expected key, expected title)
KEY_CASES = [
    ("cause", ("cause",), f"cause={CAUSE}", CAUSE),
    ("dag_id", ("dag_id",), "dag=etl", "dag=etl"),
    ("task_id", ("task_id",), "task=etl.load", "task=etl.load"),
    ("rule is the first", ("rule",), "rule=db_down", "rule=db_down"),
    ("tag prefix case-insensitive", ("tag:team",), "tag:team=Data", "tag:team=Data"),
    ("tag missing", ("tag:owner",), "tag:owner=-", "tag:owner=-"),
    ("cause scoped by dag", ("cause", "dag_id"), f"cause={CAUSE}|dag=etl", f"{CAUSE} (dag=etl)"),
    ("order kept", ("dag_id", "cause"), f"dag=etl|cause={CAUSE}", f"{CAUSE} (dag=etl)"),
    ("scope only", ("dag_id", "rule"), "dag=etl|rule=db_down", "dag=etl, rule=db_down"),
    ("fingerprint opt-out", (), "fp=FP", f"etl.load: {CAUSE}"),
]


@pytest.mark.parametrize(("by", "key", "title"), [c[1:] for c in KEY_CASES], ids=[c[0] for c in KEY_CASES])
def test_correlation_key(by: tuple[str, ...], key: str, title: str) -> None:
    assert correlation_key(ALERT, CLS, "FP", by) == (key, title)


def test_task_and_rule_placeholders() -> None:
    dag_alert = Alert(dag_id="etl", kind=AlertKind.DAG_FAILURE, message="x")
    key, _ = correlation_key(dag_alert, Classification(Severity.LOW, ()), "FP", ("task_id", "rule"))
    assert key == "task=etl.|rule=-"


@pytest.mark.parametrize(
    ("kind", "title"),
    [
        (AlertKind.TASK_FAILURE, "task failure without a message"),
        (AlertKind.DAG_FAILURE, "dag failure without a message"),
    ],
)
def test_cause_without_message(kind: AlertKind, title: str) -> None:
    assert correlation_key(Alert(dag_id="d", kind=kind), CLS, "FP", ("cause",)) == (f"cause={title}", title)


def test_user_title_wins_for_title_not_key() -> None:
    alert = Alert(dag_id="d", kind=AlertKind.CUSTOM, title="Nightly load late", message="x")
    key, title = correlation_key(alert, CLS, "FP", ("cause",))
    assert title == "Nightly load late" and "Nightly" not in key


def test_same_cause_in_different_dags_is_one_key() -> None:
    other = Alert(dag_id="reports", task_id="build", exception_type="ValueError", message="bad row")
    assert correlation_key(ALERT, CLS, "a", ("cause",)) == correlation_key(other, CLS, "b", ("cause",))
    assert (
        correlation_key(ALERT, CLS, "a", ("cause", "dag_id"))[0]
        != correlation_key(other, CLS, "b", ("cause", "dag_id"))[0]
    )


SECRET = "hunter2secret"


@pytest.mark.parametrize("by", [("cause",), ("cause", "dag_id"), ()], ids=["cause", "scoped", "fingerprint"])
@pytest.mark.parametrize(
    "alert",
    [
        Alert(
            dag_id="d",
            task_id="t",
            exception_type="OperationalError",
            message=f"could not connect to postgresql://u:{SECRET}@db/x",
        ),
        Alert(dag_id="d", kind=AlertKind.CUSTOM, title=f"dsn postgresql://u:{SECRET}@db/x", message="m"),
    ],
    ids=["message", "title"],
)
def test_secrets_never_reach_key_or_title(alert: Alert, by: tuple[str, ...]) -> None:
    key, title = correlation_key(alert, CLS, "FP", by)
    assert SECRET not in key and SECRET not in title
    assert "db/x" in title  # the rest of the text survives: only the secret goes


# (id, parts, problem fragment or None)
VALIDATE_CASES = [
    ("default", ["cause"], None),
    ("empty", [], None),
    ("all", ["cause", "dag_id", "task_id", "rule", "tag:team"], None),
    ("unknown", ["dag"], "unknown correlation field 'dag'"),
    ("bare tag", ["tag:"], "unknown correlation field 'tag:'"),
    ("twice", ["cause", "cause"], "lists a field twice"),
    ("tag twice", ["tag:a", "tag:a"], "lists a field twice"),
    ("two tags ok", ["tag:a", "tag:b"], None),
]


@pytest.mark.parametrize(
    ("parts", "problem"), [c[1:] for c in VALIDATE_CASES], ids=[c[0] for c in VALIDATE_CASES]
)
def test_validate_correlate_by(parts: list[str], problem: str | None) -> None:
    got = validate_correlate_by(parts)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got
