"""The commands change process-wide settings meant for a CLI process; tests get them undone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _cli_process_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # prepare_process() makes the Task SDK read connections from the metadata DB, as Airflow's
    # server processes do; the rest of the test session must keep its own lookup chain
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    structlog = pytest.importorskip("structlog")
    factory = structlog.get_config().get("logger_factory")
    before = getattr(factory, "io", None)
    yield
    if hasattr(factory, "io"):
        factory.io = before
