"""Shared pieces of the fault-injection suite (imported by its conftest and test modules).

Every test drives a real :class:`~airflow_alerting.manager.AlertManager` whose channels are
built from ``[alerting]`` settings and Airflow connections (``AIRFLOW_CONN_*``) pointing at the
local Slack, PagerDuty and SMTP servers of :mod:`airflow_alerting.testing.servers`.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_alerting.config import AlertingSettings
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, AlertOutcome, ChannelOutcome, DecisionReason, HistoryEntry
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.state.base import OutboxItem, StateStore
from airflow_alerting.testing import FrozenClock, MemoryStore
from airflow_alerting.testing.servers import (
    PagerDutyServer,
    RecordedRequest,
    SlackServer,
    SmtpServer,
    connection_env,
    pagerduty_connection,
    slack_api_connection,
    slack_webhook_connection,
    smtp_connection,
)

# Connection ids of this suite only: the session fixtures elsewhere define the *_default ones.
SLACK_CONN = "faults_slack_api"
WEBHOOK_CONN = "faults_slack_webhook"
SMTP_CONN = "faults_smtp"
PAGERDUTY_CONN = "faults_pagerduty"

# Planted secrets (long enough for every masker; distinctive enough to search for).
TOKEN = "xoxb-4242-4343-PlantedBotTokenValue"
ROUTING_KEY = "R0UTEKEYPLANTEDFAULTS00000000042"
SMTP_PASSWORD = "Sm7pPlantedPassw0rd"
WEBHOOK_SECRET = "PlantedWebhookSecretPath"
DB_PASSWORD = "Pl4ntedS3cret"

RECIPIENT = "oncall@example.test"
SLACK_CHANNEL = "#faults"

#: fast retries for most tests: 3 attempts, tiny backoff, a deadline far away
FAST = DeliveryOptions(attempts=3, deadline=5.0, backoff_base=0.02, backoff_cap=0.05)

#: the loggers of the local stand-ins for the remote services: they see what the service would
#: see (request lines with the webhook path, AUTH exchanges), which is not what the client leaks
SERVER_SIDE_LOGGERS = ("airflow_alerting.testing.servers", "mail.log")


class InspectableStore(MemoryStore):
    """A memory store whose outbox can be read without claiming (leasing) its items."""

    def outbox(self) -> list[OutboxItem]:
        return [OutboxItem.from_json(item) for item in self._outbox()]

    def documents(self) -> dict[str, Any]:
        """Every stored document (a deep copy), for searching the persisted state."""
        with self._lock:
            return {key: self._read(key) for key in list(self._documents)}


def failure(
    run: int = 1, *, task_id: str = "load_orders", message: str | None = None, **fields: Any
) -> Alert:
    """A final-try task failure; another ``run`` is another occurrence of the same problem."""
    values: dict[str, Any] = {
        "dag_id": "faults_etl",
        "task_id": task_id,
        "run_id": f"run_{run}",
        "exception_type": "PermissionError",
        "exception_mro": ("PermissionError", "OSError", "Exception"),
        "message": message if message is not None else "role LOADER lacks USAGE on warehouse",
        "hostname": "worker-1",
    }
    values.update(fields)
    return Alert(**values)


def success(run: int = 99, *, task_id: str = "load_orders") -> Alert:
    from airflow_alerting.model import AlertKind

    return Alert(dag_id="faults_etl", task_id=task_id, run_id=f"run_{run}", kind=AlertKind.TASK_SUCCESS)


def routed_to(*channels: str, severity: str = "high", **extra: Any) -> AlertPolicy:
    """A policy sending ``severity`` to exactly ``channels``.

    No escalation, so severities stay put, and no follow-up summaries, so every message a
    server receives is the alert or its redelivery.
    """
    data: dict[str, Any] = {
        "routing": {"matrix": {severity: list(channels)}},
        "escalation": {"after": 0},
        "summary_after": 0,
    }
    data.update(extra)
    return AlertPolicy.from_dict(data)


def by_channel(outcome: AlertOutcome) -> dict[str, ChannelOutcome]:
    return {c.channel: c for c in outcome.channels}


def reasons(outcome: AlertOutcome) -> dict[str, DecisionReason]:
    return {c.channel: c.decision.reason for c in outcome.channels}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gaps(requests: Iterable[RecordedRequest]) -> list[float]:
    times = [r.received_at for r in requests]
    return [b - a for a, b in itertools.pairwise(times)]


def posts(slack: SlackServer) -> list[RecordedRequest]:
    return [r for r in slack.requests if r.path.startswith(("/api/chat.postMessage", "/services/"))]


class BlackholeSmtp:
    """Accepts TCP connections and never says a word: a hung mail relay."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="blackhole-smtp")
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._accepted.append(conn)

    @property
    def connections(self) -> int:
        return len(self._accepted)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._accepted:
            conn.close()
        self._sock.close()


class SleepSpy:
    """Stands in for the ``time`` module inside :mod:`airflow_alerting.manager`: records the
    backoff delays the manager asks for (then really sleeps), so jitter bounds can be checked
    exactly while the gaps on the wire show the delays were really waited out."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


@dataclass
class MetricsRecorder:
    """Stands in for Airflow's ``Stats`` behind :mod:`airflow_alerting.metrics`: records counters."""

    counters: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def incr(self, name: str, count: int = 1, *, tags: dict[str, str] | None = None) -> None:
        with self.lock:
            self.counters.extend([name] * count)

    def timing(self, name: str, milliseconds: float, *, tags: dict[str, str] | None = None) -> None:
        """Timers are not asserted on by the fault suite."""

    def gauge(self, name: str, value: float, *, tags: dict[str, str] | None = None) -> None:
        """Gauges are not asserted on by the fault suite."""

    def count(self, *parts: str) -> int:
        """How often ``alerting.<parts>`` (a legacy, tag-folded name such as ``sent.slack``) was counted."""
        name = ".".join(("alerting", *parts))
        with self.lock:
            return sum(1 for c in self.counters if c == name)


@dataclass
class Faults:
    """The servers, the connections pointing at them, and a factory for managers using them."""

    slack: SlackServer
    pagerduty: PagerDutyServer
    smtp: SmtpServer
    monkeypatch: pytest.MonkeyPatch
    clock: FrozenClock
    metrics: MetricsRecorder
    #: non-loopback hosts the code under test tried to resolve (and was refused)
    blocked_hosts: list[str]

    # --- connections ----------------------------------------------------------------------

    def set_connection(self, conn_id: str, conn: dict[str, Any] | str) -> None:
        if isinstance(conn, str):
            self.monkeypatch.setenv("AIRFLOW_CONN_" + conn_id.upper(), conn)
        else:
            self.monkeypatch.setenv(*connection_env(conn_id, conn))

    def drop_connection(self, conn_id: str) -> None:
        self.monkeypatch.delenv("AIRFLOW_CONN_" + conn_id.upper(), raising=False)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.slack.port}/services/T000/B000/{WEBHOOK_SECRET}"

    def use_slack_webhook(self) -> None:
        """Route Slack through the incoming webhook: no API connection, a webhook connection."""
        self.drop_connection(SLACK_CONN)
        conn = slack_webhook_connection(self.slack)
        conn["password"] = self.webhook_url
        self.set_connection(WEBHOOK_CONN, conn)

    def install_default_connections(self) -> None:
        self.set_connection(SLACK_CONN, slack_api_connection(self.slack))
        self.drop_connection(WEBHOOK_CONN)
        self.set_connection(PAGERDUTY_CONN, pagerduty_connection(self.pagerduty, routing_key=ROUTING_KEY))
        smtp = smtp_connection(self.smtp)
        smtp["login"] = "alerts"
        smtp["password"] = SMTP_PASSWORD
        self.set_connection(SMTP_CONN, smtp)

    # --- managers -------------------------------------------------------------------------

    def settings(self, **overrides: Any) -> AlertingSettings:
        values: dict[str, Any] = {
            "state_backend": "memory",
            "slack_conn_id": SLACK_CONN,
            "slack_webhook_conn_id": WEBHOOK_CONN,
            "slack_channel": SLACK_CHANNEL,
            "smtp_conn_id": SMTP_CONN,
            "email_to": RECIPIENT,
            "pagerduty_conn_id": PAGERDUTY_CONN,
            "delivery_timeout_seconds": 2,
            "callback_deadline_seconds": 5,
            "delivery_attempts": 3,
        }
        values.update(overrides)
        return AlertingSettings.from_mapping(values)

    def manager(
        self,
        policy: AlertPolicy | None = None,
        *,
        store: StateStore | None = None,
        delivery: DeliveryOptions | None = FAST,
        **settings: Any,
    ) -> AlertManager:
        return AlertManager(
            policy or AlertPolicy.from_dict({"escalation": {"after": 0}}),
            store=store if store is not None else InspectableStore(),
            clock=self.clock,
            settings=self.settings(**settings),
            delivery=delivery,
        )


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    value = fn(*args, **kwargs)
    return value, time.monotonic() - started


def history(manager: AlertManager) -> list[HistoryEntry]:
    """The manager's history, oldest first."""
    return list(reversed(manager.store.history(500)))
