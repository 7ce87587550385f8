"""Helpers of the document stores: channel state, per-claimer counters, parsing, shards and keys."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from airflow_alerting import throttle
from airflow_alerting.model import (
    SuppressionSummary,
    suppression_from_json,
)


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
