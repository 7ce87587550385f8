"""Claims: who sends, decided by the database (see the package docstring and ``docs/state-sql.md``).

The claim statements are built once per shape and reused; :class:`_ClaimOperations` runs them.
Losing, suppressing, confirming, releasing and rolling back an expired claim are here too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_alerting import throttle
from airflow_alerting.model import Severity
from airflow_alerting.state.base import Claim, StateUnavailableError
from airflow_alerting.state.sql.claim_rows import (
    _EMPTY_SOURCES,
    _held_decision,
    _sending_decision,
    _state_from_row,
    _state_values,
)
from airflow_alerting.state.sql.clock import _Clock
from airflow_alerting.state.sql.connection import _upsert_insert
from airflow_alerting.state.sql.core import _SqlCore
from airflow_alerting.state.sql.schema import _schema

if TYPE_CHECKING:
    from sqlalchemy import Column, Table
    from sqlalchemy.engine import Connection, Row
    from sqlalchemy.sql.elements import ColumnElement

#: a claim, a suppression and a roll-back can interleave with other workers; each retry means another
#: worker changed the row, so a handful is plenty and more means something is badly wrong
_CLAIM_ATTEMPTS = 20
#: compare-and-set retries for release (it only conflicts with concurrent suppressions)
_RELEASE_ATTEMPTS = 20


# --- the claim statements -----------------------------------------------------------------


@dataclass(frozen=True)
class _ClaimSql:
    """The statements of one claim shape, built once and reused.

    Building SQLAlchemy expressions and their cache keys costs more CPU than the database round
    trips, and in an alert storm dozens of processes claim at once on a couple of cores.
    """

    #: MySQL: ``INSERT IGNORE`` of a neutral row, so that the claim can be a conditional UPDATE
    ensure_row: Any
    #: PostgreSQL/SQLite: the upsert returning the winner's row; MySQL: the conditional UPDATE
    claim: Any
    #: MySQL: reads back the winner's row (under the row lock of the update)
    claimed_row: Any
    #: counts a held-back occurrence if the row still holds it back (``None``: zero window)
    suppress: Any
    #: MySQL: reads back the row after a suppression
    suppressed_row: Any
    #: PostgreSQL, positive window: the claim and the suppression in one upsert, which claims a
    #: claimable row and counts a held-back occurrence otherwise; the winner finds its token in the
    #: row returned, a loser the running summary (``None``: use ``claim`` then ``suppress``)
    claim_or_suppress: Any = None


@cache
def _claim_sql(
    dialect: str, prefix: str, injected: bool, positive_window: bool, escalated: bool
) -> _ClaimSql:
    import sqlalchemy as sa

    t = _schema(prefix).channel_state
    clock = _Clock(dialect, injected)
    key = sa.and_(t.c.fingerprint == sa.bindparam("p_fp"), t.c.channel == sa.bindparam("p_channel"))
    severity = sa.bindparam("p_severity", type_=sa.SmallInteger())
    claimable = _claimable(t, clock, severity, positive_window, escalated)
    # MySQL evaluates single-table UPDATE assignments left to right with the values already
    # assigned, so every column is read before it is overwritten; PostgreSQL and SQLite read the
    # old row throughout, where the order does not matter
    assignments: list[tuple[Column[Any], Any]] = [
        # the state before the claim (settled: expired claims are rolled back beforehand), kept for
        # release and returned to the winner, whose notification reports the suppressed counts
        (t.c.previous_sent_at, t.c.last_sent_at),
        (t.c.previous_sent_severity, t.c.last_sent_severity),
        (t.c.previous_suppressed_count, t.c.suppressed_count),
        (t.c.previous_suppressed_since, t.c.suppressed_since),
        (t.c.previous_suppressed_until, t.c.suppressed_until),
        (t.c.previous_suppressed_sources, t.c.suppressed_sources),
        (t.c.suppressed_count, 0),
        (t.c.suppressed_since, None),
        (t.c.suppressed_until, None),
        (t.c.suppressed_sources, _EMPTY_SOURCES),
        (t.c.last_sent_at, clock.now()),
        (t.c.last_sent_severity, severity),
        (t.c.claim_token, sa.bindparam("p_token")),
        (t.c.claim_expires_at, clock.shifted("lease")),
        (t.c.version, t.c.version + 1),
    ]
    returning = (
        t.c.claim_token,
        t.c.previous_sent_at,
        t.c.previous_sent_severity,
        t.c.previous_suppressed_count,
        t.c.previous_suppressed_since,
        t.c.previous_suppressed_until,
        t.c.previous_suppressed_sources,
    )
    suppress = None
    if positive_window:
        # each assignment reads only its own column, so MySQL's left-to-right evaluation is harmless
        suppress = (
            sa.update(t)
            .where(key, _held_back(t, clock, severity, escalated))
            .values(
                suppressed_count=t.c.suppressed_count + 1,
                suppressed_since=sa.func.coalesce(t.c.suppressed_since, clock.now()),
                suppressed_until=clock.now(),
                suppressed_sources=_append_source(dialect, t.c.suppressed_sources, sa.bindparam("p_source")),
                version=t.c.version + 1,
            )
        )
    # after a suppression: what held it back, and the running summary including it
    observed = (
        t.c.claim_token,
        t.c.last_sent_at,
        t.c.suppressed_count,
        t.c.suppressed_since,
        t.c.suppressed_until,
        t.c.suppressed_sources,
        clock.now().label("db_now"),
    )
    if dialect == "mysql":  # neither MySQL nor MariaDB has UPDATE ... RETURNING
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        neutral = {
            **_neutral_row(),
            "fingerprint": sa.bindparam("p_fp"),
            "channel": sa.bindparam("p_channel"),
        }
        return _ClaimSql(
            ensure_row=mysql_insert(t).prefix_with("IGNORE").values(**neutral),
            claim=sa.update(t).where(key, claimable).ordered_values(*assignments),
            claimed_row=sa.select(*returning).where(key),
            suppress=suppress,
            suppressed_row=sa.select(*observed).where(key),
        )
    fresh = {
        **_neutral_row(),
        "fingerprint": sa.bindparam("p_fp"),
        "channel": sa.bindparam("p_channel"),
        "last_sent_at": clock.now(),
        "last_sent_severity": severity,
        "claim_token": sa.bindparam("p_token"),
        "claim_expires_at": clock.shifted("lease"),
        "version": 1,
    }
    claim = (
        _upsert_insert(dialect, t)
        .values(**fresh)
        .on_conflict_do_update(
            index_elements=[t.c.fingerprint, t.c.channel],
            set_={column.name: value for column, value in assignments},
            where=claimable,
        )
        .returning(*returning)
    )
    claim_or_suppress = None
    if dialect == "postgresql" and positive_window:
        claim_or_suppress = _claim_or_suppress(
            t,
            clock,
            fresh,
            assignments,
            claimable,
            _held_back(t, clock, severity, escalated),
            returning,
            observed,
        )
    return _ClaimSql(
        ensure_row=None,
        claim=claim,
        claimed_row=None,
        suppress=None if suppress is None else suppress.returning(*observed),
        suppressed_row=None,
        claim_or_suppress=claim_or_suppress,
    )


def _claim_or_suppress(
    t: Table,
    clock: _Clock,
    fresh: dict[str, Any],
    assignments: list[tuple[Column[Any], Any]],
    claimable: ColumnElement[bool],
    held_back: ColumnElement[bool],
    returning: tuple[Any, ...],
    observed: tuple[Any, ...],
) -> Any:
    """PostgreSQL's claim and suppression as one statement: one round trip for winners and losers.

    Every assignment is ``CASE WHEN <claimable> THEN <claim's value> ELSE <suppression's value>
    END`` and the update happens only ``WHERE <claimable> OR <held back>``, so the row gets exactly
    what the claim or the suppression statement would have given it; PostgreSQL evaluates all of it
    against the same (locked, latest) row version, and reads the old row throughout ``SET``.
    """
    import sqlalchemy as sa

    suppressed: dict[str, Any] = {
        "suppressed_count": t.c.suppressed_count + 1,
        "suppressed_since": sa.func.coalesce(t.c.suppressed_since, clock.now()),
        "suppressed_until": clock.now(),
        "suppressed_sources": _append_source("postgresql", t.c.suppressed_sources, sa.bindparam("p_source")),
    }
    values: dict[str, Any] = {}
    for column, value in assignments:
        if column.name == "version":
            values["version"] = t.c.version + 1
        else:
            values[column.name] = sa.case((claimable, value), else_=suppressed.get(column.name, column))
    wanted = {getattr(c, "name", None) or c.key: c for c in (*returning, *observed)}
    return (
        _upsert_insert("postgresql", t)
        .values(**fresh)
        .on_conflict_do_update(
            index_elements=[t.c.fingerprint, t.c.channel], set_=values, where=sa.or_(claimable, held_back)
        )
        .returning(*wanted.values())
    )


def _claimable(
    t: Table, clock: _Clock, severity: ColumnElement[Any], positive_window: bool, escalated: bool
) -> ColumnElement[bool]:
    """``throttle.decide``'s send rule, for rows without an expired claim.

    A row whose claim expired is never claimable here: rolling the claim back merges two source
    lists, which ``SqlStore._roll_back_expired`` does first, so the claim itself only copies
    columns and the decision sees exactly ``ChannelState.settled``.
    """
    import sqlalchemy as sa

    if not positive_window:
        # a zero window sends whatever else is pending, taking over an unexpired claim
        return sa.or_(
            t.c.claim_token.is_(None),
            t.c.claim_expires_at.is_(None),
            t.c.claim_expires_at > clock.now(),
        )
    reasons: list[ColumnElement[bool]] = [t.c.last_sent_at.is_(None)]
    if escalated:
        reasons.append(sa.or_(t.c.last_sent_severity.is_(None), t.c.last_sent_severity < severity))
    # now - last_sent_at >= window: exactly at the window's end the next alert goes out
    reasons.append(t.c.last_sent_at <= clock.shifted("horizon"))
    return sa.and_(t.c.claim_token.is_(None), sa.or_(*reasons))


def _held_back(t: Table, clock: _Clock, severity: ColumnElement[Any], escalated: bool) -> ColumnElement[bool]:
    """The complement of :func:`_claimable` (positive window) among rows without an expired claim.

    Written out rather than ``NOT (...)`` so no NULL can make both false.
    """
    import sqlalchemy as sa

    in_flight = sa.and_(
        t.c.claim_token.is_not(None),
        sa.or_(t.c.claim_expires_at.is_(None), t.c.claim_expires_at > clock.now()),
    )
    throttled: list[ColumnElement[bool]] = [
        t.c.claim_token.is_(None),
        t.c.last_sent_at.is_not(None),
        t.c.last_sent_at > clock.shifted("horizon"),
    ]
    if escalated:
        throttled.append(sa.and_(t.c.last_sent_severity.is_not(None), t.c.last_sent_severity >= severity))
    return sa.or_(in_flight, sa.and_(*throttled))


def _neutral_row() -> dict[str, Any]:
    """A row's values (besides its key) that behave exactly like "never seen": no send, no claim,
    nothing suppressed."""
    return {
        "suppressed_count": 0,
        "suppressed_sources": _EMPTY_SOURCES,
        "previous_suppressed_count": 0,
        "previous_suppressed_sources": _EMPTY_SOURCES,
        "version": 0,
    }


def _append_source(dialect: str, column: Column[Any], source: ColumnElement[Any]) -> ColumnElement[Any]:
    """``throttle.add_suppressed``'s source rule in SQL: append if absent and fewer than MAX_SOURCES.

    Done in the statement so concurrent suppressions cannot overwrite each other's sources.
    """
    import sqlalchemy as sa

    limit = throttle.MAX_SOURCES
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        array = sa.cast(column, JSONB)
        item = sa.func.jsonb_build_array(sa.cast(source, sa.Text()))
        absent = sa.not_(array.op("@>", return_type=sa.Boolean())(item))
        appendable = sa.and_(sa.func.jsonb_array_length(array) < limit, absent)
        return sa.case((appendable, sa.cast(array.op("||")(item), sa.Text())), else_=column)
    if dialect == "mysql":
        missing = sa.func.json_contains(column, sa.func.json_quote(source)) == 0
        appendable = sa.and_(sa.func.json_length(column) < limit, missing)
        return sa.case((appendable, sa.func.json_array_append(column, "$", source)), else_=column)
    each = sa.func.json_each(column).table_valued("value")
    present = sa.exists().where(each.c.value == source)
    appendable = sa.and_(sa.func.json_array_length(column) < limit, sa.not_(present))
    return sa.case((appendable, sa.func.json_insert(column, "$[#]", source)), else_=column)


@dataclass(frozen=True)
class _ChannelSql:
    """The other statements of the decision path on one (fingerprint, channel), built once per prefix.

    ``p_fp`` and ``p_channel`` pick the row; building them per call cost more Python than the round trip.
    """

    #: ``p_token``
    confirm: Any
    #: ``p_count``
    clear_suppressed: Any
    state: Any


@cache
def _channel_sql(prefix: str) -> _ChannelSql:
    import sqlalchemy as sa

    t = _schema(prefix).channel_state
    key = sa.and_(
        t.c.fingerprint == sa.bindparam("p_fp", type_=sa.String()),
        t.c.channel == sa.bindparam("p_channel", type_=sa.String()),
    )
    count = sa.bindparam("p_count", type_=sa.Integer())
    emptied = t.c.suppressed_count - count <= 0
    # the count goes last: MySQL assigns left to right, and the others test the old count
    assignments: list[tuple[Column[Any], Any]] = [
        (t.c.suppressed_since, sa.case((emptied, None), else_=t.c.suppressed_since)),
        (t.c.suppressed_until, sa.case((emptied, None), else_=t.c.suppressed_until)),
        (t.c.suppressed_sources, sa.case((emptied, _EMPTY_SOURCES), else_=t.c.suppressed_sources)),
        (t.c.suppressed_count, sa.case((emptied, 0), else_=t.c.suppressed_count - count)),
        (t.c.version, t.c.version + 1),
    ]
    return _ChannelSql(
        confirm=sa.update(t)
        .where(key, t.c.claim_token == sa.bindparam("p_token", type_=sa.String()))
        .values(
            claim_token=None,
            claim_expires_at=None,
            previous_sent_at=None,
            previous_sent_severity=None,
            previous_suppressed_count=0,
            previous_suppressed_since=None,
            previous_suppressed_until=None,
            previous_suppressed_sources=_EMPTY_SOURCES,
            version=t.c.version + 1,
        ),
        clear_suppressed=sa.update(t).where(key).ordered_values(*assignments),
        state=sa.select(t).where(key),
    )


# --- running them -------------------------------------------------------------------------


class _ClaimOperations(_SqlCore):
    """The claim, confirm, release, suppression and reset steps of :class:`SqlStore`."""

    def _claim(
        self,
        fingerprint: str,
        channel: str,
        now: datetime,
        window: timedelta,
        severity: Severity,
        escalated: bool,
        source: str,
        lease: timedelta,
    ) -> Claim:
        clock = self._clock()
        positive = window > timedelta(0)
        sql = _claim_sql(clock.dialect, self.table_prefix, clock.injected, positive, escalated)
        token = uuid.uuid4().hex
        params = {
            "p_fp": fingerprint,
            "p_channel": channel,
            "p_severity": int(severity),
            "p_token": token,
            "p_source": source,
            **clock.params(now, lease=lease, horizon=-window),
        }
        for _ in range(_CLAIM_ATTEMPTS):
            if sql.claim_or_suppress is not None:  # PostgreSQL: one statement, committing on its own
                with self._autocommit() as conn:
                    row: Row[Any] | None = conn.execute(sql.claim_or_suppress, params).first()
                if row is not None and row.claim_token == token:
                    return Claim(_sending_decision(row, window, severity, escalated), token)
                if row is not None:
                    return Claim(_held_decision(row, window))
                self._roll_back_expired(fingerprint, channel, now)
                continue
            if sql.ensure_row is not None:
                # committed on its own: INSERT IGNORE on an existing key takes a shared lock, and two
                # transactions holding it while both go on to UPDATE the row would deadlock
                with self._begin() as conn:
                    conn.execute(sql.ensure_row, params)
            # MySQL and SQLite: one short transaction for both statements: a losing claim usually keeps
            # the row locked, so the suppression sees the same row, and a loser pays one commit instead
            # of two.  PostgreSQL: each statement commits on its own, which saves the BEGIN and COMMIT
            # round trips; both statements are conditional, so a row changed in between only means
            # another attempt, as on MySQL between its two transactions
            with self._autocommit() as conn:
                won = self._try_claim(conn, sql, params)
                held = self._try_suppress(conn, sql, params) if won is None and positive else None
            if won is not None:
                return Claim(_sending_decision(won, window, severity, escalated), token)
            if held is not None:
                return Claim(_held_decision(held, window))
            # neither claimable nor held back: a crashed sender's claim expired (roll it back), or the
            # row changed between our two statements (try again)
            self._roll_back_expired(fingerprint, channel, now)
        raise StateUnavailableError(
            f"claim on {fingerprint}/{channel} kept changing under {_CLAIM_ATTEMPTS} attempts"
        )

    @staticmethod
    def _try_claim(conn: Connection, sql: _ClaimSql, params: dict[str, Any]) -> Row[Any] | None:
        """The atomic claim; returns the winner's row (the state before the claim in ``previous_*``)."""
        if sql.claimed_row is not None:  # MySQL
            if conn.execute(sql.claim, params).rowcount != 1:
                return None
            # our row lock is held until commit, so this reads exactly what the update wrote
            row: Row[Any] = conn.execute(sql.claimed_row, params).one()
            return row
        returned: Row[Any] | None = conn.execute(sql.claim, params).first()
        if returned is None or returned.claim_token != params["p_token"]:
            return None
        return returned

    @staticmethod
    def _try_suppress(conn: Connection, sql: _ClaimSql, params: dict[str, Any]) -> Row[Any] | None:
        """Count a held-back occurrence, only if the row still holds it back; return what it saw."""
        if sql.suppressed_row is not None:  # MySQL
            if conn.execute(sql.suppress, params).rowcount != 1:
                return None
            row: Row[Any] = conn.execute(sql.suppressed_row, params).one()
            return row
        returned: Row[Any] | None = conn.execute(sql.suppress, params).first()
        return returned

    def _roll_back_expired(self, fingerprint: str, channel: str, now: datetime) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        clock = self._clock()
        key = sa.and_(t.c.fingerprint == fingerprint, t.c.channel == channel)
        with self._autocommit() as conn:
            row = conn.execute(
                sa.select(t, clock.now().label("db_now")).where(key), clock.params(now)
            ).first()
        if row is None or row.claim_token is None or row.claim_expires_at is None:
            return
        if row.claim_expires_at > row.db_now:
            return
        settled = _state_from_row(row).settled(row.db_now)
        with self._autocommit() as conn:
            # a concurrent suppression or roll-back bumps the version; the caller's next attempt sees it
            conn.execute(
                sa.update(t)
                .where(key, t.c.version == row.version)
                .values(**_state_values(settled), version=t.c.version + 1)
            )

    def _confirm(self, fingerprint: str, channel: str, token: str) -> None:
        params = {"p_fp": fingerprint, "p_channel": channel, "p_token": token}
        with self._autocommit() as conn:
            conn.execute(_channel_sql(self.table_prefix).confirm, params)

    def _release(self, fingerprint: str, channel: str, token: str) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        mine = sa.and_(t.c.fingerprint == fingerprint, t.c.channel == channel, t.c.claim_token == token)
        for _ in range(_RELEASE_ATTEMPTS):
            with self._autocommit() as conn:
                row = conn.execute(sa.select(t).where(mine)).first()
            if row is None:
                return
            released = throttle.release(_state_from_row(row), token)
            with self._autocommit() as conn:
                result = conn.execute(
                    sa.update(t)
                    .where(mine, t.c.version == row.version)
                    .values(**_state_values(released), version=t.c.version + 1)
                )
            if result.rowcount == 1:
                return
        raise StateUnavailableError(f"release on {fingerprint}/{channel} kept conflicting with other writers")

    def _clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        params = {"p_fp": fingerprint, "p_channel": channel, "p_count": count}
        with self._autocommit() as conn:
            conn.execute(_channel_sql(self.table_prefix).clear_suppressed, params)

    def _reset_window(self, fingerprint: str, channel: str) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        with self._autocommit() as conn:
            conn.execute(sa.delete(t).where(t.c.fingerprint == fingerprint, t.c.channel == channel))

    def _channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        params = {"p_fp": fingerprint, "p_channel": channel}
        with self._autocommit() as conn:
            row = conn.execute(_channel_sql(self.table_prefix).state, params).first()
        return _state_from_row(row) if row is not None else None
