"""``state init|prune|check``: create the SQL tables, apply retention, report what is stored.

``python -m airflow_alerting.state.sql`` is an alias of ``state init`` (same flags, same output).
Without ``--conn-id``/``--url`` the commands use the configured store (``[alerting] state_backend``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.output import (
    BadInput,
    OperationFailed,
    print_json,
    print_kv,
    print_table,
    wants_json,
)
from airflow_alerting.cli.spec import Argument, Command, Group

if TYPE_CHECKING:
    from airflow_alerting.state.base import StateStore

__all__ = ["STATE", "init_tables"]


def _where(store: StateStore) -> str:
    """Where the store keeps its state, safe to print (the SQL store masks the password)."""
    describe = getattr(store, "describe", None)
    return str(describe()) if describe is not None else store.name


def _explicit_sql(args: argparse.Namespace) -> bool:
    return bool(args.conn_id or args.url)


def _store(args: argparse.Namespace) -> StateStore:
    """The store named by ``--conn-id``/``--url``, or the configured one."""
    if args.conn_id and args.url:
        raise BadInput("--conn-id/--url", "give one of them, not both")
    if _explicit_sql(args):
        from airflow_alerting.state.sql import SqlStore

        try:
            return SqlStore(args.conn_id, url=args.url, table_prefix=args.table_prefix)
        except ValueError as err:
            raise BadInput("--table-prefix" if "table_prefix" in str(err) else "--url", str(err)) from err
    from airflow_alerting.cli.runtime import configured_settings
    from airflow_alerting.state import store_from_settings

    return store_from_settings(configured_settings())


def init_tables(args: argparse.Namespace) -> int:
    """``state init``: create the SQL store's tables if missing (nothing to do for other stores).

    :param args: ``conn_id``, ``url``, ``table_prefix``, ``output``
    :return: the exit code
    """
    from airflow_alerting.state.base import StateUnavailableError

    store = _store(args)
    create = getattr(store, "create_tables", None)
    if create is None:
        message = f"the {store.name} state store needs no setup"
        if wants_json(args):
            print_json({"backend": store.name, "tables": [], "message": message})
        else:
            print(message)
        return 0
    try:
        names: list[str] = create()
    except (StateUnavailableError, ValueError) as err:
        raise OperationFailed(str(err)) from err
    where = _where(store)
    if wants_json(args):
        print_json({"backend": store.name, "location": where, "tables": names})
    else:
        print(f"tables ready at {where}: {', '.join(names)}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager, configured_settings
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.state.base import StateUnavailableError

    settings = configured_settings()
    store = _store(args)
    policy = configured_manager(settings).policy
    manager = AlertManager(policy, store=store, settings=settings)
    try:
        # incidents.retention, windows and escalation periods of the policy
        pruned = manager.prune()
        history = 0
        prune_history = getattr(store, "prune", None)
        if prune_history is not None:
            # the SQL store's own history_retention (history, occurrences, outbox by age)
            history = int(prune_history())
    except StateUnavailableError as err:
        raise OperationFailed(f"pruning failed: {err}") from err
    document = {
        "backend": store.name,
        "pruned": pruned + history,
        "policy_retention": pruned,
        "history_retention": history,
        "incident_retention_seconds": policy.incidents.retention.total_seconds(),
    }
    if wants_json(args):
        print_json(document)
    else:
        print_kv(
            f"Pruned the {store.name} state store",
            [
                ("records forgotten", document["pruned"]),
                ("by the policy's retention", pruned),
                ("by the history retention", history),
            ],
        )
    return 0


def _counts(store: StateStore) -> dict[str, Any]:
    """What the store holds, through the StateStore API every backend implements."""
    from airflow_alerting.incidents.model import IncidentState
    from airflow_alerting.manager_base import utcnow

    now = utcnow()
    incidents = store.incidents(limit=100_000)
    by_state = {state.value: sum(1 for i in incidents if i.state is state) for state in IncidentState}
    silences = store.silences()
    history = store.history(limit=100_000)
    return {
        "incidents": by_state,
        "silences": {
            "active": sum(1 for s in silences if s.active(now)),
            "scheduled": sum(1 for s in silences if s.starts_at > now),
            "expired": sum(1 for s in silences if s.ends_at <= now),
        },
        "history_entries": len(history),
        "oldest_history": history[-1].at.isoformat() if history else None,
        "newest_history": history[0].at.isoformat() if history else None,
    }


def _table_rows(store: StateStore) -> dict[str, int] | None:
    """Rows per table for the SQL store; ``None`` for the other stores."""
    counts = getattr(store, "table_counts", None)
    return counts() if counts is not None else None


def _check(args: argparse.Namespace) -> int:
    from airflow_alerting.state.base import StateUnavailableError

    store = _store(args)
    try:
        counts = _counts(store)
        tables = _table_rows(store)
    except StateUnavailableError as err:
        where = _where(store)
        if wants_json(args):
            print_json({"backend": store.name, "location": where, "ok": False, "error": str(err)})
        raise OperationFailed(f"the {store.name} state store at {where} is unavailable: {err}") from err
    except Exception as err:  # e.g. SQLAlchemy errors from the row counts
        raise OperationFailed(
            f"the {store.name} state store at {_where(store)} could not be read: {err}"
        ) from err
    where = _where(store)
    document = {"backend": store.name, "location": where, "ok": True, **counts, "tables": tables}
    if wants_json(args):
        print_json(document)
        return 0
    incidents = counts["incidents"]
    silences = counts["silences"]
    print_kv(
        f"State store: {store.name} ({where})",
        [
            ("incidents", ", ".join(f"{n} {state}" for state, n in incidents.items())),
            ("silences", ", ".join(f"{n} {kind}" for kind, n in silences.items())),
            ("history entries", counts["history_entries"]),
            ("oldest entry", counts["oldest_history"]),
            ("newest entry", counts["newest_history"]),
        ],
    )
    if tables is not None:
        print_table("Tables", ("table", "rows"), sorted(tables.items()))
    return 0


_TARGET = (
    Argument(
        ("--conn-id",),
        "Airflow connection (postgres, mysql or sqlite) of a SQL store (default: the configured store)",
        {"default": None, "dest": "conn_id"},
    ),
    Argument(
        ("--url",),
        "SQLAlchemy URL instead of a connection (visible in the process list: avoid passwords)",
        {"default": None},
    ),
    Argument(("--table-prefix",), "table name prefix (default: alerting_)", {"default": "alerting_"}),
)

STATE = Group(
    name="state",
    help="Create the SQL tables, apply retention, report what the state store holds",
    commands=(
        Command(
            name="init",
            help="Create the SQL state store's tables if missing",
            description=(
                "Create the tables of the SQL state store ahead of time (e.g. from a deployment job "
                "with DDL rights). Safe to run again. python -m airflow_alerting.state.sql is an alias."
            ),
            arguments=_TARGET,
            run=init_tables,
        ),
        Command(
            name="prune",
            help="Apply retention: forget stale incidents, silences, throttle state and history",
            arguments=_TARGET,
            run=_prune,
        ),
        Command(
            name="check",
            help="Report what the state store holds (exit 1 when it cannot be reached)",
            arguments=_TARGET,
            run=_check,
        ),
    ),
)
