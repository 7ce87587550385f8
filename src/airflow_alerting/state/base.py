"""The state store interface shared by every worker, the DAG processor and the triggerer.

The interface is shaped around *claims* rather than plain get/set so that a store with
an atomic primitive (the SQL store's conditional upsert) can decide who sends exactly,
while document stores (memory, Airflow Variables) implement the same semantics with
read-modify-write of JSON documents (one per fingerprint, plus per-claimer counters).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting import throttle
from airflow_alerting.incidents.model import (
    Announcement,
    Incident,
    IncidentJoin,
    IncidentState,
    Occurrence,
)
from airflow_alerting.model import (
    Decision,
    HistoryEntry,
    Severity,
)

if TYPE_CHECKING:
    from airflow_alerting.incidents.lifecycle import IncidentRules
    from airflow_alerting.incidents.silences import Silence

#: occurrence ids remembered per fingerprint to make duplicate callbacks idempotent
MAX_SEEN_OCCURRENCES = 64
#: occurrence timestamps remembered per fingerprint for the escalation rule
MAX_OCCURRENCE_TIMES = 200
#: decisions kept in the alert history by the document stores
DEFAULT_HISTORY_LIMIT = 500
#: history shards of the document stores: a writer appends to the one its id hashes to
HISTORY_SHARDS = 8
#: entries in a history shard's head document; beyond it they move to one of the shard's chunks
HISTORY_CHUNK = 50
#: index documents of the document stores' outbox (one document per item)
OUTBOX_SHARDS = 4
#: index documents of the fingerprint and open-incident documents, which prune_state() walks
KEY_SHARDS = 8
#: rounds of write, pause, re-read before a change that keeps being overwritten is given up
#: (each pause twice as long as the one before, so that writers who collided spread out)
VERIFY_ROUNDS = 4
#: documents the per-claimer counters of one (fingerprint, channel) are spread over, by claimer:
#: a storm's claimers rewrite a quarter as often the document they share
COUNTER_SHARDS = 4
#: outbox items older than this are deleted by prune_state(): twice the manager's 24 h give-up
#: age, so only items no sweep will look at again (their index entry was lost) are affected
OUTBOX_ITEM_MAX_AGE: timedelta = timedelta(hours=48)
#: a claimer's counter of an epoch nobody counts any more is dropped once it is this old
COUNTER_GRACE: timedelta = timedelta(hours=1)


class StateUnavailableError(Exception):
    """The store could not be read or written; the manager fails open when it sees this."""


@dataclass(frozen=True)
class OccurrenceRecord:
    """Result of recording one occurrence of a fingerprint."""

    #: the same callback (dag, task, run, map index, try, kind) was recorded before
    duplicate: bool
    #: occurrences of this fingerprint within the escalation window, this one included
    count_in_window: int


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`StateStore.claim`: the decision and, when sending, the lease token."""

    decision: Decision
    token: str | None = None


@dataclass(frozen=True)
class OpenIncident:
    """An alert that was delivered and is waiting for the task's recovery."""

    incident_key: str
    fingerprint: str
    channel: str
    severity: Severity
    opened_at: datetime
    external_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_key": self.incident_key,
            "fingerprint": self.fingerprint,
            "channel": self.channel,
            "severity": self.severity.label,
            "opened_at": self.opened_at.isoformat(),
            "external_id": self.external_id,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenIncident:
        return cls(
            incident_key=str(data["incident_key"]),
            fingerprint=str(data["fingerprint"]),
            channel=str(data["channel"]),
            severity=Severity.parse(data["severity"]),
            opened_at=datetime.fromisoformat(str(data["opened_at"])),
            external_id=data.get("external_id"),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class OutboxItem:
    """A notification that could not be delivered at alert time, waiting to be redelivered."""

    id: str
    channel: str
    #: the notification, as :func:`airflow_alerting.model.notification_to_json` wrote it
    notification: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    last_error: str = ""
    #: the alert's dag or dag.task, so a recovery can drop what it supersedes
    incident_key: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_key": self.incident_key,
            "channel": self.channel,
            "notification": self.notification,
            "created_at": self.created_at.isoformat(),
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboxItem:
        return cls(
            id=str(data["id"]),
            channel=str(data["channel"]),
            notification=dict(data["notification"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            next_attempt_at=datetime.fromisoformat(str(data["next_attempt_at"])),
            attempts=int(data.get("attempts", 0)),
            last_error=str(data.get("last_error", "")),
            incident_key=str(data.get("incident_key", "")),
        )


class StateStore(abc.ABC):
    """Where throttle, dedup and incident state lives.

    Every method may raise :class:`StateUnavailableError`; callers fail open.
    """

    #: a short name for logs and metrics
    name: str = "state"

    def outbox_depth(self) -> int | None:
        """How many notifications wait in the outbox (due or not), or ``None`` when this store
        cannot count them; read by the maintenance DAG for the ``alerting.outbox.depth`` gauge."""
        return None

    @abc.abstractmethod
    def record_occurrence(
        self,
        fingerprint: str,
        occurrence_id: str,
        *,
        now: datetime,
        window: timedelta,
        group: str | None = None,
    ) -> OccurrenceRecord:
        """Record one occurrence of ``fingerprint``; report duplicates and the recurrences within ``window``.

        :param occurrence_id: identity of this exact callback; a repeat is a duplicate
        :param group: occurrences sharing a group are one recurrence (the mapped instances of one
            run failing together); defaults to ``occurrence_id``
        :return: ``count_in_window`` counts distinct groups, this one included
        """

    @abc.abstractmethod
    def claim(
        self,
        fingerprint: str,
        channel: str,
        *,
        now: datetime,
        window: timedelta,
        severity: Severity,
        escalated: bool,
        source: str,
        lease: timedelta,
    ) -> Claim:
        """Decide whether this worker sends ``fingerprint`` to ``channel`` now, and record the decision.

        When the decision is to send, the window is held under a lease until :meth:`confirm`
        or :meth:`release`; when it is not, the suppressed occurrence is counted so the next
        notification can report it, and the returned decision carries the running suppressed
        summary (this occurrence included), which the manager uses to spot the first occurrence
        held back after a send.
        """

    @abc.abstractmethod
    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        """The delivery behind ``token`` succeeded: keep the window."""

    @abc.abstractmethod
    def release(self, fingerprint: str, channel: str, token: str) -> None:
        """The delivery behind ``token`` failed: give the window and the suppressed counts back."""

    @abc.abstractmethod
    def reset_window(self, fingerprint: str, channel: str) -> None:
        """Forget the throttle state of (fingerprint, channel): the problem was resolved, so its
        next occurrence is a new incident and must be sent."""

    @abc.abstractmethod
    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        """Take ``count`` reported occurrences off the suppressed count (a summary reported them)."""

    @abc.abstractmethod
    def channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        """Read-only view used by :meth:`AlertManager.should_throttle`."""

    @abc.abstractmethod
    def open_incident(self, incident: OpenIncident) -> None:
        """Remember a delivered alert so a later success can resolve it."""

    @abc.abstractmethod
    def pop_incidents(self, incident_key: str) -> list[OpenIncident]:
        """Return and forget the open incidents of ``incident_key`` (a dag or a dag.task)."""

    @abc.abstractmethod
    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Record decisions; implementations keep a bounded history."""

    @abc.abstractmethod
    def history(self, limit: int = 100) -> list[HistoryEntry]:
        """Most recent decisions first."""

    @abc.abstractmethod
    def outbox_add(self, item: OutboxItem) -> None:
        """Keep an undelivered notification for redelivery."""

    @abc.abstractmethod
    def outbox_claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        """Return up to ``limit`` items due at ``now``, hidden from other claimers for ``lease``."""

    @abc.abstractmethod
    def outbox_update(self, item: OutboxItem) -> None:
        """Store a changed item (attempts, next attempt, last error)."""

    @abc.abstractmethod
    def outbox_remove(self, item_id: str) -> None:
        """Forget a delivered item."""

    @abc.abstractmethod
    def outbox_drop(self, incident_key: str) -> int:
        """Forget every item of ``incident_key`` (the task recovered); return how many."""

    def prune_state(self, *, now: datetime, retention: timedelta) -> int:
        """Forget throttle, claim and outbox state nobody will need again; return how many records.

        Called by the maintenance DAG.  Stores that bound their state by themselves keep this default.

        :param retention: state idle for longer than this (the longest window or escalation
            period, and more) is stale
        """
        return 0

    # --- incidents ------------------------------------------------------------------------
    #
    # Every method below applies the pure rules of :mod:`airflow_alerting.incidents.lifecycle`
    # atomically: exactly in the SQL store, read-modify-write (best effort) in document stores.

    @abc.abstractmethod
    def join_incident(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        """Add a failure to the open incident of ``occurrence.key``, or open a new one.

        A failure joins when it comes within ``rules.window`` of the incident's latest failure;
        the incident's severity becomes the highest of its members, raised by the blast-radius rule.
        """

    @abc.abstractmethod
    def incident(self, incident_id: str) -> Incident | None:
        """The incident with ``incident_id``, or ``None``."""

    @abc.abstractmethod
    def incidents(self, *, states: Sequence[IncidentState] = (), limit: int = 100) -> list[Incident]:
        """Incidents, most recently seen first; only those in ``states`` when given."""

    @abc.abstractmethod
    def record_announcement(self, incident_id: str, announcement: Announcement) -> None:
        """Remember where ``incident_id`` was announced on ``announcement.channel`` (replacing any)."""

    @abc.abstractmethod
    def recover_members(
        self, dag_id: str, task_id: str | None, map_index: int, *, now: datetime
    ) -> list[Incident]:
        """Mark the members a success recovers in every open incident (see ``lifecycle.recover``).

        :param task_id: ``None`` for a DAG success (every member of the DAG recovers)
        :return: the incidents *this call* resolved (each is returned by exactly one call)
        """

    @abc.abstractmethod
    def acknowledge_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        """Acknowledge an open incident; ``None`` when unknown, resolved or already acknowledged."""

    @abc.abstractmethod
    def resolve_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        """Resolve an open incident by hand; ``None`` when unknown or already resolved
        (each resolution is returned by exactly one call)."""

    @abc.abstractmethod
    def mark_digested(self, incident_ids: Sequence[str], *, now: datetime) -> None:
        """Record that the maintenance digest reported these incidents at ``now``."""

    @abc.abstractmethod
    def prune_incidents(self, *, now: datetime, rules: IncidentRules) -> int:
        """Forget stale incidents (``lifecycle.is_stale``) and their members; return how many."""

    # --- silences -------------------------------------------------------------------------

    @abc.abstractmethod
    def add_silence(self, silence: Silence) -> None:
        """Store a silence (replacing one with the same id)."""

    @abc.abstractmethod
    def silences(self) -> list[Silence]:
        """Every stored silence, expired ones included until pruned, by start time."""

    @abc.abstractmethod
    def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        """End a silence now; ``False`` when there is no such silence or it already ended."""


# The document stores live in their own package, built in layers; these names stay importable from
# here.  Imported last: the package imports the records and the protocol above.
from airflow_alerting.state.document.helpers import (  # noqa: E402
    _bounded_key as _bounded_key,
)
from airflow_alerting.state.document.helpers import (  # noqa: E402
    _Counted as _Counted,
)
from airflow_alerting.state.document.helpers import (  # noqa: E402
    _shard_of as _shard_of,
)
from airflow_alerting.state.document.outbox import (  # noqa: E402
    log_outbox_evictions as log_outbox_evictions,
)
from airflow_alerting.state.document.outbox import (  # noqa: E402
    outbox_rank as outbox_rank,
)
from airflow_alerting.state.document.outbox import (  # noqa: E402
    outbox_victims as outbox_victims,
)
from airflow_alerting.state.document.store import DocumentStore as DocumentStore  # noqa: E402
