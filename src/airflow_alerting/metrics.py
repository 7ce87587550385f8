"""Counters and timers through Airflow's metrics (StatsD / OpenTelemetry when configured).

Names follow ``alerting.<what>[.<tag>]`` with only ``[A-Za-z0-9_.-]`` characters; Airflow
silently drops metrics when no backend is configured, so these calls cost little.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _stats() -> Any:
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # older task SDKs
        try:
            from airflow.stats import Stats
        except ImportError:
            return None
    return Stats


def metric_name(*parts: str) -> str:
    """Join parts into a safe metric name (``alerting.sent.slack``), at most 250 characters."""
    return ".".join(_UNSAFE.sub("_", p) for p in ("alerting", *parts) if p)[:250]


def incr(*parts: str, count: int = 1) -> None:
    """Increment ``alerting.<parts>``; never raises (metrics must not cost an alert)."""
    stats = _stats()
    if stats is None:
        return
    try:
        stats.incr(metric_name(*parts), count)
    except Exception:
        log.debug("metrics backend rejected %s", metric_name(*parts), exc_info=True)


def timing(seconds: float, *parts: str) -> None:
    """Record a duration (seconds) as ``alerting.<parts>``; never raises."""
    stats = _stats()
    if stats is None:
        return
    try:
        stats.timing(metric_name(*parts), seconds * 1000.0)
    except Exception:
        log.debug("metrics backend rejected %s", metric_name(*parts), exc_info=True)
