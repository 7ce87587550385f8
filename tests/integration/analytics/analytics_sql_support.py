"""SQL stores on SQLite, PostgreSQL and MariaDB for the analytics tests (shared helpers).

SQLite (a temporary file) always runs.  PostgreSQL and MariaDB are expected on 127.0.0.1
(override with ``ALERTING_TEST_POSTGRES_URL`` / ``ALERTING_TEST_MARIADB_URL``); when one is
unreachable its tests skip with the reason, except under ``CI=true`` where they fail.  Every
store gets its own table prefix, dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_alerting.state.sql import SqlStore

# the generated scenarios are the unit tests' (tests/unit/analytics/analytics_support.py), so that
# the SQL aggregates are checked on the very history the in-Python tests derive their numbers for
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "analytics"))

POSTGRES_URL = os.environ.get(
    "ALERTING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("ALERTING_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def require_server(url: str) -> None:
    """Skip (or, in CI, fail) when the database server behind ``url`` does not answer."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        reason = f"{engine.url.render_as_string(hide_password=True)} unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the database tests must run)")
        pytest.skip(reason)
    finally:
        engine.dispose()


def database_url(name: str, directory: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{directory / 'analytics.db'}"
    url = POSTGRES_URL if name == "postgresql" else MARIADB_URL
    require_server(url)
    return url


def new_store(url: str, prefix: str | None = None) -> SqlStore:
    # the injected clock: the history is written at simulated times
    return SqlStore(
        url=url,
        table_prefix=prefix or f"a{uuid.uuid4().hex[:10]}_",
        use_database_clock=False,
        history_retention=timedelta(days=365),
        callback_deadline=60,
    )
