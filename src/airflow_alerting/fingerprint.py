"""Content fingerprints: which alerts are "the same problem".

A fingerprint is stable across runs, retries and mapped instances, and ignores the
variable parts of a message, so "timeout after 31s on host-3" and "timeout after 29s
on host-7" group together while a different exception or task does not.
"""

from __future__ import annotations

import hashlib
import re

from airflow_alerting.model import Alert

# Order matters: the broad patterns (numbers) must run after the structured ones that
# contain digits (uuids, timestamps, IPs), or they would be half-replaced first.
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
        "<ts>",
    ),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I), "<url>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    # IPv6: all eight groups, or a compressed form with "::" (fe80::1, ::1, 2001:db8::)
    (
        re.compile(r"(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|[0-9a-f:]*::[0-9a-f:]*)(?![\w:])", re.I),
        "<ip>",
    ),
    # paths after a space, a quote, "(" or "=" ("No such file or directory: '/data/in/x.csv'")
    (re.compile(r"(?:(?<=[\s'\"(=])|^)(?:/[\w.@-]+){2,}/?", re.M), "<path>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    # host-3, worker_12, db7.internal: a name with a number in it is an instance, not a kind
    (re.compile(r"\b([a-z][a-z_-]*?)[-_]?\d+(?=\b|[._-])", re.I), r"\1<n>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?(?:ms|s|m|h|kb|mb|gb|%)?(?![\w>])", re.I), "<n>"),
    (re.compile(r"\s+"), " "),
)

#: how much of the normalised message takes part; a long tail is usually data, not the problem
MESSAGE_PREFIX = 500


def normalise_message(message: str) -> str:
    """Replace the variable parts of ``message`` with placeholders.

    >>> normalise_message("timeout after 31s on host-3")
    'timeout after <n> on host<n>'
    """
    text = message.strip()
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text.strip()[:MESSAGE_PREFIX]


#: the parts of an alert a fingerprint can be built from
GROUP_BY_FIELDS = ("dag_id", "task_id", "exception", "message")


def fingerprint(alert: Alert, group_by: tuple[str, ...] = GROUP_BY_FIELDS) -> str:
    """Return a 16-hex-digit fingerprint of ``alert``'s problem.

    Built from the dag id, task id (not the map index), exception type and the normalised
    first line of the message; never from the run id, try number or timestamps.

    :param group_by: which of :data:`GROUP_BY_FIELDS` take part.  Dropping ``task_id`` (or
        ``dag_id``) groups one root cause across tasks, so a database outage that fails
        five hundred tasks is one alert with a count, not five hundred.
    """
    first_line = alert.message.strip().splitlines()[0] if alert.message.strip() else ""
    values = {
        "dag_id": alert.dag_id,
        "task_id": alert.task_id or "",
        "exception": alert.exception_type or "",
        "message": normalise_message(first_line),
    }
    parts = tuple(f"{name}={values[name]}" for name in GROUP_BY_FIELDS if name in group_by)
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()
    return digest[:16]
