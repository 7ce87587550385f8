"""Production-grade alerting for Apache Airflow 3.

Importing this package is cheap (DAG parsing pays for it): the public names below are
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_alerting.classify import Rule, SeverityClassifier, classify_error_severity
    from airflow_alerting.context import alert_from_context
    from airflow_alerting.incidents.model import Incident, IncidentState
    from airflow_alerting.incidents.silences import Silence
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.matching import AlertMatcher
    from airflow_alerting.model import Alert, AlertKind, AlertOutcome, NotificationAction, Severity
    from airflow_alerting.notifications.alert import AlertNotifier
    from airflow_alerting.policy import AlertPolicy, PolicyError
    from airflow_alerting.routing import Route, SeverityRouter

__all__ = [
    "Alert",
    "AlertKind",
    "AlertManager",
    "AlertMatcher",
    "AlertNotifier",
    "AlertOutcome",
    "AlertPolicy",
    "Incident",
    "IncidentState",
    "NotificationAction",
    "PolicyError",
    "Route",
    "Rule",
    "Severity",
    "SeverityClassifier",
    "SeverityRouter",
    "Silence",
    "alert_from_context",
    "classify_error_severity",
]

_LOCATIONS = {
    "Alert": "model",
    "AlertKind": "model",
    "AlertOutcome": "model",
    "Severity": "model",
    "NotificationAction": "model",
    "Incident": "incidents.model",
    "IncidentState": "incidents.model",
    "Silence": "incidents.silences",
    "AlertManager": "manager",
    "AlertMatcher": "matching",
    "AlertNotifier": "notifications.alert",
    "AlertPolicy": "policy",
    "PolicyError": "policy",
    "Route": "routing",
    "SeverityRouter": "routing",
    "Rule": "classify",
    "SeverityClassifier": "classify",
    "classify_error_severity": "classify",
    "alert_from_context": "context",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_alerting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"airflow_alerting.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
