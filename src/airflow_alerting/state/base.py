"""The state store interface shared by every worker, the DAG processor and the triggerer.

The interface is shaped around *claims* rather than plain get/set so that a store with
an atomic primitive (the SQL store's conditional upsert) can decide who sends exactly,
while document stores (memory, Airflow Variables) implement the same semantics with
read-modify-write of JSON documents (one per fingerprint, plus per-claimer counters).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_alerting import metrics, throttle
from airflow_alerting.incidents.model import (
    Announcement,
    Incident,
    IncidentJoin,
    IncidentMember,
    IncidentState,
    Occurrence,
)
from airflow_alerting.model import (
    Decision,
    DecisionReason,
    HistoryEntry,
    Severity,
    SuppressionSummary,
    suppression_from_json,
    suppression_to_json,
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
OUTBOX_ITEM_MAX_AGE = timedelta(hours=48)
#: a claimer's counter of an epoch nobody counts any more is dropped once it is this old
COUNTER_GRACE = timedelta(hours=1)

log = logging.getLogger(__name__)


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


class DocumentStore(StateStore):
    """A store built on "read a JSON document / write a JSON document" primitives.

    Subclasses implement :meth:`_read` and :meth:`_write`; this class implements the
    claim semantics with :mod:`airflow_alerting.throttle`.  Writes are last-writer-wins,
    so two workers racing on the same fingerprint can both decide to send; the Variables
    store narrows that race with a claim token it re-reads (see its docstring).  What many
    workers write is kept apart (per-claimer counters, one document per outbox item, history
    shards) and each such change is re-read and rewritten until it sticks (``_merge_verified``).
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.history_limit = history_limit
        #: this store's name among the claimers sharing the documents (one store per process)
        self.writer = uuid.uuid4().hex[:16]
        # this writer's own entries are read-modify-written by it alone: serialise its threads
        self._own_lock = threading.RLock()
        # documents this store created and has yet to add to the index (see _remember_key)
        self._unindexed: set[str] = set()

    @abc.abstractmethod
    def _read(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def _write(self, key: str, document: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Make a read-modify-write atomic where the backend can (a process lock in memory)."""
        yield

    # keys are short and hashed so they fit any backend's key length (Variables: 250 chars)
    @staticmethod
    def fingerprint_key(fingerprint: str) -> str:
        return f"alerting.fp.{fingerprint}"

    @staticmethod
    def incident_key(incident_key: str) -> str:
        return (
            "alerting.incident."
            + hashlib.sha256(incident_key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        )

    HISTORY_KEY = "alerting.history"

    # --- verified writes ------------------------------------------------------------------
    #
    # A document that many workers rewrite loses updates: B reads, A writes, B writes what it
    # read plus its own change, and A's change is gone.  Without compare-and-set the writer of
    # a change is the only one who can notice, so every change that must not be lost is one a
    # writer can recognise (its own entry, with a fresh nonce), and the writer re-reads after a
    # pause and writes again until it sees it.  Stores whose read-modify-write is atomic (memory)
    # skip the re-reading.

    #: re-read what was written and write again until it sticks (off where writes are atomic)
    _verifies: bool = True
    #: how long a counter of an epoch this claimer does not see counted is kept, in case the epoch
    #: is newer than the fingerprint document it read (none where reads are never stale)
    _counter_grace: timedelta = COUNTER_GRACE

    def _pause(self, attempt: int = 0) -> None:
        """Wait before re-reading a write, long enough for a concurrent read-modify-write to land.

        :param attempt: how many times this change was overwritten already
        """

    def _check_writable(self, key: str) -> None:
        """Raise :class:`StateUnavailableError` if ``key`` is known to ignore writes (no I/O)."""

    def _shadow_error(self, key: str) -> StateUnavailableError:
        """The error for a document that ignored two consecutive writes."""
        metrics.incr("state_shadowed")
        return StateUnavailableError(f"document {key} ignores writes; alerting state cannot be stored there")

    def _merge_verified(
        self,
        key: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any]],
        landed: Callable[[dict[str, Any] | None], bool],
        *,
        current: dict[str, Any] | None = None,
        read: bool = True,
    ) -> dict[str, Any] | None:
        """Apply ``change`` to ``key`` and make sure it is not lost to a concurrent overwrite.

        :param change: the new document from the current one; called again on every retry, so it
            must put a fresh nonce in what ``landed`` recognises
        :param landed: whether a document read back holds the change
        :param current: the document as already read (with ``read=False``)
        :return: the document as last read back (or as written, where writes are atomic)
        :raises StateUnavailableError: the document ignored two consecutive writes: it is shadowed
        """
        before = self._read(key) if read else current
        written = change(before)
        self._write(key, written)
        if not self._verifies:
            return written
        previous = before
        seen: dict[str, Any] | None = written
        for attempt in range(VERIFY_ROUNDS):
            self._pause(attempt)
            seen = self._read(key)
            if landed(seen):
                return seen
            # Gone.  Once may be a concurrent read-modify-write that restored an older value; a
            # value that ignores two consecutive writes (each with a fresh nonce) is a shadow.
            if attempt > 0 and seen == previous:
                raise self._shadow_error(key)
            previous = seen
            self._write(key, change(seen))
        metrics.incr("state_contended")
        log.warning("alerting state document %s was overwritten %d times in a row", key, VERIFY_ROUNDS)
        return seen

    # --- the index of documents prune_state() walks ---------------------------------------
    #
    # Fingerprint and open-incident documents are found again through a sharded index (the Task
    # SDK cannot list Variables), added to once when a document is created, verified like any
    # change that must not be lost.

    @staticmethod
    def _key_index_key(shard: int) -> str:
        return f"alerting.keys.{shard}"

    def _remember_key(self, key: str) -> None:
        """Make ``key`` (a new document) discoverable by :meth:`prune_state`, once the alert is out.

        The index is written by :meth:`_index_new_keys` after the deliveries (from
        :meth:`confirm`, :meth:`release` and :meth:`append_history`, which ends every alert), so
        that its verification pause never delays a notification.
        """
        self._unindexed.add(key)

    def _index_new_keys(self) -> None:
        """Add the documents this store created to the index (verified: a lost entry is a leak)."""
        while self._unindexed:
            key = self._unindexed.pop()
            try:
                self._index_key(key)
            except StateUnavailableError:
                self._unindexed.add(key)  # the next alert of this process tries again
                raise

    def _index_key(self, key: str) -> None:
        index_key = self._key_index_key(_shard_of(key, KEY_SHARDS))
        current = self._read(index_key)
        if key in _mapping(current, "keys"):
            return  # another worker that created it at the same time indexed it
        nonce = uuid.uuid4().hex[:12]

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            return {"keys": {**_mapping(doc, "keys"), key: nonce}}

        def landed(doc: dict[str, Any] | None) -> bool:
            return key in _mapping(doc, "keys")

        self._merge_verified(index_key, change, landed, current=current, read=False)

    def _known_keys(self) -> list[str]:
        """Every indexed document key."""
        found: list[str] = []
        for shard in range(KEY_SHARDS):
            found.extend(_mapping(self._read(self._key_index_key(shard)), "keys"))
        return found

    def _forget_keys(self, keys: Sequence[str]) -> None:
        """Take deleted documents out of the index (a lost removal is retried by the next prune)."""
        by_shard: dict[int, set[str]] = {}
        for key in keys:
            by_shard.setdefault(_shard_of(key, KEY_SHARDS), set()).add(key)
        for shard, gone in by_shard.items():
            index_key = self._key_index_key(shard)
            entries = _mapping(self._read(index_key), "keys")
            if gone & entries.keys():
                self._write(index_key, {"keys": {k: v for k, v in entries.items() if k not in gone}})

    # --- occurrences and claims -----------------------------------------------------------

    def _fingerprint_doc(self, fingerprint: str) -> dict[str, Any]:
        return _fingerprint_document(fingerprint, self._read(self.fingerprint_key(fingerprint)))

    @staticmethod
    def suppressed_keys(fingerprint: str, channel: str) -> list[str]:
        """The documents holding the per-claimer counters of what (fingerprint, channel) held back."""
        return [_bounded_key(f"alerting.sup.{fingerprint}.{channel}.{n}") for n in range(COUNTER_SHARDS)]

    def suppressed_key(self, fingerprint: str, channel: str) -> str:
        """The one of :meth:`suppressed_keys` this claimer writes its counters to."""
        return self.suppressed_keys(fingerprint, channel)[_shard_of(self.writer, COUNTER_SHARDS)]

    def _read_counts(
        self, fingerprint: str, channel: str, *, known: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every claimer's counters of (fingerprint, channel) in one document.

        :param known: this claimer's shard as just read, so it is not read again
        """
        counters: dict[str, Any] = {}
        own = self.suppressed_key(fingerprint, channel)
        for key in self.suppressed_keys(fingerprint, channel):
            counters.update(_counters(known if key == own and known is not None else self._read(key)))
        return {"counters": counters}

    def _channel_keys(self, fingerprint: str, channel: str) -> list[str]:
        """The documents besides the fingerprint document that belong to (fingerprint, channel)."""
        return self.suppressed_keys(fingerprint, channel)

    def record_occurrence(
        self,
        fingerprint: str,
        occurrence_id: str,
        *,
        now: datetime,
        window: timedelta,
        group: str | None = None,
    ) -> OccurrenceRecord:
        key = self.fingerprint_key(fingerprint)
        stored = self._read(key)
        doc = _fingerprint_document(fingerprint, stored)
        horizon = now - window
        recent = [o for o in (_parse_occurrence(v) for v in doc["occurrences"]) if o and o[0] > horizon]
        if occurrence_id in doc["seen"]:
            return OccurrenceRecord(duplicate=True, count_in_window=len({g for _, g in recent}))
        recent.append((now, group or occurrence_id))
        doc["occurrences"] = [[t.isoformat(), g] for t, g in recent[-MAX_OCCURRENCE_TIMES:]]
        doc["seen"] = [*doc["seen"], occurrence_id][-MAX_SEEN_OCCURRENCES:]
        self._write(key, doc)
        if stored is None:
            self._remember_key(key)
        return OccurrenceRecord(duplicate=False, count_in_window=len({g for _, g in recent}))

    def channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        loaded = _load_channel(self._fingerprint_doc(fingerprint)["channels"].get(channel))
        if loaded is None:
            return None
        return _with_counts(*loaded, self._read_counts(fingerprint, channel))

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
        key = self.fingerprint_key(fingerprint)
        self._check_writable(key)
        self._check_writable(self.suppressed_key(fingerprint, channel))
        stored = self._read(key)
        doc = _fingerprint_document(fingerprint, stored)
        loaded = _load_channel(doc["channels"].get(channel))
        state: throttle.ChannelState | None = None
        counted = _Counted()
        if loaded is not None:
            state, counted = _settled(*loaded, now)
        # the counts decide nothing, they are only carried: read them when sending
        decision = throttle.decide(state, now=now, window=window, severity=severity, escalated=escalated)
        full = state
        if decision.send and state is not None:
            full = _with_counts(state, counted, self._read_counts(fingerprint, channel))
            decision = throttle.decide(full, now=now, window=window, severity=severity, escalated=escalated)
        if not decision.send:
            if loaded is not None and state is not loaded[0]:
                # an expired claim was rolled back (its sender died): store that, as the lease rule says
                doc["channels"][channel] = _dump_channel(state or throttle.ChannelState(), counted)
                self._write(key, doc)
            # Suppressions never rewrite the fingerprint document: from stale reads they would
            # undo sends.  Each claimer counts in a counter of its own instead.
            running = self._count_suppressed(fingerprint, channel, counted, now=now, source=source)
            own = state.suppressed if state is not None else SuppressionSummary()
            return Claim(replace(decision, suppressed=throttle.merge_suppressed(own, running)))
        token = uuid.uuid4().hex
        sent = throttle.apply(
            full, decision, now=now, severity=severity, source=source, token=token, lease=lease
        )
        # what was carried lives on in the counters of the previous epochs: the document keeps only
        # the part no counter holds (state written before per-claimer counters existed)
        previous = state.suppressed if state is not None else SuppressionSummary()
        written = _dump_channel(replace(sent, previous_suppressed=previous), counted.sent(token))
        doc["channels"][channel] = written
        self._write(key, doc)
        if stored is None:
            self._remember_key(key)
        winner = self._claim_winner(fingerprint, channel, token, written)
        if winner == token:
            return Claim(decision, token)
        metrics.incr("claim_lost")
        # the winner's claim carried the same epochs as ours: keep their counters for its rollback
        running = self._count_suppressed(
            fingerprint, channel, _Counted((winner,), previous_epochs=counted.epochs), now=now, source=source
        )
        return Claim(
            Decision(False, DecisionReason.IN_FLIGHT, running, detail="another worker claimed this alert")
        )

    def _claim_winner(self, fingerprint: str, channel: str, token: str, written: dict[str, Any]) -> str:
        """The token that won the claim just written: ``token``, unless the store lets claimers race.

        :param written: the channel state written with the claim
        """
        return token

    def _count_suppressed(
        self, fingerprint: str, channel: str, counted: _Counted, *, now: datetime, source: str
    ) -> SuppressionSummary:
        """Count one held-back occurrence in this claimer's counter; return the running summary.

        The running summary counts the epoch's occurrences up to this one, ordered by when each
        claimer first held one back, so that in a storm one claimer, not several, sees itself as
        the first (and schedules the follow-up) unless their writes stay invisible to each other.
        """
        entry_id = f"{self.writer}/{counted.epoch}"
        live = {*counted.epochs, *counted.previous_epochs}
        written: dict[str, Any] = {}

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            # counters of epochs nobody counts any more go, once old enough not to be a new epoch's
            counters = {
                k: v
                for k, v in _counters(doc).items()
                if v.get("e") in live or _counter_until(v) > now - self._counter_grace
            }
            if not written:
                # the counter is incremented once, from what it was before this occurrence; a
                # retry writes the same value again (a restored write of it may be read back)
                mine = counters.get(entry_id)
                summary = suppression_from_json(mine) if mine is not None else SuppressionSummary()
                written.update(suppression_to_json(throttle.add_suppressed(summary, now, source)))
            written.update(w=self.writer, e=counted.epoch, v=uuid.uuid4().hex[:12])
            counters[entry_id] = dict(written)
            return {"counters": counters}

        def landed(doc: dict[str, Any] | None) -> bool:
            stored = _counters(doc).get(entry_id, {})
            return int(stored.get("count") or 0) >= int(written["count"])

        with self._own_lock:
            seen = self._merge_verified(self.suppressed_key(fingerprint, channel), change, landed)
        own = _running(seen, counted, entry_id, written)
        if counted.taken == 0 and own.count > 1:
            # not the first held back: that is all callers need to know, and the other claimers'
            # counters can only add to it (exact where this claimer is the only one, as in memory)
            return own
        return _running(self._read_counts(fingerprint, channel, known=seen), counted, entry_id, written)

    def _update_channel(
        self,
        fingerprint: str,
        channel: str,
        change: Callable[[throttle.ChannelState, _Counted], tuple[throttle.ChannelState, _Counted]],
    ) -> None:
        key = self.fingerprint_key(fingerprint)
        doc = self._fingerprint_doc(fingerprint)
        loaded = _load_channel(doc["channels"].get(channel))
        if loaded is None:
            return
        updated = change(*loaded)
        if updated != loaded:
            doc["channels"][channel] = _dump_channel(*updated)
            self._write(key, doc)

    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        counts = self._read_counts(fingerprint, channel)

        def take(state: throttle.ChannelState, counted: _Counted) -> tuple[throttle.ChannelState, _Counted]:
            # the document's own (pre-counter) summary first, then the counters
            own = min(state.suppressed.count, count)
            state = throttle.take_suppressed(state, own) if own else state
            rest = count - own
            if rest <= 0:
                return state, counted
            if rest < _tally(counts, counted.epochs, counted.taken).count:
                return state, replace(counted, taken=counted.taken + rest)
            # all reported: what is held back next starts a new summary, in a new epoch
            return state, replace(counted, epochs=(uuid.uuid4().hex,), taken=0)

        self._update_channel(fingerprint, channel, take)

    def reset_window(self, fingerprint: str, channel: str) -> None:
        doc = self._fingerprint_doc(fingerprint)
        if doc["channels"].pop(channel, None) is not None:
            self._write(self.fingerprint_key(fingerprint), doc)
            for key in self._channel_keys(fingerprint, channel):
                self._delete(key)

    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        self._index_new_keys()

        def keep(state: throttle.ChannelState, counted: _Counted) -> tuple[throttle.ChannelState, _Counted]:
            if state.claim_token != token:
                return state, counted
            return throttle.confirm(state, token), counted.kept()

        self._update_channel(fingerprint, channel, keep)

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        self._index_new_keys()

        def give_back(
            state: throttle.ChannelState, counted: _Counted
        ) -> tuple[throttle.ChannelState, _Counted]:
            if state.claim_token != token:
                return state, counted
            return throttle.release(state, token), counted.rolled_back()

        self._update_channel(fingerprint, channel, give_back)

    def open_incident(self, incident: OpenIncident) -> None:
        key = self.incident_key(incident.incident_key)
        stored = self._read(key)
        doc = stored or {"incidents": []}
        kept = [
            i
            for i in doc.get("incidents", [])
            if not (i.get("fingerprint") == incident.fingerprint and i.get("channel") == incident.channel)
        ]
        doc["incidents"] = [*kept, incident.to_json()]
        self._write(key, doc)
        if stored is None:
            self._remember_key(key)

    def pop_incidents(self, incident_key: str) -> list[OpenIncident]:
        key = self.incident_key(incident_key)
        doc = self._read(key)
        if not doc or not doc.get("incidents"):
            return []
        self._delete(key)
        return [OpenIncident.from_json(i) for i in doc["incidents"]]

    # --- history --------------------------------------------------------------------------
    #
    # HISTORY_SHARDS shards, a writer appending to the one its id hashes to; each shard is a head
    # document of at most HISTORY_CHUNK entries and a ring of chunks the head moves into when it
    # is full.  An append rewrites only the head: its cost does not grow with the history.

    @staticmethod
    def _history_key(shard: int, chunk: int | None = None) -> str:
        return f"alerting.history.{shard}" if chunk is None else f"alerting.history.{shard}.{chunk}"

    @property
    def _history_chunks(self) -> int:
        return max(1, -(-self.history_limit // HISTORY_CHUNK))

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        batch = uuid.uuid4().hex[:12]
        new = [{**e.to_json(), "batch": batch} for e in entries]
        shard = _shard_of(self.writer, HISTORY_SHARDS)

        def change(head: dict[str, Any] | None) -> dict[str, Any]:
            kept = _list(head, "entries")
            rotations = int((head or {}).get("rotations", 0))
            if kept and len(kept) + len(new) > HISTORY_CHUNK:
                # the head is full: its entries replace the oldest chunk
                self._write(self._history_key(shard, rotations % self._history_chunks), {"entries": kept})
                rotations, kept = rotations + 1, []
            batches = [*(b for b in _list(head, "batches") if b != batch), batch][-HISTORY_CHUNK:]
            return {"entries": [*kept, *new], "rotations": rotations, "batches": batches}

        with self._own_lock:
            self._merge_verified(self._history_key(shard), change, lambda doc: batch in _list(doc, "batches"))
        self._index_new_keys()

    def history(self, limit: int = 100) -> list[HistoryEntry]:
        raw = _list(self._read(self.HISTORY_KEY), "entries")  # written by 0.1.0, kept until it ages out
        for shard in range(HISTORY_SHARDS):
            head = self._read(self._history_key(shard))
            if head is None:
                continue
            rotations = int(head.get("rotations", 0))
            for rotation in range(max(0, rotations - self._history_chunks), rotations):
                chunk = self._read(self._history_key(shard, rotation % self._history_chunks))
                raw.extend(_list(chunk, "entries"))
            raw.extend(_list(head, "entries"))
        entries = [HistoryEntry.from_json(e) for e in raw if isinstance(e, dict)]
        # newest first; among equal times the later write first (sorted() keeps that order)
        newest = sorted(reversed(entries), key=lambda e: e.at, reverse=True)
        return newest[: max(0, min(limit, self.history_limit))]

    # --- outbox ---------------------------------------------------------------------------
    #
    # One document per item, found through OUTBOX_SHARDS index documents that hold each item's
    # due time (a hint: the item is the truth), creation time and incident key.  Adding an item
    # is verified; a lost update or removal of an index entry only costs a sweep a read, and the
    # sweep repairs it.

    #: the single outbox document written by 0.1.0; prune_state() moves its items
    OUTBOX_KEY = "alerting.outbox"
    #: items kept by the document stores' outbox; beyond it the oldest are dropped (and counted)
    OUTBOX_LIMIT = 1000

    @staticmethod
    def _outbox_item_key(item_id: str) -> str:
        return _bounded_key(f"alerting.outbox.item.{item_id}")

    @staticmethod
    def _outbox_index_key(shard: int) -> str:
        return f"alerting.outbox.index.{shard}"

    def _outbox_index(self, shard: int) -> dict[str, dict[str, Any]]:
        return {
            k: v
            for k, v in _mapping(self._read(self._outbox_index_key(shard)), "items").items()
            if isinstance(v, dict)
        }

    def _outbox(self) -> list[dict[str, Any]]:
        """Every item (oldest first), without claiming any: for tests and tools."""
        indexed = [
            (e.get("at", ""), i) for s in range(OUTBOX_SHARDS) for i, e in self._outbox_index(s).items()
        ]
        found = (self._read(self._outbox_item_key(i)) for _, i in sorted(indexed))
        return [_without_lease(item) for item in found if item is not None]

    def outbox_add(self, item: OutboxItem) -> None:
        self._write(self._outbox_item_key(item.id), item.to_json())
        entry = _outbox_entry(item)
        limit = max(1, self.OUTBOX_LIMIT // OUTBOX_SHARDS)
        dropped: set[str] = set()

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            items = {k: v for k, v in _mapping(doc, "items").items() if isinstance(v, dict)}
            items[item.id] = {**entry, "v": uuid.uuid4().hex[:12]}
            if len(items) > limit:
                oldest = sorted(
                    (k for k in items if k != item.id), key=lambda k: (str(items[k].get("at")), k)
                )
                for k in oldest[: len(items) - limit]:
                    del items[k]
                    dropped.add(k)
            return {"items": items}

        index_key = self._outbox_index_key(_shard_of(item.id, OUTBOX_SHARDS))
        self._merge_verified(index_key, change, lambda doc: item.id in _mapping(doc, "items"))
        if dropped:
            metrics.incr("outbox", "dropped", count=len(dropped))
            for k in dropped:
                self._delete(self._outbox_item_key(k))

    def outbox_claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        due: list[tuple[datetime, str, str, int]] = []
        for shard in range(OUTBOX_SHARDS):
            for item_id, entry in self._outbox_index(shard).items():
                when = _parse_time(entry.get("due")) or now
                if when <= now:
                    due.append((when, str(entry.get("at", "")), item_id, shard))
        due.sort()
        claimed: list[tuple[OutboxItem, str]] = []
        repairs: dict[int, dict[str, dict[str, Any] | None]] = {}
        # a stale hint costs one read and is repaired; bound the reads so a sweep stays cheap
        for _, _, item_id, shard in due[: 2 * limit]:
            if len(claimed) >= limit:
                break
            data = self._read(self._outbox_item_key(item_id))
            if data is None:
                repairs.setdefault(shard, {})[item_id] = None  # removed meanwhile
                continue
            item = OutboxItem.from_json(data)
            if item.next_attempt_at > now:
                repairs.setdefault(shard, {})[item_id] = _outbox_entry(item)
                continue
            item = replace(item, next_attempt_at=now + lease)
            lease_id = uuid.uuid4().hex[:12]
            self._write(self._outbox_item_key(item_id), {**item.to_json(), "lease": lease_id})
            claimed.append((item, lease_id))
        if claimed and self._verifies:
            # two sweepers that claimed the same item: the last writer keeps it, as with claims
            self._pause()
            claimed = [
                (item, lease_id)
                for item, lease_id in claimed
                if (self._read(self._outbox_item_key(item.id)) or {}).get("lease") == lease_id
            ]
        for shard, changes in repairs.items():
            self._reindex(shard, changes)
        return [item for item, _ in claimed]

    def _reindex(self, shard: int, changes: dict[str, dict[str, Any] | None]) -> None:
        """Set (or, for ``None``, remove) index entries that exist; unverified: the index is a hint."""
        key = self._outbox_index_key(shard)
        items = self._outbox_index(shard)
        changed = False
        for item_id, entry in changes.items():
            if item_id not in items:
                continue
            if entry is None:
                del items[item_id]
            else:
                items[item_id] = entry
            changed = True
        if changed:
            self._write(key, {"items": items})

    def outbox_update(self, item: OutboxItem) -> None:
        shard = _shard_of(item.id, OUTBOX_SHARDS)
        if item.id not in self._outbox_index(shard):
            return  # removed meanwhile (delivered, dropped, expired): do not bring it back
        self._write(self._outbox_item_key(item.id), item.to_json())
        self._reindex(shard, {item.id: _outbox_entry(item)})

    def outbox_drop(self, incident_key: str) -> int:
        dropped = 0
        for shard in range(OUTBOX_SHARDS):
            items = self._outbox_index(shard)
            gone = [k for k, v in items.items() if v.get("key") == incident_key]
            for item_id in gone:
                self._delete(self._outbox_item_key(item_id))
            if gone:
                self._reindex(shard, dict.fromkeys(gone))
            dropped += len(gone)
        return dropped

    def outbox_remove(self, item_id: str) -> None:
        self._delete(self._outbox_item_key(item_id))
        self._reindex(_shard_of(item_id, OUTBOX_SHARDS), {item_id: None})

    # --- retention ------------------------------------------------------------------------

    def prune_state(self, *, now: datetime, retention: timedelta) -> int:
        """Delete fingerprint, claim and counter documents idle for longer than ``retention``,
        open-incident documents opened before it, and outbox items older than
        :data:`OUTBOX_ITEM_MAX_AGE`; move a 0.1.0 outbox document's items to their own documents.

        :return: how many documents were deleted
        """
        self._index_new_keys()
        deleted = self._prune_documents(now, retention) + self._prune_outbox(now)
        legacy = self._read(self.OUTBOX_KEY)
        if legacy is not None:
            for data in _list(legacy, "items"):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.outbox_add(OutboxItem.from_json(data))
            self._delete(self.OUTBOX_KEY)
            deleted += 1
        old_history = _list(self._read(self.HISTORY_KEY), "entries")
        times = [t for t in (_parse_time(e.get("at")) for e in old_history if isinstance(e, dict)) if t]
        if times and max(times) < now - retention:
            self._delete(self.HISTORY_KEY)
            deleted += 1
        return deleted

    def _prune_documents(self, now: datetime, retention: timedelta) -> int:
        horizon = now - retention
        deleted = 0
        forgotten: list[str] = []
        for key in self._known_keys():
            doc = self._read(key)
            if doc is None:
                forgotten.append(key)
                continue
            if key.startswith("alerting.incident."):
                opened = [
                    _parse_time(i.get("opened_at")) for i in _list(doc, "incidents") if isinstance(i, dict)
                ]
                if all(t is None or t < horizon for t in opened):
                    self._delete(key)
                    forgotten.append(key)
                    deleted += 1
                continue
            fingerprint = str(doc.get("fingerprint") or key.removeprefix("alerting.fp."))
            channels = _mapping(doc, "channels")
            counts: dict[str, dict[str, Any] | None] = {
                ch: self._read_counts(fingerprint, ch) for ch in channels
            }
            if _last_activity(doc, counts) < horizon:
                for channel in channels:
                    for channel_key in self._channel_keys(fingerprint, channel):
                        self._delete(channel_key)
                        deleted += 1
                self._delete(key)
                forgotten.append(key)
                deleted += 1
                continue
            for channel, raw in channels.items():
                loaded = _load_channel(raw)
                if loaded is None or not _counters(counts[channel]):
                    continue
                live = set(loaded[1].epochs) | set(loaded[1].previous_epochs)
                for counts_key in self.suppressed_keys(fingerprint, channel):
                    counters = _counters(self._read(counts_key))
                    kept = {
                        k: v
                        for k, v in counters.items()
                        if v.get("e") in live or _counter_until(v) > now - COUNTER_GRACE
                    }
                    if len(kept) != len(counters):
                        self._write(counts_key, {"counters": kept})
        if forgotten:
            self._forget_keys(forgotten)
        return deleted

    def _prune_outbox(self, now: datetime) -> int:
        horizon = now - OUTBOX_ITEM_MAX_AGE
        deleted = 0
        for shard in range(OUTBOX_SHARDS):
            old = [
                k for k, v in self._outbox_index(shard).items() if (_parse_time(v.get("at")) or now) < horizon
            ]
            for item_id in old:
                self._delete(self._outbox_item_key(item_id))
            if old:
                self._reindex(shard, dict.fromkeys(old))
            deleted += len(old)
        return deleted

    # --- incidents ------------------------------------------------------------------------
    #
    # One document per incident holding its full member map, a pointer per correlation key to
    # its current incident, an index per DAG of the open incidents with members in it (what a
    # success has to look at), and one index of every incident for listing and expiry.

    INCIDENT_INDEX_KEY = "alerting.incidents"
    SILENCES_KEY = "alerting.silences"

    @staticmethod
    def _hashed(prefix: str, value: str) -> str:
        return f"{prefix}.{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"

    @staticmethod
    def _incident_doc_key(incident_id: str) -> str:
        return f"alerting.inc.{incident_id}"

    def _load_incident(self, incident_id: str) -> tuple[Incident, dict[str, IncidentMember]] | None:
        doc = self._read(self._incident_doc_key(incident_id))
        if not doc or not isinstance(doc.get("incident"), dict):
            return None
        members = {
            str(k): IncidentMember.from_json(v)
            for k, v in (doc.get("members") or {}).items()
            if isinstance(v, dict)
        }
        return Incident.from_json(doc["incident"]), members

    def _save_incident(self, incident: Incident, members: dict[str, IncidentMember]) -> None:
        self._write(
            self._incident_doc_key(incident.id),
            {"incident": incident.to_json(), "members": {k: m.to_json() for k, m in members.items()}},
        )

    def _incident_index(self) -> dict[str, Any]:
        raw = (self._read(self.INCIDENT_INDEX_KEY) or {}).get("incidents")
        return dict(raw) if isinstance(raw, dict) else {}

    def _index_incident(self, incident: Incident) -> None:
        entries = self._incident_index()
        entries[incident.id] = {
            "state": incident.state.value,
            "last_seen_at": incident.last_seen_at.isoformat(),
        }
        self._write(self.INCIDENT_INDEX_KEY, {"incidents": entries})

    def _dag_index(self, dag_id: str) -> dict[str, list[str]]:
        doc = self._read(self._hashed("alerting.dagidx", dag_id)) or {}
        raw = doc.get("incidents")
        return {str(k): list(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _save_dag_index(self, dag_id: str, index: dict[str, list[str]]) -> None:
        key = self._hashed("alerting.dagidx", dag_id)
        if index:
            self._write(key, {"dag_id": dag_id, "incidents": index})
        else:
            self._delete(key)

    def join_incident(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        from airflow_alerting.incidents import lifecycle

        with self._atomic():
            pointer_key = self._hashed("alerting.corr", occurrence.key)
            pointer = self._read(pointer_key) or {}
            loaded = self._load_incident(str(pointer["id"])) if pointer.get("id") else None
            current, members = loaded if loaded is not None else (None, {})
            previous_id = str(pointer["id"]) if pointer.get("id") else None
            joined, members = lifecycle.join(current, members, occurrence, rules, previous_id=previous_id)
            self._save_incident(joined.incident, members)
            if joined.opened:
                self._write(pointer_key, {"id": joined.incident.id, "key": occurrence.key})
                self._index_incident(joined.incident)
            if joined.new_member:
                index = self._dag_index(occurrence.dag_id)
                keys = index.setdefault(joined.incident.id, [])
                if occurrence.member_key not in keys:
                    keys.append(occurrence.member_key)
                    self._save_dag_index(occurrence.dag_id, index)
            return joined

    def incident(self, incident_id: str) -> Incident | None:
        loaded = self._load_incident(incident_id)
        return loaded[0] if loaded is not None else None

    def incidents(self, *, states: Sequence[IncidentState] = (), limit: int = 100) -> list[Incident]:
        entries = self._incident_index()
        found = [i for i in (self.incident(incident_id) for incident_id in entries) if i is not None]
        if states:
            found = [i for i in found if i.state in states]
        found.sort(key=lambda i: (i.last_seen_at, i.id), reverse=True)
        return found[:limit]

    def record_announcement(self, incident_id: str, announcement: Announcement) -> None:
        with self._atomic():
            loaded = self._load_incident(incident_id)
            if loaded is None:
                return
            incident, members = loaded
            announcements = {**incident.announcements, announcement.channel: announcement}
            self._save_incident(replace(incident, announcements=announcements), members)

    def recover_members(
        self, dag_id: str, task_id: str | None, map_index: int, *, now: datetime
    ) -> list[Incident]:
        from airflow_alerting.incidents import lifecycle
        from airflow_alerting.incidents.model import member_key

        wanted = member_key(dag_id, task_id, map_index) if task_id is not None else None
        resolved: list[Incident] = []
        with self._atomic():
            index = self._dag_index(dag_id)
            changed_index = False
            for incident_id, keys in list(index.items()):
                if wanted is not None and wanted not in keys:
                    continue
                loaded = self._load_incident(incident_id)
                if loaded is None or not loaded[0].is_open:
                    del index[incident_id]
                    changed_index = True
                    continue
                incident, members = loaded
                updated, members, done = lifecycle.recover(
                    incident, members, dag_id=dag_id, task_id=task_id, map_index=map_index, at=now
                )
                if updated is incident:
                    continue
                self._save_incident(updated, members)
                still_failing = [k for k in keys if k in members and members[k].failing]
                if still_failing:
                    index[incident_id] = still_failing
                else:
                    del index[incident_id]
                changed_index = True
                if done:
                    self._index_incident(updated)
                    resolved.append(updated)
            if changed_index:
                self._save_dag_index(dag_id, index)
        return resolved

    def _transition(self, incident_id: str, change: Any) -> Incident | None:
        with self._atomic():
            loaded = self._load_incident(incident_id)
            if loaded is None:
                return None
            incident, members = loaded
            updated: Incident | None = change(incident)
            if updated is None:
                return None
            self._save_incident(updated, members)
            self._index_incident(updated)
            return updated

    def acknowledge_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        from airflow_alerting.incidents import lifecycle

        return self._transition(incident_id, lambda i: lifecycle.acknowledge(i, by=by, at=now))

    def resolve_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        from airflow_alerting.incidents import lifecycle

        return self._transition(incident_id, lambda i: lifecycle.resolve(i, by=by, at=now))

    def mark_digested(self, incident_ids: Sequence[str], *, now: datetime) -> None:
        with self._atomic():
            for incident_id in incident_ids:
                loaded = self._load_incident(incident_id)
                if loaded is not None:
                    self._save_incident(replace(loaded[0], digested_at=now), loaded[1])

    def prune_incidents(self, *, now: datetime, rules: IncidentRules) -> int:
        from airflow_alerting.incidents import lifecycle

        with self._atomic():
            entries = self._incident_index()
            pruned = 0
            for incident_id in list(entries):
                loaded = self._load_incident(incident_id)
                if loaded is not None and not lifecycle.is_stale(loaded[0], now, rules):
                    continue
                del entries[incident_id]
                pruned += 1
                if loaded is None:
                    continue
                incident, members = loaded
                self._delete(self._incident_doc_key(incident_id))
                pointer_key = self._hashed("alerting.corr", incident.key)
                if (self._read(pointer_key) or {}).get("id") == incident_id:
                    self._delete(pointer_key)
                for dag_id in {m.dag_id for m in members.values()}:
                    index = self._dag_index(dag_id)
                    if index.pop(incident_id, None) is not None:
                        self._save_dag_index(dag_id, index)
            if pruned:
                self._write(self.INCIDENT_INDEX_KEY, {"incidents": entries})
            silences = self._stored_silences()
            kept = [s for s in silences if now - s.ends_at <= rules.retention]
            if len(kept) != len(silences):
                self._save_silences(kept)
            return pruned

    # --- silences -------------------------------------------------------------------------

    def _stored_silences(self) -> list[Silence]:
        from airflow_alerting.incidents.silences import Silence, SilenceError

        doc = self._read(self.SILENCES_KEY) or {}
        found = []
        for raw in doc.get("silences", []) if isinstance(doc.get("silences"), list) else []:
            try:
                found.append(Silence.from_json(raw))
            except SilenceError:
                continue  # a damaged entry must not hide the others
        return found

    def _save_silences(self, silences: Sequence[Silence]) -> None:
        self._write(self.SILENCES_KEY, {"silences": [s.to_json() for s in silences]})

    def add_silence(self, silence: Silence) -> None:
        with self._atomic():
            kept = [s for s in self._stored_silences() if s.id != silence.id]
            self._save_silences([*kept, silence])

    def silences(self) -> list[Silence]:
        return sorted(self._stored_silences(), key=lambda s: (s.starts_at, s.id))

    def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        with self._atomic():
            silences = self._stored_silences()
            for index, silence in enumerate(silences):
                if silence.id == silence_id and silence.ends_at > now:
                    # a silence that has not started yet ends before it starts: drop it
                    if silence.starts_at >= now:
                        del silences[index]
                    else:
                        silences[index] = replace(silence, ends_at=now)
                    self._save_silences(silences)
                    return True
            return False


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


# --- document store helpers -----------------------------------------------------------------

_EPOCH_START = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Counted:
    """Which per-claimer counters make up a channel's suppressed summary (document stores).

    Each send starts an epoch named by its claim token; a held-back occurrence is counted in its
    claimer's counter for the epoch it read.  ``taken`` of those were reported by a summary
    already.  The previous epochs are what a pending claim carried: when it is released, or its
    lease expires, they count again.
    """

    epochs: tuple[str, ...] = ("",)
    taken: int = 0
    previous_epochs: tuple[str, ...] = ()
    previous_taken: int = 0

    @property
    def epoch(self) -> str:
        """The epoch a new held-back occurrence is counted in."""
        return self.epochs[-1] if self.epochs else ""

    def sent(self, token: str) -> _Counted:
        return _Counted((token,), 0, self.epochs, self.taken)

    def kept(self) -> _Counted:
        return replace(self, previous_epochs=(), previous_taken=0)

    def rolled_back(self) -> _Counted:
        epochs = tuple(dict.fromkeys((*self.previous_epochs, *self.epochs)))
        return _Counted(epochs, self.previous_taken + self.taken)

    def to_json(self) -> dict[str, Any]:
        return {
            "epochs": list(self.epochs),
            "taken": self.taken,
            "previous_epochs": list(self.previous_epochs),
            "previous_taken": self.previous_taken,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Counted:
        epochs = data.get("epochs")
        previous = data.get("previous_epochs")
        return cls(
            tuple(str(e) for e in epochs) if isinstance(epochs, list) and epochs else ("",),
            int(data.get("taken") or 0),
            tuple(str(e) for e in previous) if isinstance(previous, list) else (),
            int(data.get("previous_taken") or 0),
        )


def _load_channel(raw: Any) -> tuple[throttle.ChannelState, _Counted] | None:
    if not isinstance(raw, dict):
        return None
    return throttle.ChannelState.from_json(raw), _Counted.from_json(raw)


def _dump_channel(state: throttle.ChannelState, counted: _Counted) -> dict[str, Any]:
    return {**state.to_json(), **counted.to_json()}


def _settled(
    state: throttle.ChannelState, counted: _Counted, now: datetime
) -> tuple[throttle.ChannelState, _Counted]:
    """The state with an expired claim rolled back, its counters included."""
    settled = state.settled(now)
    return (state, counted) if settled is state else (settled, counted.rolled_back())


def _counters(doc: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _mapping(doc, "counters").items() if isinstance(v, dict)}


def _counter_until(entry: dict[str, Any]) -> datetime:
    return _parse_time(entry.get("until")) or _parse_time(entry.get("since")) or _EPOCH_START


def _in_epochs(counts: dict[str, Any] | None, epochs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The counters of ``epochs``, in the order their claimers first held an occurrence back."""
    wanted = set(epochs)
    found = [(k, v) for k, v in _counters(counts).items() if v.get("e") in wanted]
    found.sort(key=lambda kv: (str(kv[1].get("since") or ""), kv[0]))
    return found


def _unreported(
    entries: Sequence[tuple[str, dict[str, Any]]], taken: int
) -> list[tuple[str, SuppressionSummary]]:
    """The counters' summaries less the ``taken`` oldest occurrences (a summary reported them)."""
    left: list[tuple[str, SuppressionSummary]] = []
    for key, entry in entries:
        summary = suppression_from_json(entry)
        if taken >= summary.count:
            taken -= summary.count
            continue
        left.append((key, replace(summary, count=summary.count - taken) if taken else summary))
        taken = 0
    return left


def _tally(counts: dict[str, Any] | None, epochs: Sequence[str], taken: int) -> SuppressionSummary:
    summary = SuppressionSummary()
    for _, part in _unreported(_in_epochs(counts, epochs), taken):
        summary = throttle.merge_suppressed(summary, part)
    return summary


def _running(
    counts: dict[str, Any] | None, counted: _Counted, entry_id: str, mine: dict[str, Any]
) -> SuppressionSummary:
    """The held-back occurrences counted up to and including ``entry_id``'s (at least this one)."""
    entries = dict(_in_epochs(counts, counted.epochs))
    entries[entry_id] = mine  # even when every write of it was overwritten
    ordered = sorted(entries.items(), key=lambda kv: (str(kv[1].get("since") or ""), kv[0]))
    summary = SuppressionSummary()
    for key, part in _unreported(ordered, counted.taken):
        summary = throttle.merge_suppressed(summary, part)
        if key == entry_id:
            return summary
    return replace(suppression_from_json(mine), count=1)


def _with_counts(
    state: throttle.ChannelState, counted: _Counted, counts: dict[str, Any] | None
) -> throttle.ChannelState:
    """The channel state with the counters' summaries folded in, as :mod:`throttle` expects it."""
    return replace(
        state,
        suppressed=throttle.merge_suppressed(state.suppressed, _tally(counts, counted.epochs, counted.taken)),
        previous_suppressed=throttle.merge_suppressed(
            state.previous_suppressed,
            _tally(counts, counted.previous_epochs, counted.previous_taken),
        ),
    )


def _last_activity(doc: dict[str, Any], counts: dict[str, dict[str, Any] | None]) -> datetime:
    """When a fingerprint document (with its channels' counters) last changed."""
    times = [o[0] for o in (_parse_occurrence(v) for v in _list(doc, "occurrences")) if o]
    for raw in _mapping(doc, "channels").values():
        loaded = _load_channel(raw)
        if loaded is None:
            continue
        state = loaded[0]
        times.extend(
            t
            for t in (
                state.last_sent_at,
                state.claim_expires_at,
                state.previous_sent_at,
                state.suppressed.until,
            )
            if t is not None
        )
    for channel_counts in counts.values():
        times.extend(_counter_until(v) for v in _counters(channel_counts).values())
    return max(times, default=_EPOCH_START)


def _fingerprint_document(fingerprint: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(stored, dict):
        return {"fingerprint": fingerprint, "seen": [], "occurrences": [], "channels": {}}
    stored.setdefault("seen", [])
    stored.setdefault("occurrences", [])
    stored.setdefault("channels", {})
    return stored


def _outbox_entry(item: OutboxItem) -> dict[str, Any]:
    """What the outbox index keeps of an item: enough to find due items and an incident's items."""
    return {
        "due": item.next_attempt_at.isoformat(),
        "at": item.created_at.isoformat(),
        "key": item.incident_key,
    }


def _without_lease(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "lease"}


def _mapping(doc: dict[str, Any] | None, name: str) -> dict[str, Any]:
    value = (doc or {}).get(name)
    return dict(value) if isinstance(value, dict) else {}


def _list(doc: dict[str, Any] | None, name: str) -> list[Any]:
    value = (doc or {}).get(name)
    return list(value) if isinstance(value, list) else []


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _shard_of(text: str, shards: int) -> int:
    """A stable shard number for ``text`` (not ``hash()``: that differs between processes)."""
    return int(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8], 16) % shards


def _bounded_key(key: str) -> str:
    """``key``, hashed past 250 characters (the Variables key length)."""
    if len(key) <= 250:
        return key
    return key[:200] + "." + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]
