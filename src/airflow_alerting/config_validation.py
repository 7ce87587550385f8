"""Validators turning raw ``[alerting]`` option values into typed values.

Each validator takes the option name and the raw value (a string from airflow.cfg or the
environment, or a default) and returns the typed value or raises a ``ValueError`` naming the
option; :data:`_PARSERS` maps every option of :data:`airflow_alerting.config.OPTIONS` to its
validator.  Split out of :mod:`airflow_alerting.config`, which re-exports what it uses.

Like that module, this one must not import Airflow at import time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

#: Name of the Airflow configuration section (``[alerting]`` / ``AIRFLOW__ALERTING__*``).
SECTION: Final = "alerting"

#: Accepted values of ``[alerting] state_backend``.
STATE_BACKENDS: Final[tuple[str, ...]] = ("variables", "sql", "memory")

# Values are echoed in error messages; cap them so a pasted policy does not flood a log line.
_MAX_ECHO = 80


def _bad(option: str, value: object, problem: str) -> ValueError:
    shown = repr(value)
    if len(shown) > _MAX_ECHO:
        shown = shown[: _MAX_ECHO - 3] + "..."
    env = f"AIRFLOW__{SECTION.upper()}__{option.upper()}"
    return ValueError(f"[{SECTION}] {option}: {shown} {problem} (set in airflow.cfg or {env})")


def _has_control_chars(text: str) -> bool:
    # CR/LF in a header value or connection id enables header injection or silent lookups of
    # a different key, so reject every control character rather than stripping it quietly.
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _string(option: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(option, value, "must be a string")
    text = value.strip()
    if _has_control_chars(text):
        raise _bad(option, value, "must not contain control characters (CR, LF, tab, ...)")
    return text


def _string_list(option: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts: Sequence[object] = value.split(",")
    elif isinstance(value, Sequence):
        parts = value
    else:
        raise _bad(option, value, "must be a comma-separated string")
    items = (_string(option, part) for part in parts)
    # A repeated recipient would get every alert twice; keep first-seen order for stable output.
    return tuple(dict.fromkeys(item for item in items if item))


def _choice(option: str, value: object, choices: tuple[str, ...]) -> str:
    text = _string(option, value).lower()
    if text not in choices:
        raise _bad(option, value, f"is not one of: {', '.join(choices)}")
    return text


def _integer(option: str, value: object, *, minimum: int) -> int:
    # bool is an int subclass; True as "1 attempt" is almost certainly a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise _bad(option, value, "must be a whole number") from None
    else:
        raise _bad(option, value, "must be a whole number")
    if number < minimum:
        raise _bad(option, value, f"must be >= {minimum}")
    return number


def _positive_float(option: str, value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _bad(option, value, "must be a number of seconds") from None
    else:
        raise _bad(option, value, "must be a number of seconds")
    if not math.isfinite(number) or number <= 0:
        raise _bad(option, value, "must be a finite number of seconds > 0")
    return number


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _boolean(option: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise _bad(option, value, "must be True or False")


def _email_list(option: str, value: object) -> tuple[str, ...]:
    addresses = _string_list(option, value)
    for address in addresses:
        if "@" not in address:
            raise _bad(option, address, "is not an e-mail address")
    return addresses


def _email(option: str, value: object) -> str:
    address = _string(option, value)
    if address and "@" not in address:
        raise _bad(option, value, "is not an e-mail address")
    return address


def _http_url(option: str, value: object) -> str:
    url = _string(option, value)
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 literal
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(option, value, "must be an absolute http(s) URL such as https://airflow.example.com")
    # Links are built as base_url + "/dags/...", so a trailing slash would double up.
    return url.rstrip("/")


def _hosts(option: str, value: object) -> tuple[str, ...]:
    hosts = []
    for item in _string_list(option, value):
        host = item.lower()
        if host.startswith("[") and host.endswith("]"):
            # URLs bracket IPv6 literals; urlsplit().hostname does not, and that is what
            # callers compare against.
            host = host[1:-1]
        if "/" in host or any(ch.isspace() for ch in host):
            raise _bad(option, item, "must be a bare host name, not a URL")
        name, sep, port = host.rpartition(":")
        if sep and port.isdigit() and ":" not in name:
            raise _bad(option, item, "must be a host name without a port")
        hosts.append(host)
    return tuple(hosts)


# Schedules Airflow accepts besides cron expressions (airflow.sdk's CRON_PRESETS plus the two
# special timetables); listed here because croniter does not know all of them (@quarterly).
_SCHEDULE_PRESETS: Final = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)


# (lowest, highest) of the five cron fields: minute, hour, day of month, month, day of week
_CRON_BOUNDS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _plain_cron_field(field: str, lowest: int, highest: int) -> bool:
    """Whether ``field`` is ``*``, a number, a range or a list of them, optionally ``/step``, in bounds."""
    for part in field.split(","):
        span, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            return False
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            return False
        start, end = int(first), int(last) if dash else int(first)
        if not lowest <= start <= end <= highest:
            return False
    return True


def _plainly_cron(text: str) -> bool:
    """Whether ``text`` is a cron expression valid on its face (numbers, ranges, lists, steps).

    Covers what schedules are usually written as, so that a DAG file's parse does not import
    croniter (14 ms, a third of the notifier's whole parse cost) to check the default
    ``*/5 * * * *``. Anything else (names such as ``MON``, ``L``, ``#``) is left to croniter:
    ``False`` here means "not plainly valid", never "invalid".
    """
    fields = text.split()
    # ASCII only: str.isdigit() is also true of superscripts and other scripts' digits
    return (
        text.isascii()
        and len(fields) == len(_CRON_BOUNDS)
        and all(
            _plain_cron_field(field, lowest, highest)
            for field, (lowest, highest) in zip(fields, _CRON_BOUNDS, strict=True)
        )
    )


@functools.lru_cache(maxsize=32)
def _is_cron(text: str) -> bool:
    # Cached: settings are read for every alert and every notifier a DAG file builds, and
    # croniter's check is the slowest part of that.
    if _plainly_cron(text):
        return True
    try:
        # Airflow validates cron schedules with croniter too; imported here because only the
        # maintenance DAG needs it and DAG files import this module.
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter ships with Airflow
        return True
    return bool(croniter.is_valid(text))


def _schedule(option: str, value: object) -> str:
    text = _string(option, value)
    if text in _SCHEDULE_PRESETS:
        return text
    if not text or not _is_cron(text):
        raise _bad(
            option, value, "must be a cron expression (e.g. '*/5 * * * *') or a preset such as @hourly"
        )
    return text


def _checked(parse: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    # Whatever a validator trips over (a library's own ValueError, a TypeError from an exotic
    # value) must still become a ValueError naming the option, so that it falls back.
    def checked(option: str, value: object) -> Any:
        try:
            return parse(option, value)
        except ValueError as err:
            if str(err).startswith(f"[{SECTION}] {option}: "):
                raise
            raise _bad(option, value, f"cannot be used ({err})") from err
        except Exception as err:
            raise _bad(option, value, f"cannot be used ({type(err).__name__})") from err

    return checked


#: option -> validator turning a raw value into the typed value, raising ValueError naming it
_PARSERS: Final[Mapping[str, Callable[[str, object], Any]]] = MappingProxyType(
    {
        name: _checked(parse)
        for name, parse in {
            "state_backend": lambda o, v: _choice(o, v, STATE_BACKENDS),
            "sql_conn_id": _string,
            "slack_conn_id": _string,
            "slack_webhook_conn_id": _string,
            "slack_channel": _string,
            "smtp_conn_id": _string,
            "email_to": _email_list,
            "email_from": _email,
            "pagerduty_conn_id": _string,
            "base_url": _http_url,
            "policy_file": _string,
            "policy_variable": _string,
            "silences_variable": _string,
            "callback_deadline_seconds": _positive_float,
            "delivery_attempts": lambda o, v: _integer(o, v, minimum=1),
            "delivery_timeout_seconds": _positive_float,
            "allowed_http_hosts": _hosts,
            "history_limit": lambda o, v: _integer(o, v, minimum=0),
            "maintenance_schedule": _schedule,
            "zero_touch": _boolean,
        }.items()
    }
)
