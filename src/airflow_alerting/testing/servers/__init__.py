"""Local stand-ins for Slack, PagerDuty and an SMTP relay, for tests and demos.

Every server listens on ``127.0.0.1`` only, records what it receives, answers the way the
real service does (including its validation errors) and can be told to misbehave on the
next requests (HTTP errors, rate limiting, slow answers, SMTP rejections).  They let
integration tests, the demo and users' own DAG tests exercise real clients (``slack_sdk``,
the official Airflow hooks, ``smtplib``) without ever contacting an external host.

Example::

    with SlackServer() as slack, PagerDutyServer() as pagerduty:
        monkeypatch.setenv(*connection_env("slack_alerts", slack_api_connection(slack)))
        ...  # run the code under test
        assert slack.wait_for_messages(1)[0]["channel"] == "#alerts"

Layout: :mod:`.http` (shared recording HTTP server), :mod:`.slack_blocks` (Block Kit
validation), :mod:`.slack`, :mod:`.pagerduty`, :mod:`.smtp` and :mod:`.connections`.
"""

from __future__ import annotations

from airflow_alerting.testing.servers.connections import (
    connection_env,
    pagerduty_connection,
    slack_api_connection,
    slack_webhook_connection,
    smtp_connection,
)
from airflow_alerting.testing.servers.http import RecordedRequest
from airflow_alerting.testing.servers.http import _Response as _Response
from airflow_alerting.testing.servers.pagerduty import (
    PagerDutyOutcome,
    PagerDutyServer,
    pagerduty_event_errors,
)
from airflow_alerting.testing.servers.slack import SlackServer
from airflow_alerting.testing.servers.slack_blocks import slack_block_errors
from airflow_alerting.testing.servers.smtp import SmtpServer

__all__ = [
    "PagerDutyOutcome",
    "PagerDutyServer",
    "RecordedRequest",
    "SlackServer",
    "SmtpServer",
    "connection_env",
    "pagerduty_connection",
    "pagerduty_event_errors",
    "slack_api_connection",
    "slack_block_errors",
    "slack_webhook_connection",
    "smtp_connection",
]
