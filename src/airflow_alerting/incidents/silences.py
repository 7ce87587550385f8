"""Silences and maintenance windows: failures that join incidents and are counted, but tell nobody.

A silence matches on DAG and task globs, tags, severity, incident (correlation) key or
fingerprint, between a start and an end.  Silences come from the state store (created from
Python with :meth:`AlertManager.add_silence`) and from an Airflow Variable
(``[alerting] silences_variable``: a JSON or YAML list), so operators can silence without a deploy.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_alerting.model import Alert, Severity, iso, parse_datetime


class SilenceError(ValueError):
    """A silence that does not validate; the message names the field."""


@dataclass(frozen=True)
class Silence:
    """Mute matching failures between ``starts_at`` and ``ends_at``.

    Every given criterion must match (AND); any value within one matches (OR).  A silence
    with no criterion at all is refused: muting everything is a maintenance window, and must
    say so with ``dag_ids=("*",)``.

    :param id: unique id
    :param starts_at: start (inclusive)
    :param ends_at: end (exclusive); a silence past its end stops matching
    :param comment: why (shown in the digest)
    :param author: who created it
    :param dag_ids: glob patterns for the dag id
    :param task_ids: glob patterns for the task id
    :param tags: DAG tags, any of which must be present (case-insensitive)
    :param severities: severities it applies to (all when empty)
    :param incident_keys: glob patterns for the correlation key
    :param fingerprints: exact alert fingerprints
    """

    id: str
    starts_at: datetime
    ends_at: datetime
    comment: str = ""
    author: str = ""
    dag_ids: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    severities: tuple[Severity, ...] = ()
    incident_keys: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise SilenceError("silence.starts_at/ends_at: must be timezone-aware")
        if self.ends_at <= self.starts_at:
            raise SilenceError("silence.ends_at: must be after starts_at")
        if not (
            self.dag_ids
            or self.task_ids
            or self.tags
            or self.severities
            or self.incident_keys
            or self.fingerprints
        ):
            raise SilenceError("silence: needs at least one matcher (dag_ids: ['*'] silences everything)")

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(
        self, alert: Alert, *, severity: Severity, incident_key: str, fingerprint: str, now: datetime
    ) -> bool:
        """``True`` when this silence is active at ``now`` and every criterion matches."""
        if not self.active(now):
            return False
        if self.dag_ids and not any(fnmatch.fnmatchcase(alert.dag_id, p) for p in self.dag_ids):
            return False
        if self.task_ids and not (
            alert.task_id is not None and any(fnmatch.fnmatchcase(alert.task_id, p) for p in self.task_ids)
        ):
            return False
        if self.tags and not {t.lower() for t in self.tags} & {t.lower() for t in alert.tags}:
            return False
        if self.severities and severity not in self.severities:
            return False
        if self.incident_keys and not any(fnmatch.fnmatchcase(incident_key, p) for p in self.incident_keys):
            return False
        return not (self.fingerprints and fingerprint not in self.fingerprints)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "comment": self.comment,
            "author": self.author,
            "dag_ids": list(self.dag_ids),
            "task_ids": list(self.task_ids),
            "tags": list(self.tags),
            "severities": [s.label for s in self.severities],
            "incident_keys": list(self.incident_keys),
            "fingerprints": list(self.fingerprints),
        }

    @classmethod
    def from_json(cls, data: Any, *, path: str = "silence") -> Silence:
        """Build a silence from plain data; raise :class:`SilenceError` naming the field."""
        if not isinstance(data, Mapping):
            raise SilenceError(f"{path}: must be a mapping")
        known = {
            "id",
            "starts_at",
            "ends_at",
            "comment",
            "author",
            "dag_ids",
            "task_ids",
            "tags",
            "severities",
            "incident_keys",
            "fingerprints",
        }
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise SilenceError(
                f"{path}.{unknown[0]}: unknown field (expected one of: {', '.join(sorted(known))})"
            )

        def moment(name: str) -> datetime:
            value = data.get(name)
            if isinstance(value, datetime):
                parsed: datetime | None = value
            else:
                try:
                    parsed = parse_datetime(value)
                except ValueError as err:
                    raise SilenceError(f"{path}.{name}: not an ISO 8601 time: {value!r}") from err
            if parsed is None:
                raise SilenceError(f"{path}.{name}: required (ISO 8601 with a UTC offset)")
            if parsed.tzinfo is None:
                raise SilenceError(f"{path}.{name}: needs a UTC offset, e.g. 2026-12-01T02:00:00+00:00")
            return parsed

        def strings(name: str) -> tuple[str, ...]:
            value = data.get(name, ())
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise SilenceError(f"{path}.{name}: must be a list of strings")
            return tuple(value)

        try:
            severities = tuple(Severity.parse(s) for s in strings("severities"))
        except ValueError as err:
            raise SilenceError(f"{path}.severities: {err}") from err
        try:
            return cls(
                id=str(data.get("id") or uuid.uuid4().hex[:12]),
                starts_at=moment("starts_at"),
                ends_at=moment("ends_at"),
                comment=str(data.get("comment", "")),
                author=str(data.get("author", "")),
                dag_ids=strings("dag_ids"),
                task_ids=strings("task_ids"),
                tags=strings("tags"),
                severities=severities,
                incident_keys=strings("incident_keys"),
                fingerprints=strings("fingerprints"),
            )
        except SilenceError as err:
            text = str(err)
            if text.startswith("silence") and not text.startswith(path):
                # __post_init__ speaks of "silence"; name the item it came from
                text = path + text[len("silence") :]
            raise SilenceError(text) from err


def parse_silences(text: str, *, source: str = "silences") -> list[Silence]:
    """Parse a JSON or YAML list of silences (the ``[alerting] silences_variable`` Variable).

    :raises SilenceError: naming the item and field that is wrong
    """
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SilenceError(f"{source}: neither JSON nor YAML: {err}") from err
    if data is None:
        return []
    if not isinstance(data, list):
        raise SilenceError(f"{source}: must be a list of silences")
    return [Silence.from_json(item, path=f"{source}[{i}]") for i, item in enumerate(data)]


def matching_silence(
    silences: Iterable[Silence],
    alert: Alert,
    *,
    severity: Severity,
    incident_key: str,
    fingerprint: str,
    now: datetime,
) -> Silence | None:
    """The first silence that matches, or ``None``."""
    return next(
        (
            s
            for s in silences
            if s.matches(
                alert, severity=severity, incident_key=incident_key, fingerprint=fingerprint, now=now
            )
        ),
        None,
    )


def active_silences(silences: Sequence[Silence], now: datetime) -> list[Silence]:
    """The silences that have not ended at ``now`` (started or scheduled)."""
    return [s for s in silences if s.ends_at > now]
