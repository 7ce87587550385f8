"""The ``[alerting]`` configuration section: option specs, typed settings and their loader.

:data:`OPTIONS` is the single source of truth for every option's type, default and
description. :func:`airflow_alerting.get_provider_info.get_provider_info` publishes it
to Airflow (so ``airflow config list --section alerting`` shows it and
``AIRFLOW__ALERTING__<OPTION>`` overrides it), and :func:`load_settings` uses the same
defaults as ``fallback=`` so behaviour does not depend on whether Airflow has loaded
provider configuration yet.

This module must not import Airflow at import time: it is imported while Airflow
discovers providers (inside Airflow's own configuration bootstrap) and from DAG files.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

__all__ = [
    "OPTIONS",
    "SECTION",
    "STATE_BACKENDS",
    "AlertingSettings",
    "OptionSpec",
    "load_settings",
]

log = logging.getLogger(__name__)

#: Name of the Airflow configuration section (``[alerting]`` / ``AIRFLOW__ALERTING__*``).
SECTION: Final = "alerting"

#: Accepted values of ``[alerting] state_backend``.
STATE_BACKENDS: Final[tuple[str, ...]] = ("variables", "sql", "memory")

OptionType = Literal["string", "integer", "float"]


@dataclass(frozen=True)
class OptionSpec:
    """How one ``[alerting]`` option is documented to Airflow and defaulted.

    :param type: Airflow provider-schema type of the option (``string``, ``integer``, ``float``).
    :param default: default as Airflow stores it: always a string, ``""`` meaning "unset".
    :param description: text shown by ``airflow config list`` and in the docs.
    :param example: example value shown by ``airflow config list``; ``None`` for none.
    :param version_added: provider version that introduced the option.
    """

    type: OptionType
    default: str
    description: str
    example: str | None = None
    version_added: str = "0.1.0"


#: Every ``[alerting]`` option, in the order Airflow lists them.
OPTIONS: Final[Mapping[str, OptionSpec]] = MappingProxyType(
    {
        "state_backend": OptionSpec(
            type="string",
            default="variables",
            description=(
                "Where throttle, deduplication and incident state is kept. One of ``variables`` "
                "(Airflow Variables, zero setup, best effort under concurrency), ``sql`` (a table "
                "reached through ``sql_conn_id``, exact) or ``memory`` (per process; tests and "
                "``dag.test()`` only)."
            ),
            example="sql",
        ),
        "sql_conn_id": OptionSpec(
            type="string",
            default="",
            description=(
                "Airflow connection (PostgreSQL, MySQL/MariaDB or SQLite) holding the state table "
                "when ``state_backend`` is ``sql``. Required in that case."
            ),
            example="alerting_db",
        ),
        "slack_conn_id": OptionSpec(
            type="string",
            default="slack_api_default",
            description=(
                "Slack Web API connection (bot token). Used when it exists; it is needed for "
                "threads, message edits and buttons."
            ),
            example="slack_api_default",
        ),
        "slack_webhook_conn_id": OptionSpec(
            type="string",
            default="slack_default",
            description=(
                "Slack incoming-webhook connection, used when the ``slack_conn_id`` connection "
                "does not exist."
            ),
            example="slack_default",
        ),
        "slack_channel": OptionSpec(
            type="string",
            default="#alerts",
            description="Slack channel for alerts sent through the Web API connection.",
            example="#data-alerts",
        ),
        "smtp_conn_id": OptionSpec(
            type="string",
            default="smtp_default",
            description="SMTP connection used for e-mail alerts.",
            example="smtp_default",
        ),
        "email_to": OptionSpec(
            type="string",
            default="",
            description=("Comma-separated e-mail recipients. Empty means the task's ``email`` argument."),
            example="oncall@example.com,data-team@example.com",
        ),
        "email_from": OptionSpec(
            type="string",
            default="",
            description="Sender address. Empty means the SMTP connection's ``from_email``.",
            example="Airflow alerts <airflow@example.com>",
        ),
        "pagerduty_conn_id": OptionSpec(
            type="string",
            default="pagerduty_events_default",
            description=(
                "PagerDuty Events API v2 connection (integration/routing key). The events "
                "endpoint is taken from the connection host (default https://events.pagerduty.com)."
            ),
            example="pagerduty_events_default",
        ),
        "base_url": OptionSpec(
            type="string",
            default="",
            description=(
                "Base URL of the Airflow UI, used for links in alerts. Empty falls back to "
                "``[api] base_url``."
            ),
            example="https://airflow.example.com",
        ),
        "policy_file": OptionSpec(
            type="string",
            default="",
            description="Path to a YAML routing policy. Empty means the built-in default policy.",
            example="/opt/airflow/config/alerting-policy.yaml",
        ),
        "policy_variable": OptionSpec(
            type="string",
            default="",
            description=(
                "Name of an Airflow Variable holding a JSON or YAML routing policy. It is read "
                "when an alert fires, so operators can change routing without redeploying DAGs."
            ),
            example="alerting_policy",
        ),
        "callback_deadline_seconds": OptionSpec(
            type="float",
            default="30",
            description=(
                "Time budget in seconds for one whole alert callback (all channels, all "
                "attempts). Must stay well under ``[dag_processor] dag_file_processor_timeout``, "
                "because scheduler-detected failures and DAG-level callbacks run in the DAG "
                "processor."
            ),
            example="20",
        ),
        "delivery_attempts": OptionSpec(
            type="integer",
            default="3",
            description="Attempts per channel for a retryable delivery failure (at least 1).",
            example="5",
        ),
        "delivery_timeout_seconds": OptionSpec(
            type="float",
            default="10",
            description="Timeout in seconds for one delivery attempt to one channel.",
            example="5",
        ),
        "allowed_http_hosts": OptionSpec(
            type="string",
            default="127.0.0.1,localhost,::1",
            description=(
                "Comma-separated host names to which plain ``http://`` endpoints are allowed. "
                "Every other outbound endpoint must use https."
            ),
            example="127.0.0.1,localhost,::1,mock-slack.internal",
        ),
        "history_limit": OptionSpec(
            type="integer",
            default="500",
            description="Maximum number of alert history entries kept (0 keeps none).",
            example="1000",
        ),
        "maintenance_schedule": OptionSpec(
            type="string",
            default="*/5 * * * *",
            description="Schedule of the alerting_maintenance DAG (redelivers the outbox of alerts that "
            "could not be delivered), as a cron expression or preset.",
            example="@hourly",
        ),
    }
)

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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
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


@dataclass(frozen=True)
class AlertingSettings:
    """Validated, typed values of the ``[alerting]`` section.

    Build it with :func:`load_settings` (from Airflow configuration) or
    :meth:`from_mapping` (tests); direct construction skips validation. Empty strings mean
    "not set"; see :data:`OPTIONS` for each option's meaning.

    :param state_backend: ``"variables"``, ``"sql"`` or ``"memory"``.
    :param sql_conn_id: connection for the ``sql`` state backend; ``""`` when unused.
    :param slack_conn_id: Slack Web API (bot token) connection id.
    :param slack_webhook_conn_id: Slack incoming-webhook connection id.
    :param slack_channel: channel for Web API messages.
    :param smtp_conn_id: SMTP connection id.
    :param email_to: recipients; empty means the task's ``email`` argument.
    :param email_from: sender; ``""`` means the SMTP connection's ``from_email``.
    :param pagerduty_conn_id: PagerDuty Events API v2 connection id.
    :param base_url: Airflow UI base URL without a trailing slash; :func:`load_settings`
        has already applied the ``[api] base_url`` fallback. ``""`` means unknown.
    :param policy_file: path of a YAML routing policy, or ``""``.
    :param policy_variable: name of a Variable holding a JSON/YAML policy, or ``""``.
    :param callback_deadline_seconds: time budget of a whole callback, > 0.
    :param delivery_attempts: attempts per channel, >= 1.
    :param delivery_timeout_seconds: timeout of one delivery attempt, > 0.
    :param allowed_http_hosts: lower-case hosts that may be reached over plain http.
    :param history_limit: maximum alert history entries kept, >= 0.
    :param maintenance_schedule: schedule of the ``alerting_maintenance`` DAG.
    """

    state_backend: str
    sql_conn_id: str
    slack_conn_id: str
    slack_webhook_conn_id: str
    slack_channel: str
    smtp_conn_id: str
    email_to: tuple[str, ...]
    email_from: str
    pagerduty_conn_id: str
    base_url: str
    policy_file: str
    policy_variable: str
    callback_deadline_seconds: float
    delivery_attempts: int
    delivery_timeout_seconds: float
    allowed_http_hosts: tuple[str, ...]
    history_limit: int
    maintenance_schedule: str

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> AlertingSettings:
        """Parse and validate option values; missing options take their defaults.

        Values may be strings as Airflow stores them (``"3"``, ``"a@x,b@y"``) or already
        typed (``3``, ``["a@x"]``).

        :param values: option name -> value, using the names in :data:`OPTIONS`.
        :return: the validated settings.
        :raises ValueError: for an unknown option or a bad value; the message starts with
            ``[alerting] <option>``.
        """
        unknown = sorted(set(values) - set(OPTIONS))
        if unknown:
            raise ValueError(f"[{SECTION}] {unknown[0]}: unknown option; known options: {', '.join(OPTIONS)}")
        raw = {name: values.get(name, spec.default) for name, spec in OPTIONS.items()}
        settings = cls(
            state_backend=_choice("state_backend", raw["state_backend"], STATE_BACKENDS),
            sql_conn_id=_string("sql_conn_id", raw["sql_conn_id"]),
            slack_conn_id=_string("slack_conn_id", raw["slack_conn_id"]),
            slack_webhook_conn_id=_string("slack_webhook_conn_id", raw["slack_webhook_conn_id"]),
            slack_channel=_string("slack_channel", raw["slack_channel"]),
            smtp_conn_id=_string("smtp_conn_id", raw["smtp_conn_id"]),
            email_to=_email_list("email_to", raw["email_to"]),
            email_from=_email("email_from", raw["email_from"]),
            pagerduty_conn_id=_string("pagerduty_conn_id", raw["pagerduty_conn_id"]),
            base_url=_http_url("base_url", raw["base_url"]),
            policy_file=_string("policy_file", raw["policy_file"]),
            policy_variable=_string("policy_variable", raw["policy_variable"]),
            callback_deadline_seconds=_positive_float(
                "callback_deadline_seconds", raw["callback_deadline_seconds"]
            ),
            delivery_attempts=_integer("delivery_attempts", raw["delivery_attempts"], minimum=1),
            delivery_timeout_seconds=_positive_float(
                "delivery_timeout_seconds", raw["delivery_timeout_seconds"]
            ),
            allowed_http_hosts=_hosts("allowed_http_hosts", raw["allowed_http_hosts"]),
            history_limit=_integer("history_limit", raw["history_limit"], minimum=0),
            maintenance_schedule=_string("maintenance_schedule", raw["maintenance_schedule"]),
        )
        if settings.state_backend == "sql" and not settings.sql_conn_id:
            # Failing here names the missing option; failing later would be a vague
            # "connection '' not found" from inside an alert callback.
            raise ValueError(
                f"[{SECTION}] sql_conn_id: must name a connection when [{SECTION}] state_backend "
                f"is 'sql' (set in airflow.cfg or AIRFLOW__{SECTION.upper()}__SQL_CONN_ID)"
            )
        return settings

    @classmethod
    def defaults(cls) -> AlertingSettings:
        """Return the settings with every option at its default.

        :return: settings built from :data:`OPTIONS` defaults alone.
        """
        return cls.from_mapping({})


class _ConfGetter(Protocol):
    """The one method of Airflow's config parser this module uses."""

    def get(self, section: str, key: str, **kwargs: Any) -> str | None: ...


def _processor_timeout(conf: _ConfGetter) -> float | None:
    raw = conf.get("dag_processor", "dag_file_processor_timeout", fallback="50")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        # Not our option to validate; Airflow reports its own bad values.
        return None


def load_settings() -> AlertingSettings:
    """Read the ``[alerting]`` section from Airflow configuration.

    Every option is read with ``fallback=`` its :data:`OPTIONS` default, so this works
    whether or not Airflow has loaded provider configuration. Nothing is cached: Airflow
    resolves ``AIRFLOW__ALERTING__*`` environment variables on each read, so callers see
    changes without restarting.

    :return: the validated settings; ``base_url`` falls back to ``[api] base_url``.
    :raises ValueError: for a bad value, naming the option as ``[alerting] <option>``; also
        when ``callback_deadline_seconds`` is not below
        ``[dag_processor] dag_file_processor_timeout``.
    """
    # Imported here so importing this module (from DAG files, and from provider discovery
    # while Airflow's configuration is still initialising) stays cheap and cycle-free.
    from airflow.configuration import conf as airflow_conf

    conf: _ConfGetter = airflow_conf
    values = {name: conf.get(SECTION, name, fallback=spec.default) for name, spec in OPTIONS.items()}
    settings = AlertingSettings.from_mapping(values)

    if not settings.base_url:
        api_url = conf.get("api", "base_url", fallback="") or ""
        try:
            fallback_url = _http_url("base_url", api_url)
        except ValueError:
            # [api] base_url is Airflow's option with its own rules (it may be relative);
            # links without a base are better than failing the alert.
            log.debug("Ignoring [api] base_url %r for alert links: not an absolute http(s) URL", api_url)
            fallback_url = ""
        if fallback_url:
            settings = replace(settings, base_url=fallback_url)

    timeout = _processor_timeout(conf)
    if timeout is not None and settings.callback_deadline_seconds >= timeout:
        raise _bad(
            "callback_deadline_seconds",
            settings.callback_deadline_seconds,
            f"must be below [dag_processor] dag_file_processor_timeout ({timeout:g}), and well "
            "below it: the DAG processor kills callbacks that outlive it",
        )
    return settings
