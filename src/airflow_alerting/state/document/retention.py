"""The document stores' retention: idle fingerprint, claim, counter and outbox documents."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting.state.base import (
    COUNTER_GRACE,
    OUTBOX_ITEM_MAX_AGE,
    OUTBOX_SHARDS,
    OutboxItem,
)
from airflow_alerting.state.document.helpers import (
    _counter_until,
    _counters,
    _last_activity,
    _list,
    _load_channel,
    _mapping,
    _parse_time,
)
from airflow_alerting.state.document.outbox import DocumentOutbox


class DocumentRetention(DocumentOutbox):
    """What ``prune_state()`` deletes."""

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
