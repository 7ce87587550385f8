"""Fixtures of the analytics integration tests (see ``analytics_sql_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from analytics_sql_support import database_url, new_store

from airflow_alerting import metrics
from airflow_alerting.state.sql import SqlStore


@pytest.fixture
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    store = new_store(database_url(request.param, tmp_path))
    try:
        yield store
    finally:
        store.drop_tables()


@pytest.fixture(autouse=True)
def no_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    # metrics would import Airflow's Stats; nothing here needs them
    monkeypatch.setattr(metrics, "_stats", lambda: None)
