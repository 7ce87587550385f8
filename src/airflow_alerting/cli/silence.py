"""``silence add|list|expire``: silences (maintenance windows) in the configured state store.

Silenced failures still join incidents and are counted, and the digest reports them; they only
tell nobody. Silences defined in the ``[alerting] silences_variable`` Variable are listed too,
but are changed by editing that Variable.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.output import (
    BadInput,
    OperationFailed,
    print_json,
    print_kv,
    print_table,
    wants_json,
)
from airflow_alerting.cli.runtime import duration, timestamp
from airflow_alerting.cli.spec import Argument, Command, Group

if TYPE_CHECKING:
    from airflow_alerting.incidents.silences import Silence
    from airflow_alerting.manager import AlertManager

__all__ = ["SILENCE"]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


def _matchers(silence: Silence) -> str:
    parts = [
        ("dag", silence.dag_ids),
        ("task", silence.task_ids),
        ("tag", silence.tags),
        ("severity", tuple(s.label for s in silence.severities)),
        ("incident", silence.incident_keys),
        ("fingerprint", silence.fingerprints),
    ]
    return " ".join(f"{name}={','.join(values)}" for name, values in parts if values)


def _state(silence: Silence, now: datetime) -> str:
    if silence.ends_at <= now:
        return "expired"
    return "active" if silence.active(now) else "scheduled"


def _silence_json(silence: Silence, source: str, now: datetime) -> dict[str, Any]:
    return {**silence.to_json(), "source": source, "state": _state(silence, now)}


def _add(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager
    from airflow_alerting.incidents.silences import SilenceError
    from airflow_alerting.state.base import StateUnavailableError

    if (args.duration is None) == (args.until is None):
        raise BadInput("--duration/--until", "give exactly one of --duration (e.g. 2h) or --until (a time)")
    if not (args.dag or args.task or args.tag or args.severity or args.incident_key or args.fingerprint):
        raise BadInput(
            "--dag/--task/--tag/--severity/--incident-key/--fingerprint",
            "give at least one matcher; --dag '*' silences every DAG (a maintenance window)",
        )
    manager = configured_manager()
    try:
        silence = manager.add_silence(
            starts_at=args.start,
            ends_at=args.until,
            duration=args.duration,
            comment=args.comment,
            author=args.author or _user(),
            dag_ids=args.dag,
            task_ids=args.task,
            tags=args.tag,
            severities=args.severity,
            incident_keys=args.incident_key,
            fingerprints=args.fingerprint,
        )
    except SilenceError as err:
        # the model names its field (silence.ends_at); say which argument sets it
        text = str(err)
        argument = (
            "--until/--duration" if "ends_at" in text else "--start" if "starts_at" in text else "silence"
        )
        raise BadInput(argument, text) from err
    except StateUnavailableError as err:
        raise OperationFailed(f"could not store the silence in the state store: {err}") from err
    now = manager.clock()
    if wants_json(args):
        print_json(_silence_json(silence, "store", now))
        return 0
    print_kv(
        f"Silence {silence.id} added",
        [
            ("matches", _matchers(silence)),
            ("starts", silence.starts_at),
            ("ends", silence.ends_at),
            ("state", _state(silence, now)),
            ("author", silence.author),
            ("comment", silence.comment or "-"),
        ],
    )
    return 0


def _listed(manager: AlertManager, include_expired: bool) -> list[tuple[Silence, str]]:
    from airflow_alerting.state.base import StateUnavailableError

    try:
        stored = manager.store.silences()
    except StateUnavailableError as err:
        raise OperationFailed(f"could not read silences from the state store: {err}") from err
    # the Variable's silences, read the way alerts read them (cached, validated)
    from_variable = manager.silences_from_variable()
    now = manager.clock()
    listed = [(s, "store") for s in stored] + [(s, "variable") for s in from_variable]
    if not include_expired:
        listed = [(s, source) for s, source in listed if s.ends_at > now]
    return sorted(listed, key=lambda item: (item[0].starts_at, item[0].id))


def _list(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager

    manager = configured_manager()
    listed = _listed(manager, args.all)
    now = manager.clock()
    if wants_json(args):
        print_json({"silences": [_silence_json(s, source, now) for s, source in listed]})
        return 0
    print_table(
        "Silences" + (" (expired included)" if args.all else ""),
        ("id", "state", "matches", "starts", "ends", "author", "comment", "source"),
        (
            (s.id, _state(s, now), _matchers(s), s.starts_at, s.ends_at, s.author, s.comment, source)
            for s, source in listed
        ),
        empty="none",
    )
    return 0


def _expire(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager
    from airflow_alerting.state.base import StateUnavailableError

    manager = configured_manager()
    try:
        expired = manager.expire_silence(args.silence_id)
    except StateUnavailableError as err:
        raise OperationFailed(f"could not expire the silence: {err}") from err
    if not expired:
        listed = {s.id: (s, source) for s, source in _listed(manager, include_expired=True)}
        found = listed.get(args.silence_id)
        if found is None:
            raise BadInput("SILENCE_ID", f"no silence {args.silence_id!r}; see `silence list --all`")
        silence, source = found
        if source == "variable":
            raise OperationFailed(
                f"silence {silence.id} is defined in the Variable "
                f"{manager.settings.silences_variable!r}: remove or shorten it there"
            )
        raise OperationFailed(f"silence {silence.id} already ended at {silence.ends_at.isoformat()}")
    now = manager.clock()
    if wants_json(args):
        print_json({"id": args.silence_id, "expired": True, "at": now.isoformat()})
        return 0
    print_kv(f"Silence {args.silence_id} expired", [("at", now)])
    return 0


_MATCHERS = (
    Argument(("--dag",), "DAG id glob (repeatable)", {"action": "append", "default": [], "metavar": "GLOB"}),
    Argument(
        ("--task",), "task id glob (repeatable)", {"action": "append", "default": [], "metavar": "GLOB"}
    ),
    Argument(("--tag",), "DAG tag (repeatable)", {"action": "append", "default": [], "metavar": "TAG"}),
    Argument(
        ("--severity",),
        "severity (repeatable; default: all)",
        {"action": "append", "default": [], "choices": ("critical", "high", "medium", "low")},
    ),
    Argument(
        ("--incident-key",),
        "incident correlation key glob (repeatable)",
        {"action": "append", "default": [], "dest": "incident_key", "metavar": "GLOB"},
    ),
    Argument(
        ("--fingerprint",),
        "exact alert fingerprint (repeatable)",
        {"action": "append", "default": [], "metavar": "FINGERPRINT"},
    ),
)

SILENCE = Group(
    name="silence",
    help="Add, list and expire silences (maintenance windows)",
    commands=(
        Command(
            name="add",
            help="Silence matching failures for a while",
            description=(
                "Silence failures matching every given criterion (any value of a repeated one) from "
                "--start (default now) for --duration or until --until. Silenced failures still join "
                "incidents and are reported by the digest."
            ),
            arguments=(
                *_MATCHERS,
                Argument(("--duration",), "how long, e.g. 30m, 2h, 1d", {"type": duration, "default": None}),
                Argument(
                    ("--until",),
                    "end time, ISO 8601 (UTC when no offset is given)",
                    {"type": timestamp, "default": None},
                ),
                Argument(
                    ("--start",),
                    "start time, ISO 8601 (default: now)",
                    {"type": timestamp, "default": None},
                ),
                Argument(("--comment",), "why (shown in lists and the digest)", {"default": ""}),
                Argument(("--author",), "who (default: your login name)", {"default": ""}),
            ),
            run=_add,
        ),
        Command(
            name="list",
            help="List current and scheduled silences",
            arguments=(Argument(("--all",), "include expired silences", {"action": "store_true"}),),
            run=_list,
        ),
        Command(
            name="expire",
            help="End a silence now",
            arguments=(Argument(("silence_id",), "the silence's id", {"metavar": "SILENCE_ID"}),),
            run=_expire,
        ),
    ),
)
