"""Matching alerts against criteria, shared by classification rules and routes."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from airflow_alerting.model import Alert, AlertKind


@dataclass(frozen=True)
class AlertMatcher:
    """Criteria an alert must meet; every given criterion must match (AND), any value within one (OR).

    :param dag_ids: glob patterns for the dag id (``"finance_*"``)
    :param task_ids: glob patterns for the task id
    :param tags: DAG tags, any of which must be present (exact, case-insensitive)
    :param owners: task owners, any of which must match (exact, case-insensitive)
    :param exception_types: exception class names or qualified names; a subclass matches its bases
    :param message_patterns: regular expressions searched (case-insensitive) in the message
    :param no_exception: match only task failures that carry no exception (detected by the scheduler)
    :param kinds: alert kinds (``task_failure``, ``dag_failure``, ...), any of which must match
    """

    dag_ids: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    exception_types: tuple[str, ...] = ()
    message_patterns: tuple[str, ...] = ()
    no_exception: bool = False
    kinds: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # compile once at policy load: a bad pattern must fail at parse time, not in a callback
        compiled = tuple(re.compile(p, re.IGNORECASE) for p in self.message_patterns)
        object.__setattr__(self, "_compiled", compiled)

    @property
    def is_empty(self) -> bool:
        return not (
            self.dag_ids
            or self.task_ids
            or self.tags
            or self.owners
            or self.exception_types
            or self.message_patterns
            or self.no_exception
            or self.kinds
        )

    def explain(self, alert: Alert) -> str | None:
        """Return why ``alert`` matches (for the decision's reasons), or ``None`` if it does not."""
        why: list[str] = []
        if self.dag_ids:
            if not any(fnmatch.fnmatchcase(alert.dag_id, p) for p in self.dag_ids):
                return None
            why.append(f"dag {alert.dag_id}")
        if self.task_ids:
            if alert.task_id is None or not any(fnmatch.fnmatchcase(alert.task_id, p) for p in self.task_ids):
                return None
            why.append(f"task {alert.task_id}")
        if self.tags:
            alert_tags = {t.lower() for t in alert.tags}
            hit = [t for t in self.tags if t.lower() in alert_tags]
            if not hit:
                return None
            why.append(f"tag {hit[0]}")
        if self.owners:
            owner = (alert.owner or "").lower()
            if owner not in {o.lower() for o in self.owners}:
                return None
            why.append(f"owner {alert.owner}")
        if self.kinds:
            if alert.kind.value not in self.kinds:
                return None
            why.append(alert.kind.value.replace("_", " "))
        if self.no_exception:
            if alert.exception_type is not None or alert.kind is not AlertKind.TASK_FAILURE:
                return None
            why.append("no exception")
        if self.exception_types:
            matched = matching_exception_type(alert, self.exception_types)
            if matched is None:
                return None
            why.append(f"exception {matched}")
        if self._compiled:
            found = next((p for p in self._compiled if p.search(alert.message)), None)
            if found is None:
                return None
            why.append(f"message matches /{found.pattern}/")
        return ", ".join(why) if why else "always"


def matching_exception_type(alert: Alert, names: tuple[str, ...]) -> str | None:
    """Return the first of ``names`` that the alert's exception is an instance of, by name."""
    mro = alert.exception_mro or ((alert.exception_type,) if alert.exception_type else ())
    for name in names:
        for qualified in mro:
            if qualified == name or qualified.endswith("." + name) or name.endswith("." + qualified):
                return name
    return None
