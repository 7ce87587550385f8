"""Connection look-ups: prepared on the calling thread; a failed look-up is never taken for "missing".

The Task SDK reports every failure of every secrets backend (a garbled supervisor answer, a
timeout, an outage) as ``AirflowNotFoundException``; :func:`~airflow_alerting.channels._connections.lookup`
asks the backends again to tell "does not exist" (final) from "could not ask" (retry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_alerting.channels import EmailChannel, PagerDutyChannel, SlackChannel
from airflow_alerting.channels._connections import (
    _SDK_LOCK,
    ConnectionMissing,
    ConnectionUnavailable,
    lookup,
)
from airflow_alerting.model import Alert, Classification, Decision, DecisionReason, Notification, Severity
from airflow_alerting.testing.servers import (
    PagerDutyServer,
    SlackServer,
    SmtpServer,
    connection_env,
    pagerduty_connection,
    slack_api_connection,
    slack_webhook_connection,
    smtp_connection,
)

pytestmark = pytest.mark.integration

CONN = "itest_lookup_conn"
SECRET = "lookup-S3cret-password"


def notification(channel: str) -> Notification:
    return Notification(
        alert=Alert(
            dag_id="lookup_dag",
            task_id="load",
            run_id="manual__1",
            exception_type="PermissionError",
            message="permission denied for table sales",
            occurred_at=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        ),
        classification=Classification(Severity.HIGH, ("final try",)),
        fingerprint="0123456789abcdef",
        channel=channel,
        decision=Decision(True, DecisionReason.FIRST),
    )


def define(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn: dict[str, Any] | str) -> None:
    if isinstance(conn, str):
        monkeypatch.setenv("AIRFLOW_CONN_" + conn_id.upper(), conn)
    else:
        monkeypatch.setenv(*connection_env(conn_id, conn))


def undefine(monkeypatch: pytest.MonkeyPatch, conn_id: str) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_" + conn_id.upper(), raising=False)


# --- a fake supervisor channel: what a task runner (and `airflow dags test`) asks -------------------


class FakeSupervisor:
    """Stands in for ``task_runner.SUPERVISOR_COMMS``: answers ``GetConnection`` from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def send(self, msg: Any) -> Any:
        from airflow.sdk.execution_time.comms import GetConnection

        if not isinstance(msg, GetConnection):
            return None  # MaskSecret and the like
        self.asked.append(msg.conn_id)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def found(conn_id: str = CONN) -> Any:
    from airflow.sdk.execution_time.comms import ConnectionResult

    return ConnectionResult.model_validate(
        {
            "conn_id": conn_id,
            "conn_type": "smtp",
            "host": "mail.example.test",
            "schema": None,
            "login": None,
            "password": SECRET,
            "port": None,
            "extra": None,
        }
    )


def error(kind: str) -> Any:
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    return ErrorResponse(error=ErrorType(kind), detail={"conn_id": CONN})


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeSupervisor]:
    """Install a fake supervisor channel (the worker's secrets chain: env vars, then the supervisor)."""
    from airflow.sdk.execution_time import task_runner

    undefine(monkeypatch, CONN)

    def install(*answers: Any) -> FakeSupervisor:
        fake = FakeSupervisor(*answers)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
        return fake

    return install


# --- lookup(): what a failure means ---------------------------------------------------------------


def test_a_defined_connection_is_snapshotted_without_its_secrets_in_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    define(
        monkeypatch, CONN, {"conn_type": "smtp", "host": "h", "password": SECRET, "extra": {"a": {"b": 1}}}
    )

    snapshot = lookup(CONN, timeout=1)

    assert (snapshot.conn_id, snapshot.host, snapshot.password) == (CONN, "h", SECRET)
    assert SECRET not in repr(snapshot)
    extra = snapshot.extra_dejson
    extra["a"]["b"] = 2  # a hook editing its copy changes nothing for the next delivery
    assert snapshot.extra_dejson == {"a": {"b": 1}}


def test_an_undefined_connection_is_missing_and_says_how_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    undefine(monkeypatch, CONN)

    with pytest.raises(ConnectionMissing) as caught:
        lookup(CONN, timeout=1)

    assert not caught.value.retryable and not caught.value.malformed
    assert f"connection not found: {CONN!r}" in str(caught.value)
    assert "airflow connections add" in str(caught.value)


def test_a_stored_value_that_is_no_connection_is_missing_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    define(monkeypatch, CONN, "{not json")

    with pytest.raises(ConnectionMissing) as caught:
        lookup(CONN, timeout=1)

    assert caught.value.malformed and not caught.value.retryable
    assert "EnvironmentVariablesBackend" in str(caught.value) and CONN in str(caught.value)


def test_a_failing_secrets_backend_is_a_retryable_lookup_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    define(monkeypatch, CONN, {"conn_type": "smtp", "host": "h"})

    def timing_out(self: Any, conn_id: str, team_name: str | None = None) -> str | None:
        raise TimeoutError("secrets backend did not answer")

    monkeypatch.setattr(EnvironmentVariablesBackend, "get_conn_value", timing_out)

    with pytest.raises(ConnectionUnavailable) as caught:
        lookup(CONN, timeout=1)

    assert caught.value.retryable
    assert CONN in str(caught.value) and "TimeoutError" in str(caught.value)


def test_an_error_other_than_not_found_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import BaseHook

    def broken(cls: Any, conn_id: str) -> Any:
        raise ConnectionResetError("supervisor went away")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(broken))

    with pytest.raises(ConnectionUnavailable) as caught:
        lookup(CONN, timeout=1)
    assert "ConnectionResetError" in str(caught.value) and CONN in str(caught.value)


def test_the_supervisor_saying_not_found_is_final(supervisor: Callable[..., FakeSupervisor]) -> None:
    fake = supervisor(error("CONNECTION_NOT_FOUND"))

    with pytest.raises(ConnectionMissing):
        lookup(CONN, timeout=1)
    assert fake.asked == [CONN, CONN]  # the Task SDK's look-up, then the re-check


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        pytest.param(lambda: error("API_SERVER_ERROR"), "API_SERVER_ERROR", id="error-response"),
        pytest.param(lambda: error("GENERIC_ERROR"), "GENERIC_ERROR", id="generic-error"),
        pytest.param(lambda: None, "NoneType", id="no-answer"),
        pytest.param(lambda: found("some_other_conn"), "another connection", id="crossed-answer"),
        pytest.param(lambda: BrokenPipeError(), "BrokenPipeError", id="channel-broken"),
    ],
)
def test_garbage_from_the_supervisor_is_a_retryable_lookup_failure(
    supervisor: Callable[..., FakeSupervisor], answer: Callable[[], Any], said: str
) -> None:
    supervisor(answer())

    with pytest.raises(ConnectionUnavailable) as caught:
        lookup(CONN, timeout=1)

    assert said in str(caught.value) and CONN in str(caught.value)


def test_an_error_frame_from_the_supervisor_is_a_retryable_lookup_failure(
    supervisor: Callable[..., FakeSupervisor],
) -> None:
    from airflow.sdk.exceptions import AirflowRuntimeError

    supervisor(AirflowRuntimeError(error("API_SERVER_ERROR")))

    with pytest.raises(ConnectionUnavailable) as caught:
        lookup(CONN, timeout=1)
    assert "the supervisor answered API_SERVER_ERROR" in str(caught.value)


def test_a_connection_reported_missing_by_a_garbled_answer_is_found_again(
    supervisor: Callable[..., FakeSupervisor],
) -> None:
    fake = supervisor(None, found(), found())  # garbage first: the Task SDK says "not found"

    snapshot = lookup(CONN, timeout=1)

    assert (snapshot.conn_id, snapshot.host) == (CONN, "mail.example.test")
    assert fake.asked == [CONN, CONN, CONN]


def test_access_denied_is_not_taken_for_missing(supervisor: Callable[..., FakeSupervisor]) -> None:
    supervisor(error("PERMISSION_DENIED"))

    with pytest.raises(ConnectionUnavailable) as caught:
        lookup(CONN, timeout=1)
    assert "AirflowSecretsBackendAccessDenied" in str(caught.value)


def test_lookups_wait_for_each_other_but_not_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    define(monkeypatch, CONN, {"conn_type": "smtp", "host": "h"})
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _SDK_LOCK:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        with pytest.raises(ConnectionUnavailable) as caught:
            lookup(CONN, timeout=0.05)
        assert "did not finish" in str(caught.value)
    finally:
        release.set()
        holder.join()
    assert lookup(CONN, timeout=1).host == "h"


# --- channels: prepare() reads, deliver() only uses ------------------------------------------------


@pytest.fixture
def no_task_sdk_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Call the returned function to make every Task SDK call from then on fail the test."""
    import airflow.sdk.log
    from airflow.sdk import BaseHook

    calls: list[str] = []

    def forbid() -> None:
        def get_connection(cls: Any, conn_id: str) -> Any:
            calls.append(f"get_connection({conn_id})")
            raise AssertionError("Task SDK call from a prepared delivery")

        def mask_secret(secret: Any, name: str | None = None) -> None:
            calls.append("mask_secret")

        monkeypatch.setattr(BaseHook, "get_connection", classmethod(get_connection))
        monkeypatch.setattr(airflow.sdk.log, "mask_secret", mask_secret)

    yield forbid
    assert calls == []


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SlackServer, SmtpServer, PagerDutyServer]]:
    with SlackServer() as slack, SmtpServer() as smtp, PagerDutyServer() as pagerduty:
        define(monkeypatch, "lookup_slack", slack_api_connection(slack))
        undefine(monkeypatch, "lookup_webhook")
        define(monkeypatch, "lookup_smtp", smtp_connection(smtp))
        define(monkeypatch, "lookup_pd", pagerduty_connection(pagerduty))
        yield slack, smtp, pagerduty


def channels() -> tuple[SlackChannel, EmailChannel, PagerDutyChannel]:
    return (
        SlackChannel(slack_conn_id="lookup_slack", webhook_conn_id="lookup_webhook", timeout=5),
        EmailChannel(smtp_conn_id="lookup_smtp", to=("oncall@example.test",), timeout=5),
        PagerDutyChannel(pagerduty_conn_id="lookup_pd", timeout=5),
    )


def test_prepared_channels_deliver_without_a_task_sdk_call(
    servers: tuple[SlackServer, SmtpServer, PagerDutyServer], no_task_sdk_calls: Callable[[], None]
) -> None:
    slack, smtp, pagerduty = servers
    prepared = channels()
    for channel in prepared:
        channel.prepare()
    no_task_sdk_calls()

    for channel in prepared:
        for _ in range(2):  # a retry uses the same prepared values
            outcome = channel.deliver(notification(channel.name))
            assert outcome.ok, outcome

    assert (len(slack.messages), len(smtp.messages), len(pagerduty.events)) == (2, 2, 2)


def test_unprepared_channels_still_deliver(servers: tuple[SlackServer, SmtpServer, PagerDutyServer]) -> None:
    slack, smtp, pagerduty = servers
    for channel in channels():
        outcome = channel.deliver(notification(channel.name))
        assert outcome.ok, outcome
    assert (len(slack.messages), len(smtp.messages), len(pagerduty.events)) == (1, 1, 1)


def test_each_prepare_reads_the_connections_again(
    servers: tuple[SlackServer, SmtpServer, PagerDutyServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    slack, smtp, pagerduty = servers
    slack_channel, email, pd = channels()
    for channel in (slack_channel, email, pd):
        channel.prepare()
    # edited in the UI between two alerts: the first alert's deliveries keep what they read ...
    undefine(monkeypatch, "lookup_slack")
    define(monkeypatch, "lookup_webhook", slack_webhook_connection(slack))
    define(monkeypatch, "lookup_smtp", smtp_connection(smtp, from_email="edited@example.test"))
    define(
        monkeypatch,
        "lookup_pd",
        pagerduty_connection(pagerduty, routing_key="EDITEDKEY00000000000000000000000"),
    )
    for channel in (slack_channel, email, pd):
        assert channel.deliver(notification(channel.name)).ok
    assert [r.path for r in slack.requests] == ["/api/chat.postMessage"]
    assert str(smtp.messages[-1]["From"]) == "airflow@example.test"
    assert pagerduty.events[-1]["routing_key"] != "EDITEDKEY00000000000000000000000"

    # ... and the next alert's prepare() reads the edited ones
    for channel in (slack_channel, email, pd):
        channel.prepare()
        assert channel.deliver(notification(channel.name)).ok
    assert slack.requests[-1].path.startswith("/services/")
    assert str(smtp.messages[-1]["From"]) == "edited@example.test"
    assert pagerduty.events[-1]["routing_key"] == "EDITEDKEY00000000000000000000000"


def test_a_prepared_lookup_failure_is_retryable_and_names_the_connection(
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[SlackServer, SmtpServer, PagerDutyServer],
    no_task_sdk_calls: Callable[[], None],
) -> None:
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    def timing_out(self: Any, conn_id: str, team_name: str | None = None) -> str | None:
        raise TimeoutError("secrets backend did not answer")

    monkeypatch.setattr(EnvironmentVariablesBackend, "get_conn_value", timing_out)
    prepared = channels()
    for channel in prepared:
        channel.prepare()
    no_task_sdk_calls()

    for channel, conn_id in zip(prepared, ("lookup_slack", "lookup_smtp", "lookup_pd"), strict=True):
        outcome = channel.deliver(notification(channel.name))
        assert (outcome.ok, outcome.retryable) == (False, True), outcome
        assert repr(conn_id) in outcome.detail and "TimeoutError" in outcome.detail
    # a failed API look-up does not fall back to the webhook: the API connection may exist
    assert prepared[0]._transport is None


def test_a_missing_webhook_after_a_missing_api_connection_is_final(
    monkeypatch: pytest.MonkeyPatch, servers: tuple[SlackServer, SmtpServer, PagerDutyServer]
) -> None:
    undefine(monkeypatch, "lookup_slack")
    slack_channel = channels()[0]
    slack_channel.prepare()

    outcome = slack_channel.deliver(notification("slack"))

    assert (outcome.ok, outcome.retryable) == (False, False)
    assert "'lookup_slack'" in outcome.detail and "'lookup_webhook'" in outcome.detail
    assert "airflow connections add" in outcome.detail
