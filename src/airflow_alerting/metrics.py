"""Counters and timers through Airflow's metrics (StatsD / OpenTelemetry when configured).

Names follow ``alerting.<what>[.<tag>]`` with only ``[A-Za-z0-9_.-]`` characters; Airflow
silently drops metrics when no backend is configured, so these calls cost little.
"""

from __future__ import annotations

import contextlib
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
    """Join parts into a safe metric name (``alerting.sent.slack``), at most 250 characters.

    Anything outside ``[A-Za-z0-9_.-]`` (spaces, non-ASCII letters, lone surrogates) becomes
    ``_``; empty and ``None`` parts are left out, other non-strings converted with ``str()``.
    """
    texts = ("" if p is None else p if isinstance(p, str) else str(p) for p in ("alerting", *parts))
    return ".".join(_UNSAFE.sub("_", text) for text in texts if text)[:250]


def _emit(method: str, parts: tuple[str, ...], value: float) -> None:
    # Everything, not just the backend call, is inside the try: building the name, importing
    # Airflow's Stats (which can fail on a bad [metrics] configuration) and the backend itself
    # all run in the alert pipeline, where a metric is never worth an exception.
    name: str | None = None
    try:
        name = metric_name(*parts)
        stats = _stats()
        if stats is not None:
            getattr(stats, method)(name, value)
    except Exception:
        # a broken logging handler must not escape either
        with contextlib.suppress(Exception):
            log.debug("metrics backend rejected %s", name or "a metric", exc_info=True)


def incr(*parts: str, count: int = 1) -> None:
    """Increment ``alerting.<parts>``; never raises (metrics must not cost an alert)."""
    _emit("incr", parts, count)


def timing(seconds: float, *parts: str) -> None:
    """Record a duration (seconds) as ``alerting.<parts>``; never raises."""
    try:
        milliseconds = seconds * 1000.0
    except Exception:
        return
    _emit("timing", parts, milliseconds)
