"""In-process state: for tests, ``dag.test()`` and single-process demos."""

from __future__ import annotations

import copy
import threading
from typing import Any

from airflow_alerting.state.base import DocumentStore


class MemoryStore(DocumentStore):
    """Keeps every document in a dict guarded by a lock; shared only within one process."""

    name = "memory"

    def __init__(self, history_limit: int = 500) -> None:
        super().__init__(history_limit)
        self._documents: dict[str, dict[str, Any]] = {}
        # claim() is read-modify-write; one lock makes it atomic between threads of this process
        self._lock = threading.RLock()

    def _read(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._documents.get(key)
            return copy.deepcopy(doc) if doc is not None else None

    def _write(self, key: str, document: dict[str, Any]) -> None:
        with self._lock:
            self._documents[key] = copy.deepcopy(document)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._documents.pop(key, None)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().claim(*args, **kwargs)

    def record_occurrence(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().record_occurrence(*args, **kwargs)

    def outbox_claim(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().outbox_claim(*args, **kwargs)

    def clear(self) -> None:
        """Forget everything (between tests)."""
        with self._lock:
            self._documents.clear()
