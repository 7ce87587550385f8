"""Airflow connections pointing at the local servers, and their environment variables."""

from __future__ import annotations

import json
from typing import Any

from airflow_alerting.testing.servers.pagerduty import PagerDutyServer
from airflow_alerting.testing.servers.slack import SlackServer
from airflow_alerting.testing.servers.smtp import SmtpServer


def slack_api_connection(server: SlackServer) -> dict[str, Any]:
    """Airflow ``slack`` connection (for ``SlackHook``) pointing at ``server``.

    :param server: A running :class:`SlackServer`.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "slack", "password": server.token, "extra": {"base_url": server.base_url}}


def slack_webhook_connection(server: SlackServer) -> dict[str, Any]:
    """Airflow ``slackwebhook`` connection (for ``SlackWebhookHook``) pointing at ``server``.

    :param server: A running :class:`SlackServer`.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "slackwebhook", "password": server.webhook_url}


def pagerduty_connection(
    server: PagerDutyServer, routing_key: str = "R0UTINGKEY0000000000000000000000"
) -> dict[str, Any]:
    """Airflow ``pagerduty_events`` connection whose host is the local events endpoint.

    :param server: A running :class:`PagerDutyServer`.
    :param routing_key: Integration (routing) key stored as the password.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "pagerduty_events", "password": routing_key, "host": server.url}


def smtp_connection(server: SmtpServer, from_email: str = "airflow@example.test") -> dict[str, Any]:
    """Airflow ``smtp`` connection for plain SMTP to ``server`` (TLS and SSL disabled).

    :param server: A running :class:`SmtpServer`.
    :param from_email: Sender address stored in the connection extra.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {
        "conn_type": "smtp",
        "host": server.host,
        "port": server.port,
        "login": "",
        "password": "",
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": from_email},
    }


def connection_env(conn_id: str, conn: dict[str, Any]) -> tuple[str, str]:
    """Environment variable that defines an Airflow connection, as ``(name, value)``.

    Airflow reads ``AIRFLOW_CONN_<CONN_ID>`` variables holding JSON, so
    ``monkeypatch.setenv(*connection_env("slack_alerts", slack_api_connection(server)))``
    makes ``slack_alerts`` available to hooks without a metadata database.

    :param conn_id: Airflow connection ID.
    :param conn: Connection fields, e.g. from :func:`slack_api_connection`.
    :return: ``("AIRFLOW_CONN_" + conn_id.upper(), json.dumps(conn))``.
    """
    return "AIRFLOW_CONN_" + conn_id.upper(), json.dumps(conn)
