"""Measure what one alert costs in the in-process pipeline, with an empty and a full history and outbox.

Times ``AlertManager.handle`` (wall: ``time.perf_counter``; CPU: ``time.process_time``, every
thread of the process, so the delivery threads count too) for ``--alerts`` final-try failures of a
few causes (distinct runs, the clock moving 7 s per alert) through the default policy,
recording channels, a frozen clock and a fresh ``MemoryStore``, once with empty state and
once with the history preloaded with 500 entries and the outbox with ``--outbox`` items that
are not due.  Then counts the state round trips (``_read``/``_write``/``_delete``) per alert
of a dict-backed document store with the Variables store's layout, in the same two setups.
No Airflow, no network::

    .venv/bin/python bench/handle_cost.py
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, HistoryEntry
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.state.base import DocumentStore, OutboxItem, StateStore
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

CAUSES = (
    ("PermissionError", ("PermissionError", "OSError", "Exception"), "role LOADER lacks USAGE on warehouse"),
    ("ConnectionError", ("ConnectionError", "OSError", "Exception"), "db-main.internal:5432 refused"),
    ("KeyError", ("KeyError", "LookupError", "Exception"), "'customer_id'"),
    ("TimeoutError", ("TimeoutError", "OSError", "Exception"), "upstream API timed out after 30s"),
)


class CountingStore(DocumentStore):
    """A dict-backed document store (the Variables store's layout, no verification delay) that counts I/O."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.documents: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def _read(self, key: str) -> dict[str, Any] | None:
        self.calls += 1
        doc = self.documents.get(key)
        return _copy(doc) if doc is not None else None

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self.calls += 1
        self.documents[key] = _copy(document)

    def _delete(self, key: str) -> None:
        self.calls += 1
        self.documents.pop(key, None)


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(json.dumps(doc))
    return loaded


def alert(index: int) -> Alert:
    exception_type, mro, message = CAUSES[index % len(CAUSES)]
    return Alert(
        dag_id=f"etl_{index % len(CAUSES)}",
        task_id=f"task_{index % 3}",
        run_id=f"run_{index}",
        exception_type=exception_type,
        exception_mro=mro,
        message=message,
    )


def preload(store: StateStore, clock: FrozenClock, *, history: int, outbox: int) -> None:
    entries = [
        HistoryEntry(
            at=clock() - timedelta(seconds=i),
            fingerprint=f"old{i}",
            source=f"old_dag.task_{i}",
            kind="task_failure",
            severity="medium",
            channel="slack",
            reason="throttled",
            sent=False,
            why="preloaded " * 10,
        )
        for i in range(history)
    ]
    for start in range(0, len(entries), 50):
        store.append_history(entries[start : start + 50])
    for i in range(outbox):
        store.outbox_add(
            OutboxItem(
                id=uuid.uuid4().hex,
                channel="slack",
                notification={"preloaded": "x" * 400, "n": i},
                created_at=clock(),
                next_attempt_at=clock() + timedelta(days=365),
                incident_key=f"old_dag.{i}",
            )
        )


def run(
    store: StateStore, *, alerts: int, history: int, outbox: int
) -> tuple[list[float], list[float], list[int]]:
    """Handle ``alerts`` alerts; return each one's wall time (ms), CPU time (ms) and state round trips."""
    clock = FrozenClock()
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty"),
    }
    manager = AlertManager(
        AlertPolicy(),
        store=store,
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    preload(store, clock, history=history, outbox=outbox)
    times: list[float] = []
    cpu: list[float] = []
    trips: list[int] = []
    for index in range(alerts):
        before = getattr(store, "calls", 0)
        began_cpu = time.process_time()
        began = time.perf_counter()
        manager.handle(alert(index))
        ended = time.perf_counter()
        cpu.append((time.process_time() - began_cpu) * 1000)
        times.append((ended - began) * 1000)
        trips.append(getattr(store, "calls", 0) - before)
        clock.advance(seconds=7)
    return times, cpu, trips


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--outbox", type=int, default=1000, help="not-due outbox items preloaded")
    parser.add_argument("--trip-alerts", type=int, default=300, help="alerts for counting round trips")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    # the first alert of a process imports Airflow (for its secrets masker): not a per-alert cost
    run(MemoryStore(), alerts=1, history=0, outbox=0)
    print(
        f"{'store':<9} {'history':>7} {'outbox':>6} {'p50 ms':>7} {'p95 ms':>7} {'cpu p50':>7}"
        f" {'trips p50':>9} {'max':>4}"
    )
    for label, factory, alerts in (
        ("memory", MemoryStore, args.alerts),
        ("counting", CountingStore, args.trip_alerts),
    ):
        for history, outbox in ((0, 0), (500, args.outbox)):
            times, cpu, trips = run(factory(), alerts=alerts, history=history, outbox=outbox)
            print(
                f"{label:<9} {history:>7} {outbox:>6} {statistics.median(times):>7.3f}"
                f" {percentile(times, 0.95):>7.3f} {statistics.median(cpu):>7.3f}"
                f" {statistics.median(trips):>9.0f} {max(trips):>4}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
