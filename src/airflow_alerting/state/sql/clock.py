"""``now`` in SQL: the database's clock, or the caller's ``now`` bound in (deterministic tests).

Only claims, occurrences, the outbox and retention use this clock; incidents take the manager's
``now`` (:attr:`Occurrence.at`), which is the authority for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting.state.sql.schema import _as_utc, _utc_datetime

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class _Clock:
    """``now`` and ``now + offset`` as SQL: the database's clock, or the caller's ``now`` bound in.

    Offsets are bound parameters (``p_<name>``), so a statement is built once per shape and reused;
    :meth:`params` turns the actual times into their values.
    """

    dialect: str
    #: bind the caller's ``now`` (``use_database_clock=False``) instead of reading the database's
    injected: bool

    def now(self) -> ColumnElement[datetime]:
        import sqlalchemy as sa

        utc = _utc_datetime()()
        if self.injected:
            return sa.bindparam("p_now", type_=utc)
        if self.dialect == "postgresql":
            # the transaction's start: stable within it, and every transaction here is one short step
            return sa.literal_column("now()", utc)
        if self.dialect == "mysql":
            # evaluated once per statement; (6) keeps the microseconds DATETIME(6) stores
            return sa.literal_column("UTC_TIMESTAMP(6)", utc)
        return sa.type_coerce(self._sqlite_now(sa.literal("+0 seconds")), utc)

    def shifted(self, name: str) -> ColumnElement[datetime]:
        """``now`` plus the offset given to :meth:`params` as ``name``."""
        import sqlalchemy as sa

        utc = _utc_datetime()()
        param = f"p_{name}"
        if self.injected:
            return sa.bindparam(param, type_=utc)
        if self.dialect == "postgresql":
            now = sa.literal_column("now()", sa.DateTime(timezone=True))
            return sa.type_coerce(now + sa.bindparam(param, type_=sa.Interval()), utc)
        if self.dialect == "mysql":
            micros = sa.bindparam(param, type_=sa.BigInteger())
            now = sa.literal_column("UTC_TIMESTAMP(6)")
            return sa.type_coerce(sa.func.timestampadd(sa.literal_column("MICROSECOND"), micros, now), utc)
        return sa.type_coerce(self._sqlite_now(sa.bindparam(param, type_=sa.String())), utc)

    def params(self, now: datetime, **offsets: timedelta) -> dict[str, Any]:
        """Values for :meth:`now` and :meth:`shifted` (``now`` is used only when injected)."""
        if self.injected:
            now = _as_utc(now)
            return {"p_now": now, **{f"p_{name}": now + offset for name, offset in offsets.items()}}
        if self.dialect == "postgresql":
            return {f"p_{name}": offset for name, offset in offsets.items()}
        if self.dialect == "mysql":
            return {f"p_{name}": offset // timedelta(microseconds=1) for name, offset in offsets.items()}
        return {f"p_{name}": f"{offset.total_seconds():+.6f} seconds" for name, offset in offsets.items()}

    @staticmethod
    def _sqlite_now(modifier: ColumnElement[Any]) -> ColumnElement[Any]:
        import sqlalchemy as sa

        # 'now' is fixed for the duration of a statement; SQLite's clock has millisecond resolution,
        # padded to the six digits of the stored text so that text comparison stays exact
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", modifier).concat("000")
