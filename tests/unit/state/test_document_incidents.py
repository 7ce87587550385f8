"""Document-store incidents with racing writers: one incident per correlation key, every failure counted.

:class:`DictStore` has the Variables store's layout and verification without Airflow.  The races are
forced where the store pauses before re-reading a write (``on_pause``), and then left to threads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from docstore_support import DictStore, SharedDocuments, restore_once

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import IncidentState, Occurrence, new_incident_id
from airflow_alerting.model import Severity
from airflow_alerting.state.base import DocumentStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = IncidentRules(window=timedelta(hours=1), blast_radius_dags=0, blast_radius_tasks=0)
KEY = "cause:OperationalError: could not connect"


def failure(index: int, *, at: datetime = T0, key: str = KEY) -> Occurrence:
    return Occurrence(
        key=key,
        title="OperationalError: could not connect",
        dag_id="etl",
        task_id="load",
        map_index=index,
        run_id="storm",
        severity=Severity.HIGH,
        at=at,
    )


def pointer(shared: SharedDocuments, key: str = KEY) -> dict[str, Any] | None:
    return shared.get(DocumentStore._hashed("alerting.corr", key))


def incident_documents(shared: SharedDocuments) -> list[str]:
    return shared.keys("alerting.inc.")


def once(action: Callable[[], None]) -> Callable[[DictStore], None]:
    done: list[bool] = []

    def hook(store: DictStore) -> None:
        if not done:
            done.append(True)
            action()

    return hook


def test_a_racing_opener_that_overwrote_the_incident_is_joined_not_lost() -> None:
    shared = SharedDocuments()
    second = DictStore(shared)
    # the second worker read "no incident" before the first stored one, and writes after it
    second.stale[DocumentStore._hashed("alerting.corr", KEY)] = None
    first = DictStore(shared, on_pause=once(lambda: second.join_incident(failure(2), RULES)))

    joined = first.join_incident(failure(1), RULES)

    (doc_key,) = incident_documents(shared)
    incident = first.incident(joined.incident.id)
    assert incident is not None and doc_key.endswith(incident.id)
    assert incident.failures == 2
    assert set(shared.get(doc_key)["members"]) == {"etl.load[1]", "etl.load[2]"}  # type: ignore[index]
    assert pointer(shared) == {**pointer(shared), "id": incident.id}  # type: ignore[dict-item]


def test_a_join_overwritten_by_a_stale_incident_document_is_applied_again() -> None:
    shared = SharedDocuments()
    opener = DictStore(shared)
    opened = opener.join_incident(failure(1), RULES)
    joiner = DictStore(shared, on_pause=restore_once("alerting.inc."))

    joined = joiner.join_incident(failure(2), RULES)

    assert joined.incident.id == opened.incident.id and not joined.opened
    incident = joiner.incident(opened.incident.id)
    assert incident is not None and incident.failures == 2


def test_an_opener_whose_pointer_another_opener_replaced_joins_that_incident() -> None:
    shared = SharedDocuments()
    other = DictStore(shared)
    # another opener (one that read an older pointer) opened its own incident of the key meanwhile
    elsewhere = "e" * 20
    corr = DocumentStore._hashed("alerting.corr", KEY)

    def replace_pointer() -> None:
        shared.put(corr, {"id": elsewhere, "key": KEY, "prev": "older", "v": "x"})
        seed = other.join_incident(failure(9, key="seed"), RULES)
        doc = shared.get(f"alerting.inc.{seed.incident.id}")
        assert doc is not None
        doc["incident"] = {**doc["incident"], "id": elsewhere, "key": KEY}
        shared.put(f"alerting.inc.{elsewhere}", doc)

    store = DictStore(shared, on_pause=once(replace_pointer))
    joined = store.join_incident(failure(1), RULES)

    assert joined.incident.id == elsewhere and not joined.opened
    assert shared.get(f"alerting.inc.{new_incident_id(KEY, T0)}") is None
    moved = store.incident(elsewhere)
    assert moved is not None and moved.failures == 2


def test_a_pointer_to_an_incident_not_stored_yet_opens_that_incident() -> None:
    shared = SharedDocuments()
    # an opener pointed the key at its incident and has not stored the incident yet
    opening = new_incident_id(KEY, T0, None)
    shared.put(DocumentStore._hashed("alerting.corr", KEY), {"id": opening, "key": KEY, "prev": None})

    joined = DictStore(shared).join_incident(failure(1), RULES)

    assert joined.incident.id == opening
    assert incident_documents(shared) == [f"alerting.inc.{opening}"]


def test_a_later_incident_of_the_key_follows_the_resolved_one() -> None:
    shared = SharedDocuments()
    store = DictStore(shared)
    first = store.join_incident(failure(1), RULES)
    store.resolve_incident(first.incident.id, by="alice", now=T0 + timedelta(minutes=1))

    second = store.join_incident(failure(1, at=T0 + timedelta(minutes=2)), RULES)

    assert second.opened and second.incident.id == new_incident_id(KEY, T0, first.incident.id)
    assert (pointer(shared) or {}).get("prev") == first.incident.id


class SlowDocuments(DictStore):
    """A :class:`DictStore` whose every read and write takes a little while, as a database round trip
    does: threads interleave between any two of them."""

    def _read(self, key: str) -> dict[str, Any] | None:
        time.sleep(random.uniform(0, 0.002))
        return super()._read(key)

    def _write(self, key: str, document: dict[str, Any]) -> None:
        time.sleep(random.uniform(0, 0.002))
        super()._write(key, document)

    def _pause(self, attempt: int = 0) -> None:
        time.sleep(random.uniform(0.01, 0.02) * 2**attempt)


def test_racing_workers_converge_on_one_incident_with_every_failure_listed_and_indexed() -> None:
    shared = SharedDocuments()
    workers = [SlowDocuments(shared) for _ in range(16)]
    start = threading.Barrier(len(workers))
    joins: dict[int, Any] = {}

    def run(index: int) -> None:
        start.wait()
        joins[index] = workers[index].join_incident(failure(index), RULES)
        workers[index]._index_new_keys()  # what the end of the alert does

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(joins) == len(workers)
    assert {j.incident.id for j in joins.values()} == {new_incident_id(KEY, T0)}
    (incident,) = workers[0].incidents(states=[IncidentState.OPEN])
    assert incident.failures == len(workers)
    assert len(incident_documents(shared)) == 1
    dag_index = shared.get(DocumentStore._hashed("alerting.dagidx", "etl")) or {}
    assert sorted(dag_index["incidents"][incident.id]) == sorted(f"etl.load[{i}]" for i in range(16))
    # and every member recovers: the incident resolves exactly once
    resolved = [
        r.id
        for i, w in enumerate(workers)
        for r in w.recover_members("etl", "load", i, now=T0 + timedelta(minutes=5))
    ]
    assert resolved == [incident.id]
