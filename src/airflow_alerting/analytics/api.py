"""The analytics API shared by ``airflow alerting history|stats`` and, later, a UI."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow_alerting.analytics import compute
from airflow_alerting.analytics.results import (
    AnalyticsReport,
    NoiseRow,
    ResponseTimes,
    SuppressionSummary,
    Trend,
    VolumeBucket,
)
from airflow_alerting.model import HistoryEntry, Severity

if TYPE_CHECKING:
    from airflow_alerting.analytics.sql import SqlAnalytics
    from airflow_alerting.incidents.model import Incident
    from airflow_alerting.state.base import StateStore

#: incidents a document store is asked for (its own bound applies too)
DOCUMENT_INCIDENT_LIMIT = 10_000
#: history entries asked of a store that declares no ``history_limit``
FALLBACK_HISTORY_LIMIT = 100_000
#: ``report()``'s volume buckets: hourly up to this span, daily beyond
HOURLY_UP_TO = timedelta(days=2)


class Analytics:
    """Alert volume, the noisiest DAGs, tasks and causes, suppression, MTTA/MTTR and trending causes.

    Over a :class:`~airflow_alerting.state.sql.SqlStore` everything is aggregated in SQL over the
    whole retained history (``history_retention``, 30 days by default) and every incident record.
    Over a document store (memory, Airflow Variables) the same figures come from the store's
    bounded history (its last ``history_limit`` decisions, 500 by default), so they cover a shorter
    period than asked when alerts are frequent: :attr:`complete` is ``False`` then.

    Only decisions about alert callbacks count (see :mod:`airflow_alerting.analytics.compute`).
    Every method raises ``ValueError`` naming the argument on bad input, and
    :class:`~airflow_alerting.state.base.StateUnavailableError` when the store cannot be read.

    :param store: the state store the alert managers write to
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._sql: SqlAnalytics | None = None
        from airflow_alerting.state.sql import SqlStore

        if isinstance(store, SqlStore):
            from airflow_alerting.analytics.sql import SqlAnalytics

            self._sql = SqlAnalytics(store)

    @property
    def complete(self) -> bool:
        """``True`` when the store keeps the whole history (SQL); ``False`` for a bounded history."""
        return self._sql is not None

    # --- the document stores' inputs -----------------------------------------------------------

    def _entries(self) -> list[HistoryEntry]:
        limit = getattr(self.store, "history_limit", FALLBACK_HISTORY_LIMIT)
        return self.store.history(limit=max(1, int(limit)))

    def _incidents(self) -> list[Incident]:
        return self.store.incidents(limit=DOCUMENT_INCIDENT_LIMIT)

    # --- the API ------------------------------------------------------------------------------

    def volume(
        self, since: datetime, bucket: timedelta = timedelta(hours=1), by: str = "severity"
    ) -> list[VolumeBucket]:
        """Alerts over time: one row per bucket and key, oldest first, empty buckets left out.

        :param since: count decisions at or after this time (timezone-aware)
        :param bucket: bucket width, whole seconds; buckets are aligned to the Unix epoch
        :param by: ``"severity"``, ``"dag"`` or ``"incident"``
        """
        since = compute.aware("since", since)
        seconds = compute.bucket_seconds(bucket)
        by = compute.choice("by", by, compute.VOLUME_BY)
        if self._sql is not None:
            return self._sql.volume(since, seconds, by)
        return compute.volume(self._entries(), since, seconds, by)

    def noisiest(self, since: datetime, by: str = "dag", limit: int = 10) -> list[NoiseRow]:
        """The DAGs, tasks or causes with most alerts, most first (ties by name).

        :param since: count decisions at or after this time (timezone-aware)
        :param by: ``"dag"``, ``"task"`` (``dag.task``) or ``"cause"`` (the incident's title;
            retries, which join no incident, have none)
        :param limit: at most this many rows
        """
        since = compute.aware("since", since)
        by = compute.choice("by", by, compute.NOISIEST_BY)
        limit = compute.limit_of(limit)
        if self._sql is not None:
            return self._sql.noisiest(since, by, limit)
        return compute.noisiest(self._entries(), since, by, limit)

    def suppression(self, since: datetime) -> SuppressionSummary:
        """How many channel decisions held a notification back, and why.

        :param since: count decisions at or after this time (timezone-aware)
        """
        since = compute.aware("since", since)
        if self._sql is not None:
            return self._sql.suppression(since)
        return compute.suppression(self._entries(), since)

    def response_times(self, since: datetime) -> ResponseTimes:
        """MTTA and MTTR of the incidents opened at or after ``since``.

        :param since: timezone-aware
        """
        since = compute.aware("since", since)
        if self._sql is not None:
            return self._sql.response_times(since)
        return compute.response_times(self._incidents(), since)

    def trending(
        self,
        now: datetime,
        recent: timedelta = timedelta(hours=1),
        baseline: timedelta = timedelta(days=1),
        limit: int = 10,
        *,
        min_recent: int = compute.MIN_RECENT,
        min_ratio: float = compute.MIN_RATIO,
    ) -> list[Trend]:
        """Causes whose failure rate is rising: ``[now - recent, now)`` against the ``baseline`` before it.

        A cause trends when it failed at least ``min_recent`` times recently and at least
        ``min_ratio`` times as often per hour as in the baseline (a cause absent from the baseline
        counts as one failure there).  Highest ratio first.

        :param now: end of the recent window (timezone-aware)
        :param recent: the recent window
        :param baseline: the window before it
        :param limit: at most this many causes
        :param min_recent: failures the recent window needs
        :param min_ratio: rise the recent rate needs over the baseline rate
        """
        now = compute.aware("now", now)
        recent = compute.positive_window("recent", recent)
        baseline = compute.positive_window("baseline", baseline)
        limit = compute.limit_of(limit)
        if isinstance(min_recent, bool) or not isinstance(min_recent, int) or min_recent < 1:
            raise ValueError(f"min_recent must be a positive integer, got {min_recent!r}")
        if not min_ratio > 0:
            raise ValueError(f"min_ratio must be positive, got {min_ratio!r}")
        if self._sql is not None:
            return self._sql.trending(
                now, recent, baseline, limit, min_recent=min_recent, min_ratio=min_ratio
            )
        return compute.trending(
            self._entries(), now, recent, baseline, limit, min_recent=min_recent, min_ratio=min_ratio
        )

    def history(
        self,
        since: datetime | None = None,
        limit: int = 100,
        dag_id: str | None = None,
        severity: str | Severity | None = None,
    ) -> list[HistoryEntry]:
        """Recorded decisions, newest first: every kind (alerts, redeliveries, digests, resolutions).

        :param since: only decisions at or after this time (timezone-aware)
        :param limit: at most this many
        :param dag_id: only this DAG's
        :param severity: only this severity's (``"high"``, ``Severity.HIGH`` ...)
        """
        since = compute.aware("since", since) if since is not None else None
        limit = compute.limit_of(limit)
        label = compute.severity_label(severity)
        if self._sql is not None:
            return self._sql.history(since=since, limit=limit, dag_id=dag_id, severity=label)
        return compute.filter_history(
            self._entries(), since=since, limit=limit, dag_id=dag_id, severity=label
        )

    def report(self, since: datetime, now: datetime, *, limit: int = 10) -> AnalyticsReport:
        """Everything above over ``[since, now]``: hourly volume up to two days, daily beyond.

        :param since: start of the period (timezone-aware)
        :param now: end of the period, and of the trending windows
        :param limit: rows of each noisiest list and of the trends
        """
        since = compute.aware("since", since)
        now = compute.aware("now", now)
        if now < since:
            raise ValueError(f"now ({now.isoformat()}) is before since ({since.isoformat()})")
        bucket = timedelta(hours=1) if now - since <= HOURLY_UP_TO else timedelta(days=1)
        return AnalyticsReport(
            since=since,
            now=now,
            complete=self.complete,
            bucket_seconds=bucket.total_seconds(),
            volume=tuple(b for b in self.volume(since, bucket, "severity") if b.start <= now),
            noisiest_dags=tuple(self.noisiest(since, "dag", limit)),
            noisiest_tasks=tuple(self.noisiest(since, "task", limit)),
            noisiest_causes=tuple(self.noisiest(since, "cause", limit)),
            suppression=self.suppression(since),
            response_times=self.response_times(since),
            trending=tuple(self.trending(now, limit=limit)),
        )
