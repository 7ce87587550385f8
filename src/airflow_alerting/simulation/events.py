"""Failure events for ``simulate`` and ``explain``: parsing JSON lines, and the alert history.

One event per line, a JSON object::

    {"time": "2026-01-05T12:00:03+00:00", "dag": "orders_etl", "task": "load",
     "try": 3, "max_tries": 2, "exception": "psycopg2.OperationalError",
     "message": "could not connect to server: Connection refused"}

Required: ``time`` (ISO 8601, or seconds since the epoch; a time without an offset is UTC) and
``dag``.  Optional: ``task``, ``try``/``max_tries`` (a final try by default), ``exception``,
``message``, ``run_id``, ``map_index``, ``exception_bases`` (the exception's classes, most
derived first), ``tags``, ``owner``, ``params``, ``downstream``, ``hostname`` and ``kind``
(``task_failure`` by default; ``task_success`` replays a recovery).  The field names of
:class:`~airflow_alerting.model.Alert` are accepted too (``dag_id``, ``task_id``,
``try_number``, ``exception_type``, ``exception_mro``, ``downstream_count``, ``occurred_at``),
so an alert serialised by the outbox reads as an event.  An unknown field is an error, so a typo
is not silently ignored.

Lines of the state store's alert history (``HistoryEntry.to_json()``: what
``StateStore.history()`` returns) are accepted as well, in the same file or as a JSON array.
A history entry carries no exception or message, so each recorded fingerprint replays as a cause
of its own, at its recorded severity; the per-channel entries of one alert are one event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

from airflow_alerting.model import Alert, AlertKind, Severity

if TYPE_CHECKING:
    from airflow_alerting.testing.storm import Storm

__all__ = [
    "EventError",
    "FailureEvent",
    "canonical_fields",
    "parse_event",
    "parse_lines",
    "parse_time",
    "read_events",
    "storm_events",
    "write_events",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: canonical field -> the names it may be given as (the first is the one written)
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "time": ("time", "occurred_at"),
    "dag": ("dag", "dag_id"),
    "task": ("task", "task_id"),
    "try": ("try", "try_number"),
    "max_tries": ("max_tries",),
    "exception": ("exception", "exception_type"),
    "exception_bases": ("exception_bases", "exception_mro"),
    "message": ("message",),
    "run_id": ("run_id",),
    "map_index": ("map_index",),
    "tags": ("tags",),
    "owner": ("owner",),
    "params": ("params",),
    "downstream": ("downstream", "downstream_count"),
    "hostname": ("hostname",),
    "kind": ("kind",),
}
#: fields of a serialised Alert that say nothing a simulation uses; accepted and ignored
_IGNORED = frozenset({"logical_date", "log_url", "detected_by", "emails", "title"})
#: the keys that make a line a history entry rather than an event
_HISTORY_KEYS = frozenset({"fingerprint", "source", "channel", "reason", "at"})


class EventError(ValueError):
    """A line that is not a valid event; the message names the line and the field.

    :param line: 1-based line number (0 when the input has no lines, e.g. ``--alert`` text)
    :param field: the offending field, or ``""`` when the line as a whole is wrong
    :param problem: what is wrong, in words
    """

    def __init__(self, line: int, field: str, problem: str) -> None:
        where = f"line {line}" if line else "event"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.line = line
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class FailureEvent:
    """One failure (or recovery) to replay.

    :param time: when it happened (timezone-aware)
    :param dag_id: its DAG
    :param task_id: its task; ``None`` for a DAG-level event
    :param try_number: the try that failed
    :param max_tries: Airflow's ``max_tries``; the failure is final when ``try_number > max_tries``
    :param exception_type: the exception's qualified class name
    :param message: the exception message (untrusted text)
    :param kind: which Airflow event it is
    :param run_id: its DAG run
    :param map_index: its mapped instance, ``-1`` when not mapped
    :param exception_mro: the exception's classes, most derived first
    :param tags: the DAG's tags
    :param owner: the task's owner
    :param params: the DAG run's params (``business_impact`` ...)
    :param downstream_count: tasks waiting downstream of it
    :param hostname: the worker it ran on
    :param severity: a severity recorded in the history, replayed as given instead of classified
    :param line: where it was read (1-based), 0 when built in code
    """

    time: datetime
    dag_id: str
    task_id: str | None = None
    try_number: int = 1
    max_tries: int = 0
    exception_type: str | None = None
    message: str = ""
    kind: AlertKind = AlertKind.TASK_FAILURE
    run_id: str | None = None
    map_index: int = -1
    exception_mro: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    owner: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    downstream_count: int = 0
    hostname: str | None = None
    severity: Severity | None = None
    line: int = 0

    def alert(self) -> Alert:
        """The :class:`~airflow_alerting.model.Alert` a callback would have built for this event."""
        return Alert(
            dag_id=self.dag_id,
            kind=self.kind,
            task_id=self.task_id,
            run_id=self.run_id,
            map_index=self.map_index,
            try_number=self.try_number,
            max_tries=self.max_tries,
            exception_type=self.exception_type,
            exception_mro=self.exception_mro,
            message=self.message,
            owner=self.owner,
            tags=self.tags,
            params=self.params,
            downstream_count=self.downstream_count,
            occurred_at=self.time,
            hostname=self.hostname,
        )

    @property
    def is_failure(self) -> bool:
        """A failure (final or not), as opposed to a recovery."""
        return not self.kind.is_recovery

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON object of the line format (optional fields only when set)."""
        data: dict[str, Any] = {"time": self.time.isoformat(), "dag": self.dag_id}
        if self.task_id is not None:
            data["task"] = self.task_id
        data.update({"try": self.try_number, "max_tries": self.max_tries})
        if self.exception_type is not None:
            data["exception"] = self.exception_type
        data["message"] = self.message
        optional: dict[str, Any] = {
            "kind": self.kind.value if self.kind is not AlertKind.TASK_FAILURE else None,
            "run_id": self.run_id,
            "map_index": self.map_index if self.map_index >= 0 else None,
            "exception_bases": list(self.exception_mro) or None,
            "tags": sorted(self.tags) or None,
            "owner": self.owner,
            "params": dict(self.params) or None,
            "downstream": self.downstream_count or None,
            "hostname": self.hostname,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


# --- parsing -----------------------------------------------------------------------------------


def canonical_fields(data: Mapping[str, Any], line: int) -> dict[str, Any]:
    """``data`` with every field under its canonical name (``dag_id`` -> ``dag`` ...); nulls left out.

    :param data: one event object
    :param line: its line number, for errors
    :raises EventError: on an unknown field, or one given under two names
    """
    by_name = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
    found: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in data.items():
        if key in _IGNORED:
            continue
        name = by_name.get(str(key))
        if name is None:
            known = ", ".join(sorted(by_name))
            raise EventError(line, str(key), f"unknown field (expected one of: {known})")
        if name in found:
            raise EventError(line, str(key), f"given twice (also as {given_as[name]!r})")
        if value is None:
            continue  # serialised alerts write absent values as null
        found[name] = value
        given_as[name] = str(key)
    return found


def parse_time(value: Any, line: int, name: str = "time") -> datetime:
    """An ISO 8601 time (UTC when it has no offset) or epoch seconds, as a timezone-aware datetime.

    :param value: the value
    :param line: its line number, for errors
    :param name: the field, for errors
    :raises EventError: naming the field
    """
    if isinstance(value, bool):
        raise EventError(line, name, f"must be an ISO 8601 time or epoch seconds, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise EventError(line, name, f"must be a finite number of seconds, got {value!r}")
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as err:
            raise EventError(line, name, f"out of range: {value!r}") from err
    if not isinstance(value, str) or not value.strip():
        raise EventError(line, name, f"must be an ISO 8601 time or epoch seconds, got {value!r}")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError as err:
        raise EventError(line, name, f"not an ISO 8601 time: {value!r}") from err
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _text(value: Any, line: int, name: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise EventError(line, name, "required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise EventError(line, name, f"must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, line: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(line, name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise EventError(line, name, f"must be >= {minimum}, got {value}")
    return value


def _strings(value: Any, line: int, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise EventError(line, name, f"must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_event(data: Any, *, line: int = 0, now: datetime | None = None) -> FailureEvent:
    """Build a :class:`FailureEvent` from one parsed JSON object.

    :param data: the object
    :param line: its line number, for errors
    :param now: the time to use when ``time`` is missing (``explain``); ``None`` makes it required
    :raises EventError: naming the line and the field
    """
    if not isinstance(data, Mapping):
        raise EventError(line, "", f"must be a JSON object, got {type(data).__name__}")
    fields = canonical_fields(data, line)
    if "time" in fields:
        moment = parse_time(fields["time"], line)
    elif now is not None:
        moment = now
    else:
        raise EventError(line, "time", "required")
    dag_id = _text(fields.get("dag"), line, "dag", required=True)
    assert dag_id is not None  # required=True
    kind_text = fields.get("kind", AlertKind.TASK_FAILURE.value if "task" in fields else "dag_failure")
    try:
        kind = AlertKind(kind_text)
    except ValueError as err:
        choices = ", ".join(k.value for k in AlertKind)
        raise EventError(line, "kind", f"unknown kind {kind_text!r} (expected one of: {choices})") from err
    max_tries = _int(fields.get("max_tries", 0), line, "max_tries", minimum=0)
    params = fields.get("params", {})
    if not isinstance(params, Mapping):
        raise EventError(line, "params", f"must be a JSON object, got {type(params).__name__}")
    message = fields.get("message", "")
    if not isinstance(message, str):
        raise EventError(line, "message", f"must be a string, got {type(message).__name__}")
    return FailureEvent(
        time=moment,
        dag_id=dag_id,
        task_id=_text(fields.get("task"), line, "task", required=kind is AlertKind.TASK_FAILURE),
        try_number=_int(fields.get("try", max_tries + 1), line, "try", minimum=1),
        max_tries=max_tries,
        exception_type=_text(fields.get("exception"), line, "exception"),
        message=message,
        kind=kind,
        run_id=_text(fields.get("run_id"), line, "run_id"),
        map_index=_int(fields.get("map_index", -1), line, "map_index", minimum=-1),
        exception_mro=_strings(fields.get("exception_bases", ()), line, "exception_bases"),
        tags=frozenset(_strings(fields.get("tags", ()), line, "tags")),
        owner=_text(fields.get("owner"), line, "owner"),
        params=MappingProxyType(dict(params)),
        downstream_count=_int(fields.get("downstream", 0), line, "downstream", minimum=0),
        hostname=_text(fields.get("hostname"), line, "hostname"),
        line=line,
    )


def _history_event(data: Mapping[str, Any], line: int) -> tuple[tuple[str, ...], FailureEvent]:
    """A history entry as ``(group key, event)``: the entries of one alert share the group key."""
    for name in ("at", "fingerprint", "source", "kind", "severity"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise EventError(line, name, "required in a history entry (a non-empty string)")
    at = parse_time(data["at"], line, "at")
    try:
        kind = AlertKind(data["kind"])
    except ValueError as err:
        raise EventError(line, "kind", f"unknown kind {data['kind']!r}") from err
    try:
        severity = Severity.parse(data["severity"])
    except ValueError as err:
        raise EventError(line, "severity", str(err)) from err
    source, fingerprint = str(data["source"]), str(data["fingerprint"])
    run_id = data.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise EventError(line, "run_id", f"must be a string, got {run_id!r}")
    dag_id, task_id, map_index = _split_source(source, kind)
    event = FailureEvent(
        time=at,
        dag_id=dag_id,
        task_id=task_id,
        map_index=map_index,
        kind=kind,
        run_id=run_id,
        # the history keeps no exception or message: the fingerprint stands for the cause
        exception_type=f"recorded fingerprint {fingerprint}",
        message="",
        severity=severity,
        line=line,
    )
    return (data["at"], source, run_id or "", kind.value, fingerprint), event


def _split_source(source: str, kind: AlertKind) -> tuple[str, str | None, int]:
    """``dag.task[3]`` -> ``("dag", "task", 3)``; task groups keep their dots in the task id."""
    if kind in (AlertKind.DAG_FAILURE, AlertKind.DAG_SUCCESS) or "." not in source:
        return source, None, -1
    dag_id, _, task = source.partition(".")
    map_index = -1
    if task.endswith("]") and "[" in task:
        head, _, index = task[:-1].rpartition("[")
        if index.isdigit():
            task, map_index = head, int(index)
    return dag_id, task, map_index


def _is_history(data: Any) -> bool:
    return isinstance(data, Mapping) and set(data) >= _HISTORY_KEYS


def parse_lines(lines: Iterable[str]) -> tuple[FailureEvent, ...]:
    """Parse JSON lines (events and/or history entries) into events sorted by time.

    Blank lines and lines starting with ``#`` are skipped.  A whole JSON array (a history export)
    is accepted too when the text starts with ``[``.

    :param lines: the text, line by line
    :raises EventError: naming the first bad line and its field
    """
    numbered: list[tuple[int, Any]] = []
    text_lines = list(lines)
    if "".join(text_lines).lstrip().startswith("["):
        try:
            items = json.loads("".join(text_lines))
        except json.JSONDecodeError as err:
            raise EventError(err.lineno, "", f"invalid JSON: {err.msg} (column {err.colno})") from err
        numbered = [(i + 1, item) for i, item in enumerate(items)]
    else:
        for number, raw in enumerate(text_lines, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                numbered.append((number, json.loads(stripped)))
            except json.JSONDecodeError as err:
                raise EventError(number, "", f"invalid JSON: {err.msg} (column {err.colno})") from err
    events: list[FailureEvent] = []
    seen_groups: set[tuple[str, ...]] = set()
    for number, item in numbered:
        if _is_history(item):
            group, event = _history_event(item, number)
            if group in seen_groups:
                continue  # another channel's entry for the same alert
            seen_groups.add(group)
            events.append(event)
        else:
            events.append(parse_event(item, line=number))
    # stable: events at the same time keep their order in the file
    events.sort(key=lambda e: e.time)
    return tuple(events)


def read_events(source: str | Path | IO[str]) -> tuple[FailureEvent, ...]:
    """Read an events file (see :func:`parse_lines`).

    :param source: a path, or an open text stream
    :raises EventError: on a bad line
    :raises OSError: when the file cannot be read
    """
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as stream:
            return parse_lines(stream)
    return parse_lines(source)


def write_events(events: Iterable[FailureEvent], target: str | Path | IO[str]) -> int:
    """Write events as JSON lines; return how many.

    :param events: the events
    :param target: a path (overwritten) or an open text stream
    """
    if isinstance(target, str | Path):
        with open(target, "w", encoding="utf-8") as stream:
            return write_events(events, stream)
    count = 0
    for event in events:
        target.write(json.dumps(event.to_json(), ensure_ascii=False, sort_keys=False) + "\n")
        count += 1
    return count


def storm_events(storm: Storm, start: datetime | None = None) -> tuple[FailureEvent, ...]:
    """The events of a generated storm, as ``simulate`` reads them.

    Each carries what :func:`~airflow_alerting.testing.storm.storm_alert` puts in its alert, so
    simulating the file replays the same alerts as :func:`~airflow_alerting.testing.storm.replay`.

    :param storm: from :func:`~airflow_alerting.testing.storm.generate_storm`
    :param start: when the storm starts; the default :class:`~airflow_alerting.testing.FrozenClock` time
    """
    from airflow_alerting.testing import FrozenClock
    from airflow_alerting.testing.storm import storm_alert

    begin = start or FrozenClock().now
    found: list[FailureEvent] = []
    for item in storm.events:
        alert = storm_alert(item, begin)
        assert alert.occurred_at is not None  # storm_alert always sets it
        found.append(
            FailureEvent(
                time=alert.occurred_at,
                dag_id=alert.dag_id,
                task_id=alert.task_id,
                try_number=alert.try_number,
                max_tries=alert.max_tries,
                exception_type=alert.exception_type,
                message=alert.message,
                kind=alert.kind,
                run_id=alert.run_id,
                map_index=alert.map_index,
                exception_mro=alert.exception_mro,
                tags=alert.tags,
                owner=alert.owner,
                downstream_count=alert.downstream_count,
                hostname=alert.hostname,
            )
        )
    return tuple(found)
