"""Analytics aggregated in SQL over :class:`~airflow_alerting.state.sql.SqlStore`'s tables.

The history table is grouped in the database (PostgreSQL, MySQL/MariaDB, SQLite), so a month
of history is never loaded into Python; only the groups come back.  Each result equals what
:mod:`.compute` gives on the same rows (checked by the integration tests), except that SQLite
computes durations from Julian days, which are exact to about a tenth of a millisecond.

Every query runs through the store's own wrapper, so a database problem is a
:class:`~airflow_alerting.state.base.StateUnavailableError` within the store's I/O budget, and
the history table gets the columns analytics needs if it was made by an earlier version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_alerting.analytics import compute
from airflow_alerting.analytics.results import (
    NO_KEY,
    NoiseRow,
    ResponseTimes,
    SuppressionSummary,
    Trend,
    VolumeBucket,
)
from airflow_alerting.model import HistoryEntry
from airflow_alerting.state.base import StateUnavailableError

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Table
    from sqlalchemy.engine import Connection

    from airflow_alerting.state.sql import SqlStore

_T = TypeVar("_T")

#: the added history columns analytics cannot work without
_NEEDED = frozenset({"alert_id", "dag_id", "task_id", "incident_id", "cause"})


class SqlAnalytics:
    """The SQL side of :class:`~airflow_alerting.analytics.Analytics`; same arguments, validated there.

    :param store: the SQL store whose tables are read
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    # --- plumbing -------------------------------------------------------------------------

    def _query(self, action: str, body: Callable[[Connection, Table], _T]) -> _T:
        store = self.store

        def run() -> _T:
            missing = _NEEDED - store._history_columns()
            if missing:
                raise RuntimeError(
                    f"the history table lacks the column(s) {', '.join(sorted(missing))}, which could "
                    "not be added (see the warning logged): run the ALTER TABLE it names"
                )
            with store._begin() as conn:
                return body(conn, store._schema().history)

        return store._run(f"analytics {action}", run)

    def _dialect(self) -> str:
        return self.store._dialect()

    # --- the API --------------------------------------------------------------------------

    def volume(self, since: datetime, seconds: int, by: str) -> list[VolumeBucket]:
        import sqlalchemy as sa

        def body(conn: Connection, t: Table) -> list[VolumeBucket]:
            bucket = _epoch_bucket(self._dialect(), t.c.at, seconds)
            key = {
                "severity": t.c.severity,
                "dag": sa.func.coalesce(t.c.dag_id, _text_literal(NO_KEY)),
                "incident": sa.func.coalesce(t.c.incident_id, _text_literal(NO_KEY)),
            }[by]
            query = (
                sa.select(bucket.label("bucket"), key.label("key"), *_count_columns(t))
                .where(t.c.alert_id.is_not(None), t.c.at >= since)
                .group_by(bucket, key)
            )
            rows = conn.execute(query).all()
            found = [
                VolumeBucket(
                    compute.bucket_start(int(row.bucket), seconds),
                    str(row.key),
                    int(row.alerts),
                    int(row.sent),
                    int(row.suppressed),
                )
                for row in rows
            ]
            return sorted(found, key=lambda b: (b.start, b.key))

        return self._query("volume", body)

    def noisiest(self, since: datetime, by: str, limit: int) -> list[NoiseRow]:
        import sqlalchemy as sa

        def body(conn: Connection, t: Table) -> list[NoiseRow]:
            keys: list[Any] = {
                "dag": [t.c.dag_id],
                "task": [t.c.dag_id, t.c.task_id],
                "cause": [t.c.cause],
            }[by]
            query = (
                sa.select(*keys, *_count_columns(t), sa.func.max(t.c.at).label("last_seen"))
                .where(t.c.alert_id.is_not(None), t.c.at >= since)
                .group_by(*keys)
            )
            if by == "cause":
                query = query.where(t.c.cause.is_not(None))
            rows = []
            for row in conn.execute(query):
                key = compute.noise_key(
                    by,
                    getattr(row, "dag_id", None),
                    getattr(row, "task_id", None),
                    getattr(row, "cause", None),
                )
                if key is not None:
                    rows.append(
                        NoiseRow(key, int(row.alerts), int(row.sent), int(row.suppressed), row.last_seen)
                    )
            # ranked in Python: ties are broken in code-point order, which no collation guarantees
            return compute.rank_noise(rows, limit)

        return self._query("noisiest", body)

    def suppression(self, since: datetime) -> SuppressionSummary:
        import sqlalchemy as sa

        def body(conn: Connection, t: Table) -> SuppressionSummary:
            query = (
                sa.select(t.c.reason, t.c.sent, sa.func.count().label("n"))
                .where(t.c.alert_id.is_not(None), t.c.at >= since)
                .group_by(t.c.reason, t.c.sent)
            )
            decisions = 0
            held: Counter[str] = Counter()
            for row in conn.execute(query):
                decisions += int(row.n)
                if not row.sent:
                    held[str(row.reason)] += int(row.n)
            return compute.summary_of(decisions, held)

        return self._query("suppression", body)

    def response_times(self, since: datetime) -> ResponseTimes:
        import sqlalchemy as sa

        store = self.store

        def run() -> ResponseTimes:
            t = store._schema().incident_record
            dialect = self._dialect()
            query = sa.select(
                sa.func.count().label("incidents"),
                sa.func.count(t.c.acknowledged_at).label("acknowledged"),
                sa.func.count(t.c.resolved_at).label("resolved"),
                sa.func.avg(_seconds_between(dialect, t.c.opened_at, t.c.acknowledged_at)).label("mtta"),
                sa.func.avg(_seconds_between(dialect, t.c.opened_at, t.c.resolved_at)).label("mttr"),
            ).where(t.c.opened_at >= since)
            with store._begin() as conn:
                row = conn.execute(query).one()
            return ResponseTimes(
                incidents=int(row.incidents),
                acknowledged=int(row.acknowledged),
                resolved=int(row.resolved),
                mtta_seconds=_scaled(dialect, row.mtta),
                mttr_seconds=_scaled(dialect, row.mttr),
            )

        return store._run("analytics response_times", run)

    def trending(
        self,
        now: datetime,
        recent: timedelta,
        baseline: timedelta,
        limit: int,
        *,
        min_recent: int,
        min_ratio: float,
    ) -> list[Trend]:
        import sqlalchemy as sa

        split = now - recent
        start = split - baseline

        def body(conn: Connection, t: Table) -> list[Trend]:
            is_recent = t.c.at >= split
            rank = sa.case(
                *((t.c.severity == label, value) for label, value in compute.SEVERITY_RANK.items()),
                else_=0,
            )
            query = (
                sa.select(
                    t.c.cause,
                    sa.func.count(sa.distinct(sa.case((is_recent, t.c.alert_id)))).label("recent"),
                    sa.func.count(sa.distinct(sa.case((~is_recent, t.c.alert_id)))).label("baseline"),
                    sa.func.max(sa.case((is_recent, rank), else_=0)).label("rank"),
                )
                .where(
                    t.c.alert_id.is_not(None),
                    t.c.cause.is_not(None),
                    t.c.at >= start,
                    t.c.at < now,
                )
                .group_by(t.c.cause)
            )
            counts = {
                str(row.cause): (int(row.recent), int(row.baseline), int(row.rank or 0))
                for row in conn.execute(query)
                if int(row.recent) > 0
            }
            return compute.rank_trends(
                counts, recent, baseline, limit, min_recent=min_recent, min_ratio=min_ratio
            )

        return self._query("trending", body)

    def history(
        self, *, since: datetime | None, limit: int, dag_id: str | None, severity: str | None
    ) -> list[HistoryEntry]:
        import sqlalchemy as sa

        from airflow_alerting.state.sql.store import history_from_row

        def body(conn: Connection, t: Table) -> list[HistoryEntry]:
            query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
            if since is not None:
                query = query.where(t.c.at >= since)
            if dag_id is not None:
                query = query.where(t.c.dag_id == dag_id)
            if severity is not None:
                query = query.where(t.c.severity == severity)
            return [history_from_row(row._mapping) for row in conn.execute(query)]

        if limit == 0:
            return []
        return self._query("history", body)


def _text_literal(value: str) -> ColumnElement[Any]:
    """A string constant rendered inline: PostgreSQL only sees that a SELECT expression equals its
    GROUP BY expression when both are the same text, and two bound parameters are not."""
    import sqlalchemy as sa

    return sa.literal_column("'" + value.replace("'", "''") + "'", sa.String())


def _epoch_bucket(dialect: str, at: Any, seconds: int) -> ColumnElement[Any]:
    """``floor(seconds since the epoch / seconds)`` for a UTC timestamp column, per dialect."""
    import sqlalchemy as sa

    width = sa.literal_column(str(int(seconds)), sa.Integer())
    if dialect == "postgresql":
        return sa.func.floor(sa.extract("epoch", at) / width)
    if dialect == "mysql":
        # TIMESTAMPDIFF is plain arithmetic on the stored UTC value; UNIX_TIMESTAMP would apply
        # the session time zone
        epoch = sa.func.timestampdiff(
            sa.literal_column("SECOND"), sa.literal_column("'1970-01-01 00:00:00'"), at
        )
        return sa.func.floor(epoch / width)
    if dialect == "sqlite":
        # SQLite's timestamps are text; strftime('%s') reads them as UTC and truncates the
        # fraction, and integer division floors for the positive values it gives
        return sa.cast(sa.func.strftime(sa.literal_column("'%s'"), at), sa.Integer()) // width
    raise StateUnavailableError(f"analytics does not support the {dialect} dialect")


def _seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` as a number: seconds (microseconds on MySQL, see :func:`_scaled`), or NULL."""
    import sqlalchemy as sa

    if dialect == "postgresql":
        return sa.extract("epoch", end - start)
    if dialect == "mysql":
        return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, end)
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * sa.literal_column("86400.0")
    raise StateUnavailableError(f"analytics does not support the {dialect} dialect")


def _scaled(dialect: str, value: Any) -> float | None:
    if value is None:
        return None
    return float(value) / 1_000_000 if dialect == "mysql" else float(value)


def _count_columns(t: Table) -> list[ColumnElement[Any]]:
    """Distinct alerts, decisions to send, decisions not to send."""
    import sqlalchemy as sa

    return [
        sa.func.count(sa.distinct(t.c.alert_id)).label("alerts"),
        sa.func.sum(sa.case((t.c.sent, 1), else_=0)).label("sent"),
        sa.func.sum(sa.case((t.c.sent, 0), else_=1)).label("suppressed"),
    ]
