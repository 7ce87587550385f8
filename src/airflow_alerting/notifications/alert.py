"""``AlertNotifier``: the Airflow notifier that runs the whole alert pipeline."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

from airflow_alerting.model import Severity
from airflow_alerting.policy import AlertPolicy, PolicyError

if TYPE_CHECKING:
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.model import AlertOutcome

log = logging.getLogger("airflow_alerting")


class AlertNotifier(BaseNotifier):
    """Classify, route, throttle and deliver alerts for Airflow task and DAG callbacks.

    Use the same instance (or several) in ``on_failure_callback``, ``on_retry_callback``,
    ``on_success_callback`` (resolves open alerts), DAG-level callbacks and Deadline Alerts::

        default_args = {
            "on_failure_callback": [AlertNotifier()],
            "on_retry_callback": [AlertNotifier()],
            "on_success_callback": [AlertNotifier()],
        }

    Constructing one (when a DAG file is parsed) also validates the ``[alerting]``
    configuration and logs an error for each unusable value, naming the option, the value
    and the default used instead; see :func:`~airflow_alerting.config.check_settings`.

    :param policy: an :class:`~airflow_alerting.policy.AlertPolicy`, a mapping (parsed and
        validated now, so a bad policy fails at DAG parse time naming the field) or the path of
        a YAML file (loaded now).  When omitted, ``[alerting] policy_variable`` (read at alert
        time, so operators can change it without redeploying), then ``[alerting] policy_file``,
        then the defaults.
    :param title: optional title template (Jinja, rendered with the task's context on a copy of
        this notifier, so a notifier shared through ``default_args`` never leaks one task's
        values into another's alert).  Exception text is never rendered as a template.
    :param severity: force this severity instead of classifying
    :param manager: an explicit :class:`~airflow_alerting.manager.AlertManager` (tests, custom stores)
    """

    template_fields = ("title",)

    def __init__(
        self,
        *,
        policy: AlertPolicy | Mapping[str, Any] | str | Path | None = None,
        title: str = "",
        severity: Severity | str | None = None,
        manager: AlertManager | None = None,
    ) -> None:
        super().__init__()
        self.policy = _load_policy(policy)
        self.title = title
        self.severity = Severity.parse(severity) if severity is not None else None
        self.manager = manager
        self.last_outcome: AlertOutcome | None = None
        if manager is None:
            # An explicit manager brings its own settings; otherwise report bad [alerting]
            # values now, in the DAG processor's log, rather than first in a failing task's.
            _check_configuration()

    def __call__(self, *args: Any) -> None:
        """Render on a copy, then notify; never raises into the task."""
        if len(args) == 1:
            context = args[0]
        else:  # the legacy SLA-miss signature, kept for parity with BaseNotifier
            context = {
                "dag": args[0],
                "task_list": args[1],
                "blocking_task_list": args[2],
                "blocking_tis": args[3],
            }
        rendered = copy.copy(self)
        try:
            try:
                rendered.render_template_fields(context)
            except AttributeError:
                # DAG-level callbacks in dag.test() get a serialized DAG without a template
                # environment; a sandboxed one renders the same title without user macros
                from jinja2.sandbox import SandboxedEnvironment

                rendered.render_template_fields(context, jinja_env=SandboxedEnvironment())
        except Exception:  # a broken title template must not lose the alert
            log.exception("could not render the alert title template; sending without it")
            rendered.title = ""
        rendered.notify(context)
        self.last_outcome = rendered.last_outcome

    def notify(self, context: Any) -> None:
        """Run the pipeline for ``context`` synchronously (workers and the DAG processor)."""
        # imported here, not at module level: every DAG file that builds a notifier would
        # otherwise pay for the pipeline, the stores and the channels while it is parsed
        from airflow_alerting.context import alert_from_context
        from airflow_alerting.manager import shared_manager

        try:
            alert = alert_from_context(context)
            if self.title:
                alert = replace(alert, title=str(self.title))
            manager = self.manager or shared_manager(self.policy)
            self.last_outcome = manager.handle(alert, severity=self.severity)
        except Exception:  # Airflow would log it too, but an alert must never fail a task
            log.exception("AlertNotifier failed")

    async def async_notify(self, context: Any) -> None:
        """Run the pipeline from the triggerer (Deadline Alerts) without blocking its event loop."""
        await asyncio.to_thread(self.notify, context)


def _check_configuration() -> None:
    from airflow_alerting.config import check_settings

    try:
        check_settings()
    except Exception:  # never raises by design; a bug in it must not fail every DAG file either
        log.exception("could not validate the [alerting] configuration")


def _load_policy(policy: AlertPolicy | Mapping[str, Any] | str | Path | None) -> AlertPolicy | None:
    if policy is None or isinstance(policy, AlertPolicy):
        return policy
    if isinstance(policy, Mapping):
        return AlertPolicy.from_dict(policy)
    if isinstance(policy, str | Path):
        return AlertPolicy.from_yaml(policy)
    raise PolicyError(
        "policy", f"must be an AlertPolicy, a mapping or a YAML path, got {type(policy).__name__}"
    )
