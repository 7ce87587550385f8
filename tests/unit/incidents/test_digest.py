"""The maintenance digest: which incidents it reports and what its alert says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_alerting.incidents.digest import DIGEST_SHOWN, digest_alert, digest_candidates
from airflow_alerting.incidents.model import Incident, IncidentState
from airflow_alerting.model import AlertKind, Severity

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def inc(
    id: str = "i",
    severity: Severity = Severity.LOW,
    silenced: int = 0,
    digested: float | None = None,
    last_seen: float = 10,
    **kw,
) -> Incident:
    return Incident(
        id=id,
        key=f"k-{id}",
        title=f"Boom {id}",
        severity=severity,
        opened_at=T0,
        last_seen_at=T0 + timedelta(minutes=last_seen),
        silenced=silenced,
        digested_at=T0 + timedelta(minutes=digested) if digested is not None else None,
        **kw,
    )


# (id, incident, candidate)
CANDIDATE_CASES = [
    ("low never digested", inc(), True),
    ("silenced high", inc(severity=Severity.HIGH, silenced=1), True),
    ("high not silenced", inc(severity=Severity.HIGH), False),
    ("medium not silenced", inc(severity=Severity.MEDIUM), False),
    ("digested before last failure", inc(digested=5), True),
    ("digested after last failure", inc(digested=15), False),
    ("digested at last failure", inc(digested=10), False),
    ("resolved low still reported", inc(state=IncidentState.RESOLVED), True),
]


@pytest.mark.parametrize(
    ("incident", "expected"), [c[1:] for c in CANDIDATE_CASES], ids=[c[0] for c in CANDIDATE_CASES]
)
def test_digest_candidates(incident: Incident, expected: bool) -> None:
    assert (digest_candidates([incident]) == [incident]) is expected


def test_digest_alert_names_counts_and_dags() -> None:
    a = inc("a", failures=3, task_count=2, dag_count=2, dag_ids=("etl", "reports"))
    b = inc(
        "b",
        severity=Severity.HIGH,
        failures=5,
        silenced=5,
        task_count=1,
        dag_count=7,
        dag_ids=tuple(f"d{i}" for i in range(7)),
        state=IncidentState.RESOLVED,
    )
    alert = digest_alert([a, b], T0)
    assert alert.kind is AlertKind.CUSTOM and alert.dag_id == "alerting_digest" and alert.occurred_at == T0
    assert alert.title == "Alerting digest: 2 low-severity or silenced incidents, 8 failures (5 silenced)"
    line_a, line_b = alert.message.splitlines()
    assert line_a.startswith("- [low] Boom a: 3 failures in 2 tasks across 2 DAGs; DAGs etl, reports;")
    assert "silenced" not in line_a and "resolved" not in line_a
    assert "5 failures in 1 task across 7 DAGs, 5 silenced; DAGs d0, d1, d2, d3, d4 …;" in line_b
    assert "d5" not in line_b and line_b.endswith("; resolved")
    assert "first 2026-01-01 12:00, last 2026-01-01 12:10 UTC" in line_a


def test_digest_alert_singular() -> None:
    assert digest_alert([inc(failures=1)], T0).title.startswith(
        "Alerting digest: 1 low-severity or silenced incident,"
    )


@pytest.mark.parametrize(
    ("count", "more"), [(DIGEST_SHOWN, None), (DIGEST_SHOWN + 1, 1), (DIGEST_SHOWN + 12, 12)]
)
def test_digest_alert_bounded(count: int, more: int | None) -> None:
    incidents = [inc(f"i{n}", failures=1) for n in range(count)]
    lines = digest_alert(incidents, T0).message.splitlines()
    named = [line for line in lines if line.startswith("- [")]
    assert len(named) == min(count, DIGEST_SHOWN)
    assert f"Boom i{DIGEST_SHOWN - 1}:" in lines[DIGEST_SHOWN - 1]
    if more is None:
        assert len(lines) == count
    else:
        assert lines[-1] == f"- and {more} more incidents"
        assert f"Boom i{DIGEST_SHOWN}:" not in "\n".join(lines)
    assert f"{count} low-severity" in digest_alert(incidents, T0).title
