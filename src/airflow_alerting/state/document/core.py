"""The document stores' core: read/write primitives, verified writes, the index ``prune_state()`` walks."""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting import metrics
from airflow_alerting.incidents.model import (
    Incident,
    Occurrence,
)

if TYPE_CHECKING:
    from airflow_alerting.incidents.lifecycle import IncidentRules


from airflow_alerting.state.base import (
    COUNTER_GRACE,
    DEFAULT_HISTORY_LIMIT,
    KEY_SHARDS,
    VERIFY_ROUNDS,
    StateStore,
    StateUnavailableError,
)
from airflow_alerting.state.document.helpers import _mapping, _shard_of

log = logging.getLogger(__name__)


class DocumentCore(StateStore):
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
        # incidents this store opened and members it added, yet to be listed (see _join_verified)
        self._unlisted: dict[str, Incident] = {}
        self._unlisted_members: set[tuple[str, str, str]] = set()
        # joins to check once more after the deliveries: (occurrence, rules, incident id, previous id)
        self._unchecked: list[tuple[Occurrence, IncidentRules, str, str | None]] = []

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
