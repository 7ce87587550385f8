"""What the analytics API returns: frozen dataclasses with a JSON form.

``to_json()`` gives JSON-serialisable dicts (ISO-8601 datetimes, seconds as floats) for the
CLI's ``--output json`` and a UI; the field names are the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from airflow_alerting.model import HistoryEntry

_NO_COUNTS: Mapping[str, int] = MappingProxyType({})

#: the key of alerts that have no value for the grouping (e.g. a retry has no incident)
NO_KEY = "-"


@dataclass(frozen=True)
class VolumeBucket:
    """Alerts in one time bucket with one key (a severity, a DAG or an incident).

    :param start: start of the bucket (buckets are aligned to the Unix epoch, so hourly buckets
        start on the hour)
    :param key: the severity label, DAG id or incident id; :data:`NO_KEY` when the alert has none
    :param alerts: distinct alert callbacks (a failure routed to three channels is one alert)
    :param sent: channel decisions to send
    :param suppressed: channel decisions not to send (throttled, correlated, silenced, ...)
    """

    start: datetime
    key: str
    alerts: int
    sent: int
    suppressed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "key": self.key,
            "alerts": self.alerts,
            "sent": self.sent,
            "suppressed": self.suppressed,
        }


@dataclass(frozen=True)
class NoiseRow:
    """One DAG, task or cause with its alert counts.

    :param key: the DAG id, ``dag.task`` (the DAG id alone for DAG-level alerts) or cause
    :param alerts: distinct alert callbacks
    :param sent: channel decisions to send
    :param suppressed: channel decisions not to send
    :param last_seen: the latest decision
    """

    key: str
    alerts: int
    sent: int
    suppressed: int
    last_seen: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "alerts": self.alerts,
            "sent": self.sent,
            "suppressed": self.suppressed,
            "last_seen": self.last_seen.isoformat(),
        }


@dataclass(frozen=True)
class SuppressionSummary:
    """How many channel decisions held a notification back, and why.

    :param decisions: channel decisions about alerts
    :param sent: decisions to send
    :param suppressed: decisions not to send
    :param ratio: ``suppressed / decisions``; ``0.0`` when there were no decisions
    :param by_reason: suppressed decisions by reason (``throttled``, ``correlated``, ``silenced`` ...)
    """

    decisions: int
    sent: int
    suppressed: int
    ratio: float
    by_reason: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)

    def to_json(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "sent": self.sent,
            "suppressed": self.suppressed,
            "ratio": self.ratio,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


@dataclass(frozen=True)
class ResponseTimes:
    """Incidents opened in the period and how fast people reacted.

    :param incidents: incidents opened
    :param acknowledged: of those, acknowledged (whether resolved later or not)
    :param resolved: of those, resolved (by recovery or by hand)
    :param mtta_seconds: mean time from opening to acknowledgement; ``None`` when none was acknowledged
    :param mttr_seconds: mean time from opening to resolution; ``None`` when none was resolved
    """

    incidents: int
    acknowledged: int
    resolved: int
    mtta_seconds: float | None
    mttr_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "acknowledged": self.acknowledged,
            "resolved": self.resolved,
            "mtta_seconds": self.mtta_seconds,
            "mttr_seconds": self.mttr_seconds,
        }


@dataclass(frozen=True)
class Trend:
    """A cause whose failure rate rose: the recent window against the baseline before it.

    :param cause: the cause (the incident's title)
    :param recent: failures in the recent window
    :param baseline: failures in the baseline window (which ends where the recent one starts)
    :param recent_per_hour: ``recent`` per hour of the recent window
    :param baseline_per_hour: ``baseline`` per hour of the baseline window
    :param ratio: ``recent_per_hour`` over ``baseline_per_hour``, where a baseline with no failure
        counts as one failure in the whole baseline window (so a new cause has a finite ratio)
    :param severity: the highest severity of its recent failures, so a rise is seen before it is critical
    """

    cause: str
    recent: int
    baseline: int
    recent_per_hour: float
    baseline_per_hour: float
    ratio: float
    severity: str = "low"

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "recent": self.recent,
            "baseline": self.baseline,
            "recent_per_hour": self.recent_per_hour,
            "baseline_per_hour": self.baseline_per_hour,
            "ratio": self.ratio,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class AnalyticsReport:
    """Everything :class:`~airflow_alerting.analytics.Analytics` computes, over one period.

    :param since: start of the period
    :param now: end of the period (and the trending windows' end)
    :param complete: ``False`` when the store keeps only a bounded history (Variables, memory)
    :param bucket_seconds: width of the volume buckets
    :param volume: alerts over time by severity
    :param noisiest_dags: the DAGs with most alerts
    :param noisiest_tasks: the tasks with most alerts
    :param noisiest_causes: the causes with most alerts
    :param suppression: the suppression ratio and its reasons
    :param response_times: MTTA and MTTR
    :param trending: causes whose rate is rising
    """

    since: datetime
    now: datetime
    complete: bool
    bucket_seconds: float
    volume: tuple[VolumeBucket, ...]
    noisiest_dags: tuple[NoiseRow, ...]
    noisiest_tasks: tuple[NoiseRow, ...]
    noisiest_causes: tuple[NoiseRow, ...]
    suppression: SuppressionSummary
    response_times: ResponseTimes
    trending: tuple[Trend, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "now": self.now.isoformat(),
            "complete": self.complete,
            "bucket_seconds": self.bucket_seconds,
            "volume": [b.to_json() for b in self.volume],
            "noisiest": {
                "dag": [r.to_json() for r in self.noisiest_dags],
                "task": [r.to_json() for r in self.noisiest_tasks],
                "cause": [r.to_json() for r in self.noisiest_causes],
            },
            "suppression": self.suppression.to_json(),
            "response_times": self.response_times.to_json(),
            "trending": [t.to_json() for t in self.trending],
        }


def history_entry_json(entry: HistoryEntry) -> dict[str, Any]:
    """A history entry for JSON output: every field, unknown ones as ``null``."""
    return {
        "incident_id": None,
        "dag_id": None,
        "task_id": None,
        "alert_id": None,
        "cause": None,
        **entry.to_json(),
    }
