"""Severity classification: the default rule table, retries, business impact, hours, user rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, time, timezone
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

import pytest

from airflow_alerting.classify import BusinessHours, Rule, SeverityClassifier, classify_error_severity
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
