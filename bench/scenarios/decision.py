"""Scenario 2, decision cost per alert: from the callback context to the notifications, no network.

For each store, a fresh store is given the state of ``N`` storms (``N`` x 606 history entries and
``N`` x 31 open incidents of distinct causes, made by the pipeline itself), then a sample of the
default storm's failures (mixed causes, the outage included) goes through what a worker's
callback runs: :func:`~airflow_alerting.context.alert_from_context` on a context carrying a real
exception of the failure's class, then ``AlertManager.handle`` with recording channels.  The
time of each is one sample.

``VariableStore`` runs in a child interpreter with a private Airflow home whose SQLite metadata
database is migrated first: outside a worker the store reaches Variables through Airflow's ORM
model (the metadata-DB path), which is what this measures; in a worker the same calls go through
the Task SDK to the API server.  Its claim verification pause (``verify_delay``, 0.1-0.2 s) is
part of every decision that sends, as in production.

``VariableStore (API server)`` (not in ``--short``) is that worker path: the same sample in the
failure callback of a real task on a Celery deployment, timed by the ``alerting.callback.duration``
StatsD timer; see ``api_server.py``.
"""

from __future__ import annotations

import builtins
import json
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .common import (
    POSTGRES_URL,
    ROOT,
    Options,
    Result,
    Table,
    migrate_metadata_db,
    ms,
    quantile,
    quiet,
    ratio,
    target_at_most,
    warm_pipeline,
)

NAME = "decision"
_FAILURES_PER_STORM = 606
_CAUSES_PER_STORM = 31
_CLASSES: dict[str, type[BaseException]] = {}
#: state scales of the API server row (100x only if its preload fits ``api_server``'s budget)
API_SERVER_SCALES = (1, 10, 100)


def exception_class(exception_type: str, mro: Sequence[str]) -> type[BaseException]:
    """A class whose qualified name and bases are ``mro`` (builtins where the name is one).

    :param exception_type: the qualified class name
    :param mro: the qualified names of it and its bases, most derived first
    """
    if exception_type in _CLASSES:
        return _CLASSES[exception_type]
    parent: type[BaseException] = Exception
    for name in reversed([n for n in mro if n not in ("BaseException", "Exception")]):
        found = getattr(builtins, name, None) if "." not in name else _CLASSES.get(name)
        if isinstance(found, type) and issubclass(found, BaseException):
            parent = found
            continue
        module, _, short = name.rpartition(".")
        cls = type(short, (parent,), {"__module__": module or "builtins", "__qualname__": short})
        _CLASSES[name] = cls
        parent = cls
    _CLASSES[exception_type] = parent
    return parent


def context_of(event: Any, exception: BaseException) -> dict[str, Any]:
    """The context Airflow passes ``on_failure_callback`` for a storm failure (plain objects).

    :param event: a :class:`~airflow_alerting.testing.storm.StormEvent`
    :param exception: the exception the task raised
    """
    ti = SimpleNamespace(
        dag_id=event.dag_id,
        task_id=event.task_id,
        run_id=event.run_id,
        map_index=event.map_index,
        try_number=event.try_number,
        max_tries=event.max_tries,
        state="failed",
        hostname=event.hostname or "worker-1",
        log_url=f"http://127.0.0.1:8080/dags/{event.dag_id}/runs/{event.run_id}/tasks/{event.task_id}",
    )
    downstream = {f"t{i}" for i in range(event.downstream_count)}
    team = next((t.split(":", 1)[1] for t in sorted(event.tags) if t.startswith("team:")), "data")
    task = SimpleNamespace(
        task_id=event.task_id,
        owner=team,
        email=[],
        retries=event.max_tries,
        get_flat_relative_ids=lambda upstream=False: downstream,
    )
    dag = SimpleNamespace(dag_id=event.dag_id, tags=sorted(event.tags))
    return {"ti": ti, "task_instance": ti, "task": task, "dag": dag, "exception": exception, "params": {}}


def _word(index: int) -> str:
    # letters only: digits and hex-like runs would be normalised away and merge the causes
    letters = string.ascii_lowercase[6:]
    out = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, len(letters))
        out = letters[rest] + out
    return out


def recording_manager(store: Any, clock: Any) -> tuple[Any, dict[str, Any]]:
    """The measured pipeline: default policy, ``store``, recording channels, one delivery attempt.

    :param store: the state store
    :param clock: the manager's clock (a :class:`~airflow_alerting.testing.FrozenClock`)
    :return: the manager and its channels by name
    """
    from airflow_alerting.manager import AlertManager, DeliveryOptions
    from airflow_alerting.policy import AlertPolicy
    from airflow_alerting.testing import RecordingChannel

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
    return manager, channels


def preload(manager: Any, store: Any, clock: Any, scale: int) -> float:
    """Give ``store`` the state of ``scale`` storms through ``manager``; return the seconds it took.

    ``scale`` x 606 history entries, then ``scale`` x 31 alerts of distinct causes (open
    incidents), one second apart on ``clock``, which ends ``scale`` x 31 seconds later.

    :param manager: a manager on ``store`` and ``clock`` (:func:`recording_manager`)
    :param store: the state store
    :param clock: the manager's clock
    :param scale: storms' worth of state
    """
    from airflow_alerting.model import Alert, HistoryEntry

    began = time.perf_counter()
    entries = [
        HistoryEntry(
            at=clock() - timedelta(seconds=i),
            fingerprint=f"preload{i}",
            source=f"preload_dag.task_{i % 500}",
            kind="task_failure",
            severity="medium",
            channel="slack",
            reason="throttled",
            sent=False,
            why="preloaded history",
        )
        for i in range(_FAILURES_PER_STORM * scale)
    ]
    for batch in range(0, len(entries), 500):
        store.append_history(entries[batch : batch + 500])
    for i in range(_CAUSES_PER_STORM * scale):
        word = _word(i)
        manager.handle(
            Alert(
                dag_id=f"preload_{word}",
                task_id="load",
                run_id=f"preload_run_{word}",
                exception_type=f"preload.Cause{word.capitalize()}Error",
                exception_mro=(f"preload.Cause{word.capitalize()}Error", "Exception"),
                message=f"preloaded cause {word} is broken",
            )
        )
        clock.advance(seconds=1)
    return time.perf_counter() - began


def sample_events(seed: int, alerts: int) -> list[Any]:
    """An even sample of ``alerts`` failures of the default storm (mixed causes, the outage included).

    :param seed: the storm seed
    :param alerts: how many
    """
    from airflow_alerting.testing.storm import generate_storm

    storm = generate_storm(seed, scale=1)
    step = max(1, len(storm.events) // alerts)
    return list(storm.events[::step][:alerts])


def decide(manager: Any, clock: Any, events: Sequence[Any]) -> list[float]:
    """Run ``events`` through what a worker's callback runs; return the seconds of each decision.

    Each: :func:`~airflow_alerting.context.alert_from_context` on a context carrying a real
    exception of the failure's class, then ``manager.handle``; ``clock`` follows the events'
    offsets from where it stands.

    :param manager: the manager measured
    :param clock: its clock
    :param events: :class:`~airflow_alerting.testing.storm.StormEvent` s, in order
    """
    from airflow_alerting.context import alert_from_context

    start = clock.now
    seconds: list[float] = []
    for event in events:
        due = start + event.offset
        if due > clock.now:
            clock.advance(due - clock.now)
        exception = exception_class(event.exception_type, event.exception_mro)(event.message)
        context = context_of(event, exception)
        began = time.perf_counter()
        manager.handle(alert_from_context(context))
        seconds.append(time.perf_counter() - began)
    return seconds


def measure(store: Any, scale: int, alerts: int, seed: int) -> dict[str, Any]:
    """Load ``store`` with the state of ``scale`` storms, then time ``alerts`` decisions.

    :param store: a fresh state store
    :param scale: storms' worth of state preloaded
    :param alerts: decisions timed
    :param seed: the storm seed
    :return: ``seconds`` (one per decision), ``preload_seconds``, ``sent`` (notifications recorded)
    """
    from airflow_alerting.testing import FrozenClock

    warm_pipeline()
    clock = FrozenClock()
    manager, channels = recording_manager(store, clock)
    preload_seconds = preload(manager, store, clock, scale)
    for channel in channels.values():
        channel.notifications.clear()
    seconds = decide(manager, clock, sample_events(seed, alerts))
    sent = sum(len(c.notifications) for c in channels.values())
    return {"seconds": seconds, "preload_seconds": preload_seconds, "sent": sent}


def _variables_child(
    workdir: Path, scales: Sequence[int], alerts: int, seed: int
) -> dict[int, dict[str, Any]]:
    """Measure ``VariableStore`` in a child interpreter on the run's own migrated metadata DB."""
    env = migrate_metadata_db(workdir)
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "from scenarios.decision import measure\n"
        "from airflow_alerting.state.variables import VariableStore\n"
        "out = {}\n"
        f"for scale in {list(scales)!r}:\n"
        "    from airflow.models import Variable\n"
        "    from airflow.utils.session import create_session\n"
        "    with create_session() as s:\n"
        "        old = s.query(Variable).filter(Variable.key.like('alerting.%'))\n"
        "        old.delete(synchronize_session=False)\n"
        f"    out[scale] = measure(VariableStore(), scale, {alerts}, {seed})\n"
        "print('BENCH ' + json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"VariableStore measurement failed ({done.returncode}): {done.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(line[len("BENCH ") :]).items()}


def _api_server_row(options: Options, measured: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Measure ``VariableStore`` through a real API server into ``measured``; return its notes.

    Its own Celery deployment (``api_server.py``): a few minutes of start-up and preload, then
    about 3 minutes per 100 decisions on 2 loaded CPUs.
    """
    from . import api_server

    try:
        found, skipped = api_server.measure_decisions(options.workdir, API_SERVER_SCALES, 100, options.seed)
    except Exception as err:  # the other stores' figures stand without it
        return [f"VariableStore (API server) FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]}"]
    measured["VariableStore (API server)"] = found
    return api_server.decision_notes(found, skipped)


def run(options: Options) -> Result:
    """Time decisions per store at each state size and tabulate p50/p95/p99 and growth.

    :param options: the run's options
    """
    from airflow_alerting.state.sql import SqlStore
    from airflow_alerting.testing import MemoryStore

    quiet()
    scales = (1,) if options.short else (1, 100)
    alerts = 20 if options.short else 100
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    measured["MemoryStore"] = {s: measure(MemoryStore(), s, alerts, options.seed) for s in scales}
    for label, url in (
        ("SqlStore SQLite", f"sqlite:///{options.workdir / 'decision.db'}"),
        ("SqlStore PostgreSQL", POSTGRES_URL),
    ):
        measured[label] = {}
        for scale in scales:
            store = SqlStore(url=url, table_prefix=f"bench{uuid.uuid4().hex[:10]}_")
            try:
                measured[label][scale] = measure(store, scale, alerts, options.seed)
            finally:
                store.drop_tables()
    variables_note = "VariableStore: not measured in --short (it migrates an Airflow metadata DB first)."
    api_notes: list[str] = []
    if not options.short:
        # its verification pauses made 10 storms of preload take 554 s on 2 loaded CPUs: 1x and 10x
        var_scales = (1, 10)
        measured["VariableStore (metadata DB)"] = _variables_child(
            options.workdir, var_scales, 100, options.seed
        )
        variables_note = (
            "VariableStore (metadata DB): ORM on a private migrated SQLite metadata DB (no API server),"
            " 100 decisions, state of 1 and 10 storms (its preload pauses 0.1-0.2 s per claim: 100"
            " storms take too long)."
        )
        api_notes = _api_server_row(options, measured)
    rows = []
    figures: dict[str, Any] = {}
    for label, by_scale in measured.items():
        first = min(by_scale)
        for scale, found in sorted(by_scale.items()):
            seconds = found["seconds"]
            p50 = quantile(seconds, 0.5)
            rows.append(
                (
                    label,
                    f"{scale}x",
                    str(len(seconds)),
                    ms(p50),
                    ms(quantile(seconds, 0.95)),
                    ms(quantile(seconds, 0.99)),
                    ratio(p50, quantile(by_scale[first]["seconds"], 0.5)),
                    f"{found['preload_seconds']:.1f}",
                )
            )
            figures[f"decision.{label}.{scale}x.p50_ms"] = round(1000 * p50, 3)
    table = Table(
        "2. Decision cost per alert: context -> alert_from_context -> handle() -> recording channels",
        ("store", "state", "alerts", "p50 ms", "p95 ms", "p99 ms", f"p50 / {scales[0]}x", "preload s"),
        tuple(rows),
        (
            "state Nx = N storms' worth preloaded: N x 606 history entries and N x 31 open incidents;",
            "the alerts: an even sample of the default storm's failures (mixed causes, the outage included);",
            "SqlStore tables get a unique prefix and are dropped afterwards;",
            variables_note,
            *api_notes,
            "targets: MemoryStore p50 < 1 ms whatever the state; SqlStore PostgreSQL p50 < 5 ms at 100x.",
        ),
    )
    targets = [
        target_at_most(
            f"decision: MemoryStore p50 ms, {scale}x state",
            round(1000 * quantile(found["seconds"], 0.5), 3),
            1,
        )
        for scale, found in sorted(measured["MemoryStore"].items())
    ]
    postgres = measured["SqlStore PostgreSQL"]
    top = max(postgres)
    targets.append(
        target_at_most(
            f"decision: SqlStore PostgreSQL p50 ms, {top}x state",
            round(1000 * quantile(postgres[top]["seconds"], 0.5), 3),
            5,
        )
    )
    return Result(NAME, (table,), tuple(targets), figures)
