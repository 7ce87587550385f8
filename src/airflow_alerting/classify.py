"""Severity classification: how bad is this failure, and why.

The classifier looks at the exception (type with its bases, and message), the task's
context (will it retry, business impact, how much waits downstream), optional business
hours and critical windows, and user rules; it returns a
:class:`~airflow_alerting.model.Classification` whose ``reasons`` say, in words, every
step that shaped the result.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import Alert, AlertKind, Classification, Severity


@dataclass(frozen=True)
class Rule:
    """A classification rule: when ``match`` matches, set a severity and/or raise it.

    Rules are evaluated in order; the first rule with a ``severity`` decides the base severity,
    every matching rule's ``raise_by`` (which may be negative) is applied after it.

    :param name: short identifier shown in reasons and logs
    :param match: the criteria
    :param severity: the severity to set, or ``None`` for an adjust-only rule
    :param raise_by: levels to raise (negative lowers) after the base severity is known
    :param description: why the rule exists, shown in reasons
    """

    name: str
    match: AlertMatcher
    severity: Severity | None = None
    raise_by: int = 0
    description: str = ""


@dataclass(frozen=True)
class BusinessHours:
    """Working hours, for the optional "quieter outside business hours" factor.

    :param timezone: IANA zone name
    :param days: ISO weekdays (1 = Monday) that are working days
    :param start: start of the working day (local time)
    :param end: end of the working day (local time)
    """

    timezone: str = "UTC"
    days: tuple[int, ...] = (1, 2, 3, 4, 5)
    start: time = time(9, 0)
    end: time = time(18, 0)

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # fail at policy load on an unknown zone
        if self.start == self.end:
            raise ValueError("business hours: start and end must differ")

    def contains(self, moment: datetime) -> bool:
        """``True`` inside the hours; ``end`` before ``start`` means the hours wrap past midnight.

        Compared on the local wall clock, so the hours follow daylight-saving changes; a naive
        ``moment`` is taken as UTC.
        """
        local = _aware(moment).astimezone(ZoneInfo(self.timezone))
        now = local.time()
        if self.start < self.end:
            return local.isoweekday() in self.days and self.start <= now < self.end
        # a night shift (22:00-06:00) belongs to the day it started on
        if now >= self.start:
            return local.isoweekday() in self.days
        return (local - timedelta(days=1)).isoweekday() in self.days and now < self.end


@dataclass(frozen=True)
class CriticalWindow:
    """A period in which failures matter more (month-end close, a launch), so severity is raised.

    A window covers ``start`` to ``end`` (local time) on each of its days; an ``end`` before
    ``start`` wraps past midnight and the early hours belong to the day the window started on,
    and ``start == end`` covers the whole 24 hours from ``start``.  A day must satisfy both
    ``days_of_month`` and ``weekdays`` when both are given; an empty one allows every day.

    :param name: short identifier shown in reasons
    :param timezone: IANA zone name the days and times are read in
    :param days_of_month: days of the month; negative counts from the month's end (-1 is the last
        day, -2 the one before), so a month-end window works for every month length.  A day the
        month does not have (31 in April) simply never matches
    :param weekdays: ISO weekdays (1 = Monday)
    :param start: start of the window (local time)
    :param end: end of the window (local time), exclusive
    :param raise_by: levels to raise an alert inside the window (capped at critical)
    :param match: only alerts this matches are raised; every alert when ``None``
    """

    name: str
    timezone: str = "UTC"
    days_of_month: tuple[int, ...] = ()
    weekdays: tuple[int, ...] = ()
    start: time = time(0, 0)
    end: time = time(0, 0)
    raise_by: int = 1
    match: AlertMatcher | None = None

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # first, so an unknown zone is what a policy load reports for it
        if not self.name:
            raise ValueError("critical window: name must not be empty")
        if any(not 1 <= abs(d) <= 31 for d in self.days_of_month):
            raise ValueError("critical window: days_of_month must be 1..31 or -31..-1")
        if any(not 1 <= d <= 7 for d in self.weekdays):
            raise ValueError("critical window: weekdays must be 1..7 (1 = Monday)")
        if self.raise_by < 1:
            raise ValueError("critical window: raise_by must be at least 1")

    def day_of(self, moment: datetime) -> date | None:
        """The local day of the window that contains ``moment``, or ``None`` when outside it.

        That is the day the window started on, which for a window wrapping midnight is the day
        before ``moment``'s local date.  A naive ``moment`` is taken as UTC.
        """
        local = _aware(moment).astimezone(ZoneInfo(self.timezone))
        now = local.time()
        today = local.date()
        if self.start < self.end:
            inside = self.start <= now < self.end
            return today if inside and self._is_window_day(today) else None
        if now >= self.start:
            return today if self._is_window_day(today) else None
        yesterday = today - timedelta(days=1)
        return yesterday if now < self.end and self._is_window_day(yesterday) else None

    def contains(self, moment: datetime) -> bool:
        """``True`` when ``moment`` falls inside the window (the alert is not looked at)."""
        return self.day_of(moment) is not None

    def _is_window_day(self, day: date) -> bool:
        if self.weekdays and day.isoweekday() not in self.weekdays:
            return False
        if not self.days_of_month:
            return True
        last = calendar.monthrange(day.year, day.month)[1]
        # -1 is the last day: 31 in January, 28 or 29 in February
        return any(day.day == (d if d > 0 else last + 1 + d) for d in self.days_of_month)


def _aware(moment: datetime) -> datetime:
    # astimezone() would read a naive datetime in the host's zone; the package's clocks are UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _rule(name: str, severity: Severity, description: str, **match: Any) -> Rule:
    return Rule(name=name, match=AlertMatcher(**match), severity=severity, description=description)


#: The default rule set, documented as a table in docs/classification.md.  Order matters:
#: the first rule with a severity wins, so the most specific causes come first.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(
        "dag_run_failed",
        Severity.MEDIUM,
        "the DAG run failed; its failed tasks alert on their own",
        kinds=("dag_failure",),
    ),
    _rule(
        "scheduler_detected",
        Severity.HIGH,
        "the task died without raising (killed, OOM or heartbeat timeout, detected by the scheduler)",
        no_exception=True,
    ),
    _rule(
        "disk_full",
        Severity.CRITICAL,
        "the host ran out of disk: every task on it will fail",
        message_patterns=(r"no space left on device", r"disk (is )?full", r"quota exceeded"),
    ),
    _rule(
        "out_of_memory",
        Severity.HIGH,
        "out of memory: retrying rarely helps",
        exception_types=("MemoryError",),
    ),
    _rule(
        "out_of_memory_message",
        Severity.HIGH,
        "out of memory: retrying rarely helps",
        message_patterns=(r"out of memory", r"oomkilled", r"cannot allocate memory"),
    ),
    _rule(
        "permission",
        Severity.HIGH,
        "credentials or permissions are wrong: needs a human, retries will not fix it",
        exception_types=("PermissionError",),
    ),
    _rule(
        "permission_message",
        Severity.HIGH,
        "credentials or permissions are wrong: needs a human, retries will not fix it",
        message_patterns=(
            r"permission denied",
            r"access denied",
            r"forbidden",
            r"unauthori[sz]ed",
            r"authentication failed",
            r"invalid credentials",
        ),
    ),
    _rule(
        "task_timeout",
        Severity.HIGH,
        "the task exceeded its execution_timeout",
        exception_types=("AirflowTaskTimeout", "AirflowTaskTerminated"),
    ),
    _rule(
        "code_error",
        Severity.HIGH,
        "a programming error: it fails the same way until the code is fixed",
        exception_types=(
            "ImportError",
            "NameError",
            "AttributeError",
            "TypeError",
            "KeyError",
            "SyntaxError",
            "NotImplementedError",
        ),
    ),
    _rule(
        "data_quality",
        Severity.MEDIUM,
        "a data-quality check failed",
        message_patterns=(
            r"data[ -]quality",
            r"validation failed",
            r"\bnull\b",
            r"duplicate (key|rows?|records?)",
            r"schema mismatch",
            r"row count",
            r"check failed",
        ),
    ),
    _rule(
        "data_quality_exception",
        Severity.MEDIUM,
        "a data-quality check failed",
        exception_types=("AssertionError", "DataQualityError", "ValidationError"),
    ),
    _rule(
        "sensor_timeout",
        Severity.MEDIUM,
        "a sensor gave up waiting",
        exception_types=("AirflowSensorTimeout",),
    ),
    _rule(
        "transient_network",
        Severity.MEDIUM,
        "a transient network or upstream-service error",
        exception_types=("ConnectionError", "TimeoutError", "socket.timeout", "HTTPError"),
    ),
    _rule(
        "transient_message",
        Severity.MEDIUM,
        "a transient network or upstream-service error",
        message_patterns=(
            r"connection (refused|reset|aborted)",
            r"timed? ?out",
            r"temporar(il)?y unavailable",
            r"too many requests",
            r"rate limit",
            r"\b50[234]\b",
        ),
    ),
)

#: tags that mark business impact, compared case-insensitively
CRITICAL_IMPACT_TAGS = ("tier:1", "tier1", "critical", "business-critical")
HIGH_IMPACT_TAGS = ("tier:2", "tier2", "high-impact")


@dataclass(frozen=True)
class SeverityClassifier:
    """Turns an :class:`~airflow_alerting.model.Alert` into a severity with reasons.

    :param rules: user rules, evaluated before the defaults
    :param include_default_rules: also use :data:`DEFAULT_RULES`
    :param default_severity: severity when no rule matches
    :param retry_severity: severity of a failure that Airflow will retry; ``None`` makes it silent
        (recorded and counted, never sent)
    :param impact_param: DAG/task param whose value (``critical``/``high``) sets a severity floor
    :param downstream_threshold: raise one level when at least this many tasks wait downstream
        (0 disables)
    :param business_hours: working hours; outside them, ``off_hours_lower_by`` levels are taken off
        non-critical alerts
    :param off_hours_lower_by: levels to lower outside business hours
    :param critical_windows: periods that raise the severity of the alerts they match; applied after
        the business-hours lowering, so a month-end night failure is lowered, then raised again
    :param clock: returns "now", used only for an alert without ``occurred_at`` (the
        :class:`~airflow_alerting.manager.AlertManager` always sets it, from its own clock)
    """

    rules: tuple[Rule, ...] = ()
    include_default_rules: bool = True
    default_severity: Severity = Severity.MEDIUM
    retry_severity: Severity | None = Severity.LOW
    impact_param: str = "business_impact"
    critical_tags: tuple[str, ...] = CRITICAL_IMPACT_TAGS
    high_tags: tuple[str, ...] = HIGH_IMPACT_TAGS
    downstream_threshold: int = 10
    business_hours: BusinessHours | None = None
    off_hours_lower_by: int = 0
    critical_windows: tuple[CriticalWindow, ...] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc), compare=False)

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        return self.rules + (DEFAULT_RULES if self.include_default_rules else ())

    def classify(self, alert: Alert) -> Classification:
        """Classify ``alert``; the reasons list every factor that applied, in order."""
        if alert.kind.is_recovery:
            return Classification(Severity.LOW, ("the task recovered",))
        if alert.kind in (AlertKind.TASK_FAILURE, AlertKind.TASK_RETRY) and not alert.is_final_try:
            return self._retry(alert)

        reasons: list[str] = []
        matched: list[str] = []
        severity: Severity | None = None
        adjust = 0
        for rule in self.all_rules:
            if rule.severity is not None and severity is not None:
                continue  # the first matching severity rule decided: later ones cannot add anything
            why = rule.match.explain(alert)
            if why is None:
                continue
            if rule.severity is not None and severity is None:
                severity = rule.severity
                matched.append(rule.name)
                reasons.append(_rule_reason(rule, why, f"severity {rule.severity.label}"))
            elif rule.raise_by and rule.severity is None:
                adjust += rule.raise_by
                matched.append(rule.name)
                reasons.append(_rule_reason(rule, why, f"{rule.raise_by:+d} level(s)"))
        if severity is None:
            severity = self.default_severity
            reasons.append(f"no rule matched: default severity {severity.label}")
        if adjust:
            severity = severity.raised(adjust)

        if alert.kind is AlertKind.TASK_FAILURE and alert.try_number > 1:
            reasons.append(f"final failure after {alert.try_number} tries")

        if alert.kind is not AlertKind.DAG_FAILURE:
            # a tier-1 DAG's failed tasks page on their own; its DAG-level alert must not page again
            severity = self._apply_impact(alert, severity, reasons)
        if self.downstream_threshold and alert.downstream_count >= self.downstream_threshold:
            raised = severity.raised()
            if raised != severity:
                reasons.append(
                    f"{alert.downstream_count} downstream tasks are blocked "
                    f"(>= {self.downstream_threshold}): raised to {raised.label}"
                )
                severity = raised
        # the moment of the failure decides, not when classification happens to run: the manager
        # stamps occurred_at from its injectable clock, so a frozen clock decides the hours too
        moment = alert.occurred_at or self.clock()
        severity = self._apply_business_hours(moment, severity, reasons)
        severity = self._apply_critical_windows(alert, moment, severity, reasons)
        return Classification(severity, tuple(reasons), rules=tuple(matched))

    def _retry(self, alert: Alert) -> Classification:
        tries = f"try {alert.try_number} of {alert.max_tries + 1}"
        if self.retry_severity is None:
            return Classification(Severity.LOW, (f"will retry ({tries}): silent by policy",), silent=True)
        return Classification(
            self.retry_severity, (f"will retry ({tries}): {self.retry_severity.label} until the final try",)
        )

    def _apply_impact(self, alert: Alert, severity: Severity, reasons: list[str]) -> Severity:
        tags = {t.lower() for t in alert.tags}
        impact = str(alert.params.get(self.impact_param, "")).strip().lower()
        floor: Severity | None = None
        why = ""
        critical_tag = next((t for t in self.critical_tags if t.lower() in tags), None)
        high_tag = next((t for t in self.high_tags if t.lower() in tags), None)
        if impact == "critical" or critical_tag:
            floor = Severity.CRITICAL
            why = f"tag {critical_tag}" if critical_tag else f"param {self.impact_param}=critical"
        elif impact == "high" or high_tag:
            floor = Severity.HIGH
            why = f"tag {high_tag}" if high_tag else f"param {self.impact_param}=high"
        if floor is not None and severity < floor:
            reasons.append(f"business impact ({why}): raised to {floor.label}")
            return floor
        return severity

    def _apply_business_hours(self, moment: datetime, severity: Severity, reasons: list[str]) -> Severity:
        if self.business_hours is None or not self.off_hours_lower_by or severity is Severity.CRITICAL:
            return severity
        if self.business_hours.contains(moment):
            return severity
        lowered = severity.raised(-self.off_hours_lower_by)
        if lowered != severity:
            reasons.append(f"outside business hours: lowered to {lowered.label}")
        return lowered

    def _apply_critical_windows(
        self, alert: Alert, moment: datetime, severity: Severity, reasons: list[str]
    ) -> Severity:
        for window in self.critical_windows:
            day = window.day_of(moment)
            if day is None:
                continue
            why = window.match.explain(alert) if window.match is not None else ""
            if why is None:
                continue
            raised = severity.raised(window.raise_by)
            if raised == severity:
                continue  # already critical: nothing to explain
            where = f"{day.isoformat()} {window.timezone}" + (f"; {why}" if why else "")
            reasons.append(f"inside critical window {window.name} ({where}): raised to {raised.label}")
            severity = raised
        return severity


def _rule_reason(rule: Rule, why: str, effect: str) -> str:
    text = f"rule {rule.name} ({why}): {effect}"
    return f"{text}, {rule.description}" if rule.description else text


def classify_error_severity(
    exception: BaseException | None,
    context: Any = None,
    *,
    classifier: SeverityClassifier | None = None,
) -> Severity:
    """Classify an exception, optionally in an Airflow callback context, with the default rules.

    :param exception: the exception (``None`` for failures detected by the scheduler)
    :param context: an Airflow callback context; its exception is replaced by ``exception``
    :param classifier: a custom classifier; the default rule set when omitted
    """
    from airflow_alerting.context import alert_from_context

    merged: dict[str, Any] = dict(context or {})
    merged["exception"] = exception
    # without a task instance the kind cannot be inferred; an exception means a task failed
    kind = (
        None
        if (merged.get("ti") or merged.get("task_instance") or merged.get("reason"))
        else AlertKind.TASK_FAILURE
    )
    alert = alert_from_context(merged, kind=kind)
    return (classifier or SeverityClassifier()).classify(alert).severity
