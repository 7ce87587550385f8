"""The ``[alerting]`` option table: every option's type, default and description.

:data:`OPTIONS` is the single source of truth that
:func:`airflow_alerting.get_provider_info.get_provider_info` publishes to Airflow and
:mod:`airflow_alerting.config` reads settings with; it is re-exported there.  Kept apart
from the readers and the reporting so the declarations can be read (and grow) on their own.

No imports beyond the standard library: Airflow imports this while it discovers providers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

OptionType = Literal["string", "integer", "float", "boolean"]


@dataclass(frozen=True)
class OptionSpec:
    """How one ``[alerting]`` option is documented to Airflow and defaulted.

    :param type: Airflow provider-schema type of the option (``string``, ``integer``, ``float``, ``boolean``).
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
        "silences_variable": OptionSpec(
            type="string",
            default="",
            description=(
                "Name of an Airflow Variable holding a JSON or YAML list of silences (maintenance "
                "windows). Read at most every 30 seconds when an alert fires; silenced failures are "
                "still counted in their incidents and reported by the digest."
            ),
            example="alerting_silences",
        ),
        "callback_deadline_seconds": OptionSpec(
            type="float",
            default="15",
            description=(
                "Time budget in seconds for one whole alert callback (all channels, all "
                "attempts). Must stay well under ``[dag_processor] dag_file_processor_timeout``, "
                "because scheduler-detected failures and DAG-level callbacks run in the DAG "
                "processor, and under ``[core] task_success_overtime`` (20 s by default), after "
                "which Airflow kills a finished task's process with its callbacks."
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
        "zero_touch": OptionSpec(
            type="boolean",
            default="False",
            description=(
                "Zero-touch mode: a cluster policy attaches AlertNotifier to every task and DAG "
                "that has no alerting callback of its own, keeping every callback already set. "
                "Read when DAG files are parsed; a DAG tagged ``alerting:off`` is left alone."
            ),
            example="True",
        ),
    }
)


#: what an empty default means, so "using the default ''" in a log line is not a riddle
_EMPTY_MEANS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "sql_conn_id": "no connection",
        "email_to": "the task's email argument",
        "email_from": "the SMTP connection's from_email",
        "base_url": "[api] base_url",
        "policy_file": "the built-in default policy",
        "policy_variable": "no policy Variable",
        "silences_variable": "no silences Variable",
    }
)
