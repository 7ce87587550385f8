"""``airflow alerting explain``: severity and its reasons, fingerprint, correlation, route, decisions now.

Also runnable on its own: ``python -m airflow_alerting.cli.explain --exception T --message M``.
The state store is only read (``--state configured``, the default) or a fresh in-memory one is
used (``--state memory``).  Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.simulate import InputError, console, fail, load_policy, run_standalone
from airflow_alerting.cli.spec import OUTPUT, Argument, Command

if TYPE_CHECKING:
    from rich.console import Console

    from airflow_alerting.simulation.explain import Explanation
    from airflow_alerting.state.base import StateStore

__all__ = ["EXPLAIN", "main"]

#: option -> event field it sets (see airflow_alerting.simulation.events)
_FIELDS = {
    "exception": "exception",
    "message": "message",
    "dag": "dag",
    "task": "task",
    "try_number": "try",
    "max_tries": "max_tries",
    "map_index": "map_index",
    "downstream": "downstream",
    "owner": "owner",
    "kind": "kind",
}


def _alert_json(value: str) -> dict[str, Any]:
    """``--alert``: a JSON object, or a file holding one."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise InputError(f"--alert: neither a JSON object nor a readable file: {value[:80]!r}")
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--alert: invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    if not isinstance(data, dict):
        raise InputError(f"--alert: must be a JSON object, got {type(data).__name__}")
    # an outbox notification holds its alert under "alert"
    inner = data.get("alert")
    return dict(inner) if isinstance(inner, dict) and "classification" in data else data


def _alert_fields(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_alerting.simulation.events import canonical_fields

    fields: dict[str, Any] = canonical_fields(_alert_json(args.alert), 0) if args.alert else {}
    for option, name in _FIELDS.items():
        value = getattr(args, option)
        if value is not None:
            fields[name] = value
    if args.tag:
        fields["tags"] = list(args.tag)
    if args.param:
        params = dict(fields.get("params") or {})
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InputError(f"--param {item!r}: expected KEY=VALUE")
            params[key] = value
        fields["params"] = params
    if not args.alert and args.exception is None and args.message is None:
        raise InputError("give --exception and/or --message, or --alert")
    fields.setdefault("dag", "adhoc_dag")
    if "task" not in fields and fields.get("kind") not in ("dag_failure", "dag_success"):
        fields["task"] = "adhoc_task"
    return fields


def _at(value: str | None) -> datetime:
    from airflow_alerting.simulation.events import EventError, parse_time

    if value is None:
        return datetime.now(timezone.utc)
    try:
        return parse_time(value, 0, "--at")
    except EventError as err:
        raise InputError(str(err).removeprefix("event: ")) from err


def _store(kind: str) -> tuple[StateStore, str]:
    from airflow_alerting.state.memory import MemoryStore

    if kind == "memory":
        return MemoryStore(), "memory (fresh, empty)"
    from airflow_alerting.config import load_settings
    from airflow_alerting.state import store_from_settings

    settings = load_settings()
    if settings.state_backend == "memory":
        # a memory backend lives inside each task process: there is nothing to read from here
        return MemoryStore(), "memory (the configured backend keeps no state outside task processes)"
    try:
        store = store_from_settings(settings)
    except Exception as err:  # e.g. a SQL connection id that does not resolve: nothing to read
        return MemoryStore(), f"memory (the configured {settings.state_backend} store is unusable: {err})"
    return store, f"configured ({settings.state_backend}, read-only)"


def _print(explanation: Explanation, out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    from airflow_alerting.manager_base import human

    e = explanation
    out.print(
        Text(f"{e.source}  ({e.kind}, {'final try' if e.final_try else 'will be retried'})", style="bold")
    )
    out.print(Text(f"decided for {e.at.isoformat()} on state: {e.state}"))
    severity = Text("severity: ")
    severity.append(e.severity.label, style="bold")
    if e.silent:
        severity.append("  (silent by policy: recorded, never sent)")
    out.print(severity)
    for reason in e.reasons:
        out.print(Text(f"  - {reason}"))
    if e.rules:
        out.print(Text(f"rules matched: {', '.join(e.rules)}"))
    out.print(Text(f"fingerprint: {e.fingerprint}  (from {', '.join(e.group_by)})"))
    out.print(Text(f"correlation key: {e.correlation_key}"))
    out.print(Text(f"incident title: {e.title}"))
    if e.incident is not None:
        i = e.incident
        what = "opens a new incident" if i.new else f"joins open incident {i.id}"
        out.print(
            Text(
                f"incident: {what}; it would be {i.severity.label} with {i.failures} failure(s) "
                f"in {i.dag_count} DAG(s)"
            )
        )
        for reason in i.reasons:
            out.print(Text(f"  - {reason}"))
    out.print(Text(f"escalation: {e.escalation}"))
    out.print(Text(f"route: {', '.join(e.route) or 'nowhere'}  ({e.route_reason})"))
    out.print(Text(f"silence: {e.silence or 'none matches'}"))
    table = Table(title="What each channel would be told now")
    for column in ("channel", "type", "sends", "action", "reason", "window", "detail"):
        table.add_column(column)
    for c in e.channels:
        window = "-" if c.window is None else human(c.window)
        table.add_row(
            Text(c.channel),
            c.type,
            "yes" if c.send else "no",
            c.action or "-",
            c.reason,
            window,
            Text(c.detail, overflow="fold"),
        )
    out.print(table)
    for note in e.notes:
        out.print(Text(f"note: {note}", style="dim"))


def _run(args: argparse.Namespace) -> int:
    from airflow_alerting.simulation.events import EventError, parse_event
    from airflow_alerting.simulation.explain import explain

    try:
        now = _at(args.at)
        fields = _alert_fields(args)
        event = parse_event(fields, now=now)
        policy, _ = load_policy(args.policy)
        store, label = _store(args.state)
    except EventError as err:
        return fail(str(err).removeprefix("event: "))
    except (InputError, OSError) as err:
        return fail(str(err))
    explanation = explain(
        event.alert(), policy, store, now=now, state=label, slack_api=args.slack != "webhook"
    )
    if args.output == "json":
        sys.stdout.write(json.dumps(explanation.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        _print(explanation, console())
    return 0


def _int_arg(name: str) -> dict[str, Any]:
    return {"type": int, "default": None, "dest": name}


EXPLAIN = Command(
    name="explain",
    help="explain an alert: severity and every reason, fingerprint, correlation, route, decisions now",
    description=(
        "Given an exception type and message (or a JSON alert), prints the severity with every "
        "reason, the fingerprint and correlation key, the route, and what the throttle, incident "
        "and silence state would decide now. The state store is only read, never written."
    ),
    arguments=(
        Argument(("--exception",), "exception type, e.g. psycopg2.OperationalError", {"default": None}),
        Argument(("--message",), "exception message", {"default": None}),
        Argument(
            ("--alert",),
            "a JSON alert (event fields or an Alert/outbox JSON), inline or a file; options override it",
            {"default": None},
        ),
        Argument(("--dag",), "DAG id (default adhoc_dag)", {"default": None}),
        Argument(("--task",), "task id (default adhoc_task)", {"default": None}),
        Argument(("--tag",), "a DAG tag (repeatable)", {"action": "append", "default": None}),
        Argument(("--owner",), "task owner", {"default": None}),
        Argument(
            ("--param",), "a DAG run param KEY=VALUE (repeatable)", {"action": "append", "default": None}
        ),
        Argument(("--try",), "the try that failed (default: the final one)", _int_arg("try_number")),
        Argument(("--max-tries",), "Airflow's max_tries (default 0)", _int_arg("max_tries")),
        Argument(("--map-index",), "mapped instance", _int_arg("map_index")),
        Argument(("--downstream",), "tasks waiting downstream", _int_arg("downstream")),
        Argument(
            ("--kind",),
            "alert kind (default task_failure)",
            {"default": None, "choices": ("task_failure", "task_retry", "dag_failure", "custom")},
        ),
        Argument(("--policy",), "policy YAML/JSON file (default: the configured policy)", {"default": None}),
        Argument(
            ("--state",),
            "configured: read the configured state store (read-only); memory: a fresh, empty state",
            {"choices": ("configured", "memory"), "default": "configured"},
        ),
        Argument(("--at",), "decide for this ISO 8601 time instead of now", {"default": None}),
        Argument(
            ("--slack",),
            "how Slack channels post: api (edits in place, default) or webhook (new messages only)",
            {"choices": ("api", "webhook"), "default": "api"},
        ),
        OUTPUT,
    ),
    run=_run,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_alerting.cli.explain``."""
    return run_standalone(EXPLAIN, "python -m airflow_alerting.cli.explain", argv)


if __name__ == "__main__":
    sys.exit(main())
