"""``MemoryStore``'s native occurrences and claims, and the document path of subclasses that intercept I/O.

The claim contract itself is tested for every document store in ``test_document_store.py`` and
against the SQL store in ``test_sql_store_model.py``; here: that both paths of ``MemoryStore``
decide alike, that the native one does no document I/O, and its retention.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.model import DecisionReason, Severity
from airflow_alerting.state.base import Claim
from airflow_alerting.testing import MemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=15)
LEASE = timedelta(minutes=2)


class CountingMemoryStore(MemoryStore):
    """Intercepts the document I/O, as test doubles simulating an outage do."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips = 0

    def _read(self, key: str) -> dict[str, Any] | None:
        self.round_trips += 1
        return super()._read(key)

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self.round_trips += 1
        super()._write(key, document)


def claim(
    store: MemoryStore, now: datetime, *, source: str = "dag.task", window: timedelta = WINDOW
) -> Claim:
    return store.claim(
        "fp",
        "slack",
        now=now,
        window=window,
        severity=Severity.HIGH,
        escalated=False,
        source=source,
        lease=LEASE,
    )


def scenario(store: MemoryStore) -> list[tuple[Any, ...]]:
    """A send, two held back, a failed resend that gives the window back, a resend that carries all."""
    seen: list[tuple[Any, ...]] = []

    def note(result: Claim) -> None:
        d = result.decision
        seen.append((d.send, d.reason, d.suppressed.count, d.suppressed.sources, result.token is not None))

    first = claim(store, T0)
    note(first)
    assert first.token is not None
    store.confirm("fp", "slack", first.token)
    note(claim(store, T0 + timedelta(minutes=1), source="dag.a"))
    note(claim(store, T0 + timedelta(minutes=2), source="dag.b"))
    resend = claim(store, T0 + WINDOW)
    note(resend)
    assert resend.token is not None
    store.release("fp", "slack", resend.token)
    again = claim(store, T0 + WINDOW + timedelta(seconds=1))
    note(again)
    record = store.record_occurrence("fp", "occ-1", now=T0, window=WINDOW)
    duplicate = store.record_occurrence("fp", "occ-1", now=T0, window=WINDOW)
    seen.append((record.duplicate, record.count_in_window, duplicate.duplicate))
    return seen


def test_the_native_path_decides_like_the_document_path_and_does_no_document_io() -> None:
    native, documents = MemoryStore(), CountingMemoryStore()

    assert scenario(native) == scenario(documents)
    assert documents.round_trips > 0  # the subclass saw every occurrence and claim go through _read
    assert native._documents == {}
    native_state, document_state = native.channel_state("fp", "slack"), documents.channel_state("fp", "slack")
    assert native_state is not None and document_state is not None
    # each store draws its own claim tokens
    assert replace(native_state, claim_token=None) == replace(document_state, claim_token=None)


def test_held_back_occurrences_carry_the_running_summary() -> None:
    store = MemoryStore()
    sent = claim(store, T0)
    assert sent.token is not None
    store.confirm("fp", "slack", sent.token)

    held = [claim(store, T0 + timedelta(minutes=m), source=f"dag.t{m}") for m in (1, 2, 3)]

    assert [h.decision.reason for h in held] == [DecisionReason.THROTTLED] * 3
    assert [h.decision.suppressed.count for h in held] == [1, 2, 3]
    assert held[-1].decision.suppressed.sources == ("dag.t1", "dag.t2", "dag.t3")
    store.clear_suppressed("fp", "slack", 2)
    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 1


def test_an_expired_claim_is_rolled_back_before_deciding() -> None:
    store = MemoryStore()
    crashed = claim(store, T0)  # its sender never confirms nor releases
    assert crashed.token is not None

    within_lease = claim(store, T0 + LEASE - timedelta(microseconds=1))
    after_lease = claim(store, T0 + LEASE)

    assert within_lease.decision.reason is DecisionReason.IN_FLIGHT
    assert after_lease.decision.send and after_lease.decision.reason is DecisionReason.FIRST
    assert after_lease.decision.suppressed.count == 1  # the one held back while in flight


@pytest.mark.parametrize("store_type", [MemoryStore, CountingMemoryStore])
def test_prune_forgets_idle_fingerprints_only(store_type: type[MemoryStore]) -> None:
    store = store_type()
    retention = timedelta(days=1)
    for key, at in (("stale", T0), ("live", T0 + timedelta(days=2))):
        store.record_occurrence(key, f"{key}-1", now=at, window=WINDOW)
        sent = store.claim(
            key,
            "slack",
            now=at,
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source="d.t",
            lease=LEASE,
        )
        assert sent.token is not None
        store.confirm(key, "slack", sent.token)

    pruned = store.prune_state(now=T0 + timedelta(days=2, hours=1), retention=retention)

    assert pruned >= 2  # the stale fingerprint and its channel
    assert store.channel_state("stale", "slack") is None
    assert store.channel_state("live", "slack") is not None
    assert not store.record_occurrence(
        "stale", "stale-1", now=T0 + timedelta(days=3), window=WINDOW
    ).duplicate
    assert store.record_occurrence("live", "live-1", now=T0 + timedelta(days=3), window=WINDOW).duplicate


def test_occurrences_outside_the_window_do_not_count() -> None:
    store = MemoryStore()
    counts = [
        store.record_occurrence(
            "fp", f"occ-{n}", now=T0 + timedelta(minutes=10 * n), window=timedelta(minutes=25)
        )
        for n in range(5)
    ]

    assert [c.count_in_window for c in counts] == [1, 2, 3, 3, 3]
    # mapped instances of one run are one recurrence
    grouped = [
        store.record_occurrence("grouped", f"map-{i}", now=T0, window=WINDOW, group="run_1") for i in range(4)
    ]
    assert [g.count_in_window for g in grouped] == [1, 1, 1, 1]


def test_a_full_outbox_drops_summaries_then_lower_severities_before_older_alerts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_alerting import metrics
    from airflow_alerting.state.base import OutboxItem

    store = MemoryStore()
    monkeypatch.setattr(MemoryStore, "OUTBOX_LIMIT", 3)
    counted: dict[str, int] = {}
    monkeypatch.setattr(
        metrics,
        "incr",
        lambda *parts, count=1: counted.update({".".join(parts): counted.get(".".join(parts), 0) + count}),
    )
    kinds = [  # oldest first: the oldest is the critical alert, the newest a summary
        ("announce", "first", "critical"),
        ("announce", "first", "low"),
        ("follow_up", "summary", "critical"),
        ("announce", "first", "high"),
        ("update", "updated", "high"),
        ("announce", "first", "medium"),
    ]
    with caplog.at_level("WARNING", logger="airflow_alerting.state"):
        for n, (action, reason, severity) in enumerate(kinds):
            at = T0 + timedelta(seconds=n)
            store.outbox_add(
                OutboxItem(
                    id=f"item{n}",
                    channel="slack",
                    notification={
                        "action": action,
                        "decision": {"reason": reason},
                        "classification": {"severity": severity},
                    },
                    created_at=at,
                    next_attempt_at=at,
                )
            )

    claimed = store.outbox_claim(now=T0 + timedelta(hours=1), limit=100, lease=LEASE)
    # the two summaries go first (however severe), then the lowest severity: the oldest alert stays
    assert sorted(i.id for i in claimed) == ["item0", "item3", "item5"]
    assert counted["outbox.dropped"] == 3 and counted["outbox.dropped_alerts"] == 1
    assert "least important first" in caplog.text
