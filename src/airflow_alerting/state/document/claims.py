"""The document stores' occurrences and claims: throttle state per fingerprint, per-claimer counters."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import metrics, throttle
from airflow_alerting.model import (
    Decision,
    DecisionReason,
    Severity,
    SuppressionSummary,
    suppression_from_json,
    suppression_to_json,
)
from airflow_alerting.state.base import (
    COUNTER_SHARDS,
    MAX_OCCURRENCE_TIMES,
    MAX_SEEN_OCCURRENCES,
    Claim,
    OccurrenceRecord,
    OpenIncident,
)
from airflow_alerting.state.document.core import DocumentCore
from airflow_alerting.state.document.helpers import (
    _bounded_key,
    _Counted,
    _counter_until,
    _counters,
    _dump_channel,
    _fingerprint_document,
    _load_channel,
    _parse_occurrence,
    _running,
    _settled,
    _shard_of,
    _tally,
    _with_counts,
)


class DocumentClaims(DocumentCore):
    """Occurrences, claims, per-claimer counters and open incidents of delivered alerts."""

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
