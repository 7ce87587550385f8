"""The state store interface shared by every worker, the DAG processor and the triggerer.

The interface is shaped around *claims* rather than plain get/set so that a store with
an atomic primitive (the SQL store's conditional upsert) can decide who sends exactly,
while document stores (memory, Airflow Variables) implement the same semantics with
read-modify-write on one JSON document per fingerprint.
"""

from __future__ import annotations

import abc
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import throttle
from airflow_alerting.model import Decision, HistoryEntry, Severity

#: occurrence ids remembered per fingerprint to make duplicate callbacks idempotent
MAX_SEEN_OCCURRENCES = 64
#: occurrence timestamps remembered per fingerprint for the escalation rule
MAX_OCCURRENCE_TIMES = 200
#: decisions kept in the alert history by the document stores
DEFAULT_HISTORY_LIMIT = 500


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


class DocumentStore(StateStore):
    """A store built on "read a JSON document / write a JSON document" primitives.

    Subclasses implement :meth:`_read` and :meth:`_write`; this class implements the
    claim semantics with :mod:`airflow_alerting.throttle`.  Writes are last-writer-wins,
    so two workers racing on the same fingerprint can both decide to send; the Variables
    store narrows that race with a claim token it re-reads (see its docstring).
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.history_limit = history_limit

    @abc.abstractmethod
    def _read(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def _write(self, key: str, document: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    # keys are short and hashed so they fit any backend's key length (Variables: 250 chars)
    @staticmethod
    def fingerprint_key(fingerprint: str) -> str:
        return f"alerting.fp.{fingerprint}"

    @staticmethod
    def incident_key(incident_key: str) -> str:
        return "alerting.incident." + hashlib.sha256(incident_key.encode()).hexdigest()[:24]

    HISTORY_KEY = "alerting.history"

    def _fingerprint_doc(self, fingerprint: str) -> dict[str, Any]:
        doc = self._read(self.fingerprint_key(fingerprint))
        if not isinstance(doc, dict):
            return {"fingerprint": fingerprint, "seen": [], "occurrences": [], "channels": {}}
        doc.setdefault("seen", [])
        doc.setdefault("occurrences", [])
        doc.setdefault("channels", {})
        return doc

    def record_occurrence(
        self,
        fingerprint: str,
        occurrence_id: str,
        *,
        now: datetime,
        window: timedelta,
        group: str | None = None,
    ) -> OccurrenceRecord:
        doc = self._fingerprint_doc(fingerprint)
        horizon = now - window
        recent = [o for o in (_parse_occurrence(v) for v in doc["occurrences"]) if o and o[0] > horizon]
        if occurrence_id in doc["seen"]:
            return OccurrenceRecord(duplicate=True, count_in_window=len({g for _, g in recent}))
        recent.append((now, group or occurrence_id))
        doc["occurrences"] = [[t.isoformat(), g] for t, g in recent[-MAX_OCCURRENCE_TIMES:]]
        doc["seen"] = [*doc["seen"], occurrence_id][-MAX_SEEN_OCCURRENCES:]
        self._write(self.fingerprint_key(fingerprint), doc)
        return OccurrenceRecord(duplicate=False, count_in_window=len({g for _, g in recent}))

    def channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        raw = self._fingerprint_doc(fingerprint)["channels"].get(channel)
        return throttle.ChannelState.from_json(raw) if isinstance(raw, dict) else None

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
        doc = self._fingerprint_doc(fingerprint)
        raw = doc["channels"].get(channel)
        before = dict(raw) if isinstance(raw, dict) else None
        state = throttle.ChannelState.from_json(raw) if isinstance(raw, dict) else None
        decision = throttle.decide(state, now=now, window=window, severity=severity, escalated=escalated)
        token = uuid.uuid4().hex
        new_state = throttle.apply(
            state, decision, now=now, severity=severity, source=source, token=token, lease=lease
        )
        doc["channels"][channel] = new_state.to_json()
        self._write(self.fingerprint_key(fingerprint), doc)
        if not decision.send:
            # the running count lets the manager spot the first occurrence held back after a send
            decision = replace(decision, suppressed=new_state.suppressed)
        claim = Claim(decision, token if decision.send else None)
        return self._after_claim_written(fingerprint, channel, claim, before)

    def _after_claim_written(
        self, fingerprint: str, channel: str, claim: Claim, before: dict[str, Any] | None
    ) -> Claim:
        """Hook for stores that verify a written claim (or counted suppression) took effect.

        :param claim: the decision; ``claim.token`` is set when it is to send
        :param before: the channel's stored state as read before the claim was written
        """
        return claim

    def _update_channel(self, fingerprint: str, channel: str, change: Any) -> None:
        doc = self._fingerprint_doc(fingerprint)
        raw = doc["channels"].get(channel)
        if not isinstance(raw, dict):
            return
        doc["channels"][channel] = change(throttle.ChannelState.from_json(raw)).to_json()
        self._write(self.fingerprint_key(fingerprint), doc)

    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        self._update_channel(fingerprint, channel, lambda s: throttle.take_suppressed(s, count))

    def reset_window(self, fingerprint: str, channel: str) -> None:
        doc = self._fingerprint_doc(fingerprint)
        if doc["channels"].pop(channel, None) is not None:
            self._write(self.fingerprint_key(fingerprint), doc)

    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        self._update_channel(fingerprint, channel, lambda s: throttle.confirm(s, token))

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        self._update_channel(fingerprint, channel, lambda s: throttle.release(s, token))

    def open_incident(self, incident: OpenIncident) -> None:
        key = self.incident_key(incident.incident_key)
        doc = self._read(key) or {"incidents": []}
        kept = [
            i
            for i in doc.get("incidents", [])
            if not (i.get("fingerprint") == incident.fingerprint and i.get("channel") == incident.channel)
        ]
        doc["incidents"] = [*kept, incident.to_json()]
        self._write(key, doc)

    def pop_incidents(self, incident_key: str) -> list[OpenIncident]:
        key = self.incident_key(incident_key)
        doc = self._read(key)
        if not doc or not doc.get("incidents"):
            return []
        self._delete(key)
        return [OpenIncident.from_json(i) for i in doc["incidents"]]

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        doc = self._read(self.HISTORY_KEY) or {"entries": []}
        kept = [*doc.get("entries", []), *(e.to_json() for e in entries)]
        doc["entries"] = kept[-self.history_limit :]
        self._write(self.HISTORY_KEY, doc)

    def history(self, limit: int = 100) -> list[HistoryEntry]:
        doc = self._read(self.HISTORY_KEY) or {"entries": []}
        entries = [HistoryEntry.from_json(e) for e in doc.get("entries", [])]
        return list(reversed(entries))[:limit]

    OUTBOX_KEY = "alerting.outbox"
    #: items kept by the document stores' outbox; beyond it the oldest are dropped (and counted)
    OUTBOX_LIMIT = 1000

    def _outbox(self) -> list[dict[str, Any]]:
        doc = self._read(self.OUTBOX_KEY) or {}
        items = doc.get("items", [])
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _save_outbox(self, items: list[dict[str, Any]]) -> None:
        if len(items) > self.OUTBOX_LIMIT:
            from airflow_alerting import metrics

            metrics.incr("outbox", "dropped", count=len(items) - self.OUTBOX_LIMIT)
            items = items[-self.OUTBOX_LIMIT :]
        self._write(self.OUTBOX_KEY, {"items": items})

    def outbox_add(self, item: OutboxItem) -> None:
        self._save_outbox([*self._outbox(), item.to_json()])

    def outbox_claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        raw = self._outbox()
        claimed: list[OutboxItem] = []
        for index, data in enumerate(raw):
            if len(claimed) >= limit:
                break
            item = OutboxItem.from_json(data)
            if item.next_attempt_at <= now:
                item = replace(item, next_attempt_at=now + lease)
                raw[index] = item.to_json()
                claimed.append(item)
        if claimed:
            self._save_outbox(raw)
        return claimed

    def outbox_update(self, item: OutboxItem) -> None:
        self._save_outbox([item.to_json() if i.get("id") == item.id else i for i in self._outbox()])

    def outbox_drop(self, incident_key: str) -> int:
        raw = self._outbox()
        kept = [i for i in raw if i.get("incident_key") != incident_key]
        if len(kept) != len(raw):
            self._save_outbox(kept)
        return len(raw) - len(kept)

    def outbox_remove(self, item_id: str) -> None:
        raw = self._outbox()
        kept = [i for i in raw if i.get("id") != item_id]
        if len(kept) != len(raw):
            self._save_outbox(kept)


def _parse_occurrence(value: Any) -> tuple[datetime, str] | None:
    """``[iso time, group]``; a bare iso time (early development builds) is its own group."""
    try:
        if isinstance(value, list) and len(value) == 2:
            return datetime.fromisoformat(str(value[0])), str(value[1])
        if isinstance(value, str):
            return datetime.fromisoformat(value), value
    except ValueError:
        return None
    return None
