"""Model-based test: the SQL store's claims behave exactly like the reference ``MemoryStore``.

``MemoryStore`` applies :mod:`airflow_alerting.throttle`'s pure rules read-modify-write; the SQL
store implements them as conditional SQL.  Hypothesis drives both with the same random sequences
of claims, confirms, releases (current and stale tokens), occurrences and clock steps (including
the boundaries 1 µs before and exactly at the end of a window or a lease) and requires identical
decisions and identical stored state after every step.

SQLite in a temporary file with an injected clock (``use_database_clock=False``) keeps it
deterministic and fast; the same SQL runs on PostgreSQL and MariaDB in the integration tests.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from airflow_alerting.model import DecisionReason, Severity
from airflow_alerting.state.memory import MemoryStore
from airflow_alerting.state.sql import SqlStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
FINGERPRINTS = ("fp-a", "fp-b")
#: a fixed window per channel, so "one send per window" is well defined per key
WINDOWS = {"chat": timedelta(seconds=10), "mail": timedelta(seconds=60), "page": timedelta(0)}
LEASES = (timedelta(seconds=5), timedelta(seconds=30))
STEPS = (
    timedelta(microseconds=1),
    timedelta(seconds=1),
    timedelta(seconds=5) - timedelta(microseconds=1),
    timedelta(seconds=5),
    timedelta(seconds=10) - timedelta(microseconds=1),
    timedelta(seconds=10),
    timedelta(seconds=31),
    timedelta(seconds=61),
)
#: more sources than throttle.MAX_SOURCES, so the bound on remembered sources is exercised
SOURCES = tuple(f"dag.task_{i}" for i in range(12))
OCCURRENCE_IDS = tuple(f"dag|task|run_{i}|-1|1|task_failure" for i in range(5))
#: the escalation window is one policy value per deployment; MemoryStore prunes its remembered
#: occurrence times with the window of each call, so only a fixed window per fingerprint compares
OCCURRENCE_WINDOWS = {"fp-a": timedelta(0), "fp-b": timedelta(seconds=10)}
HELD_BACK = {DecisionReason.THROTTLED, DecisionReason.IN_FLIGHT}

_DIRECTORY = tempfile.mkdtemp(prefix="alerting-sql-model-")
# one store (engine, tables) for every example; each example works in its own fingerprints
_SQL = SqlStore(url=f"sqlite:///{_DIRECTORY}/model.db", table_prefix="model_", use_database_clock=False)


def teardown_module() -> None:
    _SQL.drop_tables()
    shutil.rmtree(_DIRECTORY, ignore_errors=True)


@dataclass(frozen=True)
class Pending:
    fingerprint: str
    channel: str
    memory_token: str
    sql_token: str
    at: datetime
    reason: DecisionReason


class SqlAgreesWithMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.memory = MemoryStore()
        self.namespace = uuid.uuid4().hex[:12]
        self.now = T0
        self.pending: list[Pending] = []
        self.settled: list[Pending] = []
        #: the last send per key whose confirm took effect: (claimed at, reason)
        self.last_kept: dict[tuple[str, str], tuple[datetime, DecisionReason]] = {}
        #: each store makes its own tokens; the SQL store's, translated to the memory store's
        self.tokens: dict[str, str] = {}

    def fp(self, name: str) -> str:
        return f"{self.namespace}-{name}"

    @rule(
        fingerprint=st.sampled_from(FINGERPRINTS),
        channel=st.sampled_from(sorted(WINDOWS)),
        severity=st.sampled_from(list(Severity)),
        escalated=st.booleans(),
        lease=st.sampled_from(LEASES),
        source=st.sampled_from(SOURCES),
    )
    def claim(
        self,
        fingerprint: str,
        channel: str,
        severity: Severity,
        escalated: bool,
        lease: timedelta,
        source: str,
    ) -> None:
        fp, window = self.fp(fingerprint), WINDOWS[channel]
        before = _SQL.channel_state(fp, channel)
        arguments: dict[str, Any] = {
            "now": self.now,
            "window": window,
            "severity": severity,
            "escalated": escalated,
            "source": source,
            "lease": lease,
        }
        expected = self.memory.claim(fp, channel, **arguments)
        actual = _SQL.claim(fp, channel, **arguments)

        assert actual.decision == expected.decision
        assert (actual.token is None) == (expected.token is None)
        assert actual.decision.send or actual.decision.reason in HELD_BACK
        # liveness: with no pending claim and the window over, the store must let the alert out
        healthy = before is None or before.settled(self.now).claim_token is None
        last = before.settled(self.now).last_sent_at if before is not None else None
        if healthy and (last is None or self.now - last >= window):
            assert actual.decision.send, (before, actual)
        if actual.token is not None and expected.token is not None:
            self.tokens[actual.token] = expected.token
            self.pending.append(
                Pending(fp, channel, expected.token, actual.token, self.now, actual.decision.reason)
            )

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), delivered=st.booleans())
    def settle(self, data: st.DataObject, delivered: bool) -> None:
        claim = data.draw(st.sampled_from(self.pending))
        self.pending.remove(claim)
        self.settled.append(claim)
        before = _SQL.channel_state(claim.fingerprint, claim.channel)
        if not delivered:
            self.memory.release(claim.fingerprint, claim.channel, claim.memory_token)
            _SQL.release(claim.fingerprint, claim.channel, claim.sql_token)
            return
        self.memory.confirm(claim.fingerprint, claim.channel, claim.memory_token)
        _SQL.confirm(claim.fingerprint, claim.channel, claim.sql_token)
        if before is None or before.claim_token != claim.sql_token:
            return  # the claim expired and was rolled back: this send is not the one remembered
        window = WINDOWS[claim.channel]
        key = (claim.fingerprint, claim.channel)
        previous = self.last_kept.get(key)
        # safety: at most one kept send per key per window, unless escalation overrides the window
        if previous is not None and window > timedelta(0) and claim.reason is not DecisionReason.ESCALATED:
            assert claim.at - previous[0] >= window, (previous, claim)
        self.last_kept[key] = (claim.at, claim.reason)

    @precondition(lambda self: bool(self.settled))
    @rule(data=st.data(), delivered=st.booleans())
    def settle_again(self, data: st.DataObject, delivered: bool) -> None:
        # a token already confirmed or released (or overtaken) must change nothing in either store
        claim = data.draw(st.sampled_from(self.settled))
        if delivered:
            self.memory.confirm(claim.fingerprint, claim.channel, claim.memory_token)
            _SQL.confirm(claim.fingerprint, claim.channel, claim.sql_token)
        else:
            self.memory.release(claim.fingerprint, claim.channel, claim.memory_token)
            _SQL.release(claim.fingerprint, claim.channel, claim.sql_token)

    @rule(fingerprint=st.sampled_from(FINGERPRINTS), channel=st.sampled_from(sorted(WINDOWS)))
    def reset_window(self, fingerprint: str, channel: str) -> None:
        fp = self.fp(fingerprint)
        self.memory.reset_window(fp, channel)
        _SQL.reset_window(fp, channel)
        # a new incident: the next send is not measured against the ones before
        self.last_kept.pop((fp, channel), None)

    @rule(step=st.sampled_from(STEPS))
    def advance_clock(self, step: timedelta) -> None:
        self.now += step

    @rule(
        fingerprint=st.sampled_from(FINGERPRINTS),
        occurrence_id=st.sampled_from(OCCURRENCE_IDS),
        group=st.sampled_from((None, "run_1", "run_2")),
    )
    def record_occurrence(self, fingerprint: str, occurrence_id: str, group: str | None) -> None:
        fp, window = self.fp(fingerprint), OCCURRENCE_WINDOWS[fingerprint]
        expected = self.memory.record_occurrence(fp, occurrence_id, now=self.now, window=window, group=group)
        actual = _SQL.record_occurrence(fp, occurrence_id, now=self.now, window=window, group=group)
        assert actual == expected

    @rule(
        fingerprint=st.sampled_from(FINGERPRINTS),
        channel=st.sampled_from(sorted(WINDOWS)),
        count=st.integers(min_value=0, max_value=5),
    )
    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        # a follow-up summary reported ``count`` suppressed occurrences
        fp = self.fp(fingerprint)
        self.memory.clear_suppressed(fp, channel, count)
        _SQL.clear_suppressed(fp, channel, count)

    @invariant()
    def stored_states_agree(self) -> None:
        for fingerprint in FINGERPRINTS:
            for channel in WINDOWS:
                fp = self.fp(fingerprint)
                actual = _SQL.channel_state(fp, channel)
                if actual is not None and actual.claim_token is not None:
                    actual = replace(actual, claim_token=self.tokens[actual.claim_token])
                assert actual == self.memory.channel_state(fp, channel)


SqlAgreesWithMemory.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSqlAgreesWithMemory = SqlAgreesWithMemory.TestCase
