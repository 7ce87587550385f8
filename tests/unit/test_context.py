"""Building alerts from the callback contexts Airflow 3 passes (faked with plain objects)."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_alerting.context import MAX_MESSAGE_CHARS, alert_from_context
from airflow_alerting.model import AlertKind

LOGICAL_DATE = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)


class WarehouseDenied(PermissionError):
    """A user exception deriving from a builtin."""


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class TaskInstanceState(str, enum.Enum):
    """Mimics Airflow's enum, whose str() may be 'TaskInstanceState.UP_FOR_RETRY'."""

    UP_FOR_RETRY = "up_for_retry"
    SUCCESS = "success"
    FAILED = "failed"


def make_ti(**overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "dag_id": "sales_etl",
        "task_id": "load_orders",
        "run_id": "scheduled__2026-01-05T00:00:00+00:00",
        "map_index": -1,
        "try_number": 3,
        "max_tries": 2,
        "state": "failed",
        "hostname": "worker-7.internal",
        "log_url": "http://airflow.example.com/dags/sales_etl/runs/x/tasks/load_orders",
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def make_task(downstream: int = 4, **overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "task_id": "load_orders",
        "owner": "data-eng",
        "email": ["oncall@example.com", "lead@example.com"],
        "retries": 2,
        "get_flat_relative_ids": lambda upstream=False: {f"t{i}" for i in range(downstream)},
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def make_dag(**overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {"dag_id": "sales_etl", "tags": ["tier:1", "team:sales"]}
    fields.update(overrides)
    return SimpleNamespace(**fields)


def worker_failure(**overrides: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "ti": make_ti(),
        "task_instance": make_ti(),
        "task": make_task(),
        "dag": make_dag(),
        "dag_run": SimpleNamespace(
            dag_id="sales_etl",
            run_id="scheduled__2026-01-05T00:00:00+00:00",
            logical_date=LOGICAL_DATE,
            state="running",
        ),
        "run_id": "scheduled__2026-01-05T00:00:00+00:00",
        "logical_date": LOGICAL_DATE,
        "params": {"business_impact": "high"},
        "exception": WarehouseDenied("role LOADER lacks USAGE on warehouse"),
    }
    context.update(overrides)
    return context


def test_worker_task_failure() -> None:
    alert = alert_from_context(worker_failure())

    assert alert.kind is AlertKind.TASK_FAILURE
    assert (alert.dag_id, alert.task_id) == ("sales_etl", "load_orders")
    assert alert.run_id == "scheduled__2026-01-05T00:00:00+00:00"
    assert alert.map_index == -1
    assert (alert.try_number, alert.max_tries) == (3, 2)
    assert alert.is_final_try
    assert alert.exception_type == f"{__name__}.WarehouseDenied"
    assert alert.message == "role LOADER lacks USAGE on warehouse"
    assert alert.owner == "data-eng"
    assert alert.emails == ("oncall@example.com", "lead@example.com")
    assert alert.tags == frozenset({"tier:1", "team:sales"})
    assert alert.params["business_impact"] == "high"
    assert alert.downstream_count == 4
    assert alert.logical_date == LOGICAL_DATE
    assert alert.hostname == "worker-7.internal"
    assert alert.log_url is not None and alert.log_url.startswith("http://airflow.example.com/")
    assert alert.detected_by == "worker"
    assert alert.occurred_at is not None and alert.occurred_at.tzinfo is not None
    assert alert.source == "sales_etl.load_orders"


def test_exception_mro_has_qualified_names_most_derived_first() -> None:
    alert = alert_from_context(worker_failure())

    assert alert.exception_mro == (f"{__name__}.WarehouseDenied", "PermissionError", "OSError", "Exception")


def test_params_are_a_read_only_copy() -> None:
    params = {"business_impact": "high"}
    alert = alert_from_context(worker_failure(params=params))
    params["business_impact"] = "low"

    assert alert.params["business_impact"] == "high"
    with pytest.raises(TypeError):
        alert.params["x"] = 1  # type: ignore[index]


def test_mapped_task_instance() -> None:
    alert = alert_from_context(worker_failure(ti=make_ti(map_index=12)))

    assert alert.map_index == 12
    assert alert.source == "sales_etl.load_orders[12]"
    assert alert.incident_key == "sales_etl.load_orders"


def test_scheduler_detected_failure_has_no_exception() -> None:
    context = worker_failure()
    del context["exception"]

    alert = alert_from_context(context)

    assert alert.kind is AlertKind.TASK_FAILURE
    assert alert.exception_type is None
    assert alert.exception_mro == ()
    assert alert.detected_by == "dag_processor"
    assert "without raising" in alert.message and "scheduler" in alert.message
    assert "failed" in alert.message  # the state is named
    assert alert.task_id == "load_orders"


def test_scheduler_detected_failure_with_a_string_message() -> None:
    alert = alert_from_context(worker_failure(exception="Executor reports task instance finished (failed)"))

    assert alert.kind is AlertKind.TASK_FAILURE
    assert alert.exception_type is None
    assert alert.message == "Executor reports task instance finished (failed)"


@pytest.mark.parametrize(
    "state",
    ["up_for_retry", TaskInstanceState.UP_FOR_RETRY, "TaskInstanceState.UP_FOR_RETRY"],
    ids=["str", "enum", "enum_repr"],
)
def test_retry(state: Any) -> None:
    alert = alert_from_context(worker_failure(ti=make_ti(state=state, try_number=1)))

    assert alert.kind is AlertKind.TASK_RETRY
    assert not alert.is_final_try
    assert alert.exception_type == f"{__name__}.WarehouseDenied"
    assert alert.detected_by == "worker"


@pytest.mark.parametrize("state", ["success", TaskInstanceState.SUCCESS], ids=["str", "enum"])
def test_success(state: Any) -> None:
    context = worker_failure(ti=make_ti(state=state))
    del context["exception"]

    alert = alert_from_context(context)

    assert alert.kind is AlertKind.TASK_SUCCESS
    assert alert.task_id == "load_orders"
    assert alert.incident_key == "sales_etl.load_orders"
    assert alert.detected_by == "worker"


def test_explicit_kind_wins_over_inference() -> None:
    alert = alert_from_context(worker_failure(ti=make_ti(state="success")), kind=AlertKind.TASK_FAILURE)

    assert alert.kind is AlertKind.TASK_FAILURE


def test_task_instance_key_works_without_ti() -> None:
    context = worker_failure()
    del context["ti"]

    alert = alert_from_context(context)

    assert (alert.dag_id, alert.task_id, alert.try_number) == ("sales_etl", "load_orders", 3)


def test_max_tries_falls_back_to_task_retries() -> None:
    alert = alert_from_context(
        worker_failure(ti=make_ti(max_tries=None, try_number=2), task=make_task(retries=4))
    )

    assert alert.max_tries == 4
    assert not alert.is_final_try


# --- DAG-level callbacks ------------------------------------------------------------------


def dag_callback(reason: str, *, with_last_ti: bool = True) -> dict[str, Any]:
    """What the DAG processor passes: the last task instance's context plus a ``reason``."""
    if not with_last_ti:
        return {"dag": make_dag(), "run_id": "manual__1", "reason": reason}
    context = worker_failure(reason=reason)
    context["ti"] = context["task_instance"] = make_ti(task_id="publish", state="failed")
    context["task"] = make_task(task_id="publish")
    return context


def test_dag_failure_callback() -> None:
    alert = alert_from_context(dag_callback("task_failure"))

    assert alert.kind is AlertKind.DAG_FAILURE
    assert alert.dag_id == "sales_etl"
    assert alert.task_id is None
    assert alert.exception_type is None  # the last task's exception belongs to its own alert
    assert "publish" in alert.message
    assert "task_failure" in alert.message
    assert alert.source == alert.incident_key == "sales_etl"
    assert alert.tags == frozenset({"tier:1", "team:sales"})


def test_dag_success_callback() -> None:
    alert = alert_from_context(dag_callback("success"))

    assert alert.kind is AlertKind.DAG_SUCCESS
    assert alert.task_id is None
    assert alert.incident_key == "sales_etl"


def test_dag_callback_without_task_context() -> None:
    alert = alert_from_context(dag_callback("task_failure", with_last_ti=False))

    assert alert.kind is AlertKind.DAG_FAILURE
    assert alert.dag_id == "sales_etl"
    assert alert.run_id == "manual__1"
    assert alert.task_id is None
    assert alert.message


def test_dag_run_without_task_and_without_reason() -> None:
    success = alert_from_context(
        {"dag": make_dag(), "dag_run": SimpleNamespace(dag_id="sales_etl", run_id="r", state="success")}
    )
    failed = alert_from_context(
        {"dag": make_dag(), "dag_run": SimpleNamespace(dag_id="sales_etl", run_id="r", state="failed")}
    )

    assert success.kind is AlertKind.DAG_SUCCESS
    assert failed.kind is AlertKind.DAG_FAILURE


# --- tolerance ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        pytest.param({}, id="empty"),
        pytest.param({"dag": make_dag()}, id="only_dag"),
        pytest.param({"dag": make_dag(tags=None), "params": None, "ti": None, "task": None}, id="nones"),
        pytest.param({"dag": SimpleNamespace()}, id="bare_dag"),
    ],
)
def test_almost_empty_context_still_gives_an_alert(context: dict[str, Any]) -> None:
    alert = alert_from_context(context)

    assert alert.dag_id
    assert alert.task_id is None
    assert alert.try_number >= 1
    assert alert.max_tries >= 0
    assert isinstance(alert.message, str)


def test_only_dag_uses_its_id_and_tags() -> None:
    alert = alert_from_context({"dag": make_dag()})

    assert alert.dag_id == "sales_etl"
    assert "tier:1" in alert.tags


def test_exception_whose_str_raises() -> None:
    alert = alert_from_context(worker_failure(exception=BrokenStr()))

    assert alert.exception_type == f"{__name__}.BrokenStr"
    assert alert.message
    assert "BrokenStr" in alert.message


def test_exception_with_empty_message_uses_its_type() -> None:
    alert = alert_from_context(worker_failure(exception=KeyError()))

    assert alert.message == "KeyError"


def test_get_flat_relative_ids_raising() -> None:
    def detached(upstream: bool = False) -> set[str]:
        raise RuntimeError("task is not attached to a DAG")

    alert = alert_from_context(worker_failure(task=make_task(get_flat_relative_ids=detached)))

    assert alert.downstream_count == 0
    assert alert.owner == "data-eng"


class ExplodingLogUrlTI:
    dag_id = "sales_etl"
    task_id = "load_orders"
    run_id = "r"
    map_index = -1
    try_number = 1
    max_tries = 0
    state = "failed"
    hostname = "w1"

    @property
    def log_url(self) -> str:
        raise RuntimeError("[api] base_url is not configured")


def test_log_url_property_raising() -> None:
    alert = alert_from_context(worker_failure(ti=ExplodingLogUrlTI()))

    assert alert.log_url is None
    assert alert.task_id == "load_orders"


@pytest.mark.parametrize(
    ("ti_fields", "expected"),
    [
        pytest.param({"try_number": None, "max_tries": None}, (1, 2), id="none"),
        pytest.param({"try_number": "2", "max_tries": "3"}, (2, 3), id="numeric_strings"),
        pytest.param({"try_number": "x", "max_tries": -1}, (1, 2), id="garbage_and_negative"),
        pytest.param({"try_number": 0}, (1, 2), id="zero_try"),
    ],
)
def test_odd_try_numbers(ti_fields: dict[str, Any], expected: tuple[int, int]) -> None:
    alert = alert_from_context(worker_failure(ti=make_ti(**ti_fields), task=make_task(retries=2)))

    assert (alert.try_number, alert.max_tries) == expected


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("a@example.com", ("a@example.com",)),
        ("a@example.com; b@example.com,c@example.com", ("a@example.com", "b@example.com", "c@example.com")),
        (None, ()),
        ([], ()),
        (42, ()),
    ],
)
def test_task_email_forms(email: Any, expected: tuple[str, ...]) -> None:
    assert alert_from_context(worker_failure(task=make_task(email=email))).emails == expected


def test_huge_message_is_truncated() -> None:
    alert = alert_from_context(worker_failure(exception=ValueError("x" * (MAX_MESSAGE_CHARS * 3))))

    assert len(alert.message) == MAX_MESSAGE_CHARS
