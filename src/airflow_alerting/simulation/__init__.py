"""Policy tuning without waiting for failures: replay events (:func:`simulate`), compare two
policies (:func:`compare`), and explain what the pipeline would do with one alert (:func:`explain`).

Shared by ``airflow alerting simulate`` and ``airflow alerting explain``.
"""

from __future__ import annotations

from airflow_alerting.simulation.compare import ChannelDelta, Comparison, compare
from airflow_alerting.simulation.events import (
    EventError,
    FailureEvent,
    parse_event,
    parse_lines,
    read_events,
    storm_events,
    write_events,
)
from airflow_alerting.simulation.explain import ChannelVerdict, Explanation, IncidentProjection, explain
from airflow_alerting.simulation.run import (
    CauseCounts,
    ChannelCounts,
    IncidentSummary,
    SimulationResult,
    simulate,
)

__all__ = [
    "CauseCounts",
    "ChannelCounts",
    "ChannelDelta",
    "ChannelVerdict",
    "Comparison",
    "EventError",
    "Explanation",
    "FailureEvent",
    "IncidentProjection",
    "IncidentSummary",
    "SimulationResult",
    "compare",
    "explain",
    "parse_event",
    "parse_lines",
    "read_events",
    "simulate",
    "storm_events",
    "write_events",
]
