"""Silences in SQL: one row per silence, its document as JSON, its times in columns for pruning.

Silences are few and read whole; only expiring one is read-modify-write, under its row lock.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from airflow_alerting.incidents.silences import Silence
from airflow_alerting.state.sql.connection import _upsert_insert
from airflow_alerting.state.sql.core import _SqlCore
from airflow_alerting.state.sql.schema import _as_utc, _key


class _SilenceOperations(_SqlCore):
    """The silence methods of :class:`~airflow_alerting.state.sql.SqlStore`."""

    def add_silence(self, silence: Silence) -> None:
        """Store a silence, replacing one with the same id.

        :param silence: the silence
        """
        self._run("add_silence", lambda: self._add_silence(silence))

    def silences(self) -> list[Silence]:
        """Every stored silence, ended ones included until pruned, by start time."""
        return self._run("silences", self._silences)

    def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        """End a silence at ``now`` (one that has not started is deleted).

        :param silence_id: :attr:`Silence.id`
        :param now: when
        :return: ``False`` when there is no such silence or it had already ended
        """
        return self._run("expire_silence", lambda: self._expire_silence(silence_id, now))

    def _add_silence(self, silence: Silence) -> None:
        table = self._schema().silence
        values = {
            "starts_at": silence.starts_at,
            "ends_at": silence.ends_at,
            "document": _dumps(silence.to_json()),
        }
        dialect = self._dialect()
        with self._autocommit() as conn:
            if dialect == "mysql":
                from sqlalchemy.dialects.mysql import insert as mysql_insert

                inserted = mysql_insert(table).values(id=_key(silence.id), **values)
                statement = inserted.on_duplicate_key_update(**values)
            else:
                statement = (
                    _upsert_insert(dialect, table)
                    .values(id=_key(silence.id), **values)
                    .on_conflict_do_update(index_elements=[table.c.id], set_=values)
                )
            conn.execute(statement)

    def _silences(self) -> list[Silence]:
        import sqlalchemy as sa

        table = self._schema().silence
        with self._autocommit() as conn:
            documents = list(conn.execute(sa.select(table.c.document)).scalars())
        found = []
        for document in documents:
            try:
                found.append(Silence.from_json(json.loads(document)))
            except ValueError:  # SilenceError or bad JSON: a damaged row must not hide the others
                continue
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    def _expire_silence(self, silence_id: str, now: datetime) -> bool:
        import sqlalchemy as sa

        table = self._schema().silence
        mine = table.c.id == _key(silence_id)
        moment = _as_utc(now)
        with self._locking() as conn:
            row = conn.execute(sa.select(table).where(mine).with_for_update()).first()
            if row is None or row.ends_at <= moment:
                return False
            if row.starts_at >= moment:
                # it has not started: ending it now would end it before it starts
                conn.execute(sa.delete(table).where(mine))
                return True
            ended = replace(Silence.from_json(json.loads(row.document)), ends_at=now)
            conn.execute(sa.update(table).where(mine).values(ends_at=now, document=_dumps(ended.to_json())))
            return True

    def _prune_silences(self, cutoff: datetime) -> None:
        """Delete silences that ended before ``cutoff`` (``prune_incidents``: now minus the retention)."""
        import sqlalchemy as sa

        table = self._schema().silence
        with self._autocommit() as conn:
            conn.execute(sa.delete(table).where(table.c.ends_at < cutoff))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
