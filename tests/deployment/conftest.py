"""Fixtures for the distributed deployment tests: one Slack server and one deployment per module."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from deployment.harness import Deployment, airflow_deployment, services_unavailable

if TYPE_CHECKING:
    from airflow_alerting.testing.servers import SlackServer


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackServer]:
    """A local Slack Web API on 127.0.0.1; the deployment's ``slack_api_default`` points at it."""
    from airflow_alerting.testing.servers import SlackServer

    with SlackServer() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(slack: SlackServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Scheduler, API server, DAG processor and two Celery workers, shared by the module's tests."""
    from airflow_alerting.testing.servers import connection_env, slack_api_connection

    reason = services_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"deployment tests must run in CI: {reason}")
        pytest.skip(reason)
    env = dict([connection_env("slack_api_default", slack_api_connection(slack))])
    root = tmp_path_factory.mktemp("deployment")
    with airflow_deployment(root=root, extra_env=env) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed:
        deployment = item.funcargs.get("deployment") if hasattr(item, "funcargs") else None
        if isinstance(deployment, Deployment):
            # the components' logs are the only way to see what the workers did
            report.sections.append(("Airflow deployment log tails", deployment.log_tails(60)))
