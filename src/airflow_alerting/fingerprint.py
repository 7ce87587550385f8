"""Content fingerprints: which alerts are "the same problem".

A fingerprint is stable across runs, retries and mapped instances, and ignores the
variable parts of a message, so "timeout after 31s on host-3" and "timeout after 29s
on host-7" group together while a different exception or task does not.
"""

from __future__ import annotations

import hashlib
import re

from airflow_alerting._memo import memo_by_digest
from airflow_alerting.model import Alert

# Order matters: the broad patterns (numbers) must run after the structured ones that
# contain digits (uuids, timestamps, IPs), or they would be half-replaced first.
#
# Messages are untrusted and can be huge, so the input is bounded first (_INPUT_LIMIT) and every
# pattern is linear in it: repetitions are bounded or deterministic (a quantified class never
# overlaps what may follow it), and a pattern that can start anywhere gives up after a bounded
# number of steps.  An unbounded prefix such as the old e-mail local part ``[\w.+-]+@`` re-scanned
# the rest of the line from every position, which cost seconds on an 8,000-character line.
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<ts>",
    ),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?\b"), "<time>"),
    # a scheme is at most 32 characters, so a start that finds no "://" gives up early
    (re.compile(r"\b[a-z][a-z0-9+.-]{0,31}://[^\s'\"<>]+", re.I), "<url>"),
    # starts only at the beginning of a local part (RFC 5321 bounds: 64 per part and label)
    (re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    # IPv6: all eight groups, or a compressed form with "::" (fe80::1, ::1, 2001:db8::); at most
    # seven groups on either side of "::" keeps a start's work bounded on long "1:2:3:..." runs
    (
        re.compile(
            r"(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}"
            r"|(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?)(?![\w:])",
            re.I,
        ),
        "<ip>",
    ),
    # paths after a space, a quote, "(" or "=" ("No such file or directory: '/data/in/x.csv'");
    # a segment cannot contain "/", so the repetition is deterministic
    (re.compile(r"(?:(?<=[\s'\"(=])|^)(?:/[\w.@-]{1,255}){2,}/?", re.M), "<path>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    # host-3, worker_12, db7.internal: a name with a number in it is an instance, not a kind.
    # The name is bounded (a DNS label is at most 63 characters): unbounded, every word start in
    # "a-a-a-..." scanned to the end of the line.
    (re.compile(r"\b([a-z][a-z_-]{0,63}?)[-_]?\d+(?=\b|[._-])", re.I), r"\1<n>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?(?:ms|s|m|h|kb|mb|gb|%)?(?![\w>])", re.I), "<n>"),
    (re.compile(r"\s+"), " "),
)

#: how much of the normalised message takes part; a long tail is usually data, not the problem
MESSAGE_PREFIX = 500
#: how much of a message is normalised: placeholders are shorter than what they replace, so more
#: than MESSAGE_PREFIX, but bounded so that a megabyte of message costs what 4 KiB does
_INPUT_LIMIT = 8 * MESSAGE_PREFIX
#: how much of a message is searched for its first line
_SCAN_LIMIT = 64 * 1024


def normalise_message(message: str) -> str:
    """Replace the variable parts of ``message`` with placeholders.

    Only the first 4,000 characters are looked at (the result keeps :data:`MESSAGE_PREFIX`).

    >>> normalise_message("timeout after 31s on host-3")
    'timeout after <n> on host<n>'
    """
    # failures of one cause often repeat their message (retries, mapped instances): the regexes,
    # a pure function of the text, run once per distinct short message
    return _normalise_cached(message)


def _normalise(message: str) -> str:
    text = message[:_INPUT_LIMIT].strip()
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text.strip()[:MESSAGE_PREFIX]


_normalise_cached = memo_by_digest(_normalise)


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
    head = alert.message[:_SCAN_LIMIT].strip()
    first_line = head.splitlines()[0] if head else ""
    values = {
        "dag_id": alert.dag_id,
        "task_id": alert.task_id or "",
        "exception": alert.exception_type or "",
        "message": normalise_message(first_line),
    }
    parts = tuple(f"{name}={values[name]}" for name in GROUP_BY_FIELDS if name in group_by)
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()
    return digest[:16]
