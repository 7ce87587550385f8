"""End to end as operators run it: ``airflow dags test`` with connections stored in the metadata DB.

Connections added with ``airflow connections add`` (as the UI stores them) are read through the
Task SDK's supervisor channel, not from ``AIRFLOW_CONN_*`` variables.  Under ``airflow dags
test`` that channel is one in-process queue: lookups made from concurrent delivery threads took
each other's answers, and an alert routed to two channels lost one of them ("no usable
connection") although both connections existed.  Channels now resolve their connections on the
calling thread before deliveries fan out (``Channel.prepare``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_alerting.testing.servers import slack_api_connection, smtp_connection

pytestmark = pytest.mark.integration


def _airflow(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def db_connections(alerting: Any, airflow_db: Any) -> Iterator[dict[str, str]]:
    """Slack API and SMTP connections in the metadata DB under ids of this test only.

    :return: the environment for ``airflow dags test``: no ``AIRFLOW_CONN_*`` variables at all,
        and ``[alerting]`` pointed at the stored connections
    """
    suffix = uuid.uuid4().hex[:8]
    ids = {"slack": f"db_slack_api_{suffix}", "smtp": f"db_smtp_{suffix}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        {
            "AIRFLOW__ALERTING__STATE_BACKEND": "variables",
            "AIRFLOW__ALERTING__SLACK_CONN_ID": ids["slack"],
            # a webhook id that exists nowhere: falling back to it would be the bug, not a delivery
            "AIRFLOW__ALERTING__SLACK_WEBHOOK_CONN_ID": f"db_no_webhook_{suffix}",
            "AIRFLOW__ALERTING__SMTP_CONN_ID": ids["smtp"],
        }
    )
    servers = alerting.servers
    stored = {
        ids["slack"]: slack_api_connection(servers.slack),
        ids["smtp"]: smtp_connection(servers.smtp),
    }
    try:
        for conn_id, fields in stored.items():
            conn = {**fields, "extra": json.dumps(fields["extra"])}
            added = _airflow("connections", "add", conn_id, "--conn-json", json.dumps(conn), env=env)
            assert added.returncode == 0, added.stderr[-2000:]
        yield env
    finally:
        _delete_connections(list(stored))


def _delete_connections(conn_ids: list[str]) -> None:
    # in this process: one more ``airflow`` start-up per connection would only cost time
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(conn_ids)).delete(synchronize_session=False)


@pytest.mark.timeout(480)
def test_dags_test_with_db_connections_reaches_both_channels(
    alerting: Any, db_connections: dict[str, str]
) -> None:
    # scenario_high: a high-severity failure, routed to e-mail and Slack by the default matrix
    result = _airflow("dags", "test", "scenario_high", env=db_connections, timeout=200)

    assert result.returncode == 1, result.stderr[-2000:]
    slack, smtp = alerting.servers.slack, alerting.servers.smtp
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert len(slack.messages) == 1, output
    assert "permission denied for table analytics.orders" in slack.messages[0]["text"]
    assert len(smtp.messages) == 1, output
    assert smtp.messages[0]["To"] == "oncall@example.test"
    assert "not delivered" not in result.stdout + result.stderr
