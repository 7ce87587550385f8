"""Fixtures for tests that run real Airflow against the local protocol servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.testing import FrozenClock

ROOT = Path(__file__).resolve().parents[2]
#: migrated metadata databases, reused across sessions: a migration costs ~10 s
DB_CACHE = ROOT / ".airflow-test"


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's SQLite metadata DB, migrated (copied from a cached migrated DB when possible)."""
    target = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    cached = DB_CACHE / f"airflow-{_airflow_version()}.db"
    if not _migrated(cached):
        DB_CACHE.mkdir(exist_ok=True)
        # migrated under another name and renamed: an interrupted migration leaves no cache behind
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{partial}"}
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, capture_output=True
        )
        partial.replace(cached)
    # an earlier test that touched Airflow's settings may have left an empty, unmigrated file here
    if not _migrated(target):
        shutil.copyfile(cached, target)
    return target


def _migrated(path: Path) -> bool:
    """Whether ``path`` is an Airflow metadata DB that ``airflow db migrate`` has run on."""
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return row is not None


@dataclass
class Servers:
    slack: Any
    pagerduty: Any
    smtp: Any

    def clear(self) -> None:
        for server in (self.slack, self.pagerduty, self.smtp):
            server.clear()


@pytest.fixture(scope="session")
def protocol_servers() -> Iterator[Servers]:
    """Slack, PagerDuty and SMTP servers on 127.0.0.1, with Airflow's connections pointing at them."""
    from airflow_alerting.testing.servers import (
        PagerDutyServer,
        SlackServer,
        SmtpServer,
        connection_env,
        pagerduty_connection,
        slack_api_connection,
        smtp_connection,
    )

    with SlackServer() as slack, PagerDutyServer() as pagerduty, SmtpServer() as smtp:
        env = dict(
            [
                connection_env("slack_api_default", slack_api_connection(slack)),
                connection_env("pagerduty_events_default", pagerduty_connection(pagerduty)),
                connection_env("smtp_default", smtp_connection(smtp)),
            ]
        )
        env["AIRFLOW__ALERTING__EMAIL_TO"] = "oncall@example.test"
        env["AIRFLOW__ALERTING__SLACK_CHANNEL"] = "#itest"
        os.environ.update(env)
        try:
            yield Servers(slack, pagerduty, smtp)
        finally:
            for name in env:
                os.environ.pop(name, None)


@dataclass
class AlertingHarness:
    servers: Servers
    clock: FrozenClock

    def run(
        self, dag_id: str, conf: dict[str, Any] | None = None, *, advance: timedelta | None = None
    ) -> Any:
        """Run ``dag_id`` with ``dag.test()`` (in this process); move the clock first if asked."""
        if advance is not None:
            self.clock.advance(advance)
        return self.dag(dag_id).test(run_conf=conf or {})

    def dag(self, dag_id: str) -> Any:
        dag = _dag_bag().get_dag(dag_id)
        assert dag is not None, f"{dag_id} not found in the test dags folder"
        return dag

    def history(self) -> list[Any]:
        from airflow_alerting.state.variables import VariableStore

        return list(reversed(VariableStore(verify_delay=0).history(500)))


_BAG: Any = None


def _dag_bag() -> Any:
    global _BAG
    if _BAG is None:
        from airflow.dag_processing.dagbag import DagBag

        _BAG = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        assert not _BAG.import_errors, _BAG.import_errors
    return _BAG


def forget_alerting_variables() -> None:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("alerting.%")).delete(synchronize_session=False)


@pytest.fixture
def alerting(
    airflow_db: Path, protocol_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AlertingHarness]:
    """A clean slate per test: empty servers, no alerting state, a frozen clock for every manager."""
    from airflow_alerting import manager as manager_module

    protocol_servers.clear()
    forget_alerting_variables()
    manager_module._MANAGERS.clear()
    clock = FrozenClock()
    monkeypatch.setattr(manager_module, "utcnow", clock)
    yield AlertingHarness(protocol_servers, clock)
    manager_module._MANAGERS.clear()
