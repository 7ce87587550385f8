"""Pure incident rules: joining, blast radius, recovery, acknowledgement, resolution, staleness."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting.incidents.lifecycle import (
    IncidentRules,
    acknowledge,
    is_stale,
    join,
    raised_severity,
    recover,
    resolve,
    summarise,
)
from airflow_alerting.incidents.model import (
    DAG_SAMPLE,
    MEMBER_SAMPLE,
    Incident,
    IncidentMember,
    IncidentState,
    Occurrence,
)
from airflow_alerting.model import Severity

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
# blast radius off so tests about joining are not disturbed by it
NO_BLAST = IncidentRules(blast_radius_dags=0, blast_radius_tasks=0)


def occ(
    dag: str = "d",
    task: str | None = "t",
    map_index: int = -1,
    *,
    minutes: float = 0,
    severity: Severity = Severity.MEDIUM,
    reasons: tuple[str, ...] = (),
    silenced: bool = False,
    key: str = "k",
) -> Occurrence:
    return Occurrence(
        key=key,
        title="Boom",
        dag_id=dag,
        task_id=task,
        map_index=map_index,
        run_id=f"run-{minutes}",
        severity=severity,
        at=T0 + timedelta(minutes=minutes),
        reasons=reasons,
        silenced=silenced,
    )


def join_all(occurrences: list[Occurrence], rules: IncidentRules = NO_BLAST):
    incident, members, result = None, {}, None
    for o in occurrences:
        result, members = join(incident, members, o, rules)
        incident = result.incident
    return result, members


# --- join: open vs join -------------------------------------------------------------------------


def test_join_opens_when_no_incident() -> None:
    result, members = join(None, {}, occ(), NO_BLAST)
    assert result.opened and result.new_member
    assert result.previous_severity is None and not result.raised
    inc = result.incident
    assert (inc.key, inc.title, inc.state) == ("k", "Boom", IncidentState.OPEN)
    assert (inc.opened_at, inc.last_seen_at) == (T0, T0)
    assert (inc.failures, inc.member_count, inc.failing_count) == (1, 1, 1)
    assert list(members) == ["d.t"]


@pytest.mark.parametrize(
    ("gap_minutes", "resolved", "opens"),
    [
        (0, False, False),
        (29, False, False),
        (30, False, False),  # exactly the window still joins (window is "within")
        (30.01, False, True),  # just past the window opens a new incident
        (120, False, True),
        (1, True, True),  # a resolved incident is never reopened
    ],
)
def test_join_window_and_resolved(gap_minutes: float, resolved: bool, opens: bool) -> None:
    first, members = join(None, {}, occ(), NO_BLAST)
    incident = first.incident
    if resolved:
        incident = resolve(incident, by="alice", at=T0)
    result, new_members = join(incident, members, occ("d2", minutes=gap_minutes), NO_BLAST)
    assert result.opened is opens
    if opens:
        assert result.incident.id != first.incident.id
        assert result.incident.failures == 1 and set(new_members) == {"d2.t"}
        assert result.previous_severity is None
    else:
        assert result.incident.id == first.incident.id
        assert result.incident.failures == 2 and set(new_members) == {"d.t", "d2.t"}
        assert result.previous_severity is Severity.MEDIUM


def test_acknowledged_incident_still_joins() -> None:
    first, members = join(None, {}, occ(), NO_BLAST)
    acked = acknowledge(first.incident, by="bob", at=T0)
    result, _ = join(acked, members, occ(minutes=1), NO_BLAST)
    assert not result.opened and result.incident.state is IncidentState.ACKNOWLEDGED


# --- join: counts -------------------------------------------------------------------------------

# (id, occurrences as (dag, task, map_index), failures, members, failing, tasks, dags)
COUNT_CASES = [
    ("one", [("a", "t", -1)], 1, 1, 1, 1, 1),
    ("same member twice", [("a", "t", -1), ("a", "t", -1)], 2, 1, 1, 1, 1),
    ("mapped instances are one task", [("a", "t", 0), ("a", "t", 1), ("a", "t", 2)], 3, 3, 3, 1, 1),
    ("two tasks one dag", [("a", "t", -1), ("a", "u", -1)], 2, 2, 2, 2, 1),
    ("same task id in two dags", [("a", "t", -1), ("b", "t", -1)], 2, 2, 2, 2, 2),
    ("dag level member", [("a", None, -1), ("a", "t", -1)], 2, 2, 2, 2, 1),
]


@pytest.mark.parametrize(
    ("occurrences", "failures", "member_count", "failing", "tasks", "dags"),
    [c[1:] for c in COUNT_CASES],
    ids=[c[0] for c in COUNT_CASES],
)
def test_join_counts(
    occurrences: list[tuple[str, str | None, int]],
    failures: int,
    member_count: int,
    failing: int,
    tasks: int,
    dags: int,
) -> None:
    result, members = join_all([occ(d, t, m, minutes=i) for i, (d, t, m) in enumerate(occurrences)])
    inc = result.incident
    assert (inc.failures, inc.member_count, inc.failing_count, inc.task_count, inc.dag_count) == (
        failures,
        member_count,
        failing,
        tasks,
        dags,
    )
    assert len(members) == member_count


def test_join_member_fields_and_silenced_count() -> None:
    result, members = join_all([occ(minutes=0), occ(minutes=5, silenced=True)])
    member = members["d.t"]
    assert (member.failures, member.first_at, member.last_at) == (2, T0, T0 + timedelta(minutes=5))
    assert member.last_run_id == "run-5" and member.failing
    assert result.incident.silenced == 1 and result.incident.failures == 2
    assert result.incident.last_seen_at == T0 + timedelta(minutes=5)


# --- join: severity -----------------------------------------------------------------------------

# (id, first severity, second severity, second reasons, expected severity, expected reasons, raised)
SEVERITY_CASES = [
    (
        "raises with reasons",
        Severity.MEDIUM,
        Severity.HIGH,
        ("escalated",),
        Severity.HIGH,
        ("escalated",),
        True,
    ),
    ("raises without reasons", Severity.LOW, Severity.HIGH, (), Severity.HIGH, (), True),
    ("equal keeps, reasons dropped", Severity.HIGH, Severity.HIGH, ("escalated",), Severity.HIGH, (), False),
    ("lower keeps max", Severity.HIGH, Severity.LOW, ("escalated",), Severity.HIGH, (), False),
]


@pytest.mark.parametrize(
    ("first", "second", "reasons", "expected", "expected_reasons", "raised"),
    [c[1:] for c in SEVERITY_CASES],
    ids=[c[0] for c in SEVERITY_CASES],
)
def test_join_severity_is_max(
    first: Severity,
    second: Severity,
    reasons: tuple[str, ...],
    expected: Severity,
    expected_reasons: tuple[str, ...],
    raised: bool,
) -> None:
    result, _ = join_all([occ(severity=first), occ("e", minutes=1, severity=second, reasons=reasons)])
    assert result.incident.severity is expected
    assert result.incident.severity_reasons == expected_reasons
    assert result.raised is raised


def test_join_reasons_accumulate_across_raises() -> None:
    result, _ = join_all(
        [
            occ(severity=Severity.LOW),
            occ(minutes=1, severity=Severity.MEDIUM, reasons=("r1",)),
            occ(minutes=2, severity=Severity.HIGH, reasons=("r2",)),
        ]
    )
    assert result.incident.severity_reasons == ("r1", "r2")


# --- join: new_member and failing again ---------------------------------------------------------


def test_new_member_flag() -> None:
    first, members = join(None, {}, occ("a"), NO_BLAST)
    assert first.new_member
    again, members = join(first.incident, members, occ("a", minutes=1), NO_BLAST)
    assert not again.new_member  # still failing: not new
    other, members = join(again.incident, members, occ("b", minutes=2), NO_BLAST)
    assert other.new_member


def test_recovered_member_failing_again_is_failing_again() -> None:
    first, members = join_all([occ("a", minutes=0), occ("b", minutes=1)])
    incident, members, resolved = recover(
        first.incident, members, dag_id="a", task_id="t", map_index=-1, at=T0 + timedelta(minutes=2)
    )
    assert not resolved and incident.failing_count == 1 and not members["a.t"].failing
    result, members = join(incident, members, occ("a", minutes=3), NO_BLAST)
    assert result.new_member  # it was recovered, so it joins anew
    assert members["a.t"].failing and members["a.t"].recovered_at is None
    assert members["a.t"].failures == 2
    assert result.incident.failing_count == 2 and result.incident.member_count == 2


def test_late_older_failure_does_not_move_last_at_backwards() -> None:
    _, members = join_all([occ("a", minutes=10), occ("a", minutes=5)])
    assert members["a.t"].last_at == T0 + timedelta(minutes=10)


# --- raised_severity ----------------------------------------------------------------------------

RULES = IncidentRules(blast_radius_dags=5, blast_radius_tasks=25, blast_radius_severity=Severity.CRITICAL)

# (id, severity, dags, tasks, rules, expected severity, expected added reason or None)
BLAST_CASES = [
    ("narrow", Severity.MEDIUM, 4, 24, RULES, Severity.MEDIUM, None),
    ("dags at threshold", Severity.MEDIUM, 5, 5, RULES, Severity.CRITICAL, "5 DAGs"),
    ("tasks at threshold", Severity.LOW, 1, 25, RULES, Severity.CRITICAL, "25 tasks"),
    ("both wide names DAGs", Severity.HIGH, 7, 30, RULES, Severity.CRITICAL, "7 DAGs"),
    ("already at target", Severity.CRITICAL, 50, 500, RULES, Severity.CRITICAL, None),
    (
        "above a lower target",
        Severity.CRITICAL,
        50,
        500,
        replace(RULES, blast_radius_severity=Severity.HIGH),
        Severity.CRITICAL,
        None,
    ),
    (
        "lower target",
        Severity.LOW,
        5,
        1,
        replace(RULES, blast_radius_severity=Severity.HIGH),
        Severity.HIGH,
        "5 DAGs",
    ),
    ("dags disabled", Severity.MEDIUM, 1000, 1, replace(RULES, blast_radius_dags=0), Severity.MEDIUM, None),
    ("tasks disabled", Severity.MEDIUM, 1, 1000, replace(RULES, blast_radius_tasks=0), Severity.MEDIUM, None),
    (
        "dags disabled tasks wide",
        Severity.MEDIUM,
        1000,
        25,
        replace(RULES, blast_radius_dags=0),
        Severity.CRITICAL,
        "25 tasks",
    ),
]


@pytest.mark.parametrize(
    ("severity", "dags", "tasks", "rules", "expected", "what"),
    [c[1:] for c in BLAST_CASES],
    ids=[c[0] for c in BLAST_CASES],
)
def test_raised_severity(
    severity: Severity, dags: int, tasks: int, rules: IncidentRules, expected: Severity, what: str | None
) -> None:
    got, reasons = raised_severity(severity, ("earlier",), dag_count=dags, task_count=tasks, rules=rules)
    assert got is expected
    if what is None:
        assert reasons == ("earlier",)
    else:
        label = rules.blast_radius_severity.label
        assert reasons == ("earlier", f"blast radius: {what} affected, raised to {label}")


def test_join_applies_blast_radius_once() -> None:
    rules = IncidentRules(blast_radius_dags=3, blast_radius_tasks=0)
    result, _ = join_all([occ(f"d{i}", minutes=i) for i in range(5)], rules)
    assert result.incident.severity is Severity.CRITICAL
    # raised at the third DAG; later joins do not add the reason again
    assert result.incident.severity_reasons == ("blast radius: 3 DAGs affected, raised to critical",)


# --- recover ------------------------------------------------------------------------------------


def _three_members():
    # a.t[0], a.t[1], a.u, b.t: all failing, last failure at minute 0..3
    return join_all(
        [
            occ("a", "t", 0, minutes=0),
            occ("a", "t", 1, minutes=1),
            occ("a", "u", minutes=2),
            occ("b", "t", minutes=3),
        ]
    )


# (id, dag, task, map_index, at minute, recovered keys)
RECOVER_CASES = [
    ("task instance", "a", "t", 1, 10, {"a.t[1]"}),
    ("other map index only", "a", "t", 0, 10, {"a.t[0]"}),
    ("unmapped task", "a", "u", -1, 10, {"a.u"}),
    ("wrong map index", "a", "u", 3, 10, set()),
    ("dag success recovers dag", "a", None, -1, 10, {"a.t[0]", "a.t[1]", "a.u"}),
    ("other dag", "c", None, -1, 10, set()),
    ("success older than failures", "a", None, -1, -1, set()),
    ("success between failures", "a", None, -1, 1.5, {"a.t[0]", "a.t[1]"}),
    ("success at the failure time", "a", "u", -1, 2, {"a.u"}),
]


@pytest.mark.parametrize(
    ("dag", "task", "map_index", "minute", "recovered"),
    [c[1:] for c in RECOVER_CASES],
    ids=[c[0] for c in RECOVER_CASES],
)
def test_recover_exactly(
    dag: str, task: str | None, map_index: int, minute: float, recovered: set[str]
) -> None:
    result, members = _three_members()
    at = T0 + timedelta(minutes=minute)
    incident, after, resolved = recover(
        result.incident, members, dag_id=dag, task_id=task, map_index=map_index, at=at
    )
    assert {k for k, m in after.items() if not m.failing} == recovered
    assert all(after[k].recovered_at == at for k in recovered)
    assert incident.failing_count == 4 - len(recovered)
    assert not resolved and incident.is_open


def test_recover_resolves_once_when_last_member_recovers() -> None:
    result, members = join_all([occ("a", minutes=0), occ("b", minutes=1)])
    end = T0 + timedelta(minutes=5)
    inc, members, resolved = recover(result.incident, members, dag_id="a", task_id="t", map_index=-1, at=end)
    assert not resolved and inc.state is IncidentState.OPEN
    inc, members, resolved = recover(inc, members, dag_id="b", task_id=None, map_index=-1, at=end)
    assert resolved and inc.state is IncidentState.RESOLVED
    assert (inc.resolved_at, inc.resolved_by, inc.failing_count) == (end, "recovery", 0)
    again, _, resolved_again = recover(inc, members, dag_id="b", task_id=None, map_index=-1, at=end)
    assert not resolved_again and again == inc


def test_recover_acknowledged_incident_resolves() -> None:
    result, members = join_all([occ("a")])
    acked = acknowledge(result.incident, by="bob", at=T0)
    inc, _, resolved = recover(acked, members, dag_id="a", task_id="t", map_index=-1, at=T0)
    assert resolved and inc.state is IncidentState.RESOLVED and inc.acknowledged_by == "bob"


# --- acknowledge / resolve / is_stale -----------------------------------------------------------


def _incident(state: IncidentState = IncidentState.OPEN, **kw) -> Incident:
    return Incident(
        id="i", key="k", title="t", severity=Severity.HIGH, opened_at=T0, last_seen_at=T0, state=state, **kw
    )


@pytest.mark.parametrize(
    ("state", "acks"),
    [(IncidentState.OPEN, True), (IncidentState.ACKNOWLEDGED, False), (IncidentState.RESOLVED, False)],
)
def test_acknowledge(state: IncidentState, acks: bool) -> None:
    at = T0 + timedelta(minutes=3)
    got = acknowledge(_incident(state), by="bob", at=at)
    if not acks:
        assert got is None
    else:
        assert got is not None and got.state is IncidentState.ACKNOWLEDGED
        assert (got.acknowledged_at, got.acknowledged_by) == (at, "bob")


@pytest.mark.parametrize(
    ("state", "resolves"),
    [(IncidentState.OPEN, True), (IncidentState.ACKNOWLEDGED, True), (IncidentState.RESOLVED, False)],
)
def test_resolve(state: IncidentState, resolves: bool) -> None:
    at = T0 + timedelta(minutes=3)
    got = resolve(_incident(state), by="carol", at=at)
    if not resolves:
        assert got is None
    else:
        assert got is not None and got.state is IncidentState.RESOLVED
        assert (got.resolved_at, got.resolved_by) == (at, "carol")


# (id, resolved_at offset (days) or None, now offset (days), stale)
STALE_CASES = [
    ("open fresh", None, 7, False),  # exactly the retention is not yet stale
    ("open silent", None, 7.01, True),
    ("resolved recently", 6, 13, False),
    ("resolved long ago", 6, 13.01, True),
    ("resolved: last_seen does not count", 6, 8, False),
]


@pytest.mark.parametrize(
    ("resolved_days", "now_days", "stale"), [c[1:] for c in STALE_CASES], ids=[c[0] for c in STALE_CASES]
)
def test_is_stale(resolved_days: float | None, now_days: float, stale: bool) -> None:
    resolved_at = T0 + timedelta(days=resolved_days) if resolved_days is not None else None
    state = IncidentState.RESOLVED if resolved_at else IncidentState.OPEN
    inc = _incident(state, resolved_at=resolved_at)
    assert is_stale(inc, T0 + timedelta(days=now_days), IncidentRules()) is stale


# --- summarise ----------------------------------------------------------------------------------


def test_summarise_bounds_samples_but_counts_everything() -> None:
    n_dags = DAG_SAMPLE + 5
    per_dag = 3
    members = {}
    for d in range(n_dags):
        for t in range(per_dag):
            m = IncidentMember(
                dag_id=f"dag{d:03}",
                task_id=f"t{t}",
                last_at=T0 + timedelta(minutes=d * 10 + t),
                recovered_at=T0 if t == 0 else None,
            )
            members[m.key] = m
    inc = summarise(_incident(), members)
    assert len(inc.members) == MEMBER_SAMPLE < len(members)
    assert inc.member_count == len(members) == inc.task_count
    assert inc.failing_count == n_dags * (per_dag - 1)
    assert inc.dag_count == n_dags and len(inc.dag_ids) == DAG_SAMPLE
    assert list(inc.dag_ids) == sorted(inc.dag_ids) and inc.dag_ids[0] == "dag000"
    # most recent first
    assert inc.members[0].key == f"dag{n_dags - 1:03}.t{per_dag - 1}"
    assert [m.last_at for m in inc.members] == sorted((m.last_at for m in inc.members), reverse=True)


# --- property: failing_count and failures -------------------------------------------------------

MEMBERS = [("a", "t", -1), ("a", "t", 0), ("a", "u", -1), ("b", "t", -1)]
# ("fail", i) joins member i; ("ok", i) is that member's task success; ("dag", dag) a DAG success
STEP = st.one_of(
    st.tuples(st.just("fail"), st.integers(0, len(MEMBERS) - 1)),
    st.tuples(st.just("ok"), st.integers(0, len(MEMBERS) - 1)),
    st.tuples(st.just("dag"), st.sampled_from(["a", "b"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_failing_count_matches_model(steps: list[tuple[str, object]]) -> None:
    rules = IncidentRules(window=timedelta(days=365), blast_radius_dags=0, blast_radius_tasks=0)
    incident: Incident | None = None
    members: dict[str, IncidentMember] = {}
    last_fail: dict[int, int] = {}
    last_ok: dict[int, int] = {}
    joins = 0
    for clock, (kind, arg) in enumerate(steps, start=1):
        at = T0 + timedelta(minutes=clock)  # strictly increasing: no ties to argue about
        if kind == "fail":
            i = int(arg)  # type: ignore[call-overload]
            d, t, m = MEMBERS[i]
            result, members = join(incident, members, occ(d, t, m, minutes=clock), rules)
            if result.opened:
                # a resolved incident is never reopened: the model starts afresh too
                last_fail, last_ok, joins = {}, {}, 0
            incident = result.incident
            last_fail[i] = clock
            joins += 1
        elif incident is not None:
            targets = [int(arg)] if kind == "ok" else [j for j, mm in enumerate(MEMBERS) if mm[0] == arg]
            d = MEMBERS[targets[0]][0]
            task, mi = (MEMBERS[targets[0]][1], MEMBERS[targets[0]][2]) if kind == "ok" else (None, -1)
            incident, members, _ = recover(incident, members, dag_id=d, task_id=task, map_index=mi, at=at)
            for j in targets:
                if j in last_fail:
                    last_ok[j] = clock
        if incident is not None:
            failing = sum(1 for j, f in last_fail.items() if f > last_ok.get(j, 0))
            assert incident.failing_count == failing
            assert incident.failures == joins
            assert incident.member_count == len(last_fail)
            assert incident.is_open == (failing > 0)


# --- property: a join's counts and samples are those of its whole member map ---------------------

# more DAGs than DAG_SAMPLE and more members than MEMBER_SAMPLE, so both samples are cut; "a.b"
# without a task and "a" with task "b" are the same ``dag.task``, as the full count has it
JOIN_DAGS = [f"dag{n:02}" for n in range(DAG_SAMPLE + 5)] + ["a", "a.b"]
JOIN_STEP = st.one_of(
    st.tuples(
        st.just("fail"),
        st.sampled_from(JOIN_DAGS),
        st.sampled_from(["t", "u", "b", None]),
        st.integers(-1, 2),
        st.integers(-30, 30),  # minutes from the step's time: late callbacks arrive out of order
    ),
    st.tuples(
        st.just("ok"),
        st.sampled_from(JOIN_DAGS),
        st.sampled_from(["t", "u", "b", None]),
        st.just(-1),
        st.just(0),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(JOIN_STEP, min_size=1, max_size=120))
def test_join_counts_and_samples_match_a_full_recount(
    steps: list[tuple[str, str, str | None, int, int]],
) -> None:
    rules = IncidentRules(window=timedelta(days=365), blast_radius_dags=0, blast_radius_tasks=0)
    incident: Incident | None = None
    members: dict[str, IncidentMember] = {}
    for clock, (kind, dag, task, map_index, skew) in enumerate(steps, start=1):
        if kind == "fail":
            mapped = map_index if task is not None else -1
            result, members = join(incident, members, occ(dag, task, mapped, minutes=clock + skew), rules)
            incident = result.incident
            # what the join computed from the changed member must be what a recount gives
            assert incident == summarise(incident, members)
        elif incident is not None:
            incident, members, _ = recover(
                incident, members, dag_id=dag, task_id=task, map_index=-1, at=T0 + timedelta(minutes=clock)
            )


def test_join_recounts_an_incident_whose_sample_does_not_match_its_members() -> None:
    result, members = join_all([occ("d", f"t{n}", minutes=n) for n in range(5)])
    # e.g. stored by a version with another sample size: the join cannot trust the sample
    odd = replace(result.incident, members=result.incident.members[:2])

    joined, members = join(odd, members, occ("d", "t9", minutes=9), NO_BLAST)

    assert joined.incident == summarise(joined.incident, members)
    assert joined.incident.member_count == 6 and len(joined.incident.members) == 6


def test_join_counts_a_dag_level_member_named_like_a_task_as_that_task() -> None:
    # mapped instance 0 of "a" task "b" and the DAG "a.b" itself are two members of one task
    # (``a.b``) in two DAGs
    result, members = join_all([occ("a", "b", 0, minutes=0), occ("a.b", None, minutes=1)])

    assert (result.incident.task_count, result.incident.dag_count) == (1, 2)
    assert result.incident == summarise(result.incident, members)
