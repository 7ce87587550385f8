"""Delivery channels: Slack, email and PagerDuty.

The classes are resolved lazily (PEP 562) so ``import airflow_alerting.channels`` in a DAG
file costs nothing; provider hooks, slack_sdk, requests and jinja2 are imported only when a
channel actually delivers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from airflow_alerting.channels.base import Channel

if TYPE_CHECKING:
    from airflow_alerting.channels.email import EmailChannel
    from airflow_alerting.channels.pagerduty import PagerDutyChannel
    from airflow_alerting.channels.slack import SlackChannel

__all__ = ["Channel", "EmailChannel", "PagerDutyChannel", "SlackChannel"]

_LAZY = {
    "EmailChannel": "airflow_alerting.channels.email",
    "PagerDutyChannel": "airflow_alerting.channels.pagerduty",
    "SlackChannel": "airflow_alerting.channels.slack",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
