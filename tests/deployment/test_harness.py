"""The harness's own readers, without a deployment: they must read the store's current layout."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_alerting.state.base import OutboxItem
from airflow_alerting.testing import MemoryStore
from deployment.harness import deferred_summaries

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def queued(item_id: str, reason: str) -> OutboxItem:
    return OutboxItem(
        id=item_id,
        channel="slack",
        notification={"decision": {"reason": reason}},
        created_at=T0,
        next_attempt_at=T0,
        incident_key="etl.load",
    )


def test_deferred_summaries_are_read_from_the_per_item_outbox_and_a_legacy_document() -> None:
    store = MemoryStore()
    store.outbox_add(queued("a", "summary"))
    store.outbox_add(queued("b", "first"))
    store._write(store.OUTBOX_KEY, {"items": [queued("c", "summary").to_json(), "damaged"]})

    found = deferred_summaries(store)

    assert sorted(i["id"] for i in found) == ["a", "c"]


def test_no_deferred_summaries_in_an_empty_outbox() -> None:
    assert deferred_summaries(MemoryStore()) == []
