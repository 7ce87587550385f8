"""State stores: where throttle, dedup, incident and history state lives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_alerting.state.base import StateStore, StateUnavailableError

if TYPE_CHECKING:
    from airflow_alerting.config import AlertingSettings

__all__ = ["StateStore", "StateUnavailableError", "store_from_settings"]


def store_from_settings(settings: AlertingSettings) -> StateStore:
    """Build the store named by ``[alerting] state_backend``.

    Stores are imported lazily: the SQL store pulls in SQLAlchemy, which DAG parsing should not pay for.
    """
    backend = settings.state_backend
    if backend == "memory":
        return _shared_memory_store(settings.history_limit)
    if backend == "sql":
        from airflow_alerting.state.sql import SqlStore

        # every store call is bounded by a share of the callback's deadline, so a database that
        # hangs fails the store open in time for the deliveries (docs/guarantees.md)
        return SqlStore(settings.sql_conn_id or None, callback_deadline=settings.callback_deadline_seconds)
    from airflow_alerting.state.variables import VariableStore

    return VariableStore(history_limit=settings.history_limit)


_MEMORY_STORES: dict[int, StateStore] = {}


def _shared_memory_store(history_limit: int) -> StateStore:
    # one store per process, so every notifier instance in a dag.test() run sees the same state
    from airflow_alerting.state.memory import MemoryStore

    return _MEMORY_STORES.setdefault(history_limit, MemoryStore(history_limit))
