"""The document stores' claims, counters, history, outbox and retention, alone and with racing writers.

``MemoryStore`` (atomic, native history and outbox index) and :class:`DictStore` (the Variables
store's layout and verification over a shared dict, no Airflow) must agree on the contract.  The
racing tests force the interleavings that lose updates without verification: a second writer
whose read came before our write and whose write lands after it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from docstore_support import DictStore, SharedDocuments, restore_once, writers_in_one_shard
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting import metrics
from airflow_alerting.model import DecisionReason, HistoryEntry, Severity
from airflow_alerting.state.base import (
    COUNTER_SHARDS,
    HISTORY_CHUNK,
    OUTBOX_ITEM_MAX_AGE,
    OUTBOX_SHARDS,
    Claim,
    DocumentStore,
    OutboxItem,
    StateUnavailableError,
    _shard_of,
)
from airflow_alerting.testing import MemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=15)
LEASE = timedelta(minutes=2)


@pytest.fixture(params=["memory", "dict"])
def store(request: pytest.FixtureRequest) -> DocumentStore:
    return MemoryStore() if request.param == "memory" else DictStore()


def claim(store: DocumentStore, now: datetime, *, key: str = "fp", source: str = "dag.task") -> Claim:
    return store.claim(
        key,
        "slack",
        now=now,
        window=WINDOW,
        severity=Severity.HIGH,
        escalated=False,
        source=source,
        lease=LEASE,
    )


def item(n: int, *, at: datetime = T0, due: datetime | None = None, incident: str = "inc") -> OutboxItem:
    return OutboxItem(
        id=f"item{n:04d}",
        channel="slack",
        notification={"n": n},
        created_at=at,
        next_attempt_at=due or at,
        incident_key=incident,
    )


def entry(n: int, at: datetime = T0) -> HistoryEntry:
    return HistoryEntry(
        at=at,
        fingerprint=f"fp{n}",
        source=f"dag.task_{n}",
        kind="task_failure",
        severity="high",
        channel="slack",
        reason="first",
        sent=True,
    )


def ids(items: list[OutboxItem] | list[dict[str, Any]]) -> list[str]:
    return [i.id if isinstance(i, OutboxItem) else str(i["id"]) for i in items]


# --- claims and per-claimer counters -------------------------------------------------------------


def test_claim_counts_what_it_holds_back_and_the_next_send_carries_it(store: DocumentStore) -> None:
    first = claim(store, T0)
    assert first.decision.send and first.token
    store.confirm("fp", "slack", first.token)

    held = [claim(store, T0 + timedelta(minutes=m), source=f"dag.t{m}") for m in (1, 2, 3)]

    assert [c.decision.reason for c in held] == [DecisionReason.THROTTLED] * 3
    assert [c.decision.suppressed.count for c in held] == [1, 2, 3]
    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 3
    assert state.suppressed.sources == ("dag.t1", "dag.t2", "dag.t3")
    after = claim(store, T0 + WINDOW)
    assert after.decision.reason is DecisionReason.WINDOW_ELAPSED
    assert after.decision.suppressed.count == 3
    assert after.decision.suppressed.since == T0 + timedelta(minutes=1)


def test_release_gives_back_the_window_and_the_carried_counts(store: DocumentStore) -> None:
    first = claim(store, T0)
    assert first.token
    store.confirm("fp", "slack", first.token)
    claim(store, T0 + timedelta(minutes=1))
    claim(store, T0 + timedelta(minutes=2))
    resend = claim(store, T0 + WINDOW)
    assert resend.token and resend.decision.suppressed.count == 2
    in_flight = claim(store, T0 + WINDOW + timedelta(seconds=1))
    assert in_flight.decision.reason is DecisionReason.IN_FLIGHT

    store.release("fp", "slack", resend.token)

    state = store.channel_state("fp", "slack")
    assert state is not None
    assert state.last_sent_at == T0
    assert state.suppressed.count == 3  # the two carried back, and the one held while in flight
    again = claim(store, T0 + WINDOW + timedelta(seconds=2))
    assert again.decision.send and again.decision.suppressed.count == 3


def test_an_expired_lease_rolls_the_claim_back(store: DocumentStore) -> None:
    first = claim(store, T0)
    assert first.token
    store.confirm("fp", "slack", first.token)
    claim(store, T0 + timedelta(minutes=1))
    crashed = claim(store, T0 + WINDOW)
    assert crashed.token

    later = claim(store, T0 + WINDOW + LEASE + timedelta(seconds=1))

    assert later.decision.send
    assert later.decision.suppressed.count == 1
    store.confirm("fp", "slack", crashed.token)  # too late: the claim is no longer there
    state = store.channel_state("fp", "slack")
    assert state is not None and state.claim_token == later.token


def test_a_summary_takes_what_it_reported(store: DocumentStore) -> None:
    first = claim(store, T0)
    assert first.token
    store.confirm("fp", "slack", first.token)
    for m in range(1, 5):
        claim(store, T0 + timedelta(minutes=m))

    store.clear_suppressed("fp", "slack", 3)

    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 1
    assert claim(store, T0 + timedelta(minutes=6)).decision.suppressed.count == 2
    store.clear_suppressed("fp", "slack", 10)
    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 0


def test_reset_window_forgets_the_channel_and_its_counters(store: DocumentStore) -> None:
    first = claim(store, T0)
    assert first.token
    store.confirm("fp", "slack", first.token)
    claim(store, T0 + timedelta(minutes=1))

    store.reset_window("fp", "slack")

    assert store.channel_state("fp", "slack") is None
    again = claim(store, T0 + timedelta(minutes=2))
    assert again.decision.reason is DecisionReason.FIRST and again.decision.suppressed.count == 0


def test_state_written_before_per_claimer_counters_still_counts() -> None:
    store = DictStore()
    legacy = {
        "last_sent_at": T0.isoformat(),
        "last_sent_severity": "high",
        "suppressed": {"count": 4, "since": T0.isoformat(), "until": T0.isoformat(), "sources": ["a.b"]},
    }
    store.shared.put(
        "alerting.fp.fp", {"fingerprint": "fp", "seen": [], "occurrences": [], "channels": {"slack": legacy}}
    )

    held = claim(store, T0 + timedelta(minutes=1))
    assert held.decision.suppressed.count == 5
    resend = claim(store, T0 + WINDOW)
    assert resend.decision.suppressed.count == 5
    assert resend.token
    store.release("fp", "slack", resend.token)
    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 5


# --- history -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "dict"])
def test_history_is_bounded_and_newest_first(kind: str) -> None:
    store: DocumentStore = (
        MemoryStore(history_limit=120) if kind == "memory" else DictStore(history_limit=120)
    )
    for n in range(300):
        store.append_history([entry(n, T0 + timedelta(seconds=n))])

    history = store.history(limit=1000)

    assert [e.fingerprint for e in history] == [f"fp{n}" for n in range(299, 179, -1)]
    assert [e.fingerprint for e in store.history(limit=3)] == ["fp299", "fp298", "fp297"]


def test_history_keeps_write_order_among_equal_times(store: DocumentStore) -> None:
    store.append_history([entry(1), entry(2)])
    store.append_history([entry(3)])

    assert [e.fingerprint for e in store.history()] == ["fp3", "fp2", "fp1"]


def test_history_of_several_writers_is_merged_by_time() -> None:
    shared = SharedDocuments()
    writers = [DictStore(shared) for _ in range(5)]
    for n in range(100):
        writers[n % 5].append_history([entry(n, T0 + timedelta(seconds=n))])

    history = writers[0].history(limit=500)

    assert [e.fingerprint for e in history] == [f"fp{n}" for n in range(99, -1, -1)]


def test_history_written_by_0_1_0_is_still_read() -> None:
    store = DictStore()
    store.shared.put("alerting.history", {"entries": [entry(0, T0).to_json()]})
    store.append_history([entry(1, T0 + timedelta(seconds=1))])

    assert [e.fingerprint for e in store.history()] == ["fp1", "fp0"]


# --- outbox --------------------------------------------------------------------------------------


def test_outbox_items_are_leased_updated_removed_and_dropped(store: DocumentStore) -> None:
    for n in range(3):
        store.outbox_add(item(n, incident="inc-a" if n < 2 else "inc-b"))
    store.outbox_add(item(9, due=T0 + timedelta(hours=1)))

    claimed = store.outbox_claim(now=T0, limit=10, lease=LEASE)

    assert sorted(ids(claimed)) == ["item0000", "item0001", "item0002"]
    assert all(i.next_attempt_at == T0 + LEASE for i in claimed)
    assert store.outbox_claim(now=T0 + timedelta(seconds=30), limit=10, lease=LEASE) == []
    store.outbox_update(replace(claimed[0], attempts=3, last_error="boom", next_attempt_at=T0))
    [again] = store.outbox_claim(now=T0 + timedelta(seconds=30), limit=10, lease=LEASE)
    assert (again.id, again.attempts, again.last_error) == (claimed[0].id, 3, "boom")
    assert store.outbox_drop("inc-a") == 2
    store.outbox_remove("item0002")
    assert ids(store._outbox()) == ["item0009"]
    store.outbox_update(replace(claimed[0], attempts=4))  # dropped already: not brought back
    assert ids(store._outbox()) == ["item0009"]
    assert ids(store.outbox_claim(now=T0 + timedelta(hours=2), limit=10, lease=LEASE)) == ["item0009"]


def test_outbox_claim_takes_the_earliest_due_first_up_to_the_limit(store: DocumentStore) -> None:
    for n in range(6):
        store.outbox_add(item(n, due=T0 - timedelta(minutes=n)))

    claimed = store.outbox_claim(now=T0, limit=2, lease=LEASE)

    assert ids(claimed) == ["item0005", "item0004"]


def test_outbox_drops_the_oldest_beyond_its_limit(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(store), "OUTBOX_LIMIT", 8)
    dropped: list[int] = []
    monkeypatch.setattr(
        metrics, "incr", lambda *parts, count=1: dropped.append(count) if "dropped" in parts else None
    )
    for n in range(40):
        store.outbox_add(item(n, at=T0 + timedelta(seconds=n)))

    kept = ids(store._outbox())

    assert 1 <= len(kept) <= 8
    assert "item0039" in kept
    assert len(kept) + sum(dropped) == 40
    assert sorted(ids(store.outbox_claim(now=T0 + timedelta(hours=1), limit=100, lease=LEASE))) == kept


# --- racing writers (the Variables store's layout) ----------------------------------------------


def test_a_concurrent_overwrite_is_repaired_not_taken_for_a_shadow() -> None:
    """The false "shadowed" of issue 7: another worker's read-modify-write restores the older value."""
    shared = SharedDocuments()
    sender = DictStore(shared)
    first = claim(sender, T0)
    assert first.token
    sender.confirm("fp", "slack", first.token)
    racer = DictStore(shared)
    claim(racer, T0 + timedelta(seconds=30))
    racer.on_pause = restore_once(racer.suppressed_key("fp", "slack"))

    held = claim(racer, T0 + timedelta(minutes=1))

    assert held.decision.reason is DecisionReason.THROTTLED
    assert held.decision.suppressed.count == 2
    state = sender.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 2


def test_a_key_that_ignores_two_writes_is_a_shadow() -> None:
    shared = SharedDocuments()
    sender = DictStore(shared)
    first = claim(sender, T0)
    assert first.token
    sender.confirm("fp", "slack", first.token)
    shadowed = DictStore(shared)
    shadowed.frozen = frozenset({shadowed.suppressed_key("fp", "slack")})

    with pytest.raises(StateUnavailableError, match="ignores writes"):
        claim(shadowed, T0 + timedelta(minutes=1))


def test_two_writers_adding_to_the_outbox_from_stale_reads_keep_both_items() -> None:
    shared = SharedDocuments()
    second = DictStore(shared)

    def meanwhile(first: DictStore) -> None:
        # the second writer read the index before the first wrote, and writes after it
        if second.reads == 0:
            index_key = DocumentStore._outbox_index_key(0)
            versions = shared.versions.get(index_key, [None])
            second.stale[index_key] = json.loads(versions[-2]) if len(versions) > 1 and versions[-2] else None
            second.outbox_add(same_shard_item)

    first = DictStore(shared, on_pause=meanwhile)
    a, same_shard_item = items_in_one_shard(2)

    first.outbox_add(a)

    assert sorted(ids(first._outbox())) == sorted([a.id, same_shard_item.id])


def items_in_one_shard(count: int) -> list[OutboxItem]:
    from airflow_alerting.state.base import OUTBOX_SHARDS, _shard_of

    found = [i for i in (item(n) for n in range(200)) if _shard_of(i.id, OUTBOX_SHARDS) == 0]
    return found[:count]


@st.composite
def interleavings(draw: st.DrawFn) -> list[bool]:
    """For each of 2-6 writers: does the next one read before this one's write lands?"""
    return draw(st.lists(st.booleans(), min_size=2, max_size=6))


def nested_writers(
    shared: SharedDocuments, nested: list[bool], act: Callable[[DictStore, int], None]
) -> None:
    """Run ``act`` once per writer.  When ``nested[i]``, writer i+1 runs inside writer i's first
    pause, reading what the documents writer i wrote held before it wrote them: its read came
    before writer i's write, its write lands after it.  Otherwise writer i+1 runs after writer i."""
    stores: list[DictStore] = []
    ran: set[int] = set()
    written_before: dict[int, dict[str, int]] = {}

    def run(index: int) -> None:
        ran.add(index)
        written_before[index] = {k: len(v) for k, v in shared.versions.items()}
        act(stores[index], index)

    def pause_of(index: int) -> Callable[[DictStore], None]:
        def hook(store: DictStore) -> None:
            following = index + 1
            if following >= len(nested) or not nested[index] or following in ran:
                return
            start = written_before[index]
            for key, versions in shared.versions.items():
                if len(versions) > start.get(key, 0):
                    before = versions[start[key] - 1] if start.get(key) else None
                    stores[following].stale[key] = json.loads(before) if before else None
            run(following)
            stores[following].stale.clear()

        return hook

    stores.extend(DictStore(shared, on_pause=pause_of(i)) for i in range(len(nested)))
    for index in range(len(nested)):
        if index not in ran:
            run(index)


@given(interleavings())
@settings(max_examples=60, deadline=None)
def test_outbox_items_survive_any_nesting_of_stale_writers(nested: list[bool]) -> None:
    shared = SharedDocuments()
    wanted = items_in_one_shard(len(nested))

    nested_writers(shared, nested, lambda store, i: store.outbox_add(wanted[i]))

    reader = DictStore(shared)
    assert sorted(ids(reader._outbox())) == sorted(ids(wanted))
    assert sorted(ids(reader.outbox_claim(now=T0, limit=100, lease=LEASE))) == sorted(ids(wanted))


@given(interleavings())
@settings(max_examples=60, deadline=None)
def test_held_back_occurrences_are_counted_exactly_under_any_nesting(nested: list[bool]) -> None:
    shared = SharedDocuments()
    sender = DictStore(shared)
    first = claim(sender, T0)
    assert first.token
    sender.confirm("fp", "slack", first.token)
    running: list[int] = []
    writers = writers_in_one_shard(len(nested), COUNTER_SHARDS)

    def hold_back(store: DictStore, index: int) -> None:
        store.writer = writers[index]  # every claimer on one document: the worst case
        running.append(
            claim(store, T0 + timedelta(seconds=index + 1), source=f"d.t{index}").decision.suppressed.count
        )

    nested_writers(shared, nested, hold_back)

    state = sender.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == len(nested)
    assert 1 in running  # someone schedules the follow-up
    assert claim(sender, T0 + WINDOW).decision.suppressed.count == len(nested)


@given(interleavings())
@settings(max_examples=40, deadline=None)
def test_history_entries_survive_any_nesting_of_stale_writers(nested: list[bool]) -> None:
    shared = SharedDocuments()

    def append(store: DictStore, index: int) -> None:
        store.writer = "same-shard"  # every writer on one shard: the worst case
        store.append_history([entry(index, T0 + timedelta(seconds=index))])

    nested_writers(shared, nested, append)

    assert sorted(e.fingerprint for e in DictStore(shared).history()) == sorted(
        f"fp{i}" for i in range(len(nested))
    )


def test_a_losing_sender_counts_as_held_back_and_hands_its_claim_over() -> None:
    from airflow_alerting.state.variables import VariableStore

    shared = SharedDocuments()

    class RacingVariables(VariableStore):
        """The Variables store's claim protocol over the shared dict."""

        def __init__(self) -> None:
            super().__init__(verify_delay=0)
            self.inner = DictStore(shared)

        def _read(self, key: str) -> dict[str, Any] | None:
            return self.inner._read(key)

        def _write(self, key: str, document: dict[str, Any]) -> None:
            self.inner._write(key, document)

        def _delete(self, key: str) -> None:
            self.inner._delete(key)

    loser, winner = RacingVariables(), RacingVariables()
    claim_key = VariableStore.claim_key("fp", "slack")
    won: list[Claim] = []

    def winner_claims_meanwhile(attempt: int = 0) -> None:
        # the winner read the fingerprint document before the loser's write and claims now;
        # the loser's slow write of the document lands after the winner's
        if won or shared.get(claim_key) is None:
            return  # not the pause after writing the claim Variable
        losers_document = shared.get("alerting.fp.fp")
        winner.inner.stale["alerting.fp.fp"] = None
        won.append(claim(winner, T0))
        shared.put("alerting.fp.fp", losers_document)

    loser._pause = winner_claims_meanwhile  # type: ignore[method-assign]

    lost = claim(loser, T0)

    assert won[0].decision.send and won[0].token
    assert (lost.decision.send, lost.decision.reason) == (False, DecisionReason.IN_FLIGHT)
    assert lost.decision.suppressed.count == 1
    assert shared.get(claim_key) == {"token": won[0].token}
    raw = shared.get("alerting.fp.fp")
    assert raw is not None and raw["channels"]["slack"]["claim_token"] == won[0].token
    winner.confirm("fp", "slack", won[0].token)
    state = winner.channel_state("fp", "slack")
    assert state is not None and state.claim_token is None and state.suppressed.count == 1


# --- retention -----------------------------------------------------------------------------------


def test_prune_state_removes_what_is_stale_and_keeps_what_is_live(store: DocumentStore) -> None:
    retention = timedelta(days=1)
    for key, at in (("stale", T0), ("live", T0 + timedelta(days=2))):
        store.record_occurrence(key, f"{key}-1", now=at, window=WINDOW)
        sent = claim(store, at, key=key)
        assert sent.token
        store.confirm(key, "slack", sent.token)
        claim(store, at + timedelta(minutes=1), key=key)
    store.outbox_add(item(1, at=T0))
    store.outbox_add(item(2, at=T0 + timedelta(days=2)))
    now = T0 + timedelta(days=2, hours=1)

    pruned = store.prune_state(now=now, retention=retention)

    assert pruned >= 3  # the stale fingerprint document, its counters, the old outbox item
    assert store.channel_state("stale", "slack") is None
    live = store.channel_state("live", "slack")
    assert live is not None and live.suppressed.count == 1
    assert ids(store._outbox()) == ["item0002"]
    if isinstance(store, DictStore):
        left = store.shared.keys("alerting.")
        assert not [k for k in left if ".stale" in k], left
    assert store.prune_state(now=now, retention=retention) == 0
    assert store.record_occurrence("live", "live-1", now=now, window=WINDOW).duplicate
    assert not store.record_occurrence("stale", "stale-1", now=now, window=WINDOW).duplicate


def test_prune_state_keeps_outbox_items_younger_than_the_give_up_age(store: DocumentStore) -> None:
    store.outbox_add(item(1, at=T0))
    assert store.prune_state(now=T0 + OUTBOX_ITEM_MAX_AGE - timedelta(minutes=1), retention=timedelta(0)) == 0
    assert ids(store._outbox()) == ["item0001"]


def test_prune_state_moves_a_0_1_0_outbox_to_one_document_per_item() -> None:
    store = DictStore()
    store.shared.put("alerting.outbox", {"items": [item(1).to_json(), item(2).to_json()]})

    store.prune_state(now=T0, retention=timedelta(days=1))

    assert store.shared.get("alerting.outbox") is None
    assert sorted(ids(store.outbox_claim(now=T0, limit=10, lease=LEASE))) == ["item0001", "item0002"]


def test_a_thousand_failures_leave_no_state_once_stale() -> None:
    store = DictStore()
    for n in range(1000):
        at = T0 + timedelta(seconds=n)
        store.record_occurrence(f"fp{n}", f"occ{n}", now=at, window=WINDOW)
        sent = claim(store, at, key=f"fp{n}")
        assert sent.token
        store.confirm(f"fp{n}", "slack", sent.token)
        store.append_history([entry(n, at)])
    before = len(store.shared.keys("alerting."))

    store.prune_state(now=T0 + timedelta(days=3), retention=timedelta(days=1))

    left = store.shared.keys("alerting.")
    assert before > 1000
    # what is left is bounded whatever the number of failures: history and empty indexes
    assert all(k.startswith(("alerting.history", "alerting.keys.")) for k in left), left[:20]
    assert len(left) <= 8 * (1 + 500 // HISTORY_CHUNK) + 8


# --- cost ----------------------------------------------------------------------------------------


def test_round_trips_per_alert_do_not_grow_with_history_or_outbox() -> None:
    """Count the store's reads and writes per alert (not wall time), with empty and full state."""
    from airflow_alerting.manager import AlertManager, DeliveryOptions
    from airflow_alerting.model import Alert
    from airflow_alerting.testing import FrozenClock, RecordingChannel

    def trips(history: int, outbox: int, store: DocumentStore) -> list[int]:
        clock = FrozenClock(T0)
        manager = AlertManager(
            store=store,
            channels={n: RecordingChannel(n) for n in ("email", "slack", "pagerduty")},
            clock=clock,
            delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0, backoff_cap=0),
        )
        for start in range(0, history, 50):
            store.append_history([entry(n) for n in range(start, min(history, start + 50))])
        for n in range(outbox):
            store.outbox_add(item(n, due=T0 + timedelta(days=30)))
        counted: list[int] = []
        for run in range(60):
            before = counter(store)
            manager.handle(
                Alert(
                    dag_id=f"etl{run % 3}",
                    task_id="load",
                    run_id=f"run_{run}",
                    exception_type="PermissionError",
                    exception_mro=("PermissionError", "OSError", "Exception"),
                    message=f"role LOADER{run % 3} lacks USAGE on warehouse",
                )
            )
            counted.append(counter(store) - before)
            clock.advance(minutes=1)
        return counted

    empty = trips(0, 0, DictStore())
    full = trips(2000, 600, DictStore())
    assert max(full) <= max(empty) + 1  # + the occasional move of a full history head into a chunk
    assert statistics.median(full) == statistics.median(empty)
    assert trips(2000, 600, CountingMemoryStore()) == trips(0, 0, CountingMemoryStore())


class CountingMemoryStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.round_trips = 0

    def _read(self, key: str) -> dict[str, Any] | None:
        self.round_trips += 1
        return super()._read(key)

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self.round_trips += 1
        super()._write(key, document)


def counter(store: DocumentStore) -> int:
    return int(getattr(store, "round_trips", 0))


def queued(n: int, *, action: str = "announce", severity: str = "high", reason: str = "first") -> OutboxItem:
    return replace(
        item(n, at=T0 + timedelta(seconds=n)),
        notification={
            "action": action,
            "decision": {"reason": reason},
            "classification": {"severity": severity},
        },
    )


def test_a_full_outbox_drops_summaries_then_lower_severities_before_older_alerts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = DictStore()
    monkeypatch.setattr(DictStore, "OUTBOX_LIMIT", 4 * 3)  # 3 items per index shard
    counted: dict[str, int] = {}
    monkeypatch.setattr(
        metrics,
        "incr",
        lambda *parts, count=1: counted.update({".".join(parts): counted.get(".".join(parts), 0) + count}),
    )
    # one index shard's worth: the oldest is the critical alert, the newest a summary
    shard = [n for n in range(400) if _shard_of(f"item{n:04d}", OUTBOX_SHARDS) == 0][:6]
    kinds = [
        {"severity": "critical"},
        {"severity": "low"},
        {"action": "follow_up", "reason": "summary", "severity": "critical"},
        {"severity": "high"},
        {"action": "update", "reason": "updated", "severity": "high"},
        {"severity": "medium"},
    ]
    with caplog.at_level("WARNING", logger="airflow_alerting.state"):
        for n, kind in zip(shard, kinds, strict=True):
            store.outbox_add(queued(n, **kind))

    kept = ids(store._outbox())
    # the two summaries go first (however severe), then the lowest severity: the oldest alert stays
    assert kept == [f"item{shard[0]:04d}", f"item{shard[3]:04d}", f"item{shard[5]:04d}"]
    assert counted["outbox.dropped"] == 3 and counted["outbox.dropped_alerts"] == 1
    assert "least important first" in caplog.text
    assert store.shared.keys("alerting.outbox.item.") == sorted(f"alerting.outbox.item.{k}" for k in kept)


def test_a_summary_added_to_a_full_outbox_of_alerts_is_the_one_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DictStore()
    monkeypatch.setattr(DictStore, "OUTBOX_LIMIT", 4 * 2)
    shard = [n for n in range(400) if _shard_of(f"item{n:04d}", OUTBOX_SHARDS) == 0][:3]
    store.outbox_add(queued(shard[0], severity="low"))
    store.outbox_add(queued(shard[1], severity="low"))

    store.outbox_add(queued(shard[2], action="follow_up", reason="summary", severity="critical"))

    assert ids(store._outbox()) == [f"item{shard[0]:04d}", f"item{shard[1]:04d}"]
    assert store._read(store._outbox_item_key(f"item{shard[2]:04d}")) is None


def test_outbox_rank_orders_alerts_above_summaries_then_by_severity() -> None:
    from airflow_alerting.state.base import outbox_rank

    alert = outbox_rank(queued(1, severity="low"))
    summary = outbox_rank(queued(2, action="follow_up", reason="summary", severity="critical"))
    escalated = outbox_rank(
        replace(
            queued(3, severity="medium"),
            notification={**queued(3).notification, "escalation": {"to": "critical"}},
        )
    )
    damaged = outbox_rank(replace(queued(4), notification={"classification": {"severity": "bogus"}}))

    assert summary < alert < escalated
    assert damaged == (1, 1)


def test_outbox_depth_counts_due_and_later_items_until_they_are_removed(store: DocumentStore) -> None:
    assert store.outbox_depth() == 0
    store.outbox_add(item(1))
    store.outbox_add(item(2, due=T0 + timedelta(hours=1)))
    store.outbox_add(item(1))  # the same id replaces, it does not add

    assert store.outbox_depth() == 2
    (claimed,) = store.outbox_claim(now=T0, limit=10, lease=LEASE)
    assert store.outbox_depth() == 2  # leased, still queued
    store.outbox_remove(claimed.id)
    assert store.outbox_depth() == 1
