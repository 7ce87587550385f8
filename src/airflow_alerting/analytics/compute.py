"""Analytics computed in Python over history entries and incidents.

The document stores (memory, Airflow Variables) are analysed this way, from their bounded
history; the SQL store aggregates in SQL (:mod:`.sql`) and its results must equal these on the
same rows, which the integration tests check.  Every function here is pure.

Which history entries count: only decisions about an alert callback (entries with an
``alert_id``).  Redeliveries, digests, acknowledgement and resolution messages, recoveries and
entries written before analytics existed carry none: they are not alerts, and counting them would
count one failure several times.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone

from airflow_alerting.analytics.results import (
    NO_KEY,
    NoiseRow,
    ResponseTimes,
    SuppressionSummary,
    Trend,
    VolumeBucket,
)
from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import HistoryEntry, Severity

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: the groupings :func:`volume` accepts
VOLUME_BY = ("severity", "dag", "incident")
#: the groupings :func:`noisiest` accepts
NOISIEST_BY = ("dag", "task", "cause")
#: a cause trends when it failed at least this often in the recent window ...
MIN_RECENT = 3
#: ... and at least this many times as often per hour as in the baseline window
MIN_RATIO = 2.0
#: severity labels by rank, for "the highest severity" of a cause
SEVERITY_RANK = {s.label: int(s) for s in Severity}


# --- validation: bad input names the argument ----------------------------------------------------


def aware(name: str, value: datetime) -> datetime:
    """``value`` in UTC; a naive or non-datetime value raises ``ValueError`` naming ``name``."""
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got {value!r}")
    return value.astimezone(timezone.utc)


def bucket_seconds(bucket: timedelta) -> int:
    """The width of a volume bucket in whole seconds (at least one)."""
    if not isinstance(bucket, timedelta):
        raise ValueError(f"bucket must be a timedelta, got {type(bucket).__name__}")
    seconds = bucket.total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"bucket must be a whole number of seconds, at least 1 s, got {bucket}")
    return int(seconds)


def positive_window(name: str, value: timedelta) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(f"{name} must be a positive timedelta, got {value!r}")
    return value


def choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def limit_of(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limit must be a non-negative integer, got {value!r}")
    return value


def severity_label(value: str | Severity | None) -> str | None:
    if value is None:
        return None
    try:
        return Severity.parse(value).label
    except ValueError as err:
        raise ValueError(f"severity: {err}") from None


# --- the computations ------------------------------------------------------------------------------


def alert_decisions(entries: Iterable[HistoryEntry], since: datetime) -> list[HistoryEntry]:
    """The entries that are decisions about an alert callback, at or after ``since``."""
    return [e for e in entries if e.alert_id is not None and e.at >= since]


def bucket_start(index: int, seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=index * seconds)


def volume(entries: Iterable[HistoryEntry], since: datetime, seconds: int, by: str) -> list[VolumeBucket]:
    """Alerts per ``seconds``-wide bucket (aligned to the epoch) and key, oldest bucket first."""
    key_of: Callable[[HistoryEntry], str] = {
        "severity": lambda e: e.severity,
        "dag": lambda e: e.dag_id or NO_KEY,
        "incident": lambda e: e.incident_id or NO_KEY,
    }[by]
    width = timedelta(seconds=seconds)
    groups: dict[tuple[int, str], list[HistoryEntry]] = defaultdict(list)
    for entry in alert_decisions(entries, since):
        groups[((entry.at - EPOCH) // width, key_of(entry))].append(entry)
    return [
        VolumeBucket(bucket_start(index, seconds), key, *_counts(group))
        for (index, key), group in sorted(groups.items())
    ]


def noise_key(by: str, dag_id: str | None, task_id: str | None, cause: str | None) -> str | None:
    """The DAG, ``dag.task`` (the DAG alone for DAG-level alerts) or cause counted; ``None``: no cause."""
    if by == "cause":
        return cause
    dag = dag_id or NO_KEY
    if by == "dag":
        return dag
    return f"{dag}.{task_id}" if task_id else dag


def noisiest(entries: Iterable[HistoryEntry], since: datetime, by: str, limit: int) -> list[NoiseRow]:
    """The keys with most alerts (ties: the key in code-point order)."""
    groups: dict[str, list[HistoryEntry]] = defaultdict(list)
    for entry in alert_decisions(entries, since):
        key = noise_key(by, entry.dag_id, entry.task_id, entry.cause)
        if key is not None:
            groups[key].append(entry)
    rows = [
        NoiseRow(key, *_counts(group), last_seen=max(e.at for e in group)) for key, group in groups.items()
    ]
    return rank_noise(rows, limit)


def rank_noise(rows: Iterable[NoiseRow], limit: int) -> list[NoiseRow]:
    """Most alerts first; ties in code-point order of the key, whatever a database's collation says."""
    return sorted(rows, key=lambda r: (-r.alerts, r.key))[:limit]


def suppression(entries: Iterable[HistoryEntry], since: datetime) -> SuppressionSummary:
    decisions = alert_decisions(entries, since)
    held = Counter(e.reason for e in decisions if not e.sent)
    return summary_of(len(decisions), held)


def summary_of(decisions: int, held: Counter[str]) -> SuppressionSummary:
    suppressed = sum(held.values())
    return SuppressionSummary(
        decisions=decisions,
        sent=decisions - suppressed,
        suppressed=suppressed,
        ratio=suppressed / decisions if decisions else 0.0,
        by_reason=dict(sorted(held.items())),
    )


def response_times(incidents: Iterable[Incident], since: datetime) -> ResponseTimes:
    """MTTA and MTTR of the incidents opened at or after ``since``."""
    opened = [i for i in incidents if i.opened_at >= since]
    to_ack = [i.time_to_acknowledge.total_seconds() for i in opened if i.time_to_acknowledge is not None]
    to_resolve = [i.time_to_resolve.total_seconds() for i in opened if i.time_to_resolve is not None]
    return ResponseTimes(
        incidents=len(opened),
        acknowledged=len(to_ack),
        resolved=len(to_resolve),
        mtta_seconds=sum(to_ack) / len(to_ack) if to_ack else None,
        mttr_seconds=sum(to_resolve) / len(to_resolve) if to_resolve else None,
    )


def trending(
    entries: Iterable[HistoryEntry],
    now: datetime,
    recent: timedelta,
    baseline: timedelta,
    limit: int,
    *,
    min_recent: int = MIN_RECENT,
    min_ratio: float = MIN_RATIO,
) -> list[Trend]:
    """Causes failing faster in ``[now - recent, now)`` than in the ``baseline`` before it."""
    split = now - recent
    start = split - baseline
    recent_ids: dict[str, set[str]] = defaultdict(set)
    baseline_ids: dict[str, set[str]] = defaultdict(set)
    worst: dict[str, int] = {}
    for entry in alert_decisions(entries, start):
        if entry.cause is None or entry.alert_id is None or entry.at >= now:
            continue
        if entry.at >= split:
            recent_ids[entry.cause].add(entry.alert_id)
            rank = SEVERITY_RANK.get(entry.severity, 0)
            worst[entry.cause] = max(worst.get(entry.cause, 0), rank)
        else:
            baseline_ids[entry.cause].add(entry.alert_id)
    counts = {
        cause: (len(ids), len(baseline_ids.get(cause, ())), worst.get(cause, 0))
        for cause, ids in recent_ids.items()
    }
    return rank_trends(counts, recent, baseline, limit, min_recent=min_recent, min_ratio=min_ratio)


def rank_trends(
    counts: dict[str, tuple[int, int, int]],
    recent: timedelta,
    baseline: timedelta,
    limit: int,
    *,
    min_recent: int,
    min_ratio: float,
) -> list[Trend]:
    """Trends from ``cause -> (recent failures, baseline failures, highest recent severity rank)``."""
    recent_hours = recent.total_seconds() / 3600
    baseline_hours = baseline.total_seconds() / 3600
    trends = []
    for cause, (now_count, before_count, rank) in counts.items():
        recent_rate = now_count / recent_hours
        baseline_rate = before_count / baseline_hours
        # a cause unseen in the baseline is taken to have failed once in it: a finite, large ratio
        ratio = recent_rate / max(baseline_rate, 1 / baseline_hours)
        if now_count < min_recent or ratio < min_ratio:
            continue
        label = Severity(rank).label if rank in SEVERITY_RANK.values() else "low"
        trends.append(Trend(cause, now_count, before_count, recent_rate, baseline_rate, ratio, label))
    trends.sort(key=lambda t: (-t.ratio, -t.recent, t.cause))
    return trends[:limit]


def filter_history(
    entries: Iterable[HistoryEntry],
    *,
    since: datetime | None,
    limit: int,
    dag_id: str | None,
    severity: str | None,
) -> list[HistoryEntry]:
    """Entries (given newest first) matching every filter given, at most ``limit``."""
    found: list[HistoryEntry] = []
    for entry in entries:
        if len(found) >= limit:
            break
        if since is not None and entry.at < since:
            continue
        if dag_id is not None and entry.dag_id != dag_id:
            continue
        if severity is not None and entry.severity != severity:
            continue
        found.append(entry)
    return found


def _counts(group: Sequence[HistoryEntry]) -> tuple[int, int, int]:
    """(distinct alerts, decisions to send, decisions not to send)."""
    sent = sum(1 for e in group if e.sent)
    return len({e.alert_id for e in group}), sent, len(group) - sent
