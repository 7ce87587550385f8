"""The document stores' outbox: one document per item, sharded indexes, least-important-first cap."""

from __future__ import annotations

import contextlib
import heapq
import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import metrics
from airflow_alerting.model import (
    Severity,
)
from airflow_alerting.state.base import (
    OUTBOX_SHARDS,
    OutboxItem,
)
from airflow_alerting.state.document.helpers import (
    _bounded_key,
    _mapping,
    _parse_time,
    _shard_of,
    _without_lease,
)
from airflow_alerting.state.document.history import DocumentHistory

log = logging.getLogger(__name__)


class DocumentOutbox(DocumentHistory):
    """The outbox: one document per item, found through sharded index documents."""

    # --- outbox ---------------------------------------------------------------------------
    #
    # One document per item, found through OUTBOX_SHARDS index documents that hold each item's
    # due time (a hint: the item is the truth), creation time and incident key.  Adding an item
    # is verified; a lost update or removal of an index entry only costs a sweep a read, and the
    # sweep repairs it.

    #: the single outbox document written by 0.1.0; prune_state() moves its items
    OUTBOX_KEY = "alerting.outbox"
    #: items kept by the document stores' outbox; beyond it the least important are dropped, oldest
    #: first (:func:`outbox_victims`), counted and logged
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

    def outbox_depth(self) -> int:
        """How many items the outbox indexes list (one read per index shard)."""
        return sum(len(self._outbox_index(shard)) for shard in range(OUTBOX_SHARDS))

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
        dropped: dict[str, dict[str, Any]] = {}

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            items = {k: v for k, v in _mapping(doc, "items").items() if isinstance(v, dict)}
            items[item.id] = {**entry, "v": uuid.uuid4().hex[:12]}
            dropped.clear()
            for victim in outbox_victims({k: _entry_rank(v) for k, v in items.items()}, len(items) - limit):
                dropped[victim] = items.pop(victim)
            return {"items": items}

        def landed(doc: dict[str, Any] | None) -> bool:
            # the new item itself may be the least important one: then it is dropped, not lost
            return item.id in _mapping(doc, "items") or item.id in dropped

        index_key = self._outbox_index_key(_shard_of(item.id, OUTBOX_SHARDS))
        self._merge_verified(index_key, change, landed)
        if dropped:
            log_outbox_evictions({k: _entry_rank(v)[0] for k, v in dropped.items()}, limit)
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


def _outbox_entry(item: OutboxItem) -> dict[str, Any]:
    """What the outbox index keeps of an item: enough to find due items and an incident's items,
    and to choose what a full outbox drops without reading the items."""
    return {
        "due": item.next_attempt_at.isoformat(),
        "at": item.created_at.isoformat(),
        "key": item.incident_key,
        "rank": list(outbox_rank(item)),
    }


#: what an item queued before ranks existed ranks as: an alert of the highest severity (kept longest)
_UNKNOWN_RANK: tuple[int, int] = (1, int(max(Severity)))
#: actions that only say more about an incident already told (an edit, a follow-up summary)
_SUMMARY_ACTIONS = frozenset({"update", "follow_up"})
_SUMMARY_REASONS = frozenset({"summary", "updated"})


def outbox_rank(item: OutboxItem) -> tuple[int, int]:
    """How much ``item`` matters when a full outbox must drop something; the lowest goes first.

    Real alerts (announcements, escalations, re-notifications, resolutions) rank above summaries and
    in-place edits, whatever their severity; within each, by severity (the escalated one, if any).

    :param item: a queued notification
    :return: ``(1 for a real alert, 0 for a summary or edit, severity)``
    """
    notification = item.notification
    decision = notification.get("decision")
    reason = decision.get("reason") if isinstance(decision, dict) else None
    summary = notification.get("action") in _SUMMARY_ACTIONS or reason in _SUMMARY_REASONS
    severity = int(Severity.LOW)
    for raw in (
        (notification.get("escalation") or {}).get("to"),
        (notification.get("classification") or {}).get("severity"),
    ):
        with contextlib.suppress(ValueError, TypeError):
            if raw is not None:
                severity = max(severity, int(Severity.parse(raw)))
    return (0 if summary else 1, severity)


def outbox_victims(entries: dict[str, tuple[tuple[int, int], str]], over: int) -> list[str]:
    """The ``over`` items a full outbox drops: least important first (:func:`outbox_rank`), then oldest.

    :param entries: ``{item id: (rank, created at as ISO text)}``
    :param over: how many items are beyond the cap (nothing is dropped when it is 0 or less)
    """
    if over <= 0:
        return []
    # a full outbox evicts on every add: a partial selection, not a sort of the whole outbox
    return heapq.nsmallest(over, entries, key=lambda k: (tuple(entries[k][0]), entries[k][1], k))


def _entry_rank(entry: dict[str, Any]) -> tuple[tuple[int, int], str]:
    raw = entry.get("rank")
    rank = _UNKNOWN_RANK
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(r, int) for r in raw):
        rank = (int(raw[0]), int(raw[1]))
    return rank, str(entry.get("at", ""))


def log_outbox_evictions(ranks: dict[str, tuple[int, int]], cap: int) -> None:
    """Count and log what a full outbox dropped (every store with a cap calls this).

    :param ranks: the dropped items' :func:`outbox_rank` by id
    :param cap: the cap that was reached, for the log line
    """
    alerts = sorted(k for k, rank in ranks.items() if rank[0] > 0)
    metrics.incr("outbox", "dropped", count=len(ranks))
    if alerts:
        metrics.incr("outbox", "dropped_alerts", count=len(alerts))
    log.warning(
        "alerting outbox full (cap %d): dropped %d queued notification(s), least important first"
        " (%d summaries or edits, %d alerts): %s",
        cap,
        len(ranks),
        len(ranks) - len(alerts),
        len(alerts),
        ", ".join(sorted(ranks))[:300],
    )
