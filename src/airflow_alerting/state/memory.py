"""In-process state: for tests, ``dag.test()`` and single-process demos."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_alerting import throttle
from airflow_alerting.incidents.model import Incident, IncidentMember
from airflow_alerting.model import HistoryEntry, Severity
from airflow_alerting.state.base import (
    MAX_OCCURRENCE_TIMES,
    MAX_SEEN_OCCURRENCES,
    OUTBOX_ITEM_MAX_AGE,
    Claim,
    DocumentStore,
    OccurrenceRecord,
    OutboxItem,
    log_outbox_evictions,
    outbox_rank,
    outbox_victims,
)

_LONG_AGO = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Fingerprint:
    """What the store keeps per fingerprint: its recent occurrences and each channel's throttle state.

    The containers change in place, only under the store's lock.
    """

    #: the last occurrence ids, oldest first (a repeated callback is a duplicate)
    seen: list[str] = field(default_factory=list)
    #: (time, recurrence group) of the occurrences within the last escalation window, oldest first
    occurrences: list[tuple[datetime, str]] = field(default_factory=list)
    channels: dict[str, throttle.ChannelState] = field(default_factory=dict)

    def last_activity(self) -> datetime:
        """When anything about this fingerprint last happened (for :meth:`MemoryStore.prune_state`)."""
        times = [t for t, _ in self.occurrences]
        for state in self.channels.values():
            times.extend(
                t
                for t in (
                    state.last_sent_at,
                    state.claim_expires_at,
                    state.previous_sent_at,
                    state.suppressed.until,
                    state.previous_suppressed.until,
                )
                if t is not None
            )
        return max(times, default=_LONG_AGO)


class MemoryStore(DocumentStore):
    """Keeps every document in a dict guarded by a lock; shared only within one process.

    The history and the outbox's index are native structures (a bounded deque, a dict and a
    heap of due times), so an alert costs the same with a full history and outbox as with
    empty ones; outbox items are still documents (``_read``/``_write``), one per item.

    Occurrences and claims, the calls every alert makes several of, apply
    :mod:`airflow_alerting.throttle`'s rules directly to a :class:`~airflow_alerting.throttle.ChannelState`
    per (fingerprint, channel), as the SQL store does in SQL: with one lock there is no other
    writer, so the per-claimer counters and JSON documents of the shared document stores would
    only cost time.  A subclass that overrides ``_read``, ``_write`` or ``_delete`` (a test double
    simulating an outage, or counting round trips) keeps them on the documents, through its I/O.
    """

    name = "memory"
    # every read-modify-write holds the lock: nothing to verify, and no read is stale
    _verifies = False
    _counter_grace = timedelta(0)

    def __init__(self, history_limit: int = 500) -> None:
        super().__init__(history_limit)
        # documents are kept as JSON text: a copy in and out (like the Variables store) is several
        # times cheaper than deepcopy for the large incident and history documents
        self._documents: dict[str, str] = {}
        # claim() is read-modify-write; one lock makes it atomic between threads of this process
        self._lock = threading.RLock()
        # incidents stay objects: a 500-member incident would otherwise be serialised on every join
        self._incidents: dict[str, tuple[Incident, dict[str, IncidentMember]]] = {}
        self._history: deque[HistoryEntry] = deque(maxlen=max(0, history_limit))
        # outbox index: id -> (next attempt, incident key), in insertion order; due times in a heap
        # whose stale entries (updated or removed items) are skipped when popped
        self._outbox_meta: dict[str, tuple[datetime, str]] = {}
        self._outbox_by_incident: dict[str, set[str]] = {}
        self._outbox_due: list[tuple[datetime, int, str]] = []
        self._outbox_seq = itertools.count()
        # what a full outbox drops first (outbox_rank, created at) of every queued item: recorded
        # once, when the item is added, forgotten with it (_forget_item)
        self._outbox_ranks: dict[str, tuple[tuple[int, int], str]] = {}
        self._fingerprints: dict[str, _Fingerprint] = {}
        # a subclass that intercepts the document I/O (to simulate an outage, or count round trips)
        # keeps every occurrence and claim going through it
        mine = (MemoryStore._read, MemoryStore._write, MemoryStore._delete)
        self._native = (type(self)._read, type(self)._write, type(self)._delete) == mine

    def _read(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._documents.get(key)
            return json.loads(doc) if doc is not None else None

    def _write(self, key: str, document: dict[str, Any]) -> None:
        with self._lock:
            self._documents[key] = json.dumps(document, separators=(",", ":"))

    def _delete(self, key: str) -> None:
        with self._lock:
            self._documents.pop(key, None)
            if key.startswith(self._incident_doc_key("")):
                self._incidents.pop(key[len(self._incident_doc_key("")) :], None)

    def _load_incident(self, incident_id: str) -> tuple[Incident, dict[str, IncidentMember]] | None:
        with self._lock:
            found = self._incidents.get(incident_id)
            # frozen dataclasses need no copy; the member map does (callers replace entries)
            return (found[0], dict(found[1])) if found is not None else None

    def _save_incident(self, incident: Incident, members: dict[str, IncidentMember]) -> None:
        # kept as given, not copied: every caller saves a map it got from _load_incident (a copy)
        # or from lifecycle (a new one) and drops it, and a storm's incident holds tens of
        # thousands of members, copied on every join otherwise
        with self._lock:
            self._incidents[incident.id] = (incident, members)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        with self._lock:
            yield

    # --- occurrences and claims: throttle's rules on native state -----------------------------

    def record_occurrence(
        self,
        fingerprint: str,
        occurrence_id: str,
        *,
        now: datetime,
        window: timedelta,
        group: str | None = None,
    ) -> OccurrenceRecord:
        with self._lock:
            if not self._native:
                return super().record_occurrence(
                    fingerprint, occurrence_id, now=now, window=window, group=group
                )
            record = self._fingerprints.get(fingerprint)
            if record is None:
                record = self._fingerprints[fingerprint] = _Fingerprint()
            horizon = now - window
            recent = [o for o in record.occurrences if o[0] > horizon]
            if occurrence_id in record.seen:
                return OccurrenceRecord(duplicate=True, count_in_window=len({g for _, g in recent}))
            recent.append((now, group or occurrence_id))
            record.occurrences[:] = recent[-MAX_OCCURRENCE_TIMES:]
            record.seen.append(occurrence_id)
            del record.seen[:-MAX_SEEN_OCCURRENCES]
            return OccurrenceRecord(duplicate=False, count_in_window=len({g for _, g in recent}))

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
        with self._lock:
            if not self._native:
                return super().claim(
                    fingerprint,
                    channel,
                    now=now,
                    window=window,
                    severity=severity,
                    escalated=escalated,
                    source=source,
                    lease=lease,
                )
            record = self._fingerprints.get(fingerprint)
            if record is None:
                record = self._fingerprints[fingerprint] = _Fingerprint()
            stored = record.channels.get(channel)
            # an expired claim is rolled back (its sender died) before deciding, as the lease rule says
            state = stored.settled(now) if stored is not None else None
            decision = throttle.decide(state, now=now, window=window, severity=severity, escalated=escalated)
            token = uuid.uuid4().hex if decision.send else ""
            updated = throttle.apply(
                state, decision, now=now, severity=severity, source=source, token=token, lease=lease
            )
            record.channels[channel] = updated
            if decision.send:
                return Claim(decision, token)
            # held back: the running summary, this occurrence included (the first one starts a burst)
            return Claim(replace(decision, suppressed=updated.suppressed))

    def _change_channel(
        self,
        fingerprint: str,
        channel: str,
        change: Callable[[throttle.ChannelState, Any], throttle.ChannelState],
        argument: Any,
    ) -> None:
        with self._lock:
            record = self._fingerprints.get(fingerprint)
            stored = record.channels.get(channel) if record is not None else None
            if record is not None and stored is not None:
                record.channels[channel] = change(stored, argument)

    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        with self._lock:
            if not self._native:
                return super().confirm(fingerprint, channel, token)
            self._change_channel(fingerprint, channel, throttle.confirm, token)

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        with self._lock:
            if not self._native:
                return super().release(fingerprint, channel, token)
            self._change_channel(fingerprint, channel, throttle.release, token)

    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        with self._lock:
            if not self._native:
                return super().clear_suppressed(fingerprint, channel, count)
            if count > 0:
                self._change_channel(fingerprint, channel, throttle.take_suppressed, count)

    def reset_window(self, fingerprint: str, channel: str) -> None:
        with self._lock:
            if not self._native:
                return super().reset_window(fingerprint, channel)
            record = self._fingerprints.get(fingerprint)
            if record is not None:
                record.channels.pop(channel, None)

    def channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        with self._lock:
            if not self._native:
                return super().channel_state(fingerprint, channel)
            record = self._fingerprints.get(fingerprint)
            return record.channels.get(channel) if record is not None else None

    # the read-modify-writes of the document path (subclasses intercepting I/O) and of open
    # incidents, atomic between threads too
    def _update_channel(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super()._update_channel(*args, **kwargs)

    def open_incident(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().open_incident(*args, **kwargs)

    def pop_incidents(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().pop_incidents(*args, **kwargs)

    # --- history: a bounded deque -----------------------------------------------------------

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        with self._lock:
            self._history.extend(entries)

    def history(self, limit: int = 100) -> list[HistoryEntry]:
        with self._lock:
            return list(itertools.islice(reversed(self._history), max(0, limit)))

    # --- outbox: one document per item, indexed natively ------------------------------------

    def _index_item(self, item: OutboxItem) -> None:
        self._outbox_meta[item.id] = (item.next_attempt_at, item.incident_key)
        self._outbox_by_incident.setdefault(item.incident_key, set()).add(item.id)
        heapq.heappush(self._outbox_due, (item.next_attempt_at, next(self._outbox_seq), item.id))
        if len(self._outbox_due) > 2 * len(self._outbox_meta) + 64:
            # too many stale heap entries: rebuild from the index
            self._outbox_due = [(due, next(self._outbox_seq), i) for i, (due, _) in self._outbox_meta.items()]
            heapq.heapify(self._outbox_due)

    def _unindex_item(self, item_id: str) -> None:
        _, incident_key = self._outbox_meta.pop(item_id)
        ids = self._outbox_by_incident.get(incident_key)
        if ids is not None:
            ids.discard(item_id)
            if not ids:
                del self._outbox_by_incident[incident_key]

    def _outbox(self) -> list[dict[str, Any]]:
        with self._lock:
            found = (self._read(self._outbox_item_key(i)) for i in self._outbox_meta)
            return [item for item in found if item is not None]

    def outbox_add(self, item: OutboxItem) -> None:
        with self._lock:
            self._write(self._outbox_item_key(item.id), item.to_json())
            if item.id in self._outbox_meta:
                self._unindex_item(item.id)
            self._index_item(item)
            self._outbox_ranks[item.id] = (outbox_rank(item), item.created_at.isoformat())
            over = len(self._outbox_meta) - self.OUTBOX_LIMIT
            if over > 0:
                victims = outbox_victims(self._outbox_ranks, over)
                dropped = {v: self._outbox_ranks[v][0] for v in victims}
                for victim in victims:
                    self._forget_item(victim)
                log_outbox_evictions(dropped, self.OUTBOX_LIMIT)

    def _forget_item(self, item_id: str) -> None:
        self._delete(self._outbox_item_key(item_id))
        self._unindex_item(item_id)
        self._outbox_ranks.pop(item_id, None)

    def outbox_depth(self) -> int:
        """How many items the outbox holds."""
        with self._lock:
            return len(self._outbox_meta)

    def outbox_claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        with self._lock:
            claimed: list[OutboxItem] = []
            while self._outbox_due and len(claimed) < limit and self._outbox_due[0][0] <= now:
                due, _, item_id = heapq.heappop(self._outbox_due)
                meta = self._outbox_meta.get(item_id)
                if meta is None or meta[0] != due:
                    continue  # removed or rescheduled since this entry was pushed
                data = self._read(self._outbox_item_key(item_id))
                if data is None:
                    self._forget_item(item_id)
                    continue
                item = replace(OutboxItem.from_json(data), next_attempt_at=now + lease)
                self._write(self._outbox_item_key(item_id), item.to_json())
                self._unindex_item(item_id)
                self._index_item(item)
                claimed.append(item)
            return claimed

    def outbox_update(self, item: OutboxItem) -> None:
        with self._lock:
            if item.id not in self._outbox_meta:
                return  # removed meanwhile: do not bring it back
            self._write(self._outbox_item_key(item.id), item.to_json())
            self._unindex_item(item.id)
            self._index_item(item)

    def outbox_remove(self, item_id: str) -> None:
        with self._lock:
            if item_id in self._outbox_meta:
                self._forget_item(item_id)

    def outbox_drop(self, incident_key: str) -> int:
        with self._lock:
            gone = list(self._outbox_by_incident.get(incident_key, ()))
            for item_id in gone:
                self._forget_item(item_id)
            return len(gone)

    # --- retention ----------------------------------------------------------------------------

    def _remember_key(self, key: str) -> None:
        """Nothing to index: every document is in ``self._documents``, which ``_known_keys`` lists."""

    def _known_keys(self) -> list[str]:
        with self._lock:
            return [k for k in self._documents if k.startswith(("alerting.fp.", "alerting.incident."))]

    def _forget_keys(self, keys: Sequence[str]) -> None:
        """Nothing to unindex: deleting the documents already removed them from ``_known_keys``."""

    def prune_state(self, *, now: datetime, retention: timedelta) -> int:
        """Forget fingerprints idle for longer than ``retention`` (counting each and each of its
        channels as a record), then what :meth:`DocumentStore.prune_state` prunes.

        :param now: the current time
        :param retention: state idle for longer than this is stale
        """
        with self._lock:
            horizon = now - retention
            stale = [fp for fp, record in self._fingerprints.items() if record.last_activity() < horizon]
            deleted = sum(1 + len(self._fingerprints.pop(fp).channels) for fp in stale)
            return deleted + super().prune_state(now=now, retention=retention)

    def _prune_outbox(self, now: datetime) -> int:
        horizon = now - OUTBOX_ITEM_MAX_AGE
        old = []
        for item_id in list(self._outbox_meta):
            data = self._read(self._outbox_item_key(item_id))
            if data is None or OutboxItem.from_json(data).created_at < horizon:
                old.append(item_id)
        for item_id in old:
            self._forget_item(item_id)
        return len(old)

    def clear(self) -> None:
        """Forget everything (between tests)."""
        with self._lock:
            self._documents.clear()
            self._fingerprints.clear()
            self._incidents.clear()
            self._history.clear()
            self._outbox_meta.clear()
            self._outbox_ranks.clear()
            self._outbox_by_incident.clear()
            self._outbox_due.clear()
