"""The only reader of Airflow's callback context.

Contexts differ by where the callback runs: a task's callback on the worker has ``ti``,
``task`` and ``exception``; a failure detected by the scheduler (killed worker, OOM,
heartbeat timeout) runs the task's callback in the DAG processor with **no**
``exception``; DAG-level callbacks have ``dag``/``dag_run`` and a ``reason``; deadline
callbacks may have almost nothing.  Every lookup here is tolerant of missing keys and
attributes, because a crash here would lose the alert.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from airflow_alerting.model import Alert, AlertKind

#: longest message kept; the fingerprint and renderers only need the start, the rest is data
MAX_MESSAGE_CHARS = 8000


def alert_from_context(context: Mapping[str, Any], kind: AlertKind | None = None) -> Alert:
    """Build an :class:`~airflow_alerting.model.Alert` from any Airflow callback context.

    :param context: the context Airflow passes to ``on_*_callback`` (task or DAG level)
    :param kind: what happened; inferred from the context when omitted (a task instance in
        state ``up_for_retry`` is a retry, ``success`` a success, a DAG run without a task a
        DAG-level event)
    """
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task") or getattr(ti, "task", None)
    dag = context.get("dag") or getattr(task, "dag", None)
    dag_run = context.get("dag_run")
    exception = context.get("exception")

    dag_id = _first_str(
        getattr(ti, "dag_id", None), getattr(dag, "dag_id", None), getattr(dag_run, "dag_id", None)
    )
    task_id = _first_str(getattr(ti, "task_id", None), getattr(task, "task_id", None)) or None
    # DAG-level callbacks carry a "reason" (task_failure, success, all_tasks_deadlocked, ...) and
    # the context of the run's last task instance, which must not make them look like task alerts
    reason = context.get("reason")
    last_task_id = task_id
    if kind is None:
        if isinstance(reason, str) and reason:
            kind = AlertKind.DAG_SUCCESS if reason == "success" else AlertKind.DAG_FAILURE
        else:
            kind = _infer_kind(ti, task_id, dag_run, exception)
    if kind in (AlertKind.DAG_FAILURE, AlertKind.DAG_SUCCESS):
        task_id = None

    exception_type, mro, message = _describe_exception(exception, context, ti, kind, last_task_id)
    params = context.get("params")
    return Alert(
        dag_id=dag_id or "unknown_dag",
        kind=kind,
        task_id=task_id,
        run_id=_first_str(
            getattr(ti, "run_id", None), context.get("run_id"), getattr(dag_run, "run_id", None)
        )
        or None,
        map_index=_int(getattr(ti, "map_index", -1), -1),
        try_number=max(_int(getattr(ti, "try_number", 1), 1), 1),
        max_tries=_max_tries(ti, task),
        exception_type=exception_type,
        exception_mro=mro,
        message=message[:MAX_MESSAGE_CHARS],
        owner=_first_str(getattr(task, "owner", None)) or None,
        tags=frozenset(str(t) for t in (getattr(dag, "tags", None) or ())),
        params=MappingProxyType(dict(params)) if isinstance(params, Mapping) else MappingProxyType({}),
        downstream_count=_downstream_count(task),
        logical_date=_datetime(context.get("logical_date") or getattr(dag_run, "logical_date", None)),
        occurred_at=datetime.now(timezone.utc),
        hostname=_first_str(getattr(ti, "hostname", None)) or _hostname(),
        log_url=_log_url(ti),
        emails=_emails(task),
        detected_by="worker"
        if exception is not None or kind is not AlertKind.TASK_FAILURE
        else "dag_processor",
    )


def _infer_kind(ti: Any, task_id: str | None, dag_run: Any, exception: Any) -> AlertKind:
    if task_id is None:
        state = str(getattr(dag_run, "state", "") or "").lower()
        return AlertKind.DAG_SUCCESS if state.endswith("success") else AlertKind.DAG_FAILURE
    state = str(getattr(ti, "state", "") or "").lower()
    if state.endswith("up_for_retry"):
        return AlertKind.TASK_RETRY
    if state.endswith("success") and exception is None:
        return AlertKind.TASK_SUCCESS
    return AlertKind.TASK_FAILURE


def _describe_exception(
    exception: Any, context: Mapping[str, Any], ti: Any, kind: AlertKind, last_task_id: str | None
) -> tuple[str | None, tuple[str, ...], str]:
    if kind in (AlertKind.DAG_FAILURE, AlertKind.DAG_SUCCESS):
        exception = None  # the last task's exception belongs to that task's own alert
    if isinstance(exception, BaseException):
        mro = tuple(_qualified(cls) for cls in type(exception).__mro__ if cls not in (object, BaseException))
        return _qualified(type(exception)), mro, _safe_str(exception) or type(exception).__name__
    if isinstance(exception, str) and exception:
        # Airflow passes a string for some scheduler-side failures
        return None, (), exception
    reason = context.get("reason")
    if kind is AlertKind.DAG_FAILURE:
        why = f" ({reason})" if reason else ""
        last = f"; last task: {last_task_id}" if last_task_id else ""
        return None, (), f"DAG run failed{why}{last}"
    if kind is AlertKind.TASK_FAILURE:
        state = getattr(ti, "state", None)
        return (
            None,
            (),
            # worded so that no message rule matches: the scheduler_detected rule decides these
            f"Task failed without raising in the worker (state {state or 'unknown'}): the scheduler "
            "detected it, e.g. the process was killed or stopped heartbeating",
        )
    return None, (), str(reason or "")


def _qualified(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    return cls.__qualname__ if module in ("", "builtins") else f"{module}.{cls.__qualname__}"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ in user code must not lose the alert
        return repr(type(value))


def _first_str(*values: Any) -> str:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return ""


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _max_tries(ti: Any, task: Any) -> int:
    value = getattr(ti, "max_tries", None)
    if value is None or (isinstance(value, int) and value < 0):
        value = getattr(task, "retries", 0)
    return max(_int(value, 0), 0)


def _downstream_count(task: Any) -> int:
    getter = getattr(task, "get_flat_relative_ids", None)
    if getter is None:
        return 0
    try:
        return len(getter(upstream=False))
    except Exception:  # a task detached from its DAG (DAG processor contexts) has no relatives
        return 0


def _emails(task: Any) -> tuple[str, ...]:
    value = getattr(task, "email", None)
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    if not isinstance(value, list | tuple | set | frozenset):
        return ()
    return tuple(str(v).strip() for v in value if str(v).strip())


def _datetime(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _log_url(ti: Any) -> str | None:
    try:
        url = getattr(ti, "log_url", None)
    except Exception:  # the property reads config; never let that lose the alert
        return None
    return url if isinstance(url, str) and url else None


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "unknown"
