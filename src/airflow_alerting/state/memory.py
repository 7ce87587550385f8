"""In-process state: for tests, ``dag.test()`` and single-process demos."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import metrics
from airflow_alerting.incidents.model import Incident, IncidentMember
from airflow_alerting.model import HistoryEntry
from airflow_alerting.state.base import OUTBOX_ITEM_MAX_AGE, DocumentStore, OutboxItem


class MemoryStore(DocumentStore):
    """Keeps every document in a dict guarded by a lock; shared only within one process.

    The history and the outbox's index are native structures (a bounded deque, a dict and a
    heap of due times), so an alert costs the same with a full history and outbox as with
    empty ones; outbox items are still documents (``_read``/``_write``), one per item.
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
        with self._lock:
            self._incidents[incident.id] = (incident, dict(members))

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        with self._lock:
            yield

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().claim(*args, **kwargs)

    def record_occurrence(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().record_occurrence(*args, **kwargs)

    # the other read-modify-writes of claims and open incidents, atomic between threads too
    def _update_channel(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super()._update_channel(*args, **kwargs)

    def clear_suppressed(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().clear_suppressed(*args, **kwargs)

    def reset_window(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().reset_window(*args, **kwargs)

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
            over = len(self._outbox_meta) - self.OUTBOX_LIMIT
            if over > 0:
                metrics.incr("outbox", "dropped", count=over)
                for oldest in list(itertools.islice(self._outbox_meta, over)):
                    self._delete(self._outbox_item_key(oldest))
                    self._unindex_item(oldest)

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
                    self._unindex_item(item_id)
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
                self._delete(self._outbox_item_key(item_id))
                self._unindex_item(item_id)

    def outbox_drop(self, incident_key: str) -> int:
        with self._lock:
            gone = list(self._outbox_by_incident.get(incident_key, ()))
            for item_id in gone:
                self._delete(self._outbox_item_key(item_id))
                self._unindex_item(item_id)
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
        with self._lock:
            return super().prune_state(now=now, retention=retention)

    def _prune_outbox(self, now: datetime) -> int:
        horizon = now - OUTBOX_ITEM_MAX_AGE
        old = []
        for item_id in list(self._outbox_meta):
            data = self._read(self._outbox_item_key(item_id))
            if data is None or OutboxItem.from_json(data).created_at < horizon:
                old.append(item_id)
        for item_id in old:
            self._delete(self._outbox_item_key(item_id))
            self._unindex_item(item_id)
        return len(old)

    def clear(self) -> None:
        """Forget everything (between tests)."""
        with self._lock:
            self._documents.clear()
            self._incidents.clear()
            self._history.clear()
            self._outbox_meta.clear()
            self._outbox_by_incident.clear()
            self._outbox_due.clear()
