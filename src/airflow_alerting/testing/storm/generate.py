"""Generating a storm: :class:`StormEvent`, :class:`Storm`, :func:`generate_storm`, :func:`storm_alert`."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from airflow_alerting.model import Alert, AlertKind
from airflow_alerting.testing.storm.causes import (
    _DAG_KINDS,
    _DOMAINS,
    _ENTITIES,
    _OUTAGE_DESCRIPTION,
    _OUTAGE_MRO,
    _OUTAGE_TYPE,
    _RUN_EPOCH,
    _TEAMS,
    _VERBS,
    _Cause,
    _hex,
    _outage_message,
    _pick_causes,
)

#: the cause id of the storm's root cause (the database outage)
OUTAGE_CAUSE = "outage"

#: how far apart the consecutive runs of a recurring failure are (a DAG scheduled every 3 minutes)
_RECUR_PERIOD = timedelta(minutes=3)
#: runs a recurring cause fails in
_RECUR_RUNS = 3
#: recurring causes per 30 unrelated causes
_RECUR_PER_30 = 2


@dataclass(frozen=True)
class StormEvent:
    """One final failure of a task instance in the storm.

    :param offset: when it fails, from the start of the storm
    :param dag_id: its DAG
    :param task_id: its task
    :param map_index: its mapped instance, ``-1`` when not mapped
    :param run_id: its DAG run
    :param try_number: the try that failed (always the last: ``max_tries + 1``)
    :param max_tries: Airflow's ``max_tries``
    :param exception_type: qualified exception class name
    :param exception_mro: the exception's classes, most derived first
    :param message: the exception message, with this failure's own hosts, ids and dates
    :param tags: the DAG's tags (team, tier)
    :param cause: the id of the root cause (a key of :attr:`Storm.causes`)
    :param hostname: the worker it ran on
    :param downstream_count: tasks waiting downstream of it
    """

    offset: timedelta
    dag_id: str
    task_id: str
    map_index: int
    run_id: str
    try_number: int
    max_tries: int
    exception_type: str
    exception_mro: tuple[str, ...]
    message: str
    tags: frozenset[str]
    cause: str
    hostname: str = ""
    downstream_count: int = 0

    @property
    def member_key(self) -> str:
        """``dag.task[map_index]``, like :attr:`Alert.source` and incident members."""
        return f"{self.dag_id}.{self.task_id}" + (f"[{self.map_index}]" if self.map_index >= 0 else "")

    @property
    def occurrence_id(self) -> str:
        """The :attr:`Alert.occurrence_id` of :func:`storm_alert` (unique within a storm)."""
        return (
            f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}|{self.try_number}|"
            f"{AlertKind.TASK_FAILURE.value}"
        )


@dataclass(frozen=True)
class Storm:
    """A generated storm: failures sorted by time and the causes behind them.

    :param events: the failures, sorted by :attr:`StormEvent.offset`
    :param causes: cause id -> description (exception type and a representative message)
    :param duration: the period the failures fall in (every offset is below it)
    :param seed: the seed it was generated from
    :param scale: the scale it was generated at
    """

    events: tuple[StormEvent, ...]
    causes: Mapping[str, str]
    duration: timedelta
    seed: int = 0
    scale: int = 1

    @property
    def failures(self) -> int:
        return len(self.events)

    def events_of(self, cause: str) -> tuple[StormEvent, ...]:
        """The failures of one cause, in time order."""
        return tuple(e for e in self.events if e.cause == cause)

    def dag_ids(self, cause: str | None = None) -> frozenset[str]:
        """DAGs with failures (of ``cause`` only, when given)."""
        return frozenset(e.dag_id for e in self.events if cause is None or e.cause == cause)


# --- names -----------------------------------------------------------------------------------


class _Names:
    """Unique, realistic DAG and task names, drawn deterministically."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._dags = [f"{d}_{e}_{k}" for d in _DOMAINS for e in _ENTITIES for k in _DAG_KINDS]
        rng.shuffle(self._dags)
        self._next_dag = 0

    def dag(self) -> str:
        index = self._next_dag
        self._next_dag += 1
        base = self._dags[index % len(self._dags)]
        # more DAGs than words (scale 100): a numbered generation, like real "_v2" DAGs
        return base if index < len(self._dags) else f"{base}_v{index // len(self._dags) + 1}"

    def tasks(self, count: int) -> list[str]:
        names = [f"{v}_{e}" for v in _VERBS for e in _ENTITIES]
        self._rng.shuffle(names)
        return [
            names[i % len(names)] if i < len(names) else f"{names[i % len(names)]}_{i // len(names)}"
            for i in range(count)
        ]


def _run_id(offset: timedelta) -> str:
    return f"scheduled__{(_RUN_EPOCH + offset).isoformat()}"


def _tags(rng: random.Random, *, tier1: float, tier2: float) -> frozenset[str]:
    tags = {f"team:{rng.choice(_TEAMS)}"}
    roll = rng.random()
    if roll < tier1:
        tags.add("tier:1")
    elif roll < tier1 + tier2:
        tags.add("tier:2")
    return frozenset(tags)


def _max_tries(rng: random.Random) -> int:
    return rng.choices((0, 1, 2, 3), weights=(3, 4, 2, 1))[0]


def _downstream(rng: random.Random) -> int:
    # most tasks have a handful downstream; a few fan out wide (and are raised for it)
    return rng.randrange(0, 7) if rng.random() < 0.95 else rng.randrange(10, 40)


def _worker(rng: random.Random) -> str:
    return f"airflow-worker-{rng.randrange(12)}.{_hex(rng, 5)}"


def _ms(seconds: float) -> timedelta:
    return timedelta(milliseconds=round(seconds * 1000))


def _partition(rng: random.Random, total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` positive, uneven sizes (a few big DAGs, many small ones)."""
    weights = [rng.paretovariate(1.5) for _ in range(parts)]
    spare = total - parts
    scale = spare / sum(weights)
    sizes = [1 + math.floor(w * scale) for w in weights]
    for i in rng.sample(range(parts), total - sum(sizes)):
        sizes[i] += 1
    return sizes


def _outage_events(
    rng: random.Random, names: _Names, tasks: int, dags: int, duration: timedelta
) -> list[StormEvent]:
    span = duration.total_seconds()
    down_at = rng.uniform(0.0, span * 0.1)
    events: list[StormEvent] = []
    for size in _partition(rng, tasks, dags):
        dag_id = names.dag()
        tags = _tags(rng, tier1=0.05, tier2=0.2)
        run_id = _run_id(-timedelta(hours=rng.randrange(1, 6)))
        host = rng.choice((3, 3, 3, 3, 4))
        subnet = rng.choice((3, 3, 4))
        port = rng.choice((5432, 5432, 6432))
        instances: list[tuple[str, int]] = []
        task_names = iter(names.tasks(size))
        while len(instances) < size:
            remaining = size - len(instances)
            task = next(task_names)
            if remaining >= 4 and rng.random() < 0.25:
                width = rng.randint(2, min(remaining, 24))
                instances.extend((task, i) for i in range(width))
            else:
                instances.append((task, -1))
        for task, map_index in instances:
            # front-loaded: running tasks fail at once, queued ones as they start over the period
            at = down_at + (span - down_at) * rng.betavariate(1.1, 2.5)
            max_tries = _max_tries(rng)
            events.append(
                StormEvent(
                    offset=min(_ms(at), duration - timedelta(milliseconds=1)),
                    dag_id=dag_id,
                    task_id=task,
                    map_index=map_index,
                    run_id=run_id,
                    try_number=max_tries + 1,
                    max_tries=max_tries,
                    exception_type=_OUTAGE_TYPE,
                    exception_mro=_OUTAGE_MRO,
                    message=_outage_message(rng, host, subnet, port),
                    tags=tags,
                    cause=OUTAGE_CAUSE,
                    hostname=_worker(rng),
                    downstream_count=_downstream(rng),
                )
            )
    return events


def _unrelated_events(
    rng: random.Random,
    names: _Names,
    causes: Sequence[tuple[str, _Cause]],
    recurring: frozenset[str],
    duration: timedelta,
) -> list[StormEvent]:
    span = duration.total_seconds()
    period = min(_RECUR_PERIOD, duration / (_RECUR_RUNS + 0.5))
    events: list[StormEvent] = []
    # a DAG can fail for more than one unrelated cause (different tasks), as real ones do
    dags: list[tuple[str, frozenset[str], list[str]]] = []
    for cause_id, cause in causes:
        if not dags or rng.random() < 0.7:
            dags.append((names.dag(), _tags(rng, tier1=0.08, tier2=0.2), names.tasks(40)))
        dag_id, tags, free_tasks = dags[-1] if rng.random() < 0.8 else rng.choice(dags)
        if len(free_tasks) < 6:
            dag_id, tags, free_tasks = names.dag(), _tags(rng, tier1=0.08, tier2=0.2), names.tasks(40)
            dags.append((dag_id, tags, free_tasks))
        if cause_id in recurring:
            # the same task fails the same way in consecutive runs of a frequently scheduled DAG
            task = free_tasks.pop()
            first = rng.uniform(0.0, span - (_RECUR_RUNS - 1) * period.total_seconds() - 1.0)
            max_tries = _max_tries(rng)
            for run in range(_RECUR_RUNS):
                start = first + run * period.total_seconds()
                events.append(
                    _event(
                        rng, cause_id, cause, dag_id, tags, task, -1, _run_id(run * period), start, max_tries
                    )
                )
            continue
        count = rng.randint(1, 6)
        run_id = _run_id(-timedelta(minutes=rng.randrange(5, 240)))
        start = rng.uniform(0.0, span - 91.0) if span > 91.0 else 0.0
        mapped = count >= 3 and rng.random() < 0.3
        chosen = [free_tasks.pop()] if mapped else [free_tasks.pop() for _ in range(count)]
        for i in range(count):
            task, map_index = (chosen[0], i) if mapped else (chosen[i], -1)
            # tasks of one run that hit the same problem fail within a minute and a half of each other
            at = start + rng.uniform(0.0, min(90.0, span - start - 0.001))
            events.append(
                _event(rng, cause_id, cause, dag_id, tags, task, map_index, run_id, at, _max_tries(rng))
            )
    return events


def _event(
    rng: random.Random,
    cause_id: str,
    cause: _Cause,
    dag_id: str,
    tags: frozenset[str],
    task: str,
    map_index: int,
    run_id: str,
    at: float,
    max_tries: int,
) -> StormEvent:
    return StormEvent(
        offset=_ms(at),
        dag_id=dag_id,
        task_id=task,
        map_index=map_index,
        run_id=run_id,
        try_number=max_tries + 1,
        max_tries=max_tries,
        exception_type=cause.exception_type,
        exception_mro=cause.exception_mro,
        message=cause.render(rng),
        tags=tags,
        cause=cause_id,
        hostname=_worker(rng),
        downstream_count=_downstream(rng),
    )


def generate_storm(
    seed: int = 0,
    *,
    scale: int = 1,
    outage_tasks: int = 500,
    outage_dags: int = 20,
    unrelated_causes: int = 30,
    duration: timedelta = timedelta(minutes=10),
) -> Storm:
    """Generate a failure storm; the same arguments always give the same storm.

    :param seed: seeds :class:`random.Random`; every choice is drawn from it
    :param scale: multiplies the outage's tasks and DAGs and the unrelated causes (10, 100 for benches)
    :param outage_tasks: task instances the outage fails (at scale 1); 0 for no outage
    :param outage_dags: DAGs they belong to (at scale 1)
    :param unrelated_causes: further, unrelated root causes (at scale 1), each failing 1-6 task
        instances in other DAGs; 2 in 30 instead fail the same task in 3 consecutive runs
    :param duration: every failure happens within this period from the start
    :raises ValueError: on a scale below 1, negative counts, more outage DAGs than tasks, or a
        duration too short for three consecutive runs
    """
    if scale < 1:
        raise ValueError("scale must be at least 1")
    if min(outage_tasks, outage_dags, unrelated_causes) < 0:
        raise ValueError("counts must not be negative")
    if outage_tasks and not 1 <= outage_dags <= outage_tasks:
        raise ValueError("the outage needs between 1 and outage_tasks DAGs")
    if duration < timedelta(minutes=2):
        raise ValueError("duration must be at least 2 minutes")
    rng = random.Random(seed)
    names = _Names(rng)
    events: list[StormEvent] = []
    descriptions: dict[str, str] = {}
    if outage_tasks:
        events.extend(_outage_events(rng, names, outage_tasks * scale, outage_dags * scale, duration))
        descriptions[OUTAGE_CAUSE] = _OUTAGE_DESCRIPTION
    picked = _pick_causes(rng, unrelated_causes * scale)
    width = len(str(len(picked)))
    causes = [(f"cause-{i + 1:0{width}d}", cause) for i, cause in enumerate(picked)]
    candidates = [cid for cid, cause in causes if cause.deterministic]
    recurring_count = min(len(candidates), round(len(causes) * _RECUR_PER_30 / 30)) if causes else 0
    recurring = frozenset(rng.sample(candidates, recurring_count))
    events.extend(_unrelated_events(rng, names, causes, recurring, duration))
    descriptions.update((cid, cause.description) for cid, cause in causes)
    # stable: ties keep generation order, so a seed always replays in the same order
    events.sort(key=lambda e: e.offset)
    return Storm(
        events=tuple(events),
        causes=MappingProxyType(descriptions),
        duration=duration,
        seed=seed,
        scale=scale,
    )


def storm_alert(event: StormEvent, start: datetime) -> Alert:
    """The alert a final-try failure callback produces for ``event`` in a storm that started at ``start``."""
    return Alert(
        dag_id=event.dag_id,
        kind=AlertKind.TASK_FAILURE,
        task_id=event.task_id,
        run_id=event.run_id,
        map_index=event.map_index,
        try_number=event.try_number,
        max_tries=event.max_tries,
        exception_type=event.exception_type,
        exception_mro=event.exception_mro,
        message=event.message,
        owner=next((t.split(":", 1)[1] for t in sorted(event.tags) if t.startswith("team:")), None),
        tags=event.tags,
        downstream_count=event.downstream_count,
        occurred_at=start + event.offset,
        hostname=event.hostname or None,
    )
