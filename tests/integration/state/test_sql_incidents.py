"""The incident and silence contract of the state stores: ``MemoryStore`` and ``SqlStore`` on SQLite,
PostgreSQL and MariaDB must give the same answers.

The document stores apply :mod:`airflow_alerting.incidents.lifecycle` to the full member map; the
SQL store keeps members in a table and counts incrementally.  Each test runs on every store with
the expected values written out, and ``test_sql_store_matches_the_memory_store`` drives both through
the same seeded random operations and compares every result.  Databases are found and skipped (or,
under ``CI=true``, failed) as in ``test_sql_store.py``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from test_sql_store import MARIADB_URL, POSTGRES_URL, require_server

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import (
    DAG_SAMPLE,
    MEMBER_SAMPLE,
    Announcement,
    IncidentState,
    Occurrence,
    new_incident_id,
)
from airflow_alerting.incidents.silences import Silence
from airflow_alerting.model import Severity
from airflow_alerting.state.base import StateStore, StateUnavailableError
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.testing import MemoryStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
RULES = IncidentRules(window=timedelta(minutes=30), blast_radius_dags=0, blast_radius_tasks=0)


def sql_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    url = POSTGRES_URL if backend == "postgresql" else MARIADB_URL
    require_server(url)
    return url


@pytest.fixture(params=["memory", "sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sql = SqlStore(url=sql_url(request.param, tmp_path), table_prefix=f"i{uuid.uuid4().hex[:10]}_")
    yield sql
    sql.drop_tables()


def occurrence(
    dag_id: str = "etl",
    task_id: str | None = "load",
    at: datetime = T0,
    *,
    key: str = "cause:ConnectionError",
    map_index: int = -1,
    severity: Severity = Severity.MEDIUM,
    reasons: tuple[str, ...] = (),
    silenced: bool = False,
    run_id: str | None = "run-1",
) -> Occurrence:
    return Occurrence(
        key=key,
        title="ConnectionError: refused",
        dag_id=dag_id,
        task_id=task_id,
        map_index=map_index,
        run_id=run_id,
        severity=severity,
        at=at,
        reasons=reasons,
        silenced=silenced,
    )


# --- joining ------------------------------------------------------------------------------


def test_the_first_failure_opens_and_later_ones_join(store: StateStore) -> None:
    first = store.join_incident(occurrence(at=T0), RULES)
    assert first.opened and first.new_member and first.previous_severity is None and not first.raised
    incident = first.incident
    assert incident.id == new_incident_id("cause:ConnectionError", T0)
    assert (incident.key, incident.title, incident.state) == (
        "cause:ConnectionError",
        "ConnectionError: refused",
        IncidentState.OPEN,
    )
    assert (incident.opened_at, incident.last_seen_at, incident.failures, incident.silenced) == (T0, T0, 1, 0)
    assert (incident.member_count, incident.failing_count, incident.task_count, incident.dag_count) == (
        1,
        1,
        1,
        1,
    )

    other = store.join_incident(occurrence("etl", "load", T0 + timedelta(minutes=1), map_index=3), RULES)
    assert not other.opened and other.new_member and other.previous_severity is Severity.MEDIUM
    again = store.join_incident(
        occurrence(at=T0 + timedelta(minutes=2), run_id="run-2", silenced=True), RULES
    )
    assert not again.opened and not again.new_member
    incident = again.incident
    assert incident.id == first.incident.id
    assert (incident.failures, incident.silenced, incident.member_count, incident.failing_count) == (
        3,
        1,
        2,
        2,
    )
    # one task (etl.load, two mapped instances), one DAG; most recent member first
    assert (incident.task_count, incident.dag_count, incident.dag_ids) == (1, 1, ("etl",))
    assert [m.key for m in incident.members] == ["etl.load", "etl.load[3]"]
    load = incident.members[0]
    assert (load.failures, load.first_at, load.last_at, load.last_run_id) == (
        2,
        T0,
        T0 + timedelta(minutes=2),
        "run-2",
    )
    assert incident.last_seen_at == T0 + timedelta(minutes=2)
    assert store.incident(incident.id) == incident


def test_a_failure_after_the_window_opens_a_new_incident(store: StateStore) -> None:
    first = store.join_incident(occurrence(at=T0), RULES).incident
    # exactly the window after the latest failure still joins
    assert not store.join_incident(occurrence("etl", "a", T0 + RULES.window), RULES).opened
    late = store.join_incident(occurrence("etl", "b", T0 + 2 * RULES.window + US), RULES)
    assert late.opened and late.incident.id != first.id and late.previous_severity is None
    assert (late.incident.failures, late.incident.member_count) == (1, 1)
    # the old incident is left as it was, still open (pruning expires it)
    old = store.incident(first.id)
    assert old is not None and old.state is IncidentState.OPEN and old.failures == 2
    assert store.join_incident(occurrence("etl", "c", T0 + 2 * RULES.window + 2 * US), RULES).incident.id == (
        late.incident.id
    )


def test_a_failure_after_resolution_opens_a_new_incident(store: StateStore) -> None:
    first = store.join_incident(occurrence(at=T0), RULES).incident
    assert store.resolve_incident(first.id, by="alice", now=T0 + timedelta(minutes=1)) is not None
    reopened = store.join_incident(occurrence(at=T0 + timedelta(minutes=2)), RULES)
    assert reopened.opened and reopened.incident.id != first.id
    assert reopened.incident.opened_at == T0 + timedelta(minutes=2)


def test_reopening_at_the_same_instant_opens_a_new_incident_and_keeps_the_old(store: StateStore) -> None:
    # the next incident of a key follows the previous one (new_incident_id chains them): a new id
    first = store.join_incident(occurrence("etl", "a", T0), RULES).incident
    store.resolve_incident(first.id, by="alice", now=T0)
    again = store.join_incident(occurrence("etl", "b", T0), RULES)
    assert again.opened and again.incident.id != first.id
    assert (again.incident.state, again.incident.failures, again.incident.member_count) == (
        IncidentState.OPEN,
        1,
        1,
    )
    assert [m.key for m in again.incident.members] == ["etl.b"]
    kept = store.incident(first.id)
    assert (
        kept is not None
        and kept.state is IncidentState.RESOLVED
        and [m.key for m in kept.members] == ["etl.a"]
    )


def test_severity_is_the_highest_with_the_escalation_reasons(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0), RULES)
    raised = store.join_incident(
        occurrence("etl", "b", T0 + US, severity=Severity.HIGH, reasons=("escalated: 3 in 1h",)), RULES
    )
    assert raised.raised and raised.previous_severity is Severity.MEDIUM
    assert (raised.incident.severity, raised.incident.severity_reasons) == (
        Severity.HIGH,
        ("escalated: 3 in 1h",),
    )
    lower = store.join_incident(
        occurrence("etl", "c", T0 + 2 * US, severity=Severity.LOW, reasons=("x",)), RULES
    )
    assert not lower.raised and lower.incident.severity is Severity.HIGH
    assert lower.incident.severity_reasons == ("escalated: 3 in 1h",)


def test_blast_radius_by_dags_raises_once_with_the_reason(store: StateStore) -> None:
    rules = replace(RULES, blast_radius_dags=3)
    joins = [store.join_incident(occurrence(f"dag_{n}", "t", T0 + n * US), rules) for n in range(5)]
    assert [j.raised for j in joins] == [False, False, True, False, False]
    reason = "blast radius: 3 DAGs affected, raised to critical"
    assert joins[2].incident.severity is Severity.CRITICAL and joins[2].incident.severity_reasons == (reason,)
    assert joins[-1].incident.severity_reasons == (reason,) and joins[-1].incident.dag_count == 5


def test_blast_radius_by_tasks_counts_distinct_tasks(store: StateStore) -> None:
    rules = replace(RULES, blast_radius_tasks=3)
    # mapped instances of one task are one task; a DAG-level member counts as a task of its own
    store.join_incident(occurrence("etl", "a", T0, map_index=0), rules)
    second = store.join_incident(occurrence("etl", "a", T0 + US, map_index=1), rules)
    assert (second.incident.task_count, second.incident.member_count, second.raised) == (1, 2, False)
    store.join_incident(occurrence("etl", None, T0 + 2 * US), rules)
    third = store.join_incident(occurrence("etl", "b", T0 + 3 * US), rules)
    assert (third.incident.task_count, third.incident.dag_count, third.raised) == (3, 1, True)
    assert third.incident.severity_reasons == ("blast radius: 3 tasks affected, raised to critical",)


def test_samples_are_bounded_and_the_counts_complete(store: StateStore) -> None:
    # 30 DAGs x 2 tasks; pairs of members share a failure time, so the key breaks the tie
    for n in range(60):
        store.join_incident(occurrence(f"dag_{n % 30:02d}", f"task_{n}", T0 + (n // 2) * US), RULES)
    [incident] = store.incidents()
    assert (incident.member_count, incident.failing_count, incident.task_count, incident.dag_count) == (
        60,
        60,
        60,
        30,
    )
    assert len(incident.members) == MEMBER_SAMPLE
    assert [m.key for m in incident.members[:4]] == [
        "dag_29.task_59",
        "dag_28.task_58",
        "dag_27.task_57",
        "dag_26.task_56",
    ]
    assert incident.dag_ids == tuple(f"dag_{n:02d}" for n in range(DAG_SAMPLE))


# --- recovery -----------------------------------------------------------------------------


def test_a_task_success_recovers_its_instance_and_the_last_one_resolves(store: StateStore) -> None:
    for at, (task, index) in enumerate([("a", -1), ("b", 0), ("b", 1)]):
        store.join_incident(occurrence("etl", task, T0 + at * US, map_index=index), RULES)
    later = T0 + timedelta(minutes=5)
    assert store.recover_members("etl", "b", 0, now=later) == []
    [incident] = store.incidents()
    assert incident.failing_count == 2 and incident.state is IncidentState.OPEN
    recovered = {m.key: m.recovered_at for m in incident.members}
    assert recovered == {"etl.a": None, "etl.b[0]": later, "etl.b[1]": None}
    assert store.recover_members("etl", "b", 0, now=later) == []  # nothing left to recover there
    assert store.recover_members("etl", "a", -1, now=later) == []
    [resolved] = store.recover_members("etl", "b", 1, now=later + US)
    assert (resolved.state, resolved.resolved_by, resolved.resolved_at) == (
        IncidentState.RESOLVED,
        "recovery",
        later + US,
    )
    assert resolved.failing_count == 0 and all(not m.failing for m in resolved.members)
    assert store.incident(resolved.id) == resolved
    assert store.recover_members("etl", "b", 1, now=later + 2 * US) == []


def test_a_dag_success_recovers_every_member_of_the_dag(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0), RULES)
    store.join_incident(occurrence("etl", "b", T0 + US, map_index=2), RULES)
    store.join_incident(occurrence("etl", None, T0 + 2 * US), RULES)
    store.join_incident(occurrence("report", "c", T0 + 3 * US), RULES)
    assert store.recover_members("etl", None, -1, now=T0 + timedelta(minutes=1)) == []
    [incident] = store.incidents()
    assert incident.failing_count == 1
    assert [m.key for m in incident.members if m.failing] == ["report.c"]
    # a task success does not recover the DAG-level member, nor members of other DAGs
    [resolved] = store.recover_members("report", None, -1, now=T0 + timedelta(minutes=2))
    assert resolved.id == incident.id and resolved.state is IncidentState.RESOLVED


def test_a_success_older_than_the_failure_recovers_nothing(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=10)), RULES)
    assert store.recover_members("etl", "a", -1, now=T0 + timedelta(minutes=5)) == []
    assert store.recover_members("etl", None, -1, now=T0 + timedelta(minutes=5)) == []
    [incident] = store.incidents()
    assert incident.failing_count == 1 and incident.members[0].failing


def test_a_recovered_member_that_fails_again_is_new_again(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0), RULES)
    store.join_incident(occurrence("etl", "b", T0 + US), RULES)
    store.recover_members("etl", "a", -1, now=T0 + timedelta(minutes=1))
    again = store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=2)), RULES)
    assert again.new_member and not again.opened
    assert (again.incident.failing_count, again.incident.member_count, again.incident.failures) == (2, 2, 3)
    member = next(m for m in again.incident.members if m.key == "etl.a")
    assert member.failing and member.failures == 2 and member.first_at == T0


def test_a_late_failure_does_not_move_the_latest_failure_back(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=5), run_id="run-new"), RULES)
    late = store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=1), run_id="run-old"), RULES)
    [member] = late.incident.members
    assert (member.failures, member.first_at, member.last_at, member.last_run_id) == (
        2,
        T0 + timedelta(minutes=5),
        T0 + timedelta(minutes=5),
        "run-new",
    )
    assert late.incident.last_seen_at == T0 + timedelta(minutes=5)


def test_a_late_failure_does_not_reopen_a_member_that_recovered_after_it(store: StateStore) -> None:
    store.join_incident(occurrence("etl", "a", T0), RULES)
    store.join_incident(occurrence("etl", "b", T0 + US), RULES)
    store.recover_members("etl", "a", -1, now=T0 + timedelta(minutes=2))
    late = store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=1)), RULES).incident
    member = next(m for m in late.members if m.key == "etl.a")
    assert member.recovered_at == T0 + timedelta(minutes=2) and member.failures == 2
    assert (late.failing_count, late.failures) == (1, 3)
    # a failure after the recovery does re-open it
    again = store.join_incident(occurrence("etl", "a", T0 + timedelta(minutes=3)), RULES).incident
    assert again.failing_count == 2 and next(m for m in again.members if m.key == "etl.a").failing


def test_recovery_skips_resolved_incidents_and_other_keys(store: StateStore) -> None:
    manual = store.join_incident(occurrence("etl", "a", T0, key="k1"), RULES).incident
    other = store.join_incident(occurrence("etl", "a", T0, key="k2"), RULES).incident
    store.resolve_incident(manual.id, by="bob", now=T0 + US)
    [resolved] = store.recover_members("etl", "a", -1, now=T0 + timedelta(minutes=1))
    assert resolved.id == other.id
    kept = store.incident(manual.id)
    assert kept is not None and kept.resolved_by == "bob" and kept.failing_count == 1


# --- acknowledgement, resolution, announcements, digest -----------------------------------


def test_acknowledge_and_resolve_change_state_once(store: StateStore) -> None:
    incident = store.join_incident(occurrence(), RULES).incident
    acked = store.acknowledge_incident(incident.id, by="alice", now=T0 + timedelta(minutes=1))
    assert acked is not None and acked.state is IncidentState.ACKNOWLEDGED
    assert (acked.acknowledged_by, acked.acknowledged_at, acked.time_to_acknowledge) == (
        "alice",
        T0 + timedelta(minutes=1),
        timedelta(minutes=1),
    )
    assert store.acknowledge_incident(incident.id, by="bob", now=T0 + timedelta(minutes=2)) is None
    # acknowledged is still open: a failure joins it
    assert not store.join_incident(occurrence("etl", "x", T0 + timedelta(minutes=2)), RULES).opened
    resolved = store.resolve_incident(incident.id, by="carol", now=T0 + timedelta(minutes=3))
    assert resolved is not None and (resolved.state, resolved.resolved_by) == (
        IncidentState.RESOLVED,
        "carol",
    )
    assert resolved.acknowledged_by == "alice" and resolved.failing_count == 2
    assert store.resolve_incident(incident.id, by="dave", now=T0 + timedelta(minutes=4)) is None
    assert store.acknowledge_incident(incident.id, by="dave", now=T0 + timedelta(minutes=4)) is None
    assert store.acknowledge_incident("no-such-id", by="x", now=T0) is None
    assert store.resolve_incident("no-such-id", by="x", now=T0) is None
    assert store.incident("no-such-id") is None


def test_announcements_merge_per_channel(store: StateStore) -> None:
    incident = store.join_incident(occurrence(), RULES).incident
    slack = Announcement("slack", "1700000000.000100", "C012", Severity.MEDIUM, T0)
    email = Announcement("email", "<abc@example.org>", None, Severity.MEDIUM, T0 + US)
    store.record_announcement(incident.id, slack)
    store.record_announcement(incident.id, email)
    edited = replace(slack, severity=Severity.CRITICAL, at=T0 + timedelta(minutes=1))
    store.record_announcement(incident.id, edited)
    store.record_announcement("no-such-id", slack)
    stored = store.incident(incident.id)
    assert stored is not None and dict(stored.announcements) == {"slack": edited, "email": email}
    # joins keep them
    joined = store.join_incident(occurrence("etl", "x", T0 + timedelta(minutes=2)), RULES).incident
    assert dict(joined.announcements) == {"slack": edited, "email": email}


def test_listing_is_most_recently_seen_first_and_filters_states(store: StateStore) -> None:
    ids = {}
    for n, key in enumerate(["a", "b", "c"]):
        ids[key] = store.join_incident(occurrence(key=key, at=T0 + timedelta(minutes=n)), RULES).incident.id
    store.join_incident(occurrence(key="a", at=T0 + timedelta(minutes=5)), RULES)
    store.acknowledge_incident(ids["b"], by="x", now=T0)
    store.resolve_incident(ids["c"], by="x", now=T0)
    assert [i.id for i in store.incidents()] == [ids["a"], ids["c"], ids["b"]]
    assert [i.id for i in store.incidents(limit=2)] == [ids["a"], ids["c"]]
    assert store.incidents(limit=0) == []
    open_states = [IncidentState.OPEN, IncidentState.ACKNOWLEDGED]
    assert [i.id for i in store.incidents(states=open_states)] == [ids["a"], ids["b"]]
    assert [i.id for i in store.incidents(states=[IncidentState.RESOLVED])] == [ids["c"]]


def test_mark_digested(store: StateStore) -> None:
    first = store.join_incident(occurrence(key="a"), RULES).incident
    second = store.join_incident(occurrence(key="b"), RULES).incident
    store.mark_digested([first.id, "no-such-id"], now=T0 + timedelta(hours=1))
    assert store.mark_digested([], now=T0) is None
    digested = store.incident(first.id)
    assert digested is not None and digested.digested_at == T0 + timedelta(hours=1)
    untouched = store.incident(second.id)
    assert untouched is not None and untouched.digested_at is None


# --- pruning and silences -----------------------------------------------------------------


def silence(silence_id: str, starts: datetime, ends: datetime, **matchers: Any) -> Silence:
    return Silence(id=silence_id, starts_at=starts, ends_at=ends, comment="deploy", author="ops", **matchers)


def test_prune_forgets_stale_incidents_and_old_silences(store: StateStore) -> None:
    rules = replace(RULES, retention=timedelta(days=7))
    now = T0 + timedelta(days=10)
    resolved_long_ago = store.join_incident(occurrence(key="old-resolved", at=T0), rules).incident
    store.resolve_incident(resolved_long_ago.id, by="x", now=T0 + timedelta(days=2))
    silent = store.join_incident(occurrence(key="silent", at=T0 + timedelta(days=3) - US), rules).incident
    resolved_lately = store.join_incident(occurrence(key="recent-resolved", at=T0), rules).incident
    store.resolve_incident(resolved_lately.id, by="x", now=T0 + timedelta(days=3) + US)
    active = store.join_incident(occurrence(key="active", at=now - timedelta(minutes=1)), rules).incident
    store.add_silence(silence("ended-long-ago", T0, T0 + timedelta(days=2), dag_ids=("*",)))
    store.add_silence(silence("ended-lately", T0, T0 + timedelta(days=4), dag_ids=("*",)))

    assert store.prune_incidents(now=now, rules=rules) == 2
    assert store.incident(resolved_long_ago.id) is None and store.incident(silent.id) is None
    assert {i.id for i in store.incidents()} == {resolved_lately.id, active.id}
    assert [s.id for s in store.silences()] == ["ended-lately"]
    # the pruned key's next failure opens a new incident; the kept one still joins
    assert store.join_incident(occurrence(key="silent", at=now), rules).opened
    assert not store.join_incident(occurrence(key="active", at=now), rules).opened
    assert store.prune_incidents(now=now, rules=rules) == 0


def test_silences_are_stored_listed_and_expired(store: StateStore) -> None:
    later = silence("later", T0 + timedelta(hours=2), T0 + timedelta(hours=3), task_ids=("load_*",))
    now_on = silence(
        "now-on", T0 - timedelta(hours=1), T0 + timedelta(hours=1), dag_ids=("etl",), tags=("x",)
    )
    store.add_silence(later)
    store.add_silence(now_on)
    assert store.silences() == [now_on, later]
    widened = replace(now_on, ends_at=T0 + timedelta(hours=5), severities=(Severity.LOW,))
    store.add_silence(widened)
    assert store.silences() == [widened, later]

    assert store.expire_silence("now-on", now=T0)
    assert store.silences() == [replace(widened, ends_at=T0), later]
    assert not store.expire_silence("now-on", now=T0 + US)
    # one that has not started is dropped, not ended before it starts
    assert store.expire_silence("later", now=T0)
    assert [s.id for s in store.silences()] == ["now-on"]
    assert not store.expire_silence("no-such-silence", now=T0)


# --- the SQL store against the memory store -----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_sql_store_matches_the_memory_store(backend: str, tmp_path: Path) -> None:
    """Seeded random joins, recoveries, acknowledgements and resolutions; every answer compared."""
    sql = SqlStore(url=sql_url(backend, tmp_path), table_prefix=f"d{uuid.uuid4().hex[:10]}_")
    memory = MemoryStore()
    rules = replace(RULES, window=timedelta(minutes=10), blast_radius_dags=6, blast_radius_tasks=40)
    rng = random.Random(20261127)
    # one busy key, so its incidents outgrow both samples
    keys = ["k1"] * 4 + ["k2", "k3"]
    tasks: list[tuple[str, str | None, int]]
    tasks = [(f"dag_{d:02d}", f"t{t}", m) for d in range(30) for t in range(2) for m in (-1, 0)]
    tasks += [(f"dag_{d:02d}", None, -1) for d in range(30)]
    # small steps and repeated instants (ties); after a build-up, the odd jump past the window
    calm = [timedelta(0)] * 4 + [US, timedelta(seconds=7)]
    now = T0
    try:
        for step in range(400):
            building = step < 200
            now += rng.choice(calm if building else [*calm, timedelta(minutes=11)])
            roll = rng.random()
            if roll < (0.95 if building else 0.7):
                dag_id, task_id, map_index = rng.choice(tasks)
                # now and then a callback arrives late
                happened = now - rng.choice([timedelta(0), timedelta(0), timedelta(seconds=30)])
                occ = occurrence(
                    dag_id,
                    task_id,
                    happened,
                    key=rng.choice(keys),
                    map_index=map_index,
                    severity=rng.choice(list(Severity)),
                    reasons=rng.choice([(), (f"escalated at step {step}",)]),
                    silenced=rng.random() < 0.2,
                    run_id=f"run-{step}",
                )
                assert sql.join_incident(occ, rules) == memory.join_incident(occ, rules), step
            elif roll < 0.9:
                dag_id, task_id, map_index = rng.choice(tasks)
                if rng.random() < 0.3:
                    task_id = None
                at = now - rng.choice([timedelta(0), timedelta(minutes=1)])
                got = sql.recover_members(dag_id, task_id, map_index, now=at)
                want = memory.recover_members(dag_id, task_id, map_index, now=at)
                assert sorted(got, key=lambda i: i.id) == sorted(want, key=lambda i: i.id), step
            else:
                listed = memory.incidents(limit=5)
                if listed:
                    target = rng.choice(listed).id
                    if rng.random() < 0.5:
                        got_one = sql.acknowledge_incident(target, by="a", now=now)
                        want_one = memory.acknowledge_incident(target, by="a", now=now)
                    else:
                        got_one = sql.resolve_incident(target, by="r", now=now)
                        want_one = memory.resolve_incident(target, by="r", now=now)
                    assert got_one == want_one, step
            if step % 50 == 49:
                assert sql.incidents(limit=1000) == memory.incidents(limit=1000), step
        assert sql.incidents(limit=1000) == memory.incidents(limit=1000)
        # the run exercised what it is meant to
        final = memory.incidents(limit=1000)
        assert any(i.member_count > MEMBER_SAMPLE for i in final)
        assert any(i.dag_count > DAG_SAMPLE for i in final)
        assert any(i.resolved_by == "recovery" for i in final) and any(i.severity_reasons for i in final)
    finally:
        sql.drop_tables()


# --- failures -----------------------------------------------------------------------------


def test_database_down_raises_state_unavailable() -> None:
    store = SqlStore(url="postgresql+psycopg2://alerting:s3cret@127.0.0.1:1/test")
    operations: list[Callable[[], object]] = [
        lambda: store.join_incident(occurrence(), RULES),
        lambda: store.recover_members("etl", None, -1, now=T0),
        lambda: store.incidents(),
        lambda: store.resolve_incident("x", by="y", now=T0),
        lambda: store.add_silence(silence("s", T0, T0 + US, dag_ids=("*",))),
        lambda: store.prune_incidents(now=T0, rules=RULES),
    ]
    for operation in operations:
        with pytest.raises(StateUnavailableError) as caught:
            operation()
        assert "s3cret" not in str(caught.value) and caught.value.__cause__ is not None


def test_a_corrupt_incident_row_raises_state_unavailable(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = sql_url("sqlite", tmp_path)
    store = SqlStore(url=url, table_prefix="corrupt_")
    incident = store.join_incident(occurrence(), RULES).incident
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE corrupt_incident_record SET announcements = '[1]'"))
    engine.dispose()
    with pytest.raises(StateUnavailableError, match="incident failed"):
        store.incident(incident.id)
