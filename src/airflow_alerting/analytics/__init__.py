"""Analytics over the alert history and incidents: what is noisy, what is held back, how fast
people react, and which causes are rising.

    from airflow_alerting.analytics import Analytics

    analytics = Analytics(store)
    analytics.noisiest(since, by="dag")

See ``docs/analytics.md``.
"""

from __future__ import annotations

from airflow_alerting.analytics.api import Analytics
from airflow_alerting.analytics.results import (
    NO_KEY,
    AnalyticsReport,
    NoiseRow,
    ResponseTimes,
    SuppressionSummary,
    Trend,
    VolumeBucket,
    history_entry_json,
)
from airflow_alerting.model import HistoryEntry

__all__ = [
    "NO_KEY",
    "Analytics",
    "AnalyticsReport",
    "HistoryEntry",
    "NoiseRow",
    "ResponseTimes",
    "SuppressionSummary",
    "Trend",
    "VolumeBucket",
    "history_entry_json",
]
