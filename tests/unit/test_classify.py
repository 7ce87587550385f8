"""Severity classification: the default rule table, retries, business impact, hours, windows, user rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date, datetime, time, timezone
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from airflow_alerting.classify import (
    BusinessHours,
    CriticalWindow,
    Rule,
    SeverityClassifier,
    classify_error_severity,
)
from airflow_alerting.context import alert_from_context
from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import Alert, AlertKind, Classification, Severity


class WarehouseDenied(PermissionError):
    """A user exception: must classify like its base class."""


class DataQualityError(Exception):
    """Named like a well-known data-quality exception, defined in user code."""


def _mro(exc_type: type[BaseException]) -> tuple[str, ...]:
    names = []
    for cls in exc_type.__mro__:
        if cls in (object, BaseException):
            continue
        module = cls.__module__
        names.append(cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}")
    return tuple(names)


def make_alert(
    exc: type[BaseException] | str | None = None,
    message: str = "",
    **overrides: Any,
) -> Alert:
    """A final-try task failure; ``exc`` may be a class or a qualified name (for Airflow exceptions)."""
    fields: dict[str, Any] = {"dag_id": "etl", "task_id": "load", "run_id": "r1", "message": message}
    if isinstance(exc, type):
        fields["exception_mro"] = _mro(exc)
        fields["exception_type"] = fields["exception_mro"][0]
    elif isinstance(exc, str):
        fields["exception_type"] = exc
        fields["exception_mro"] = (exc,)
    fields.update(overrides)
    return Alert(**fields)


def classify(alert: Alert, **classifier_kwargs: Any) -> Classification:
    return SeverityClassifier(**classifier_kwargs).classify(alert)


def mentions(classification: Classification, text: str) -> bool:
    return any(text in reason for reason in classification.reasons)


# --- the default rule table ---------------------------------------------------------------

DEFAULT_TABLE = [
    # (id, exception, message, expected severity, rule that must decide)
    ("permission_error", PermissionError, "nope", Severity.HIGH, "permission"),
    ("permission_subclass", WarehouseDenied, "role LOADER lacks USAGE", Severity.HIGH, "permission"),
    ("memory_error", MemoryError, "", Severity.HIGH, "out_of_memory"),
    ("key_error", KeyError, "'customer_id'", Severity.HIGH, "code_error"),
    ("import_subclass", ModuleNotFoundError, "No module named 'pandas'", Severity.HIGH, "code_error"),
    ("attribute_error", AttributeError, "'NoneType' has no attribute 'x'", Severity.HIGH, "code_error"),
    (
        "airflow_task_timeout",
        "airflow.sdk.exceptions.AirflowTaskTimeout",
        "Timeout, PID: 4242",
        Severity.HIGH,
        "task_timeout",
    ),
    ("assertion", AssertionError, "", Severity.MEDIUM, "data_quality_exception"),
    ("user_dq_exception", DataQualityError, "orders", Severity.MEDIUM, "data_quality_exception"),
    ("connection_subclass", ConnectionRefusedError, "[Errno 111]", Severity.MEDIUM, "transient_network"),
    ("timeout_error", TimeoutError, "", Severity.MEDIUM, "transient_network"),
    (
        "sensor_timeout",
        "airflow.sdk.exceptions.AirflowSensorTimeout",
        "Sensor gave up after 3600 seconds",
        Severity.MEDIUM,
        "sensor_timeout",
    ),
    ("disk_full_message", OSError, "[Errno 28] No space left on device", Severity.CRITICAL, "disk_full"),
    ("quota_message", RuntimeError, "Quota exceeded for bucket raw", Severity.CRITICAL, "disk_full"),
    ("oom_message", RuntimeError, "Pod was OOMKilled", Severity.HIGH, "out_of_memory_message"),
    ("forbidden_message", RuntimeError, "403 Client Error: Forbidden", Severity.HIGH, "permission_message"),
    ("auth_message", RuntimeError, "authentication failed for user etl", Severity.HIGH, "permission_message"),
    ("dq_message", ValueError, "Data quality check failed: 12 NULL ids", Severity.MEDIUM, "data_quality"),
    ("duplicate_key", ValueError, "duplicate key value violates unique", Severity.MEDIUM, "data_quality"),
    ("reset_message", RuntimeError, "Connection reset by peer", Severity.MEDIUM, "transient_message"),
    ("503_message", RuntimeError, "HTTP 503 from upstream", Severity.MEDIUM, "transient_message"),
    ("rate_limit", RuntimeError, "rate limit hit, retry later", Severity.MEDIUM, "transient_message"),
]


@pytest.mark.parametrize(
    ("exc", "message", "expected", "rule"),
    [pytest.param(*row[1:], id=row[0]) for row in DEFAULT_TABLE],
)
def test_default_rules(exc: type[BaseException] | str, message: str, expected: Severity, rule: str) -> None:
    result = classify(make_alert(exc, message))

    assert result.severity is expected
    assert result.rules[0] == rule
    assert not result.silent
    # the reasons must name the deciding rule, so an operator can see why
    assert mentions(result, f"rule {rule} ")


def test_unknown_failure_gets_the_default_severity() -> None:
    alert = make_alert(ValueError, "something odd happened")

    default = classify(alert)
    custom = classify(alert, default_severity=Severity.LOW)

    assert default.severity is Severity.MEDIUM
    assert custom.severity is Severity.LOW
    assert default.rules == ()
    assert mentions(default, "no rule matched")


def test_scheduler_detected_failure_without_exception_is_high() -> None:
    result = classify(make_alert(None, ""))

    assert result.severity is Severity.HIGH
    assert result.rules == ("scheduler_detected",)
    assert mentions(result, "rule scheduler_detected ")


def test_scheduler_detected_failure_from_context_is_decided_by_scheduler_rule() -> None:
    ti = SimpleNamespace(dag_id="etl", task_id="load", run_id="r1", try_number=1, max_tries=0, state="failed")
    alert = alert_from_context({"ti": ti})

    result = classify(alert)

    assert result.severity is Severity.HIGH
    assert result.rules == ("scheduler_detected",)


def test_dag_failure_is_medium() -> None:
    alert = make_alert(None, "DAG run failed", kind=AlertKind.DAG_FAILURE, task_id=None)

    result = classify(alert)

    assert result.severity is Severity.MEDIUM
    assert result.rules == ("dag_run_failed",)
    assert mentions(result, "rule dag_run_failed ")


def test_dag_failure_is_not_treated_as_a_retry() -> None:
    # a DAG run has no tries; max_tries of its last task must not make it look like a retry
    alert = make_alert(None, "", kind=AlertKind.DAG_FAILURE, task_id=None, try_number=1, max_tries=3)

    assert classify(alert).severity is Severity.MEDIUM


def test_recovery_is_low_and_never_runs_rules() -> None:
    alert = make_alert(None, "No space left on device", kind=AlertKind.TASK_SUCCESS)

    result = classify(alert)

    assert result.severity is Severity.LOW
    assert result.reasons


# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "try_number", "max_tries"),
    [
        pytest.param(AlertKind.TASK_RETRY, 1, 2, id="retry_callback"),
        pytest.param(AlertKind.TASK_RETRY, 3, 2, id="retry_callback_even_past_max_tries"),
        # apache/airflow#65400: a failure callback fired while retries remain is still a retry
        pytest.param(AlertKind.TASK_FAILURE, 1, 2, id="failure_callback_with_retries_left"),
        pytest.param(AlertKind.TASK_FAILURE, 2, 2, id="failure_callback_second_of_three"),
    ],
)
def test_not_final_try_is_low(kind: AlertKind, try_number: int, max_tries: int) -> None:
    # even a cause that would otherwise be critical, on a business-critical DAG
    alert = make_alert(
        OSError,
        "No space left on device",
        kind=kind,
        try_number=try_number,
        max_tries=max_tries,
        tags=frozenset({"tier:1"}),
    )

    result = classify(alert)

    assert result.severity is Severity.LOW
    assert not result.silent
    assert mentions(result, "will retry")
    assert mentions(result, f"try {try_number} of {max_tries + 1}")


def test_retry_can_be_silenced() -> None:
    alert = make_alert(PermissionError, "denied", try_number=1, max_tries=1)

    result = classify(alert, retry_severity=None)

    assert result.silent
    assert mentions(result, "silent")


def test_retry_severity_is_configurable() -> None:
    alert = make_alert(PermissionError, "denied", kind=AlertKind.TASK_RETRY, try_number=1, max_tries=1)

    assert classify(alert, retry_severity=Severity.MEDIUM).severity is Severity.MEDIUM


def test_final_try_is_classified_and_says_so() -> None:
    alert = make_alert(PermissionError, "denied", try_number=3, max_tries=2)

    result = classify(alert)

    assert result.severity is Severity.HIGH
    assert not result.silent
    assert mentions(result, "after 3 tries")


def test_final_try_is_not_silenced_by_retry_policy() -> None:
    alert = make_alert(PermissionError, "denied", try_number=2, max_tries=1)

    result = classify(alert, retry_severity=None)

    assert not result.silent
    assert result.severity is Severity.HIGH


# --- business impact, downstream ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "params", "base_exc", "expected", "why"),
    [
        pytest.param({"tier:1"}, {}, ValueError, Severity.CRITICAL, "tier:1", id="tier1_raises_medium"),
        pytest.param(
            {"Critical"}, {}, PermissionError, Severity.CRITICAL, "critical", id="critical_tag_case"
        ),
        pytest.param({"tier:2"}, {}, ValueError, Severity.HIGH, "tier:2", id="tier2_raises_medium"),
        pytest.param(
            set(),
            {"business_impact": "critical"},
            ValueError,
            Severity.CRITICAL,
            "business_impact",
            id="param_critical",
        ),
        pytest.param(
            set(),
            {"business_impact": " HIGH "},
            AssertionError,
            Severity.HIGH,
            "business_impact",
            id="param_high_normalised",
        ),
        pytest.param(
            {"tier:1", "tier:2"}, {}, ValueError, Severity.CRITICAL, "tier:1", id="highest_floor_wins"
        ),
    ],
)
def test_business_impact_sets_a_floor(
    tags: set[str], params: dict[str, Any], base_exc: type[BaseException], expected: Severity, why: str
) -> None:
    alert = make_alert(base_exc, "x", tags=frozenset(tags), params=params)

    result = classify(alert)

    assert result.severity is expected
    assert mentions(result, "business impact")
    assert mentions(result, why)


@pytest.mark.parametrize(
    ("tags", "exc", "message", "expected"),
    [
        pytest.param(
            {"tier:2"}, OSError, "No space left on device", Severity.CRITICAL, id="floor_never_lowers"
        ),
        pytest.param({"tier:2"}, PermissionError, "denied", Severity.HIGH, id="already_at_floor"),
        pytest.param({"team:ml", "nightly"}, ValueError, "x", Severity.MEDIUM, id="other_tags_no_effect"),
    ],
)
def test_business_impact_never_lowers_and_stays_quiet_when_unneeded(
    tags: set[str], exc: type[BaseException], message: str, expected: Severity
) -> None:
    result = classify(make_alert(exc, message, tags=frozenset(tags)))

    assert result.severity is expected
    assert not mentions(result, "business impact")


def test_impact_param_name_is_configurable() -> None:
    alert = make_alert(ValueError, "x", params={"impact": "critical", "business_impact": "low"})

    assert classify(alert, impact_param="impact").severity is Severity.CRITICAL
    assert classify(alert).severity is Severity.MEDIUM


@pytest.mark.parametrize(
    ("downstream", "threshold", "exc", "message", "expected"),
    [
        pytest.param(10, 10, ValueError, "x", Severity.HIGH, id="at_threshold_raises"),
        pytest.param(250, 10, PermissionError, "x", Severity.CRITICAL, id="high_to_critical"),
        pytest.param(9, 10, ValueError, "x", Severity.MEDIUM, id="below_threshold"),
        pytest.param(500, 0, ValueError, "x", Severity.MEDIUM, id="disabled"),
        pytest.param(500, 10, OSError, "No space left on device", Severity.CRITICAL, id="capped"),
    ],
)
def test_downstream_threshold(
    downstream: int, threshold: int, exc: type[BaseException], message: str, expected: Severity
) -> None:
    alert = make_alert(exc, message, downstream_count=downstream)

    result = classify(alert, downstream_threshold=threshold)

    assert result.severity is expected
    base = classify(dataclasses.replace(alert, downstream_count=0)).severity
    assert mentions(result, "downstream") is (expected > base)


# --- business hours -----------------------------------------------------------------------

BERLIN_HOURS = BusinessHours(timezone="Europe/Berlin", days=(1, 2, 3, 4, 5), start=time(9), end=time(18))


def fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        # January: Berlin is UTC+1
        pytest.param(datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc), True, id="monday_10_berlin"),
        pytest.param(datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc), True, id="start_is_inclusive"),
        pytest.param(datetime(2026, 1, 5, 7, 59, tzinfo=timezone.utc), False, id="monday_0859_berlin"),
        pytest.param(datetime(2026, 1, 5, 17, 0, tzinfo=timezone.utc), False, id="end_is_exclusive"),
        pytest.param(datetime(2026, 1, 5, 21, 0, tzinfo=timezone.utc), False, id="monday_night"),
        pytest.param(datetime(2026, 1, 10, 11, 0, tzinfo=timezone.utc), False, id="saturday_noon"),
        # July: Berlin is UTC+2, so 07:30 UTC is already 09:30 local
        pytest.param(datetime(2026, 7, 6, 7, 30, tzinfo=timezone.utc), True, id="summer_time"),
    ],
)
def test_business_hours_lower_outside_hours(now: datetime, inside: bool) -> None:
    alert = make_alert(PermissionError, "denied")

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=1, clock=fixed(now))

    assert result.severity is (Severity.HIGH if inside else Severity.MEDIUM)
    assert mentions(result, "outside business hours") is not inside


def test_business_hours_never_lower_critical() -> None:
    night = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
    alert = make_alert(OSError, "No space left on device")

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=3, clock=fixed(night))

    assert result.severity is Severity.CRITICAL
    assert not mentions(result, "outside business hours")


def test_business_hours_without_lowering_change_nothing() -> None:
    night = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
    alert = make_alert(PermissionError, "denied")

    assert classify(alert, business_hours=BERLIN_HOURS, clock=fixed(night)).severity is Severity.HIGH


def test_business_hours_do_not_go_below_low() -> None:
    night = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
    alert = make_alert(ValueError, "x")

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=3, clock=fixed(night))

    assert result.severity is Severity.LOW


def test_business_hours_reject_unknown_zone() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        BusinessHours(timezone="Mars/Olympus_Mons")


# --- user rules ---------------------------------------------------------------------------

FINANCE_WAREHOUSE = Rule(
    name="finance_warehouse",
    match=AlertMatcher(dag_ids=("finance_*",), exception_types=("PermissionError",)),
    severity=Severity.CRITICAL,
    description="finance reporting blocks the close",
)


@pytest.mark.parametrize(
    ("dag_id", "exc", "expected", "rule"),
    [
        pytest.param(
            "finance_daily", WarehouseDenied, Severity.CRITICAL, "finance_warehouse", id="user_rule_wins"
        ),
        pytest.param("marketing", WarehouseDenied, Severity.HIGH, "permission", id="default_elsewhere"),
        pytest.param(
            "finance_daily", KeyError, Severity.HIGH, "code_error", id="user_rule_needs_all_criteria"
        ),
    ],
)
def test_user_rules_take_precedence_over_defaults(
    dag_id: str, exc: type[BaseException], expected: Severity, rule: str
) -> None:
    result = classify(make_alert(exc, "x", dag_id=dag_id), rules=(FINANCE_WAREHOUSE,))

    assert result.severity is expected
    assert result.rules[0] == rule
    assert mentions(result, f"rule {rule} ")


def test_user_rule_can_lower_a_default_and_description_is_shown() -> None:
    quiet = Rule(
        "known_flaky",
        AlertMatcher(message_patterns=(r"Connection reset",)),
        severity=Severity.LOW,
        description="vendor API resets nightly",
    )
    alert = make_alert(RuntimeError, "Connection reset by peer")

    result = classify(alert, rules=(quiet,))

    assert result.severity is Severity.LOW
    assert mentions(result, "vendor API resets nightly")


def test_without_default_rules_only_user_rules_apply() -> None:
    alert = make_alert(PermissionError, "denied")

    assert classify(alert, include_default_rules=False).severity is Severity.MEDIUM
    assert classify(alert, include_default_rules=False, rules=(FINANCE_WAREHOUSE,)).rules == ()


@pytest.mark.parametrize(
    ("raise_by", "tags", "expected"),
    [
        pytest.param(-1, {"sandbox"}, Severity.MEDIUM, id="lower_one"),
        pytest.param(1, {"sandbox"}, Severity.CRITICAL, id="raise_one"),
        pytest.param(3, {"sandbox"}, Severity.CRITICAL, id="capped_at_critical"),
        pytest.param(-3, {"sandbox"}, Severity.LOW, id="floored_at_low"),
        pytest.param(-1, set(), Severity.HIGH, id="not_matching"),
    ],
)
def test_raise_by_adjusts_the_matched_base(raise_by: int, tags: set[str], expected: Severity) -> None:
    adjust = Rule("sandbox_adjust", AlertMatcher(tags=("sandbox",)), raise_by=raise_by)
    alert = make_alert(PermissionError, "denied", tags=frozenset(tags))

    result = classify(alert, rules=(adjust,))

    assert result.severity is expected
    # the base still comes from the default rule; the adjustment is named too
    assert result.rules[0] == ("sandbox_adjust" if tags else "permission")
    assert mentions(result, "rule permission ")
    assert mentions(result, "rule sandbox_adjust ") is bool(tags)


def test_adjust_rules_accumulate_and_apply_to_the_default_severity() -> None:
    rules = (
        Rule("weekend_batch", AlertMatcher(dag_ids=("batch_*",)), raise_by=1),
        Rule("revenue", AlertMatcher(tags=("revenue",)), raise_by=1),
    )
    alert = make_alert(ValueError, "x", dag_id="batch_sales", tags=frozenset({"revenue"}))

    result = classify(alert, rules=rules)

    assert result.severity is Severity.CRITICAL  # default medium, +2
    assert set(result.rules) == {"weekend_batch", "revenue"}


def test_first_user_rule_with_severity_wins() -> None:
    rules = (
        Rule("first", AlertMatcher(dag_ids=("etl",)), severity=Severity.LOW),
        Rule("second", AlertMatcher(dag_ids=("etl",)), severity=Severity.CRITICAL),
    )

    result = classify(make_alert(ValueError, "x"), rules=rules)

    assert result.severity is Severity.LOW
    assert result.rules == ("first",)


# --- every classification explains itself -------------------------------------------------

EXPLAINED = [
    make_alert(PermissionError, "denied"),
    make_alert(ValueError, "odd"),
    make_alert(None, ""),
    make_alert(None, "", kind=AlertKind.DAG_FAILURE, task_id=None),
    make_alert(ValueError, "odd", tags=frozenset({"tier:1"})),
    make_alert(ValueError, "odd", downstream_count=40),
    make_alert(PermissionError, "denied", kind=AlertKind.TASK_RETRY),
    make_alert(PermissionError, "denied", try_number=1, max_tries=4),
    make_alert(PermissionError, "denied", kind=AlertKind.TASK_SUCCESS),
]


@pytest.mark.parametrize("alert", EXPLAINED, ids=lambda a: f"{a.kind.value}-{a.exception_type}")
def test_every_classification_has_reasons_naming_its_rules(alert: Alert) -> None:
    result = classify(alert, rules=(FINANCE_WAREHOUSE,))

    assert result.reasons
    assert all(isinstance(r, str) and r.strip() for r in result.reasons)
    for rule in result.rules:
        assert mentions(result, f"rule {rule} ")


# --- classify_error_severity --------------------------------------------------------------


def _ti(**overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "dag_id": "etl",
        "task_id": "load",
        "run_id": "r1",
        "map_index": -1,
        "try_number": 1,
        "max_tries": 0,
        "state": "failed",
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize(
    ("exception", "context", "expected"),
    [
        pytest.param(WarehouseDenied("no"), {"ti": _ti()}, Severity.HIGH, id="subclass_with_ti"),
        pytest.param(
            ValueError("x"),
            {"ti": _ti(), "dag": SimpleNamespace(dag_id="etl", tags=["tier:1"])},
            Severity.CRITICAL,
            id="dag_tags_from_context",
        ),
        pytest.param(
            ValueError("x"),
            {"ti": _ti(), "params": {"business_impact": "high"}},
            Severity.HIGH,
            id="params_from_context",
        ),
        pytest.param(
            PermissionError("no"),
            {"ti": _ti(try_number=1, max_tries=2)},
            Severity.LOW,
            id="retries_left_in_context",
        ),
        pytest.param(
            ValueError("x"),
            {"ti": _ti(), "exception": PermissionError("old")},
            Severity.MEDIUM,
            id="argument_replaces_context_exception",
        ),
        pytest.param(None, {"ti": _ti()}, Severity.HIGH, id="none_is_scheduler_detected"),
    ],
)
def test_classify_error_severity_with_a_plain_dict_context(
    exception: BaseException | None, context: dict[str, Any], expected: Severity
) -> None:
    assert classify_error_severity(exception, context) is expected


@pytest.mark.parametrize(
    ("exception", "context", "expected"),
    [
        pytest.param(
            PermissionError("denied"),
            None,
            Severity.HIGH,
            id="no_context",
        ),
        pytest.param(
            PermissionError("denied"),
            {},
            Severity.HIGH,
            id="empty_context",
        ),
        pytest.param(
            OSError(28, "No space left on device"),
            {"params": {}},
            Severity.CRITICAL,
            id="context_without_ti",
        ),
    ],
)
def test_classify_error_severity_without_a_task_instance(
    exception: BaseException, context: dict[str, Any] | None, expected: Severity
) -> None:
    assert classify_error_severity(exception, context) is expected


def test_classify_error_severity_does_not_mutate_the_context() -> None:
    context: dict[str, Any] = {"ti": _ti(), "exception": PermissionError("original")}

    classify_error_severity(ValueError("other"), context)

    assert isinstance(context["exception"], PermissionError)


def test_classify_error_severity_uses_a_given_classifier() -> None:
    strict = SeverityClassifier(include_default_rules=False, default_severity=Severity.CRITICAL)

    assert classify_error_severity(ValueError("x"), {"ti": _ti()}, classifier=strict) is Severity.CRITICAL


# --- the alert's moment decides business hours --------------------------------------------

MONDAY_MORNING = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)  # 11:00 in Berlin
SATURDAY_NIGHT = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("occurred_at", "clock_now", "inside"),
    [
        pytest.param(MONDAY_MORNING, SATURDAY_NIGHT, True, id="occurred_inside_clock_outside"),
        pytest.param(SATURDAY_NIGHT, MONDAY_MORNING, False, id="occurred_outside_clock_inside"),
        pytest.param(None, SATURDAY_NIGHT, False, id="without_occurred_at_the_clock_decides_outside"),
        pytest.param(None, MONDAY_MORNING, True, id="without_occurred_at_the_clock_decides_inside"),
    ],
)
def test_business_hours_are_decided_by_when_the_alert_occurred(
    occurred_at: datetime | None, clock_now: datetime, inside: bool
) -> None:
    alert = make_alert(PermissionError, "denied", occurred_at=occurred_at)

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=1, clock=fixed(clock_now))

    assert result.severity is (Severity.HIGH if inside else Severity.MEDIUM)
    assert mentions(result, "outside business hours") is not inside


def test_naive_occurred_at_is_utc_not_the_hosts_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as systime

    # 08:30 UTC is 09:30 in Berlin (inside); read as Tokyo time it would be 00:30 Berlin (outside)
    alert = make_alert(PermissionError, "denied", occurred_at=datetime(2026, 1, 5, 8, 30))
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    systime.tzset()
    try:
        result = classify(
            alert, business_hours=BERLIN_HOURS, off_hours_lower_by=1, clock=fixed(SATURDAY_NIGHT)
        )
    finally:
        monkeypatch.undo()
        systime.tzset()

    assert result.severity is Severity.HIGH


@pytest.mark.parametrize(
    ("occurred_at", "inside"),
    [
        # spring forward on Sunday 2026-03-29: CET (UTC+1) before, CEST (UTC+2) after
        pytest.param(datetime(2026, 3, 27, 8, 30, tzinfo=timezone.utc), True, id="fri_before_0930_cet"),
        pytest.param(datetime(2026, 3, 27, 7, 30, tzinfo=timezone.utc), False, id="fri_before_0830_cet"),
        pytest.param(datetime(2026, 3, 30, 7, 30, tzinfo=timezone.utc), True, id="mon_after_0930_cest"),
        pytest.param(datetime(2026, 3, 30, 16, 30, tzinfo=timezone.utc), False, id="mon_after_1830_cest"),
        # fall back on Sunday 2026-10-25: CEST before, CET after
        pytest.param(datetime(2026, 10, 23, 7, 30, tzinfo=timezone.utc), True, id="fri_before_0930_cest"),
        pytest.param(datetime(2026, 10, 26, 7, 30, tzinfo=timezone.utc), False, id="mon_after_0830_cet"),
        pytest.param(datetime(2026, 10, 26, 16, 30, tzinfo=timezone.utc), True, id="mon_after_1730_cet"),
    ],
)
def test_business_hours_follow_berlin_daylight_saving(occurred_at: datetime, inside: bool) -> None:
    alert = make_alert(PermissionError, "denied", occurred_at=occurred_at)

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=1)

    assert mentions(result, "outside business hours") is not inside


NEW_YORK_NIGHTS = BusinessHours(
    timezone="America/New_York", days=(1, 2, 3, 4, 5, 6, 7), start=time(22), end=time(6)
)


@pytest.mark.parametrize(
    ("occurred_at", "inside"),
    [
        # spring forward on Sunday 2026-03-08 at 02:00 EST (07:00 UTC) -> 03:00 EDT
        pytest.param(datetime(2026, 3, 8, 2, 59, tzinfo=timezone.utc), False, id="sat_2159_est"),
        pytest.param(datetime(2026, 3, 8, 3, 0, tzinfo=timezone.utc), True, id="sat_2200_est"),
        pytest.param(datetime(2026, 3, 8, 6, 59, tzinfo=timezone.utc), True, id="sun_0159_est"),
        pytest.param(datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc), True, id="sun_0300_edt"),
        pytest.param(datetime(2026, 3, 8, 9, 59, tzinfo=timezone.utc), True, id="sun_0559_edt"),
        pytest.param(datetime(2026, 3, 8, 10, 0, tzinfo=timezone.utc), False, id="sun_0600_edt"),
        # fall back on Sunday 2026-11-01 at 02:00 EDT (06:00 UTC) -> 01:00 EST: 01:30 happens twice
        pytest.param(datetime(2026, 11, 1, 1, 59, tzinfo=timezone.utc), False, id="sat_2159_edt"),
        pytest.param(datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc), True, id="sat_2200_edt"),
        pytest.param(datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc), True, id="sun_0130_edt"),
        pytest.param(datetime(2026, 11, 1, 6, 30, tzinfo=timezone.utc), True, id="sun_0130_est"),
        pytest.param(datetime(2026, 11, 1, 10, 30, tzinfo=timezone.utc), True, id="sun_0530_est"),
        pytest.param(datetime(2026, 11, 1, 11, 0, tzinfo=timezone.utc), False, id="sun_0600_est"),
    ],
)
def test_overnight_business_hours_across_new_york_daylight_saving(
    occurred_at: datetime, inside: bool
) -> None:
    alert = make_alert(PermissionError, "denied", occurred_at=occurred_at)

    result = classify(alert, business_hours=NEW_YORK_NIGHTS, off_hours_lower_by=1)

    assert mentions(result, "outside business hours") is not inside


@pytest.mark.parametrize(
    ("occurred_at", "inside"),
    [
        # weeknight shifts only: the early hours belong to the night the shift started on
        pytest.param(datetime(2026, 3, 7, 8, 0, tzinfo=timezone.utc), True, id="sat_0300_is_fridays_shift"),
        pytest.param(datetime(2026, 3, 8, 3, 30, tzinfo=timezone.utc), False, id="sat_2230_no_shift"),
        pytest.param(datetime(2026, 3, 8, 7, 30, tzinfo=timezone.utc), False, id="sun_0330_is_saturdays"),
        pytest.param(datetime(2026, 3, 10, 3, 0, tzinfo=timezone.utc), True, id="mon_2300_edt"),
    ],
)
def test_overnight_business_hours_belong_to_the_day_they_start(occurred_at: datetime, inside: bool) -> None:
    weeknights = dataclasses.replace(NEW_YORK_NIGHTS, days=(1, 2, 3, 4, 5))
    alert = make_alert(PermissionError, "denied", occurred_at=occurred_at)

    result = classify(alert, business_hours=weeknights, off_hours_lower_by=1)

    assert mentions(result, "outside business hours") is not inside


# --- critical windows ---------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
MONTH_END = CriticalWindow("month-end", timezone="Europe/Berlin", days_of_month=(-1,))


def berlin(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def window_reasons(classification: Classification) -> list[str]:
    return [r for r in classification.reasons if r.startswith("inside critical window")]


def test_month_end_window_raises_and_says_which_day_where() -> None:
    alert = make_alert(ValueError, "x", occurred_at=berlin(2026, 11, 30, 10))

    result = classify(alert, critical_windows=(MONTH_END,))

    assert result.severity is Severity.HIGH
    assert result.reasons[-1] == "inside critical window month-end (2026-11-30 Europe/Berlin): raised to high"


@pytest.mark.parametrize(
    ("days", "moment", "inside"),
    [
        pytest.param((-1,), berlin(2026, 11, 30), True, id="last_of_a_30_day_month"),
        pytest.param((-1,), berlin(2026, 11, 29), False, id="day_before_the_last"),
        pytest.param((-1,), berlin(2026, 12, 31), True, id="last_of_a_31_day_month"),
        pytest.param((-1,), berlin(2026, 2, 28), True, id="feb_28_non_leap"),
        pytest.param((-1,), berlin(2026, 2, 27), False, id="feb_27_non_leap"),
        pytest.param((-2,), berlin(2026, 2, 27), True, id="minus_2_feb_27_non_leap"),
        pytest.param((-2,), berlin(2026, 2, 28), False, id="minus_2_not_the_last"),
        pytest.param((-1,), berlin(2028, 2, 29), True, id="feb_29_leap"),
        pytest.param((-1,), berlin(2028, 2, 28), False, id="feb_28_leap_is_not_the_last"),
        pytest.param((-2,), berlin(2028, 2, 28), True, id="minus_2_feb_28_leap"),
        pytest.param((-1, -2), berlin(2026, 1, 30), True, id="either_of_the_last_two"),
        pytest.param((1,), berlin(2026, 12, 1), True, id="first_of_the_month"),
        pytest.param((31,), berlin(2026, 4, 30), False, id="day_31_never_in_april"),
        pytest.param((-31,), berlin(2026, 1, 1), True, id="minus_31_is_the_1st_of_a_31_day_month"),
        pytest.param((-31,), berlin(2026, 4, 1), False, id="minus_31_never_in_april"),
    ],
)
def test_days_of_month_count_from_either_end(days: tuple[int, ...], moment: datetime, inside: bool) -> None:
    window = CriticalWindow("close", timezone="Europe/Berlin", days_of_month=days)
    alert = make_alert(ValueError, "x", occurred_at=moment)

    result = classify(alert, critical_windows=(window,))

    assert window.contains(moment) is inside
    assert result.severity is (Severity.HIGH if inside else Severity.MEDIUM)
    assert bool(window_reasons(result)) is inside


@pytest.mark.parametrize(
    ("window", "moment", "day"),
    [
        # 23:30 UTC on Nov 30th is already December in Berlin, and still November in New York
        pytest.param(
            MONTH_END, datetime(2026, 11, 30, 23, 30, tzinfo=timezone.utc), None, id="berlin_december"
        ),
        pytest.param(
            MONTH_END, datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc), "2026-11-30", id="berlin_nov_30th"
        ),
        pytest.param(
            dataclasses.replace(MONTH_END, timezone="America/New_York"),
            datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc),
            "2026-11-30",
            id="new_york_still_november",
        ),
    ],
)
def test_window_days_are_local_to_its_timezone(
    window: CriticalWindow, moment: datetime, day: str | None
) -> None:
    alert = make_alert(ValueError, "x", occurred_at=moment)

    result = classify(alert, critical_windows=(window,))

    if day is None:
        assert window_reasons(result) == []
    else:
        assert window_reasons(result) == [
            f"inside critical window month-end ({day} {window.timezone}): raised to high"
        ]


@pytest.mark.parametrize(
    ("window", "moment", "inside"),
    [
        pytest.param(CriticalWindow("weekend", weekdays=(6, 7)), berlin(2026, 10, 31), True, id="saturday"),
        pytest.param(CriticalWindow("weekend", weekdays=(6, 7)), berlin(2026, 11, 2), False, id="monday"),
        # both given: the day must be one of the last three AND a working day
        pytest.param(
            CriticalWindow("close", "Europe/Berlin", days_of_month=(-1, -2, -3), weekdays=(1, 2, 3, 4, 5)),
            berlin(2026, 1, 30),
            True,
            id="both_friday_30th",
        ),
        pytest.param(
            CriticalWindow("close", "Europe/Berlin", days_of_month=(-1, -2, -3), weekdays=(1, 2, 3, 4, 5)),
            berlin(2026, 1, 31),
            False,
            id="both_saturday_31st",
        ),
        pytest.param(
            CriticalWindow("close", "Europe/Berlin", days_of_month=(-1, -2, -3), weekdays=(1, 2, 3, 4, 5)),
            berlin(2026, 1, 28),
            False,
            id="both_wednesday_28th",
        ),
    ],
)
def test_weekday_windows(window: CriticalWindow, moment: datetime, inside: bool) -> None:
    result = classify(make_alert(ValueError, "x", occurred_at=moment), critical_windows=(window,))

    assert bool(window_reasons(result)) is inside


FRIDAY_EVENING = CriticalWindow("load", "Europe/Berlin", weekdays=(5,), start=time(18), end=time(22))
MONTH_END_NIGHT = CriticalWindow("batch", "Europe/Berlin", days_of_month=(-1,), start=time(22), end=time(2))
SHIFT_FROM_SIX = CriticalWindow("shift", "UTC", days_of_month=(1,), start=time(6), end=time(6))
NY_SPRING_NIGHT = CriticalWindow("dst", "America/New_York", weekdays=(7,), start=time(0), end=time(3))
NY_FALL_HOUR = CriticalWindow("dst", "America/New_York", weekdays=(7,), start=time(1), end=time(2))
UTC = timezone.utc


@pytest.mark.parametrize(
    ("window", "moment", "day"),
    [
        pytest.param(FRIDAY_EVENING, berlin(2026, 1, 30, 17, 59), None, id="before_start"),
        pytest.param(FRIDAY_EVENING, berlin(2026, 1, 30, 18, 0), "2026-01-30", id="start_inclusive"),
        pytest.param(FRIDAY_EVENING, berlin(2026, 1, 30, 21, 59), "2026-01-30", id="before_end"),
        pytest.param(FRIDAY_EVENING, berlin(2026, 1, 30, 22, 0), None, id="end_exclusive"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 11, 30, 21, 59), None, id="night_before_start"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 11, 30, 22, 0), "2026-11-30", id="night_start"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 12, 1, 1, 30), "2026-11-30", id="night_past_midnight"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 12, 1, 2, 0), None, id="night_end_exclusive"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 11, 30, 1, 30), None, id="early_30th_is_the_29ths"),
        pytest.param(MONTH_END_NIGHT, berlin(2026, 12, 1, 22, 30), None, id="night_of_the_1st"),
        # start == end: the whole 24 hours from start (the default 00:00-00:00 is the whole day)
        pytest.param(MONTH_END, berlin(2026, 11, 30, 0, 0), "2026-11-30", id="whole_day_start"),
        pytest.param(MONTH_END, berlin(2026, 11, 30, 23, 59), "2026-11-30", id="whole_day_end"),
        pytest.param(MONTH_END, berlin(2026, 12, 1, 0, 0), None, id="whole_day_over"),
        pytest.param(SHIFT_FROM_SIX, datetime(2026, 12, 1, 5, 59, tzinfo=UTC), None, id="24h_before"),
        pytest.param(SHIFT_FROM_SIX, datetime(2026, 12, 1, 6, 0, tzinfo=UTC), "2026-12-01", id="24h_start"),
        pytest.param(SHIFT_FROM_SIX, datetime(2026, 12, 2, 5, 59, tzinfo=UTC), "2026-12-01", id="24h_next"),
        pytest.param(SHIFT_FROM_SIX, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), None, id="24h_over"),
        # New York springs forward on 2026-03-08 at 02:00 EST (07:00 UTC) to 03:00 EDT
        pytest.param(NY_SPRING_NIGHT, datetime(2026, 3, 8, 4, 59, tzinfo=UTC), None, id="ny_sat_2359_est"),
        pytest.param(NY_SPRING_NIGHT, datetime(2026, 3, 8, 5, 0, tzinfo=UTC), "2026-03-08", id="ny_0000_est"),
        pytest.param(
            NY_SPRING_NIGHT, datetime(2026, 3, 8, 6, 59, tzinfo=UTC), "2026-03-08", id="ny_0159_est"
        ),
        pytest.param(NY_SPRING_NIGHT, datetime(2026, 3, 8, 7, 0, tzinfo=UTC), None, id="ny_0300_edt"),
        # and falls back on 2026-11-01 at 02:00 EDT (06:00 UTC) to 01:00 EST: 01:30 happens twice
        pytest.param(NY_FALL_HOUR, datetime(2026, 11, 1, 4, 59, tzinfo=UTC), None, id="ny_0059_edt"),
        pytest.param(NY_FALL_HOUR, datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "2026-11-01", id="ny_0130_edt"),
        pytest.param(NY_FALL_HOUR, datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "2026-11-01", id="ny_0130_est"),
        pytest.param(NY_FALL_HOUR, datetime(2026, 11, 1, 7, 0, tzinfo=UTC), None, id="ny_0200_est"),
    ],
)
def test_window_hours_wrap_midnight_and_follow_daylight_saving(
    window: CriticalWindow, moment: datetime, day: str | None
) -> None:
    result = classify(make_alert(ValueError, "x", occurred_at=moment), critical_windows=(window,))

    expected = (
        []
        if day is None
        else [f"inside critical window {window.name} ({day} {window.timezone}): raised to high"]
    )
    assert window_reasons(result) == expected
    assert window.day_of(moment) == (None if day is None else date.fromisoformat(day))


@pytest.mark.parametrize(
    ("exc", "message", "raise_by", "expected"),
    [
        pytest.param(PermissionError, "denied", 3, Severity.CRITICAL, id="high_plus_3_capped"),
        pytest.param(ValueError, "x", 2, Severity.CRITICAL, id="medium_plus_2"),
        pytest.param(OSError, "No space left on device", 1, Severity.CRITICAL, id="already_critical"),
    ],
)
def test_window_raise_is_capped_at_critical(
    exc: type[BaseException], message: str, raise_by: int, expected: Severity
) -> None:
    window = dataclasses.replace(MONTH_END, raise_by=raise_by)
    alert = make_alert(exc, message, occurred_at=berlin(2026, 11, 30))

    result = classify(alert, critical_windows=(window,))

    assert result.severity is expected
    base = classify(alert).severity
    # an alert that was already critical is not said to be raised
    assert window_reasons(result) == (
        []
        if base is Severity.CRITICAL
        else ["inside critical window month-end (2026-11-30 Europe/Berlin): raised to critical"]
    )


def test_matching_windows_each_raise_in_order() -> None:
    payroll = CriticalWindow("payroll", "Europe/Berlin", days_of_month=(-1,), weekdays=(4,))
    alert = make_alert(ValueError, "x", occurred_at=berlin(2026, 12, 31))  # a Thursday

    result = classify(alert, critical_windows=(MONTH_END, payroll))

    assert result.severity is Severity.CRITICAL
    assert window_reasons(result) == [
        "inside critical window month-end (2026-12-31 Europe/Berlin): raised to high",
        "inside critical window payroll (2026-12-31 Europe/Berlin): raised to critical",
    ]


def test_window_match_limits_which_alerts_it_raises() -> None:
    finance = dataclasses.replace(MONTH_END, name="finance-close", match=AlertMatcher(dag_ids=("finance_*",)))
    moment = berlin(2026, 11, 30)

    other = classify(make_alert(ValueError, "x", occurred_at=moment), critical_windows=(finance,))
    closing = classify(
        make_alert(ValueError, "x", dag_id="finance_close", occurred_at=moment), critical_windows=(finance,)
    )

    assert other.severity is Severity.MEDIUM
    assert window_reasons(other) == []
    assert closing.severity is Severity.HIGH
    assert window_reasons(closing) == [
        "inside critical window finance-close (2026-11-30 Europe/Berlin; dag finance_close): raised to high"
    ]


def test_window_raises_after_business_hours_lowered() -> None:
    # Saturday 2026-10-31 is both off-hours and month-end: lowered first, then raised back
    alert = make_alert(PermissionError, "denied", occurred_at=berlin(2026, 10, 31, 3))

    result = classify(alert, business_hours=BERLIN_HOURS, off_hours_lower_by=1, critical_windows=(MONTH_END,))

    assert result.severity is Severity.HIGH
    lowered = result.reasons.index("outside business hours: lowered to medium")
    raised = result.reasons.index(
        "inside critical window month-end (2026-10-31 Europe/Berlin): raised to high"
    )
    assert lowered < raised


def test_window_decided_by_occurred_at_not_the_clock() -> None:
    alert = make_alert(ValueError, "x", occurred_at=berlin(2026, 11, 29))

    result = classify(alert, critical_windows=(MONTH_END,), clock=fixed(berlin(2026, 11, 30)))

    assert result.severity is Severity.MEDIUM


def test_window_without_occurred_at_uses_the_clock() -> None:
    result = classify(
        make_alert(ValueError, "x"), critical_windows=(MONTH_END,), clock=fixed(berlin(2026, 11, 30))
    )

    assert result.severity is Severity.HIGH


def test_window_leaves_retries_low() -> None:
    alert = make_alert(PermissionError, "denied", try_number=1, max_tries=2, occurred_at=berlin(2026, 11, 30))

    result = classify(alert, critical_windows=(MONTH_END,))

    assert result.severity is Severity.LOW
    assert window_reasons(result) == []


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"days_of_month": (0,)}, id="day_0"),
        pytest.param({"days_of_month": (32,)}, id="day_32"),
        pytest.param({"days_of_month": (-32,)}, id="day_minus_32"),
        pytest.param({"weekdays": (0,)}, id="weekday_0"),
        pytest.param({"weekdays": (8,)}, id="weekday_8"),
        pytest.param({"raise_by": 0}, id="raise_by_0"),
        pytest.param({"name": ""}, id="no_name"),
    ],
)
def test_window_rejects_impossible_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="critical window"):
        CriticalWindow(**{"name": "w", **fields})


def test_window_rejects_unknown_zone() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        CriticalWindow("w", timezone="Mars/Olympus_Mons")


# --- through the manager: its clock decides -----------------------------------------------


def _frozen_manager(
    monkeypatch: pytest.MonkeyPatch, classifier: SeverityClassifier, now: datetime
) -> tuple[Any, Any]:
    # imported here: the manager is being rewritten, and a break there must not hide the tests above
    from airflow_alerting import metrics
    from airflow_alerting.manager import AlertManager, DeliveryOptions
    from airflow_alerting.policy import AlertPolicy, EscalationPolicy
    from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

    monkeypatch.setattr(metrics, "_stats", lambda: None)  # no Airflow Stats in unit tests
    clock = FrozenClock(now)
    manager = AlertManager(
        AlertPolicy(classifier=classifier, escalation=EscalationPolicy(after=0)),
        store=MemoryStore(),
        channels={name: RecordingChannel(name) for name in ("email", "slack", "pagerduty")},
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=5),
    )
    return manager, clock


def test_manager_clock_decides_business_hours_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # the classifier's own clock says "Monday morning, not month-end": it must not be consulted
    classifier = SeverityClassifier(
        business_hours=BERLIN_HOURS,
        off_hours_lower_by=1,
        critical_windows=(MONTH_END,),
        clock=fixed(MONDAY_MORNING),
    )
    manager, clock = _frozen_manager(monkeypatch, classifier, SATURDAY_NIGHT)

    night = manager.handle(make_alert(PermissionError, "denied", run_id="r1"))
    clock.now = datetime(2026, 1, 31, 10, 0, tzinfo=timezone.utc)  # Saturday, last day of January
    month_end = manager.handle(make_alert(PermissionError, "denied", run_id="r2"))
    clock.now = MONDAY_MORNING
    monday = manager.handle(make_alert(PermissionError, "denied", run_id="r3"))

    assert night.classification.severity is Severity.MEDIUM
    assert mentions(night.classification, "outside business hours: lowered to medium")
    assert month_end.classification.severity is Severity.HIGH
    assert mentions(
        month_end.classification,
        "inside critical window month-end (2026-01-31 Europe/Berlin): raised to high",
    )
    assert monday.classification.severity is Severity.HIGH
    assert not mentions(monday.classification, "outside business hours")
    assert not mentions(monday.classification, "critical window")
