"""Metrics received by a real StatsD UDP listener from a real ``airflow dags test`` run.

Airflow's own StatsD (and DogStatsD) client sends them: ``[metrics] statsd_on`` points it at a
UDP socket on 127.0.0.1, and the DAG in ``dags/statsd_metrics_dags.py`` fails one task, which
alerts through Slack and e-mail on the local servers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration


class StatsdListener:
    """Collects every StatsD line sent to a UDP port on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(line for line in data.decode("utf-8", "replace").splitlines() if line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def named(self, name: str) -> list[str]:
        """The lines for metric ``name`` exactly (``name:value|type[|#tags]``)."""
        return [line for line in self.lines if line.split(":", 1)[0] == name]


@pytest.fixture
def listener() -> Iterator[StatsdListener]:
    udp = StatsdListener()
    yield udp
    udp.close()


def _dags_test(listener: StatsdListener, **metrics_env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW__ALERTING__STATE_BACKEND": "variables",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        **metrics_env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "statsd_metrics_failure"],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    # UDP is asynchronous: the last datagrams may still be in flight when the process exits
    listener._stop.wait(0.5)
    return result


@pytest.mark.timeout(300)
def test_plain_statsd_receives_the_tagged_and_the_legacy_names(
    alerting: Any, listener: StatsdListener
) -> None:
    _dags_test(listener, AIRFLOW__METRICS__STATSD_ON="True")

    assert len(alerting.servers.slack.messages) == 1
    # counters: the plain name (StatsD drops tags) and the name with the tags folded in
    assert listener.named("airflow.alerting.alerts.classified") == ["airflow.alerting.alerts.classified:1|c"]
    assert listener.named("airflow.alerting.classified.high") == ["airflow.alerting.classified.high:1|c"]
    assert listener.named("airflow.alerting.alerts.sent") == ["airflow.alerting.alerts.sent:1|c"] * 2
    assert listener.named("airflow.alerting.sent.slack") == ["airflow.alerting.sent.slack:1|c"]
    assert listener.named("airflow.alerting.sent.email") == ["airflow.alerting.sent.email:1|c"]
    assert listener.named("airflow.alerting.incidents.opened") == ["airflow.alerting.incidents.opened:1|c"]
    # a timer per delivery, in milliseconds, and the outbox gauge of the sweep after the alert
    for name in ("airflow.alerting.delivery.latency", "airflow.alerting.delivery_latency.slack"):
        assert [line.endswith("|ms") for line in listener.named(name)] == [True] * len(listener.named(name))
        assert listener.named(name), name
    assert "airflow.alerting.outbox.due:0|g" in listener.lines
    # nothing undocumented, and Airflow's own metrics arrive on the same socket
    from airflow_alerting.metrics import CATALOGUE

    known = {f"airflow.{spec.name}" for spec in CATALOGUE.values()}
    ours = {line.split(":", 1)[0] for line in listener.lines if line.startswith("airflow.alerting.")}
    legacy = {n for n in ours if n not in known}
    assert legacy <= {
        "airflow.alerting.classified.high",
        "airflow.alerting.sent.slack",
        "airflow.alerting.sent.email",
        "airflow.alerting.delivery_latency.slack",
        "airflow.alerting.delivery_latency.email",
    }, legacy
    assert any(line.startswith("airflow.ti.finish") for line in listener.lines)


@pytest.mark.timeout(300)
def test_dogstatsd_receives_the_tags(alerting: Any, listener: StatsdListener) -> None:
    _dags_test(listener, AIRFLOW__METRICS__STATSD_DATADOG_ENABLED="True")

    assert len(alerting.servers.slack.messages) == 1
    [classified] = listener.named("airflow.alerting.alerts.classified")
    assert classified == (
        "airflow.alerting.alerts.classified:1|c|#severity:high,kind:task_failure,dag_id:statsd_metrics_failure"
    )
    sent = sorted(listener.named("airflow.alerting.alerts.sent"))
    assert sent == [
        f"airflow.alerting.alerts.sent:1|c|#channel:{channel},severity:high,reason:first,"
        "dag_id:statsd_metrics_failure"
        for channel in ("email", "slack")
    ]
    assert listener.named("airflow.alerting.incidents.opened") == [
        "airflow.alerting.incidents.opened:1|c|#severity:high,dag_id:statsd_metrics_failure"
    ]
    latencies = listener.named("airflow.alerting.delivery.latency")
    assert {line.split("|#", 1)[1] for line in latencies} == {
        "channel:slack,outcome:ok",
        "channel:email,outcome:ok",
    }
