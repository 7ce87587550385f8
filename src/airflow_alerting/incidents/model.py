"""The incident: failures that share a root cause, told to people once and resolved once.

Frozen dataclasses with JSON round trips, shared by the pure lifecycle rules
(:mod:`airflow_alerting.incidents.lifecycle`), the state stores and the renderers.
No Airflow imports.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from airflow_alerting.model import Severity, iso, parse_datetime

#: members (most recent first) an :class:`Incident` snapshot carries; the counts are always complete
MEMBER_SAMPLE = 50
#: DAG ids an :class:`Incident` snapshot names; ``dag_count`` counts them all
DAG_SAMPLE = 25


class IncidentState(str, enum.Enum):
    """Where an incident is in its life."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    @property
    def is_open(self) -> bool:
        """Still failing somewhere (acknowledged incidents are open too)."""
        return self is not IncidentState.RESOLVED


@dataclass(frozen=True)
class IncidentMember:
    """One affected task instance (or DAG) of an incident, with its failure count.

    :param dag_id: the DAG
    :param task_id: the task, ``None`` for a DAG-level failure
    :param map_index: the mapped instance, ``-1`` when not mapped
    :param failures: final failures recorded for this member
    :param first_at: first failure
    :param last_at: latest failure
    :param last_run_id: run of the latest failure
    :param recovered_at: when it succeeded after its latest failure; ``None`` while failing
    """

    dag_id: str
    task_id: str | None
    map_index: int = -1
    failures: int = 1
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_run_id: str | None = None
    recovered_at: datetime | None = None

    @property
    def key(self) -> str:
        """``dag.task[map_index]`` (like :attr:`Alert.source`), or the dag id for DAG-level members."""
        return member_key(self.dag_id, self.task_id, self.map_index)

    @property
    def task(self) -> str:
        """``dag.task`` without the map index (or the dag id)."""
        return f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id

    @property
    def failing(self) -> bool:
        return self.recovered_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "failures": self.failures,
            "first_at": iso(self.first_at),
            "last_at": iso(self.last_at),
            "last_run_id": self.last_run_id,
            "recovered_at": iso(self.recovered_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IncidentMember:
        return cls(
            dag_id=str(data["dag_id"]),
            task_id=data.get("task_id"),
            map_index=int(data.get("map_index", -1)),
            failures=int(data.get("failures", 1)),
            first_at=parse_datetime(data.get("first_at")),
            last_at=parse_datetime(data.get("last_at")),
            last_run_id=data.get("last_run_id"),
            recovered_at=parse_datetime(data.get("recovered_at")),
        )


def member_key(dag_id: str, task_id: str | None, map_index: int = -1) -> str:
    """The identity of a member: ``dag.task``, ``dag.task[3]`` or ``dag``."""
    if task_id is None:
        return dag_id
    return f"{dag_id}.{task_id}" + (f"[{map_index}]" if map_index >= 0 else "")


@dataclass(frozen=True)
class Announcement:
    """Where an incident was announced on one channel, so later messages edit or thread on it.

    :param channel: the channel name
    :param ref: the message's identity there: Slack ``ts``, e-mail ``Message-ID``, PagerDuty ``dedup_key``
    :param conversation: where ``ref`` lives: the Slack channel ID (``chat.update`` needs it), or for
        PagerDuty a short digest of the routing key used (never the key itself)
    :param severity: the severity last told on this channel
    :param at: when it was announced
    """

    channel: str
    ref: str | None
    conversation: str | None = None
    severity: Severity = Severity.MEDIUM
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ref": self.ref,
            "conversation": self.conversation,
            "severity": self.severity.label,
            "at": iso(self.at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Announcement:
        return cls(
            channel=str(data["channel"]),
            ref=data.get("ref"),
            conversation=data.get("conversation"),
            severity=Severity.parse(data.get("severity") or "medium"),
            at=parse_datetime(data.get("at")),
        )


_NO_ANNOUNCEMENTS: Mapping[str, Announcement] = MappingProxyType({})


@dataclass(frozen=True)
class Incident:
    """Failures that share a root cause (a correlation key) within the correlation window.

    A snapshot: the stores return a fresh one after every change.  ``members`` holds at most
    :data:`MEMBER_SAMPLE` members, most recent first; every count is complete.

    :param id: unique id (a new incident for the same key gets a new id)
    :param key: the correlation key failures join on
    :param title: the root cause in words (exception type and normalised message)
    :param severity: the highest severity of its members, raised by blast radius and escalation
    :param opened_at: first failure
    :param last_seen_at: latest failure
    :param state: open, acknowledged or resolved
    :param severity_reasons: why the incident is above its first member's severity
    :param failures: failures joined (silenced ones included)
    :param silenced: failures that matched a silence
    :param members: a sample of the affected tasks, most recent first
    :param member_count: distinct members (dag/task/map index)
    :param failing_count: members that have not recovered
    :param task_count: distinct ``dag.task`` affected
    :param dag_ids: a sample of the affected DAGs, sorted
    :param dag_count: distinct DAGs affected
    :param acknowledged_at: when someone acknowledged it
    :param acknowledged_by: who
    :param resolved_at: when its last failing member recovered (or it was resolved by hand)
    :param resolved_by: ``"recovery"`` or who resolved it by hand
    :param announcements: per channel, where it was announced
    :param digested_at: when the maintenance digest last reported it
    """

    id: str
    key: str
    title: str
    severity: Severity
    opened_at: datetime
    last_seen_at: datetime
    state: IncidentState = IncidentState.OPEN
    severity_reasons: tuple[str, ...] = ()
    failures: int = 0
    silenced: int = 0
    members: tuple[IncidentMember, ...] = ()
    member_count: int = 0
    failing_count: int = 0
    task_count: int = 0
    dag_ids: tuple[str, ...] = ()
    dag_count: int = 0
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    announcements: Mapping[str, Announcement] = field(default_factory=lambda: _NO_ANNOUNCEMENTS)
    digested_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    @property
    def time_to_acknowledge(self) -> timedelta | None:
        """MTTA's sample: opened to acknowledged."""
        return self.acknowledged_at - self.opened_at if self.acknowledged_at else None

    @property
    def time_to_resolve(self) -> timedelta | None:
        """MTTR's sample: opened to resolved."""
        return self.resolved_at - self.opened_at if self.resolved_at else None

    @property
    def dedup_key(self) -> str:
        """The key external systems know the incident by (PagerDuty ``dedup_key``, <= 255 chars)."""
        return f"airflow-alerting/{self.id}"

    @property
    def fully_silenced(self) -> bool:
        return self.failures > 0 and self.silenced >= self.failures

    def describe(self) -> str:
        """``"500 failures in 480 tasks across 20 DAGs"``."""
        failures = f"{self.failures} failure{'s' if self.failures != 1 else ''}"
        tasks = f"{self.task_count} task{'s' if self.task_count != 1 else ''}"
        dags = f"{self.dag_count} DAG{'s' if self.dag_count != 1 else ''}"
        return f"{failures} in {tasks} across {dags}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "title": self.title,
            "severity": self.severity.label,
            "opened_at": iso(self.opened_at),
            "last_seen_at": iso(self.last_seen_at),
            "state": self.state.value,
            "severity_reasons": list(self.severity_reasons),
            "failures": self.failures,
            "silenced": self.silenced,
            "members": [m.to_json() for m in self.members],
            "member_count": self.member_count,
            "failing_count": self.failing_count,
            "task_count": self.task_count,
            "dag_ids": list(self.dag_ids),
            "dag_count": self.dag_count,
            "acknowledged_at": iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "announcements": {k: a.to_json() for k, a in self.announcements.items()},
            "digested_at": iso(self.digested_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        opened = parse_datetime(data.get("opened_at"))
        if opened is None:
            raise ValueError("incident without opened_at")
        return cls(
            id=str(data["id"]),
            key=str(data["key"]),
            title=str(data.get("title", "")),
            severity=Severity.parse(data.get("severity") or "medium"),
            opened_at=opened,
            last_seen_at=parse_datetime(data.get("last_seen_at")) or opened,
            state=IncidentState(data.get("state", "open")),
            severity_reasons=tuple(str(r) for r in data.get("severity_reasons", ())),
            failures=int(data.get("failures", 0)),
            silenced=int(data.get("silenced", 0)),
            members=tuple(IncidentMember.from_json(m) for m in data.get("members", ())),
            member_count=int(data.get("member_count", 0)),
            failing_count=int(data.get("failing_count", 0)),
            task_count=int(data.get("task_count", 0)),
            dag_ids=tuple(str(d) for d in data.get("dag_ids", ())),
            dag_count=int(data.get("dag_count", 0)),
            acknowledged_at=parse_datetime(data.get("acknowledged_at")),
            acknowledged_by=data.get("acknowledged_by"),
            resolved_at=parse_datetime(data.get("resolved_at")),
            resolved_by=data.get("resolved_by"),
            announcements=MappingProxyType(
                {str(k): Announcement.from_json(v) for k, v in (data.get("announcements") or {}).items()}
            ),
            digested_at=parse_datetime(data.get("digested_at")),
        )


def new_incident_id(key: str, opened_at: datetime, previous_id: str | None = None) -> str:
    """The id of a new incident of ``key``: the same for every worker that opens it at the same time.

    Built from the key, the id of the key's previous incident and the day it opens, not the exact
    time: workers racing to open one incident in a store without compare-and-set (Variables) then
    agree on its id, so its per-channel claims decide who announces it.  A later incident of the
    same key follows another one, so it gets a new id.

    :param previous_id: the key's current (resolved, or expired) incident, if any
    """
    seed = f"{key}\x1f{previous_id or ''}\x1f{opened_at.date().isoformat()}"
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass(frozen=True)
class Occurrence:
    """One failure, correlated, about to join an incident.

    :param key: the correlation key
    :param title: the root cause in words (the incident's title when it opens one)
    :param dag_id: its DAG
    :param task_id: its task (``None`` for DAG-level failures)
    :param map_index: its mapped instance
    :param run_id: its run
    :param severity: its severity after classification and per-task escalation
    :param at: when it happened (the manager's clock)
    :param reasons: why its severity is raised, if it is (escalation), for the incident's reasons
    :param silenced: a silence matched it: it joins and is counted but tells nobody
    """

    key: str
    title: str
    dag_id: str
    task_id: str | None
    map_index: int
    run_id: str | None
    severity: Severity
    at: datetime
    reasons: tuple[str, ...] = ()
    silenced: bool = False

    @property
    def member_key(self) -> str:
        return member_key(self.dag_id, self.task_id, self.map_index)


@dataclass(frozen=True)
class IncidentJoin:
    """What :meth:`StateStore.join_incident` did.

    :param incident: the incident after the join
    :param opened: this occurrence opened it
    :param new_member: this occurrence's task instance was not a (failing) member before
    :param previous_severity: the incident's severity before the join (``None`` when opened)
    """

    incident: Incident
    opened: bool
    new_member: bool
    previous_severity: Severity | None = None

    @property
    def raised(self) -> bool:
        """The join raised the incident's severity."""
        return self.previous_severity is not None and self.incident.severity > self.previous_severity
