"""The data that flows through the alert pipeline.

Everything here is a frozen dataclass or an enum with no Airflow imports, so every
stage can be unit-tested without an Airflow installation being initialised.

This module holds the alert itself and its classification, which DAG parsing needs (policy,
routing and classification import them).  What the pipeline decides and delivers lives in
:mod:`airflow_alerting.model_delivery` and the JSON codecs for the state stores in
:mod:`airflow_alerting.model_codecs`; both are re-exported here, loaded on first use, so that
parsing a DAG file does not pay for building classes only the alerting run uses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow_alerting._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_alerting.model_codecs import (
        notification_from_json,
        notification_to_json,
        suppression_from_json,
        suppression_to_json,
    )
    from airflow_alerting.model_delivery import (
        SENDING_REASONS,
        AlertOutcome,
        ChannelOutcome,
        Decision,
        DecisionReason,
        DeliveryResult,
        Escalation,
        HistoryEntry,
        Notification,
        NotificationAction,
        SuppressionSummary,
    )

__all__ = [
    "SENDING_REASONS",
    "Alert",
    "AlertKind",
    "AlertOutcome",
    "ChannelOutcome",
    "Classification",
    "Decision",
    "DecisionReason",
    "DeliveryResult",
    "Escalation",
    "HistoryEntry",
    "Notification",
    "NotificationAction",
    "Severity",
    "SuppressionSummary",
    "iso",
    "notification_from_json",
    "notification_to_json",
    "parse_datetime",
    "suppression_from_json",
    "suppression_to_json",
]

#: names re-exported from the modules split off this one, imported when first asked for
_LAZY = {
    "DecisionReason": "airflow_alerting.model_delivery",
    "SENDING_REASONS": "airflow_alerting.model_delivery",
    "SuppressionSummary": "airflow_alerting.model_delivery",
    "Decision": "airflow_alerting.model_delivery",
    "NotificationAction": "airflow_alerting.model_delivery",
    "Escalation": "airflow_alerting.model_delivery",
    "Notification": "airflow_alerting.model_delivery",
    "DeliveryResult": "airflow_alerting.model_delivery",
    "ChannelOutcome": "airflow_alerting.model_delivery",
    "AlertOutcome": "airflow_alerting.model_delivery",
    "HistoryEntry": "airflow_alerting.model_delivery",
    "_optional_text": "airflow_alerting.model_delivery",
    "suppression_to_json": "airflow_alerting.model_codecs",
    "suppression_from_json": "airflow_alerting.model_codecs",
    "notification_to_json": "airflow_alerting.model_codecs",
    "notification_from_json": "airflow_alerting.model_codecs",
}

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Severity(enum.IntEnum):
    """How bad a failure is; higher is worse so severities compare naturally."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lower-case name used in policies, messages and metrics (``"high"``)."""
        return self.name.lower()

    def raised(self, levels: int = 1) -> Severity:
        """Return the severity ``levels`` steps higher, capped at :attr:`CRITICAL`."""
        return Severity(min(int(Severity.CRITICAL), max(int(Severity.LOW), int(self) + levels)))

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Parse ``"high"``/``"HIGH"``/``3``/``Severity.HIGH``; raise ``ValueError`` naming the choices."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        choices = ", ".join(s.label for s in cls)
        raise ValueError(f"unknown severity {value!r}; expected one of: {choices}")


class AlertKind(str, enum.Enum):
    """Which Airflow event produced the alert."""

    TASK_FAILURE = "task_failure"
    TASK_RETRY = "task_retry"
    TASK_SUCCESS = "task_success"
    DAG_FAILURE = "dag_failure"
    DAG_SUCCESS = "dag_success"
    #: an alert built by user code through :meth:`AlertManager.send_alert`
    CUSTOM = "custom"

    @property
    def is_recovery(self) -> bool:
        return self in (AlertKind.TASK_SUCCESS, AlertKind.DAG_SUCCESS)


@dataclass(frozen=True)
class Alert:
    """One occurrence of something worth telling a human about.

    Built from an Airflow callback context by :func:`airflow_alerting.context.alert_from_context`
    or directly by user code.  Text fields hold *untrusted* data (exception messages come from
    arbitrary code); renderers escape them and never treat them as templates.
    """

    dag_id: str
    kind: AlertKind = AlertKind.TASK_FAILURE
    task_id: str | None = None
    run_id: str | None = None
    map_index: int = -1
    try_number: int = 1
    #: Airflow's ``max_tries`` (== ``retries`` for a fresh task instance)
    max_tries: int = 0
    exception_type: str | None = None
    #: qualified names of the exception's classes, most derived first (its MRO without ``object``)
    exception_mro: tuple[str, ...] = ()
    message: str = ""
    owner: str | None = None
    tags: frozenset[str] = frozenset()
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    #: number of tasks downstream of the failed one (all of them wait for it)
    downstream_count: int = 0
    logical_date: datetime | None = None
    occurred_at: datetime | None = None
    hostname: str | None = None
    log_url: str | None = None
    #: where the callback ran: ``"worker"``, ``"dag_processor"`` (scheduler-detected failures) or ``"user"``
    detected_by: str = "worker"
    #: the task's ``email`` addresses, used when no recipients are configured
    emails: tuple[str, ...] = ()
    #: alert title given by user code (``send_alert``); generated from the rest when empty
    title: str = ""

    @property
    def is_final_try(self) -> bool:
        """``True`` when Airflow will not run this task again.

        Decided from ``try_number`` vs ``max_tries`` rather than from the callback type,
        because Airflow has fired failure callbacks while retries remained (apache/airflow#65400).
        """
        if self.kind is AlertKind.TASK_RETRY:
            return False
        if self.kind is not AlertKind.TASK_FAILURE:
            # DAG-level contexts carry the last task's try numbers, which say nothing about the DAG run
            return True
        return self.try_number > self.max_tries

    @property
    def source(self) -> str:
        """``dag_id.task_id`` (plus ``[map_index]`` for mapped tasks), or the dag id alone."""
        if self.task_id is None:
            return self.dag_id
        suffix = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{suffix}"

    @property
    def incident_key(self) -> str:
        """Identity used to resolve open alerts when the task (or DAG) succeeds later.

        Deliberately ignores the run and map index: a later successful run recovers
        the failure of an earlier one.
        """
        return f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id

    @property
    def occurrence_id(self) -> str:
        """Identity of this exact callback, used to make duplicate callbacks idempotent."""
        if self.kind is AlertKind.CUSTOM:
            # user code calling send_alert twice means two alerts, not a repeated callback
            stamp = self.occurred_at.isoformat() if self.occurred_at else ""
            return f"{self.dag_id}|{self.task_id}|custom|{stamp}"
        return (
            f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}|{self.try_number}|{self.kind.value}"
        )

    @property
    def recurrence_group(self) -> str:
        """Occurrences that are one recurrence for escalation: every mapped instance and try of one run."""
        if self.kind is AlertKind.CUSTOM or self.run_id is None:
            return self.occurrence_id
        return f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.kind.value}"


@dataclass(frozen=True)
class Classification:
    """A severity and the human-readable reasons that produced it."""

    severity: Severity
    reasons: tuple[str, ...]
    #: ``True`` when policy says this alert is recorded but never sent (e.g. a retry under ``retry: silent``)
    silent: bool = False
    #: names of the rules that matched, in order
    rules: tuple[str, ...] = ()


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text for a datetime, ``None`` for ``None``."""
    return value.isoformat() if value is not None else None


def parse_datetime(value: Any) -> datetime | None:
    """Inverse of :func:`iso`; anything but a non-empty string reads as ``None``."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
