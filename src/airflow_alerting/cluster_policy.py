"""Zero-touch mode: a cluster policy that attaches :class:`AlertNotifier` where no alerting is set.

Registered through the ``airflow.policy`` entry point, so Airflow loads it in every process
that parses DAG files (DAG processor, workers, ``airflow dags test``), and inert until
``[alerting] zero_touch = True``. With it on:

* every task without an ``AlertNotifier`` in any of its callbacks gets one appended to its
  ``on_failure_callback``, ``on_retry_callback`` and ``on_success_callback``;
* every DAG without an ``AlertNotifier`` in its DAG-level callbacks gets one appended to its
  ``on_failure_callback``.

A task or DAG that already uses an ``AlertNotifier`` anywhere is left exactly as it is: its
authors chose their alerting. Callbacks that are not ``AlertNotifier`` (a custom Slack hook, a
metrics call) are kept, in their order, and ours runs after them: zero-touch adds alerting, it
never replaces what a team set up. A DAG tagged ``alerting:off`` is skipped with its tasks.

The hooks never raise: a policy exception makes Airflow reject the DAG file, and alerting must
never cost a DAG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import pluggy

__all__ = ["OPT_OUT_TAG", "dag_policy", "enabled", "task_policy"]

log = logging.getLogger(__name__)

#: project name of Airflow's policy hooks (``airflow.policies.local_settings_hookspec``); marked
#: here so importing this module (which Airflow does at start-up) does not import Airflow
hookimpl: Final = pluggy.HookimplMarker("airflow.policy")

#: a DAG carrying this tag is left alone by zero-touch mode, with its tasks
OPT_OUT_TAG: Final = "alerting:off"

_TASK_CALLBACKS: Final = ("on_failure_callback", "on_retry_callback", "on_success_callback")
_DAG_CALLBACKS: Final = ("on_failure_callback",)
# every DAG-level slot looked at to decide whether a DAG already alerts
_DAG_SLOTS: Final = ("on_failure_callback", "on_success_callback")

_shared: Any = None


def enabled() -> bool:
    """Whether ``[alerting] zero_touch`` is on; read on every call, so a change needs no restart.

    Only this option is read (the policy runs for every task of every DAG file parsed). An
    unusable value counts as off and is logged as an error, once per process.

    :return: the setting
    """
    from airflow_alerting.config import OPTIONS, SECTION, ConfigProblem, _airflow_conf, report_problems
    from airflow_alerting.config_validation import _PARSERS

    default = OPTIONS["zero_touch"].default
    try:
        raw = _airflow_conf().get(SECTION, "zero_touch", fallback=default)
        return bool(_PARSERS["zero_touch"]("zero_touch", raw))
    except ValueError as err:
        report_problems([ConfigProblem("zero_touch", str(err), f"the default {default!r}")], once=True)
    except Exception as err:  # a failing *_cmd / *_secret
        shown = f"{type(err).__name__}: {err}"
        problem = ConfigProblem("zero_touch", f"[{SECTION}] zero_touch: could not be read ({shown})", default)
        report_problems([problem], once=True)
    return False


def _notifier() -> Any:
    # One instance for every task and DAG of the process: building one validates [alerting]
    # (and logs its problems), which a DAG factory with thousands of tasks must pay only once.
    global _shared
    if _shared is None:
        from airflow_alerting.notifications.alert import AlertNotifier

        _shared = AlertNotifier()
    return _shared


def _callbacks(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _alerts_already(owner: Any, slots: Iterable[str]) -> bool:
    from airflow_alerting.notifications.alert import AlertNotifier

    return any(
        isinstance(callback, AlertNotifier)
        for slot in slots
        for callback in _callbacks(getattr(owner, slot, None))
    )


def _attach(owner: Any, slots: Iterable[str], notifier: Any) -> None:
    for slot in slots:
        setattr(owner, slot, [*_callbacks(getattr(owner, slot, None)), notifier])


def _opted_out(dag: Any) -> bool:
    return dag is not None and OPT_OUT_TAG in (getattr(dag, "tags", None) or ())


def _guarded(hook: Callable[[Any], None], what: str, target: Any) -> None:
    try:
        if enabled():
            hook(target)
    except Exception:
        # a policy that raises makes Airflow reject the whole DAG file
        log.exception("zero-touch alerting could not be attached to %s", what)


def _attach_to_task(task: Any) -> None:
    if _opted_out(getattr(task, "dag", None)) or _alerts_already(task, _TASK_CALLBACKS):
        return
    _attach(task, _TASK_CALLBACKS, _notifier())


def _attach_to_dag(dag: Any) -> None:
    if _opted_out(dag) or _alerts_already(dag, _DAG_SLOTS):
        return
    _attach(dag, _DAG_CALLBACKS, _notifier())
    # computed once when the DAG is built; the scheduler asks for DAG callbacks only when set
    dag.has_on_failure_callback = True


@hookimpl
def task_policy(task: Any) -> None:
    """Airflow's ``task_policy`` hook: attach alerting to ``task`` if it has none.

    :param task: a task of a DAG being loaded
    """
    _guarded(_attach_to_task, f"task {getattr(task, 'task_id', '?')}", task)


@hookimpl
def dag_policy(dag: Any) -> None:
    """Airflow's ``dag_policy`` hook: attach a DAG-level failure alert to ``dag`` if it has none.

    :param dag: a DAG being loaded
    """
    _guarded(_attach_to_dag, f"DAG {getattr(dag, 'dag_id', '?')}", dag)
