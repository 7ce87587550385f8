"""Connection look-ups through the alert manager: all on the calling thread, and none loses an alert.

Under a task runner every Task SDK call shares one supervisor channel that concurrent threads
corrupt, so the channels look connections up in ``prepare()`` -- on the thread that handles the
alert -- before deliveries fan out to threads.  A look-up that fails for any reason but "this
connection does not exist" is a retryable failure: the notification waits in the outbox and is
redelivered once the look-up works.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from faults_support import (
    SLACK_CONN,
    SMTP_CONN,
    Faults,
    InspectableStore,
    by_channel,
    failure,
    routed_to,
)

from airflow_alerting.model import Severity

pytestmark = pytest.mark.integration


class SdkCalls:
    """Records the thread of every connection look-up and secret masking (the Task SDK calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import airflow.sdk.log
        from airflow.sdk import BaseHook

        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        #: conn ids whose look-up raises, and what
        self.failing: dict[str, BaseException] = {}
        original_get = BaseHook.get_connection.__func__  # type: ignore[attr-defined]
        original_mask = airflow.sdk.log.mask_secret

        def get_connection(cls: Any, conn_id: str) -> Any:
            self._record(f"get_connection({conn_id})")
            if conn_id in self.failing:
                raise self.failing[conn_id]
            return original_get(cls, conn_id)

        def mask_secret(secret: Any, name: str | None = None) -> None:
            self._record("mask_secret")
            original_mask(secret, name)

        monkeypatch.setattr(BaseHook, "get_connection", classmethod(get_connection))
        monkeypatch.setattr(airflow.sdk.log, "mask_secret", mask_secret)

    def _record(self, call: str) -> None:
        with self._lock:
            self.calls.append((call, threading.current_thread().name))

    def threads(self) -> set[str]:
        with self._lock:
            return {thread for _, thread in self.calls}

    def looked_up(self) -> set[str]:
        with self._lock:
            return {call for call, _ in self.calls if call.startswith("get_connection")}


@pytest.fixture
def sdk_calls(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> SdkCalls:
    return SdkCalls(monkeypatch)


def test_every_connection_lookup_runs_on_the_calling_thread(faults: Faults, sdk_calls: SdkCalls) -> None:
    manager = faults.manager(routed_to("slack", "email"))
    delivering: list[str] = []
    for name in ("slack", "email"):
        channel = manager.channel(name)
        assert channel is not None
        deliver = channel.deliver

        def spy(notification: Any, deliver: Any = deliver) -> Any:
            delivering.append(threading.current_thread().name)
            return deliver(notification)

        channel.deliver = spy  # type: ignore[method-assign]

    outcome = manager.handle(failure(1), severity=Severity.HIGH)
    # a second, unrelated alert (its own incident) prepares afresh, on its calling thread too
    other = failure(2, dag_id="faults_reports", task_id="publish", message="disk quota exceeded on /reports")
    second = manager.handle(other, severity=Severity.HIGH)

    assert set(outcome.sent_to) == set(second.sent_to) == {"slack", "email"}
    assert len(faults.slack.messages) == len(faults.smtp.messages) == 2
    assert sdk_calls.looked_up() >= {f"get_connection({SLACK_CONN})", f"get_connection({SMTP_CONN})"}
    assert sdk_calls.threads() == {threading.current_thread().name}, sdk_calls.calls
    # while the deliveries themselves ran concurrently, on the delivery threads
    assert delivering and threading.current_thread().name not in delivering


@pytest.mark.parametrize(
    "error",
    [
        # what the Task SDK raises for a garbled supervisor answer, a timeout or a backend outage;
        # here the connection exists (AIRFLOW_CONN_*), so the re-check tells it was the look-up
        pytest.param("not-found-but-exists", id="reported-missing-but-exists"),
        pytest.param(TimeoutError("secrets backend timed out"), id="timeout"),
        pytest.param(ConnectionResetError("supervisor channel reset"), id="channel-reset"),
    ],
)
def test_a_failed_lookup_is_queued_and_redelivered_once_lookups_work(
    faults: Faults, sdk_calls: SdkCalls, error: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    store = InspectableStore()
    manager = faults.manager(routed_to("slack", "email"), store=store)
    sdk_calls.failing[SMTP_CONN] = (
        AirflowNotFoundException(f"The conn_id `{SMTP_CONN}` isn't defined")
        if isinstance(error, str)
        else error
    )

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    assert outcome.sent_to == ("slack",)
    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable) == (False, True), delivery
    assert repr(SMTP_CONN) in delivery.detail and "will retry" in delivery.detail
    [queued] = store.outbox()
    assert queued.channel == "email" and repr(SMTP_CONN) in (queued.last_error or "")
    assert faults.smtp.messages == []
    # every retry inside the callback used the prepared failure: no look-up from a delivery thread
    assert sdk_calls.threads() == {threading.current_thread().name}

    # the look-up works again: the next sweep delivers
    del sdk_calls.failing[SMTP_CONN]
    faults.clock.advance(minutes=1)
    [redelivered] = manager.redeliver_outbox()

    assert redelivered.channel == "email"
    assert redelivered.delivery is not None and redelivered.delivery.ok, redelivered
    assert len(faults.smtp.messages) == 1
    assert store.outbox() == []
    assert len(faults.slack.messages) == 1  # and Slack's message was not sent twice


def test_a_missing_connection_fails_for_good_with_its_id_and_fix_logged(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    store = InspectableStore()
    manager = faults.manager(routed_to("slack", "email"), store=store)
    faults.drop_connection(SMTP_CONN)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    assert outcome.sent_to == ("slack",)
    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None and (delivery.retryable, delivery.attempts) == (False, 1), delivery
    assert store.outbox() == []
    [entry] = [e for e in store.history(50) if e.channel == "email"]
    assert entry.delivered is False and repr(SMTP_CONN) in entry.detail
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    logged = [m for m in errors if "email" in m and repr(SMTP_CONN) in m]
    assert logged, errors
    assert "airflow connections add" in logged[0] and "Admin > Connections" in logged[0]
