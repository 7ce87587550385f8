"""Correlation: which failures are one incident.

By default failures correlate by root cause (exception type plus normalised message, see
:mod:`airflow_alerting.incidents.signature`) whatever DAG or task they come from, so one
database outage failing 500 tasks in 20 DAGs is one incident.  A policy can add or replace
the parts of the key (``dag_id``, ``task_id``, ``rule``, ``tag:<prefix>``) or opt out (an
empty list: one incident per fingerprint, i.e. per dag/task/cause).
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_alerting.model import Alert, Classification

#: the parts a correlation key can be built from (``tag:<prefix>`` besides these)
CORRELATION_FIELDS = ("cause", "dag_id", "task_id", "rule")


def validate_correlate_by(parts: Sequence[str]) -> str | None:
    """The problem with ``parts`` in words, or ``None`` when they are valid."""
    for part in parts:
        if part in CORRELATION_FIELDS:
            continue
        if part.startswith("tag:") and len(part) > len("tag:"):
            continue
        return (
            f"unknown correlation field {part!r} (expected {', '.join(CORRELATION_FIELDS)} or tag:<prefix>)"
        )
    if len(set(parts)) != len(parts):
        return "lists a field twice"
    return None


def correlation_key(
    alert: Alert, classification: Classification, fingerprint: str, correlate_by: Sequence[str]
) -> tuple[str, str]:
    """Return ``(key, title)``: the incident key ``alert`` joins, and the incident's title in words.

    :param alert: the failure
    :param classification: its classification (for ``rule``)
    :param fingerprint: its fingerprint (the key when ``correlate_by`` is empty)
    :param correlate_by: the policy's ``incidents.correlate_by``
    """
    from airflow_alerting.incidents.signature import cause_signature
    from airflow_alerting.render.redact import sanitize

    # the key and title are stored and shown: secrets go before the text is normalised
    cause = cause_signature(alert.exception_type, sanitize(alert.message))
    if not cause.strip():
        cause = f"{alert.kind.value.replace('_', ' ')} without a message"
    title = sanitize(alert.title) if alert.title else cause
    if not correlate_by:
        return f"fp={fingerprint}", f"{alert.incident_key}: {title}"
    parts: list[str] = []
    for part in correlate_by:
        if part == "cause":
            parts.append(f"cause={cause}")
        elif part == "dag_id":
            parts.append(f"dag={alert.dag_id}")
        elif part == "task_id":
            parts.append(f"task={alert.dag_id}.{alert.task_id or ''}")
        elif part == "rule":
            parts.append(f"rule={classification.rules[0] if classification.rules else '-'}")
        elif part.startswith("tag:"):
            prefix = part[len("tag:") :].lower() + ":"
            value = next((t[len(prefix) :] for t in sorted(alert.tags) if t.lower().startswith(prefix)), "-")
            parts.append(f"{part}={value}")
    scope = [p for p in parts if not p.startswith("cause=")]
    # the title names the scope when it is narrower than "everywhere" (e.g. per DAG)
    if "cause" in correlate_by:
        title = f"{title} ({', '.join(scope)})" if scope else title
    else:
        title = ", ".join(scope)
    return "|".join(parts), title
