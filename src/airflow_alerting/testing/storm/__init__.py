"""Failure storms: one root cause failing hundreds of tasks, mixed with unrelated failures.

Shared by the tests, ``bench/storm.py`` and ``airflow alerting simulate``, so all of them
measure the same storm:

- :func:`generate_storm` builds a deterministic :class:`Storm` for a seed: by default a
  PostgreSQL outage failing 500 tasks in 20 DAGs within 10 minutes, and 30 unrelated causes
  with 1-6 failures each.  Messages vary the way real ones do (hosts, IPs, ports, ids, dates),
  so correlation has to normalise them; unrelated causes come in near-miss pairs (HTTP 404 vs
  500, ``ORA-00942`` vs ``ORA-01017``, exit code 137 vs 1 ...) that correlation must keep apart.
- :func:`storm_alert` turns a :class:`StormEvent` into the :class:`~airflow_alerting.model.Alert`
  a final-try failure callback would produce.
- :func:`replay` feeds a storm to an :class:`~airflow_alerting.manager.AlertManager` under a
  :class:`~airflow_alerting.testing.FrozenClock` and returns a :class:`ReplayReport`: messages
  per channel against the stock one-message-per-failure approach, incidents, and failures that
  were lost, counted twice or never named.
"""

from __future__ import annotations

from airflow_alerting.testing.storm.generate import (
    OUTAGE_CAUSE,
    Storm,
    StormEvent,
    generate_storm,
    storm_alert,
)
from airflow_alerting.testing.storm.replay import (
    EDIT_ACTIONS,
    MESSAGE_ACTIONS,
    SETTLE,
    ReplayReport,
    replay,
    summarise,
)

__all__ = [
    "EDIT_ACTIONS",
    "MESSAGE_ACTIONS",
    "OUTAGE_CAUSE",
    "SETTLE",
    "ReplayReport",
    "Storm",
    "StormEvent",
    "generate_storm",
    "replay",
    "storm_alert",
    "summarise",
]
