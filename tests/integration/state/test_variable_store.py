"""``VariableStore`` against a real Airflow metadata database (the session's migrated SQLite).

Every store here is another worker: its own writer id, the same Variables.  The races are
forced, not hoped for: a test puts another worker's write exactly where the store pauses before
re-reading what it wrote (its ``_pause``), through Airflow's own ``Variable`` model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import metrics
from airflow_alerting.model import DecisionReason, HistoryEntry, Severity
from airflow_alerting.state import variables as variables_module
from airflow_alerting.state.base import (
    COUNTER_SHARDS,
    OUTBOX_SHARDS,
    Claim,
    OutboxItem,
    StateUnavailableError,
    _shard_of,
)
from airflow_alerting.state.variables import VariableStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=15)
LEASE = timedelta(minutes=2)


def alerting_variables() -> dict[str, Any]:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(Variable).filter(Variable.key.like("alerting.%")).all()
        return {row.key: json.loads(row.val) for row in rows}


def set_variable(key: str, value: Any) -> None:
    from airflow.models import Variable

    if value is None:
        Variable.delete(key)
    else:
        Variable.set(key, json.dumps(value))


@pytest.fixture
def clean(airflow_db: Path) -> Iterator[None]:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    def forget() -> None:
        with create_session() as session:
            session.query(Variable).filter(Variable.key.like("alerting.%")).delete(synchronize_session=False)

    forget()
    yield
    forget()


@pytest.fixture
def shadowed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    recorded: list[str] = []
    real = metrics.incr

    def incr(*parts: str, count: int = 1) -> None:
        recorded.append(".".join(parts))
        real(*parts, count=count)

    monkeypatch.setattr(metrics, "incr", incr)
    return recorded


def reads_before_a_write(worker: VariableStore, key: str, value: Any) -> None:
    """Make ``worker`` read ``value`` for ``key`` until it writes ``key``: its reads came before a
    concurrent write that its own write will land after."""
    real_read, real_write = worker._read, worker._write
    stale = [True]

    def read(k: str) -> dict[str, Any] | None:
        return value if k == key and stale[0] else real_read(k)

    def write(k: str, document: dict[str, Any]) -> None:
        if k == key:
            stale[0] = False
        real_write(k, document)

    worker._read = read  # type: ignore[method-assign]
    worker._write = write  # type: ignore[method-assign]


def store(on_pause: Callable[[VariableStore], None] | None = None) -> VariableStore:
    made = VariableStore(verify_delay=0)
    if on_pause is not None:
        made._pause = lambda attempt=0: on_pause(made)  # type: ignore[method-assign]
    return made


def writers_in_one_shard(count: int) -> list[str]:
    return [w for w in (f"writer-{n}" for n in range(1000)) if _shard_of(w, COUNTER_SHARDS) == 0][:count]


def claim(target: VariableStore, now: datetime, *, source: str = "dag.task") -> Claim:
    return target.claim(
        "fp",
        "slack",
        now=now,
        window=WINDOW,
        severity=Severity.HIGH,
        escalated=False,
        source=source,
        lease=LEASE,
    )


def sent_and_confirmed(target: VariableStore) -> None:
    first = claim(target, T0)
    assert first.decision.send and first.token
    target.confirm("fp", "slack", first.token)


def items_in_one_shard(count: int) -> list[OutboxItem]:
    made = (
        OutboxItem(
            id=f"item{n:04d}",
            channel="slack",
            notification={"n": n},
            created_at=T0,
            next_attempt_at=T0,
            incident_key="inc",
        )
        for n in range(400)
    )
    return [i for i in made if _shard_of(i.id, OUTBOX_SHARDS) == 0][:count]


# --- shadows and concurrent overwrites -----------------------------------------------------------


def test_a_concurrent_overwrite_is_not_a_shadow(clean: None, shadowed: list[str]) -> None:
    """Issue 7: another worker's read-modify-write restores the value from before our write."""
    sent_and_confirmed(store())
    racer = store()
    claim(racer, T0 + timedelta(seconds=10))
    key = racer.suppressed_key("fp", "slack")
    before = alerting_variables()[key]
    restored: list[bool] = []

    def another_worker_restores() -> None:
        if not restored:
            restored.append(True)
            set_variable(key, before)

    racer._pause = lambda attempt=0: another_worker_restores()  # type: ignore[method-assign]
    held = claim(racer, T0 + timedelta(minutes=1))

    assert restored
    assert held.decision.reason is DecisionReason.THROTTLED
    assert "state_shadowed" not in shadowed
    state = store().channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 2


def test_an_airflow_var_shadow_is_detected(
    clean: None, shadowed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent_and_confirmed(store())
    worker = store()
    key = worker.suppressed_key("fp", "slack")
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps({"counters": {}}))

    with pytest.raises(StateUnavailableError, match="shadowed"):
        claim(worker, T0 + timedelta(minutes=1))

    assert "state_shadowed" in shadowed


def test_a_shadow_is_detected_by_what_reads_back(
    clean: None, shadowed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secrets backend shadows without an environment variable: only reading back shows it."""
    sent_and_confirmed(store())
    worker = store()
    key = worker.suppressed_key("fp", "slack")
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps({"counters": {}}))
    monkeypatch.setattr(variables_module, "_shadowed", lambda key: False)

    with pytest.raises(StateUnavailableError, match="shadowed"):
        claim(worker, T0 + timedelta(minutes=1))

    assert "state_shadowed" in shadowed


def test_a_shadowed_fingerprint_document_fails_open_at_the_next_send(
    clean: None, shadowed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen fingerprint document never takes the sender's claim: the sender notices."""
    monkeypatch.setenv("AIRFLOW_VAR_ALERTING.FP.FP", json.dumps({"fingerprint": "fp", "channels": {}}))
    monkeypatch.setattr(variables_module, "_shadowed", lambda key: False)

    with pytest.raises(StateUnavailableError, match="shadowed"):
        claim(store(), T0)


# --- racing workers keep what they wrote ---------------------------------------------------------


def test_two_workers_adding_to_the_outbox_from_stale_reads_keep_both_items(clean: None) -> None:
    first_item, second_item = items_in_one_shard(2)
    index_key = VariableStore._outbox_index_key(0)
    second = store()

    def second_worker_writes_from_a_stale_read(first: VariableStore) -> None:
        if second_item.id in (alerting_variables().get(index_key) or {}).get("items", {}):
            return
        # the second worker read the index before the first worker's write landed
        reads_before_a_write(second, index_key, None)
        second.outbox_add(second_item)

    store(second_worker_writes_from_a_stale_read).outbox_add(first_item)

    reader = store()
    assert sorted(i["id"] for i in reader._outbox()) == [first_item.id, second_item.id]
    claimed = reader.outbox_claim(now=T0, limit=10, lease=LEASE)
    assert sorted(i.id for i in claimed) == [first_item.id, second_item.id]
    assert reader.outbox_claim(now=T0 + timedelta(seconds=1), limit=10, lease=LEASE) == []
    reader.outbox_remove(first_item.id)
    assert reader.outbox_drop("inc") == 1
    assert [k for k in alerting_variables() if k.startswith("alerting.outbox.item.")] == []


def test_held_back_occurrences_of_racing_workers_are_all_counted(clean: None) -> None:
    sent_and_confirmed(store())
    workers = [store() for _ in range(4)]
    for worker, writer in zip(workers, writers_in_one_shard(4), strict=True):
        worker.writer = writer  # every worker on the same counters document: the worst case
    key = workers[0].suppressed_key("fp", "slack")
    running: list[int] = []
    started: set[int] = set()
    before: dict[int, Any] = {}

    def meanwhile(index: int) -> None:
        # each worker's write is overwritten by the next one's, which read before it wrote
        following = index + 1
        if following < len(workers) and following not in started:
            reads_before_a_write(workers[following], key, before[index])
            hold_back(following)

    def hold_back(index: int) -> None:
        started.add(index)
        before[index] = alerting_variables().get(key)
        workers[index]._pause = lambda attempt=0: meanwhile(index)  # type: ignore[method-assign]
        decision = claim(workers[index], T0 + timedelta(seconds=index + 1), source=f"d.t{index}").decision
        running.append(decision.suppressed.count)

    hold_back(0)

    state = store().channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 4
    assert 1 in running
    resend = claim(store(), T0 + WINDOW)
    assert resend.decision.send and resend.decision.suppressed.count == 4


def test_a_losing_sender_hands_its_claim_to_the_winner(clean: None) -> None:
    winner = store()
    won: list[Claim] = []

    def winner_claims_meanwhile(loser: VariableStore) -> None:
        if won or not alerting_variables().get(VariableStore.claim_key("fp", "slack")):
            return
        losers_document = alerting_variables()["alerting.fp.fp"]
        set_variable("alerting.fp.fp", None)  # the winner read before the loser wrote
        won.append(claim(winner, T0))
        set_variable("alerting.fp.fp", losers_document)  # the loser's slow write lands last

    lost = claim(store(winner_claims_meanwhile), T0)

    assert won and won[0].token
    assert lost.decision.reason is DecisionReason.IN_FLIGHT and lost.decision.suppressed.count == 1
    assert alerting_variables()["alerting.fp.fp"]["channels"]["slack"]["claim_token"] == won[0].token
    winner.confirm("fp", "slack", won[0].token)
    state = store().channel_state("fp", "slack")
    assert state is not None and state.claim_token is None and state.suppressed.count == 1


# --- history, retention --------------------------------------------------------------------------


def test_history_across_workers_is_bounded_and_newest_first(clean: None) -> None:
    workers = [VariableStore(verify_delay=0, history_limit=60) for _ in range(3)]
    for n in range(150):
        at = T0 + timedelta(seconds=n)
        entry = HistoryEntry(at, f"fp{n}", "dag.task", "task_failure", "high", "slack", "first", True)
        workers[n % 3].append_history([entry])

    history = workers[0].history(limit=100)

    assert [e.fingerprint for e in history] == [f"fp{n}" for n in range(149, 89, -1)]


def test_prune_state_leaves_only_bounded_state_after_many_distinct_failures(clean: None) -> None:
    writer = store()
    for n in range(60):
        at = T0 + timedelta(seconds=n)
        fingerprint = f"fp{n}"
        writer.record_occurrence(fingerprint, f"occ{n}", now=at, window=WINDOW)
        sent = writer.claim(
            fingerprint,
            "slack",
            now=at,
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source="d.t",
            lease=LEASE,
        )
        assert sent.token
        writer.confirm(fingerprint, "slack", sent.token)
        writer.claim(
            fingerprint,
            "slack",
            now=at + timedelta(seconds=1),
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source="d.t",
            lease=LEASE,
        )
        writer.append_history(
            [HistoryEntry(at, fingerprint, "d.t", "task_failure", "high", "slack", "first", True)]
        )
    live_at = T0 + timedelta(days=2)
    writer.record_occurrence("live", "occ-live", now=live_at, window=WINDOW)
    before = alerting_variables()

    pruned = store().prune_state(now=live_at + timedelta(minutes=1), retention=timedelta(days=1))

    left = alerting_variables()
    assert len(before) > 3 * 60
    assert pruned >= 3 * 60  # per failure: its fingerprint document, counters and claim Variable
    assert "alerting.fp.live" in left
    assert not [k for k in left if k.startswith(("alerting.fp.fp", "alerting.sup.", "alerting.claim."))]
    assert all(k.startswith(("alerting.history", "alerting.keys.", "alerting.fp.live")) for k in left), left
    assert len(writer.history(limit=500)) == 60
