"""Claims' rows as decisions and channel states: what :mod:`.claims` reads back and writes.

The reasons follow :func:`airflow_alerting.throttle.decide`'s precedence; the model test
(tests/unit/state/test_sql_store_model.py) holds the two together.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting import throttle
from airflow_alerting.model import Decision, DecisionReason, Severity, SuppressionSummary

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

#: the stored form of "no suppressed sources"
_EMPTY_SOURCES = "[]"


def _sending_decision(row: Row[Any], window: timedelta, severity: Severity, escalated: bool) -> Decision:
    """The reason ``throttle.decide`` gives for a send, from the state before the claim (``previous_*``).

    Same precedence as ``decide``: escalation, then a zero window, then first, then window elapsed;
    the model test (tests/unit/state/test_sql_store_model.py) holds the two together.
    """
    carried = _summary(
        row.previous_suppressed_count,
        row.previous_suppressed_since,
        row.previous_suppressed_until,
        row.previous_suppressed_sources,
    )
    previous_severity = _severity(row.previous_sent_severity)
    if escalated and (previous_severity is None or severity > previous_severity):
        reason = DecisionReason.ESCALATED
    elif window <= timedelta(0):
        reason = DecisionReason.NO_WINDOW
    elif row.previous_sent_at is None:
        reason = DecisionReason.FIRST
    else:
        reason = DecisionReason.WINDOW_ELAPSED
    return Decision(True, reason, carried)


def _held_decision(row: Row[Any], window: timedelta) -> Decision:
    """``throttle.decide``'s verdict for a held-back occurrence, from the row the suppression left.

    Like the document stores, it carries the running suppressed summary, this occurrence included,
    so the manager can tell the first occurrence held back after a send.
    """
    running = _summary(
        row.suppressed_count, row.suppressed_since, row.suppressed_until, row.suppressed_sources
    )
    if row.claim_token is not None:
        return Decision(False, DecisionReason.IN_FLIGHT, running, "another worker is sending this alert")
    remaining = int((window - (row.db_now - row.last_sent_at)).total_seconds())
    return Decision(False, DecisionReason.THROTTLED, running, f"window has {max(remaining, 0)}s left")


def _severity(value: Any) -> Severity | None:
    return None if value is None else Severity(int(value))


def _sources(value: Any) -> tuple[str, ...]:
    parsed = json.loads(value) if value else []
    if not isinstance(parsed, list):
        raise ValueError(f"suppressed sources must be a JSON array, found {type(parsed).__name__}")
    return tuple(str(source) for source in parsed)


def _summary(count: Any, since: datetime | None, until: datetime | None, sources: Any) -> SuppressionSummary:
    return SuppressionSummary(count=int(count or 0), since=since, until=until, sources=_sources(sources))


def _state_from_row(row: Row[Any]) -> throttle.ChannelState:
    return throttle.ChannelState(
        last_sent_at=row.last_sent_at,
        last_sent_severity=_severity(row.last_sent_severity),
        suppressed=_summary(
            row.suppressed_count, row.suppressed_since, row.suppressed_until, row.suppressed_sources
        ),
        claim_token=row.claim_token,
        claim_expires_at=row.claim_expires_at,
        previous_sent_at=row.previous_sent_at,
        previous_sent_severity=_severity(row.previous_sent_severity),
        previous_suppressed=_summary(
            row.previous_suppressed_count,
            row.previous_suppressed_since,
            row.previous_suppressed_until,
            row.previous_suppressed_sources,
        ),
    )


def _state_values(state: throttle.ChannelState) -> dict[str, Any]:
    def summary(prefix: str, value: SuppressionSummary) -> dict[str, Any]:
        return {
            f"{prefix}_count": value.count,
            f"{prefix}_since": value.since,
            f"{prefix}_until": value.until,
            f"{prefix}_sources": json.dumps(list(value.sources)),
        }

    return {
        "last_sent_at": state.last_sent_at,
        "last_sent_severity": None if state.last_sent_severity is None else int(state.last_sent_severity),
        "claim_token": state.claim_token,
        "claim_expires_at": state.claim_expires_at,
        "previous_sent_at": state.previous_sent_at,
        "previous_sent_severity": None
        if state.previous_sent_severity is None
        else int(state.previous_sent_severity),
        **summary("suppressed", state.suppressed),
        **summary("previous_suppressed", state.previous_suppressed),
    }
