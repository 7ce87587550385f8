"""The document stores' alert history: shards, heads and chunks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from airflow_alerting.model import (
    HistoryEntry,
)
from airflow_alerting.state.base import (
    HISTORY_CHUNK,
    HISTORY_SHARDS,
)
from airflow_alerting.state.document.claims import DocumentClaims
from airflow_alerting.state.document.helpers import _list, _shard_of


class DocumentHistory(DocumentClaims):
    """The alert history, sharded by writer."""

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
