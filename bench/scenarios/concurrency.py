"""Scenario 4, concurrency: many processes alerting at once, through one shared state store.

``SqlStore`` on PostgreSQL: the default storm's failures (606, 31 causes) are dealt round-robin
to 16 forked processes (as LocalExecutor and Celery's prefork pool start workers), released
together by a barrier; each runs them through its own ``AlertManager`` (default policy,
recording channels, the database's clock).  Afterwards: decisions per second, duplicate
announcements (more than one per incident and channel: 0 is right), occurrences lost (failures
the store's incidents do not count: 0 is right) and causes split over several incidents.

``VariableStore``: :func:`measure` of ``bench/variables_duplicate_rate.py`` (16 processes, each
its own interpreter with Airflow's ORM on one fresh PostgreSQL metadata DB, failing at once with
the same cause, storm after storm); its duplicates and lost occurrences scaled to 100 storms.

``VariableStore (API server)`` (not in ``--short``): the same storms as task failures on a real
Celery deployment, whose callbacks reach Variables through the Task SDK and the API server, for
:data:`VARIABLES_BUDGET` seconds (``api_server.py``).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
import time
import uuid
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

from .common import POSTGRES_URL, ROOT, Check, Options, Result, Table, at_most, quiet, warm_pipeline

NAME = "concurrency"
CONTEXT = multiprocessing.get_context("fork")
#: seconds of Variables storms at most (the measurement stops starting storms after it)
VARIABLES_BUDGET = 300.0


def _worker(prefix: str, indices: list[int], seed: int, barrier: Barrier, out: Connection) -> None:
    """One process: handle the storm failures at ``indices``; send back what the channels recorded."""
    from airflow_alerting.manager import AlertManager, DeliveryOptions, utcnow
    from airflow_alerting.policy import AlertPolicy
    from airflow_alerting.state.sql import SqlStore
    from airflow_alerting.testing import RecordingChannel
    from airflow_alerting.testing.storm import generate_storm, storm_alert

    quiet()
    storm = generate_storm(seed, scale=1)
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty"),
    }
    manager = AlertManager(
        AlertPolicy(),
        store=SqlStore(url=POSTGRES_URL, table_prefix=prefix, use_database_clock=True),
        channels=channels,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    start = utcnow()
    alerts = [storm_alert(storm.events[i], start) for i in indices]
    barrier.wait()
    began = time.perf_counter()
    for alert in alerts:
        manager.handle(alert)
    took = time.perf_counter() - began
    recorded = [
        (name, n.action.value, n.incident.id if n.incident is not None else None, n.alert.occurrence_id)
        for name, channel in channels.items()
        for n in channel.notifications
    ]
    out.send({"seconds": took, "handled": len(alerts), "recorded": recorded})
    out.close()


def sql_concurrency(processes: int, failures: int | None, seed: int) -> dict[str, Any]:
    """Run the storm's failures through ``processes`` forked workers sharing one PostgreSQL store.

    :param processes: worker processes
    :param failures: how many of the storm's failures (all when ``None``)
    :param seed: the storm seed
    """
    from airflow_alerting.state.sql import SqlStore
    from airflow_alerting.testing.storm import generate_storm

    warm_pipeline()  # the forked workers inherit the imports a long-running worker has
    storm = generate_storm(seed, scale=1)
    events = storm.events if failures is None else storm.events[:: max(1, len(storm.events) // failures)]
    chosen = [storm.events.index(e) for e in events]
    prefix = f"bench{uuid.uuid4().hex[:10]}_"
    store = SqlStore(url=POSTGRES_URL, table_prefix=prefix, use_database_clock=True)
    store.incidents(limit=1)  # creates the tables before the workers race for them
    try:
        barrier = CONTEXT.Barrier(processes + 1)
        pipes = []
        workers = []
        for p in range(processes):
            receive, send = CONTEXT.Pipe(duplex=False)
            worker = CONTEXT.Process(
                target=_worker, args=(prefix, chosen[p::processes], seed, barrier, send), daemon=True
            )
            worker.start()
            send.close()
            pipes.append(receive)
            workers.append(worker)
        barrier.wait(timeout=600)
        began = time.perf_counter()
        results = [pipe.recv() for pipe in pipes]
        wall = time.perf_counter() - began
        for worker in workers:
            worker.join(timeout=60)
        incidents = store.incidents(limit=10_000)
    finally:
        store.drop_tables()
    announces = Counter(
        (channel, incident)
        for r in results
        for channel, action, incident, _ in r["recorded"]
        if action == "announce" and incident is not None
    )
    cause_of = {storm.events[i].occurrence_id: storm.events[i].cause for i in chosen}
    cause_incidents: dict[str, set[str]] = {}
    for r in results:
        for _, _, incident, occurrence in r["recorded"]:
            if incident is not None and occurrence in cause_of:
                cause_incidents.setdefault(cause_of[occurrence], set()).add(incident)
    from airflow_alerting.policy import AlertPolicy
    from airflow_alerting.testing import FrozenClock

    from .storm import routed_failures

    routed = routed_failures([storm.events[i] for i in chosen], AlertPolicy(), FrozenClock().now)
    stock_slack = routed.get("slack", 0)
    handled = sum(r["handled"] for r in results)
    counted = sum(i.failures for i in incidents)
    return {
        "processes": processes,
        "failures": handled,
        "causes": len(set(cause_of.values())),
        "incidents": len(incidents),
        "wall": wall,
        "decisions_per_s": handled / wall if wall else 0.0,
        "duplicates": sum(n - 1 for n in announces.values() if n > 1),
        "lost": max(0, handled - counted),
        "over": max(0, counted - handled),
        "split": sum(1 for ids in cause_incidents.values() if len(ids) > 1),
        "stock_slack": stock_slack,
        "slack_messages": sum(
            1
            for r in results
            for channel, action, _, _ in r["recorded"]
            if channel == "slack" and action in ("announce", "follow_up", "escalate", "renotify", "resolve")
        ),
    }


def variables_storms(storms: int, short: bool) -> dict[str, Any]:
    """Call :func:`measure` of ``bench/variables_duplicate_rate.py``: one storm of one cause, many processes.

    :param storms: the most storms to run (it also stops after a time budget)
    :param short: its smoke mode (4 processes, at most 3 storms)
    """
    spec = importlib.util.spec_from_file_location(
        "bench_variables_duplicate_rate", ROOT / "bench" / "variables_duplicate_rate.py"
    )
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bench/variables_duplicate_rate.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        # its dataclasses look their module up in sys.modules while being created
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    began = time.perf_counter()
    result = module.measure(storms=storms, processes=16, short=short, budget_seconds=VARIABLES_BUDGET)
    found: dict[str, Any] = result.to_json()
    found["seconds"] = time.perf_counter() - began
    return found


def run(options: Options) -> Result:
    """Measure both stores under concurrency and tabulate.

    :param options: the run's options
    """
    quiet()
    processes, failures = (4, 60) if options.short else (16, None)
    sql = sql_concurrency(processes, failures, options.seed)
    rows: list[tuple[str, ...]] = [
        (
            "SqlStore PostgreSQL",
            str(sql["processes"]),
            str(sql["failures"]),
            str(sql["causes"]),
            str(sql["incidents"]),
            f"{sql['decisions_per_s']:.1f}",
            str(sql["slack_messages"]),
            str(sql["stock_slack"]),
            str(sql["duplicates"]),
            str(sql["lost"]),
            str(sql["split"]),
        )
    ]
    checks = [
        at_most("concurrency SqlStore PostgreSQL: duplicate announcements", sql["duplicates"], 0),
        at_most("concurrency SqlStore PostgreSQL: occurrences lost", sql["lost"], 0),
        at_most("concurrency SqlStore PostgreSQL: occurrences counted twice", sql["over"], 0),
    ]
    figures: dict[str, Any] = {f"concurrency.sql.{k}": v for k, v in sql.items()}
    notes = [
        f"{sql['processes']} forked processes released by a barrier, {sql['failures']} failures dealt"
        f" round-robin; wall {sql['wall']:.1f} s;",
        "duplicates = announcements beyond one per incident and channel; lost = failures the store's",
        "incidents do not count; split = causes whose failures joined more than one incident;",
        "stock slack = one message per failure the default policy routes to Slack (no shared state at all).",
    ]
    if options.variables_storms > 0:
        try:
            var = variables_storms(options.variables_storms, options.short)
        except Exception as err:
            notes.append(f"VariableStore run FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            checks.append(at_most("concurrency VariableStore: measurement failed", 1, 0))
            return Result(NAME, (_table(rows, notes),), tuple(checks), figures)
        count = var["storm_count"]
        per_100 = 100 / count if count else 0.0
        rows.append(
            (
                "VariableStore (ORM, PostgreSQL metadata DB)",
                str(var["processes"]),
                f"{count} storms x {var['processes'] * var['alerts_per_process']}",
                "1 per storm",
                "-",
                "-",
                "-",
                str(count * var["processes"] * var["alerts_per_process"]),
                f"{var['duplicates'] * per_100:.1f} / 100 storms",
                f"{var['lost_occurrences'] * per_100:.1f} / 100 storms",
                "-",
            )
        )
        checks.append(at_most("concurrency VariableStore: storms that posted nothing", var["lost_alerts"], 0))
        checks.append(at_most("concurrency VariableStore: occurrences lost", var["lost_occurrences"], 0))
        figures.update({f"concurrency.variables.{k}": v for k, v in var.items() if not isinstance(v, list)})
        notes.append(
            f"VariableStore: measure() of bench/variables_duplicate_rate.py, {count} storms of one cause,"
            f" each {var['processes']} processes failing at once ({var['seconds']:.0f} s with start-up);"
        )
        notes.append(
            f"storms with duplicates: {var['storms_with_duplicates']} of {count}; duplicates and lost"
            " occurrences scaled to 100 storms; Variables have no compare-and-set: duplicates are possible."
        )
    else:
        notes.append("VariableStore run skipped (--short, or --variables-storms 0).")
    if not options.short and options.variables_storms > 0:
        _api_server_row(options, rows, notes, checks, figures)
    return Result(NAME, (_table(rows, notes),), tuple(checks), figures)


def _api_server_row(
    options: Options,
    rows: list[tuple[str, ...]],
    notes: list[str],
    checks: list[Check],
    figures: dict[str, Any],
) -> None:
    """Storms through ``VariableStore`` on a real API server (``api_server.py``): add its row, notes, checks.

    Its own Celery deployment: about a minute of start-up, then :data:`VARIABLES_BUDGET` of storms.
    """
    from . import api_server

    try:
        found = api_server.measure_storms(options.workdir, options.variables_storms, VARIABLES_BUDGET)
    except Exception as err:
        notes.append(
            f"VariableStore (API server) run FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        )
        checks.append(at_most("concurrency VariableStore (API server): measurement failed", 1, 0))
        return
    rows.append(api_server.storm_row(found))
    notes.extend(api_server.storm_notes(found))
    label = "concurrency VariableStore (API server)"
    checks.append(at_most(f"{label}: storms that posted nothing", found["lost_alerts"], 0))
    checks.append(at_most(f"{label}: occurrences lost", found["lost_occurrences"], 0))
    figures.update({f"concurrency.variables_api.{k}": v for k, v in found.items() if not isinstance(v, list)})


def _table(rows: list[tuple[str, ...]], notes: list[str]) -> Table:
    return Table(
        "4. Concurrency: processes alerting mixed causes at once through one shared store",
        (
            "store",
            "processes",
            "failures",
            "causes",
            "incidents",
            "decisions/s",
            "slack msgs",
            "stock slack",
            "duplicates",
            "lost",
            "split",
        ),
        tuple(rows),
        tuple(notes),
    )
