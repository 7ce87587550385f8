"""Fixtures for the fault-injection suite: local servers, connections, a network guard, metrics."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from faults_support import TOKEN, Faults, MetricsRecorder, SleepSpy

from airflow_alerting import metrics
from airflow_alerting.testing import FrozenClock
from airflow_alerting.testing.servers import PagerDutyServer, SlackServer, SmtpServer

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@pytest.fixture(scope="session", autouse=True)
def _warm_airflow() -> None:
    """Import Airflow and the provider hooks once, outside any timed section.

    The first import of ``airflow.sdk`` takes seconds; paid inside a delivery thread it would
    eat the deadline of whichever test happens to run first.
    """
    from airflow.providers.slack.hooks.slack import SlackHook  # noqa: F401
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook  # noqa: F401
    from airflow.providers.smtp.hooks.smtp import SmtpHook  # noqa: F401
    from airflow.sdk import BaseHook  # noqa: F401


@pytest.fixture(autouse=True)
def blocked_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse name resolution for anything but loopback: no test may reach a real external host."""
    real = socket.getaddrinfo
    attempts: list[str] = []

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            attempts.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: blocked by the fault-injection suite")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return attempts


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> SleepSpy:
    """The backoff delays the manager sleeps, in order (retries sleep in ``airflow_alerting.delivery``)."""
    from airflow_alerting import delivery

    spy = SleepSpy()
    monkeypatch.setattr(delivery, "time", spy)
    return spy


@pytest.fixture
def metric_calls(monkeypatch: pytest.MonkeyPatch) -> MetricsRecorder:
    recorder = MetricsRecorder()
    # recorded where Airflow's Stats would be called, with the legacy (tag-folded) names on
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    monkeypatch.setattr(metrics, "_legacy_on", True)
    return recorder


@pytest.fixture
def faults(
    monkeypatch: pytest.MonkeyPatch, metric_calls: MetricsRecorder, blocked_hosts: list[str]
) -> Iterator[Faults]:
    with (
        SlackServer(token=TOKEN) as slack,
        PagerDutyServer() as pagerduty,
        SmtpServer() as smtp,
    ):
        harness = Faults(
            slack=slack,
            pagerduty=pagerduty,
            smtp=smtp,
            monkeypatch=monkeypatch,
            clock=FrozenClock(),
            metrics=metric_calls,
            blocked_hosts=blocked_hosts,
        )
        harness.install_default_connections()
        yield harness
