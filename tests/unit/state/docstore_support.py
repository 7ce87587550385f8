"""A document store over a shared dict, for forcing the interleavings of several writers.

:class:`SharedDocuments` stands in for the Variables table: every :class:`DictStore` built on
it is another worker (its own writer id).  Reads and writes go through JSON like Variables do,
and are counted.  Before every verification re-read a store runs its ``on_pause`` hook, which is
where a test puts what another worker does in the meantime, e.g. write back the value it read
before our write (a concurrent read-modify-write from a stale read).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from airflow_alerting.state.base import DocumentStore


class SharedDocuments:
    """The documents every :class:`DictStore` on it reads and writes; every version is kept."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.versions: dict[str, list[str | None]] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            raw = self.values.get(key)
        return json.loads(raw) if raw is not None else None

    def put(self, key: str, document: dict[str, Any] | None) -> None:
        raw = json.dumps(document) if document is not None else None
        with self.lock:
            if raw is None:
                self.values.pop(key, None)
            else:
                self.values[key] = raw
            self.versions.setdefault(key, []).append(raw)

    def keys(self, prefix: str = "") -> list[str]:
        with self.lock:
            return sorted(k for k in self.values if k.startswith(prefix))


class DictStore(DocumentStore):
    """A non-atomic document store (like the Variables store) over :class:`SharedDocuments`.

    :param on_pause: called (with the store) where the store waits before re-reading a write
    :param frozen: keys whose writes are ignored, as Airflow ignores writes to a shadowed Variable
    """

    name = "dict"

    def __init__(
        self,
        shared: SharedDocuments | None = None,
        *,
        history_limit: int = 500,
        on_pause: Callable[[DictStore], None] | None = None,
        frozen: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(history_limit)
        self.shared = shared if shared is not None else SharedDocuments()
        self.on_pause = on_pause
        self.frozen = frozen
        #: what reads of a key return until this store writes it: the value from before a concurrent
        #: write, as seen by a worker whose reads came before that write
        self.stale: dict[str, dict[str, Any] | None] = {}
        self.reads = 0
        self.writes = 0

    @property
    def round_trips(self) -> int:
        return self.reads + self.writes

    def _read(self, key: str) -> dict[str, Any] | None:
        self.reads += 1
        if key in self.stale:
            value = self.stale[key]
            return json.loads(json.dumps(value)) if value is not None else None
        return self.shared.get(key)

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self.writes += 1
        self.stale.pop(key, None)
        if key not in self.frozen:
            self.shared.put(key, document)

    def _delete(self, key: str) -> None:
        self.writes += 1
        self.stale.pop(key, None)
        if key not in self.frozen:
            self.shared.put(key, None)

    def _pause(self, attempt: int = 0) -> None:
        if self.on_pause is not None:
            self.on_pause(self)


def restore_once(key_prefix: str) -> Callable[[DictStore], None]:
    """An ``on_pause`` hook: the first time, put back the value the key under ``key_prefix`` had before
    its latest write, as a worker that read it before our write and wrote after it would."""
    done: set[str] = set()

    def hook(store: DictStore) -> None:
        for key in store.shared.keys(key_prefix):
            versions = store.shared.versions.get(key, [])
            if key not in done and len(versions) >= 2:
                done.add(key)
                previous = versions[-2]
                store.shared.put(key, json.loads(previous) if previous is not None else None)

    return hook


def writers_in_one_shard(count: int, shards: int) -> list[str]:
    """Distinct writer ids that all hash to the same shard: claimers that share a document."""
    from airflow_alerting.state.base import _shard_of

    return [w for w in (f"writer-{n}" for n in range(1000)) if _shard_of(w, shards) == 0][:count]
