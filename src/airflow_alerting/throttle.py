"""The throttle decision: should this (fingerprint, channel) be sent now?

Pure functions over a :class:`ChannelState`; no I/O, no clock of their own.  The
document stores (memory, Variables) apply them read-modify-write; the SQL store
implements the same rules inside one atomic statement and is tested against these.

"Should we send", "send" and "remember that we sent" are three steps: :func:`claim`
tentatively marks the window as used with a lease, the manager delivers, then
:func:`confirm` keeps the mark or :func:`release` gives the window back (so a failed
send does not silence the next occurrence) and restores the suppressed counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting.model import (
    Decision,
    DecisionReason,
    Severity,
    SuppressionSummary,
    iso,
    parse_datetime,
    suppression_from_json,
    suppression_to_json,
)

#: distinct suppressed sources remembered per channel; a storm names a few and counts the rest
MAX_SOURCES = 10


@dataclass(frozen=True)
class ChannelState:
    """What the store remembers about one (fingerprint, channel)."""

    last_sent_at: datetime | None = None
    last_sent_severity: Severity | None = None
    suppressed: SuppressionSummary = field(default_factory=SuppressionSummary)
    #: a claim (tentative send) that has been neither confirmed nor released, valid until this time
    claim_token: str | None = None
    claim_expires_at: datetime | None = None
    #: values from before the pending claim, restored by :func:`release` or when the lease expires
    previous_sent_at: datetime | None = None
    previous_sent_severity: Severity | None = None
    previous_suppressed: SuppressionSummary = field(default_factory=SuppressionSummary)

    def settled(self, now: datetime) -> ChannelState:
        """Return the state with an expired claim rolled back (its sender crashed or hung)."""
        if self.claim_token is None or self.claim_expires_at is None or self.claim_expires_at > now:
            return self
        return _rolled_back(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "last_sent_at": iso(self.last_sent_at),
            "last_sent_severity": _label(self.last_sent_severity),
            "suppressed": suppression_to_json(self.suppressed),
            "claim_token": self.claim_token,
            "claim_expires_at": iso(self.claim_expires_at),
            "previous_sent_at": iso(self.previous_sent_at),
            "previous_sent_severity": _label(self.previous_sent_severity),
            "previous_suppressed": suppression_to_json(self.previous_suppressed),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChannelState:
        return cls(
            last_sent_at=parse_datetime(data.get("last_sent_at")),
            last_sent_severity=_severity(data.get("last_sent_severity")),
            suppressed=suppression_from_json(data.get("suppressed")),
            claim_token=data.get("claim_token"),
            claim_expires_at=parse_datetime(data.get("claim_expires_at")),
            previous_sent_at=parse_datetime(data.get("previous_sent_at")),
            previous_sent_severity=_severity(data.get("previous_sent_severity")),
            previous_suppressed=suppression_from_json(data.get("previous_suppressed")),
        )


def decide(
    state: ChannelState | None,
    *,
    now: datetime,
    window: timedelta,
    severity: Severity,
    escalated: bool = False,
) -> Decision:
    """Decide whether to send, with the reason and what was suppressed since the last send.

    :param state: the stored state for this (fingerprint, channel), ``None`` if never seen
    :param now: the current time (injected; the SQL store uses the database's clock)
    :param window: the throttle window for ``severity``; zero means always send
    :param severity: the severity of this occurrence after escalation
    :param escalated: the occurrence was raised by the escalation rule
    """
    if state is not None:
        state = state.settled(now)
    if state is not None and state.claim_token is not None and window > timedelta(0):
        return Decision(False, DecisionReason.IN_FLIGHT, detail="another worker is sending this alert")
    carried = state.suppressed if state is not None else SuppressionSummary()
    if escalated and (
        state is None or state.last_sent_severity is None or severity > state.last_sent_severity
    ):
        return Decision(True, DecisionReason.ESCALATED, carried)
    if window <= timedelta(0):
        return Decision(True, DecisionReason.NO_WINDOW, carried)
    if state is None or state.last_sent_at is None:
        return Decision(True, DecisionReason.FIRST, carried)
    elapsed = now - state.last_sent_at
    if elapsed >= window:
        return Decision(True, DecisionReason.WINDOW_ELAPSED, state.suppressed)
    remaining = int((window - elapsed).total_seconds())
    return Decision(False, DecisionReason.THROTTLED, detail=f"window has {remaining}s left")


def apply(
    state: ChannelState | None,
    decision: Decision,
    *,
    now: datetime,
    severity: Severity,
    source: str,
    token: str,
    lease: timedelta,
) -> ChannelState:
    """Return the state after ``decision``: a pending claim when sending, a counted suppression if not."""
    state = (state or ChannelState()).settled(now)
    if decision.send:
        return ChannelState(
            last_sent_at=now,
            last_sent_severity=severity,
            claim_token=token,
            claim_expires_at=now + lease,
            previous_sent_at=state.last_sent_at,
            previous_sent_severity=state.last_sent_severity,
            previous_suppressed=decision.suppressed,
        )
    return replace(state, suppressed=add_suppressed(state.suppressed, now, source))


def confirm(state: ChannelState, token: str) -> ChannelState:
    """Keep a claim after a successful delivery.  A claim that is no longer ours is left alone."""
    if state.claim_token != token:
        return state
    return replace(
        state,
        claim_token=None,
        claim_expires_at=None,
        previous_sent_at=None,
        previous_sent_severity=None,
        previous_suppressed=SuppressionSummary(),
    )


def release(state: ChannelState, token: str) -> ChannelState:
    """Give a claim back after a failed delivery, so the next occurrence is not throttled by it."""
    if state.claim_token != token:
        return state
    return _rolled_back(state)


def take_suppressed(state: ChannelState, count: int) -> ChannelState:
    """Remove ``count`` reported occurrences from the suppressed summary (a summary went out)."""
    remaining = state.suppressed.count - count
    if remaining <= 0:
        return replace(state, suppressed=SuppressionSummary())
    return replace(state, suppressed=replace(state.suppressed, count=remaining))


def add_suppressed(summary: SuppressionSummary, at: datetime, source: str) -> SuppressionSummary:
    sources = summary.sources
    if source not in sources and len(sources) < MAX_SOURCES:
        sources = (*sources, source)
    return SuppressionSummary(
        count=summary.count + 1,
        since=summary.since or at,
        until=at,
        sources=sources,
    )


def merge_suppressed(a: SuppressionSummary, b: SuppressionSummary) -> SuppressionSummary:
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    sources = tuple(dict.fromkeys((*a.sources, *b.sources)))[:MAX_SOURCES]
    starts = [d for d in (a.since, b.since) if d is not None]
    ends = [d for d in (a.until, b.until) if d is not None]
    return SuppressionSummary(
        count=a.count + b.count,
        since=min(starts) if starts else None,
        until=max(ends) if ends else None,
        sources=sources,
    )


def _rolled_back(state: ChannelState) -> ChannelState:
    return ChannelState(
        last_sent_at=state.previous_sent_at,
        last_sent_severity=state.previous_sent_severity,
        suppressed=merge_suppressed(state.previous_suppressed, state.suppressed),
    )


def _label(value: Severity | None) -> str | None:
    return value.label if value is not None else None


def _severity(value: Any) -> Severity | None:
    return Severity.parse(value) if value else None
