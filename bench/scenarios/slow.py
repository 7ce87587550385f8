"""Scenario 5, a slow channel: Slack never answers; how long does the failure callback take?

Slack's connection points at a local TCP server on 127.0.0.1 that accepts and never answers;
PagerDuty and SMTP are the local protocol servers.  Ours: one critical failure through an
``AlertManager`` built from ``[alerting]`` settings (channels from Airflow connections, retries,
a per-attempt timeout and ``callback_deadline_seconds``).  Stock: the official
``SlackNotifier``, ``PagerdutyNotifier`` and ``SmtpNotifier`` with the same per-attempt timeout,
called one after another as Airflow runs a callback list.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from airflow_alerting.config import AlertingSettings
from airflow_alerting.manager import AlertManager
from airflow_alerting.model import Alert, Severity
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.testing import FrozenClock, MemoryStore
from airflow_alerting.testing.servers import (
    PagerDutyServer,
    SmtpServer,
    connection_env,
    pagerduty_connection,
    smtp_connection,
)

from .common import Options, Result, Table, at_most, quiet

NAME = "slow"
SLACK_CONN = "bench_slow_slack"
PAGERDUTY_CONN = "bench_slow_pagerduty"
SMTP_CONN = "bench_slow_smtp"


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a stalled endpoint)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="bench-silent", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.held.append(conn)  # kept open, never read, never answered

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


@contextmanager
def connections() -> Iterator[tuple[SilentServer, PagerDutyServer, SmtpServer]]:
    """The three endpoints, with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""
    silent = SilentServer()
    saved = dict(os.environ)
    try:
        with PagerDutyServer() as pagerduty, SmtpServer() as smtp:
            slack = {
                "conn_type": "slack",
                "password": "xoxb-bench-token",
                "extra": {"base_url": f"http://127.0.0.1:{silent.port}/api/"},
            }
            for conn_id, conn in (
                (SLACK_CONN, slack),
                (PAGERDUTY_CONN, pagerduty_connection(pagerduty)),
                (SMTP_CONN, smtp_connection(smtp)),
            ):
                name, value = connection_env(conn_id, conn)
                os.environ[name] = value
            yield silent, pagerduty, smtp
    finally:
        os.environ.clear()
        os.environ.update(saved)
        silent.close()


def ours(deadline: float, timeout: float, attempts: int) -> tuple[float, dict[str, str]]:
    """One critical failure through our pipeline; its wall time and each channel's delivery result.

    :param deadline: ``callback_deadline_seconds``
    :param timeout: ``delivery_timeout_seconds`` (one attempt)
    :param attempts: ``delivery_attempts``
    """
    settings = AlertingSettings.from_mapping(
        {
            "state_backend": "memory",
            "slack_conn_id": SLACK_CONN,
            "slack_channel": "#alerts",
            "smtp_conn_id": SMTP_CONN,
            "email_to": "oncall@example.test",
            "pagerduty_conn_id": PAGERDUTY_CONN,
            "delivery_timeout_seconds": timeout,
            "callback_deadline_seconds": deadline,
            "delivery_attempts": attempts,
        }
    )
    manager = AlertManager(AlertPolicy(), store=MemoryStore(), clock=FrozenClock(), settings=settings)
    alert = Alert(
        dag_id="orders",
        task_id="load",
        run_id="run_1",
        exception_type="ConnectionError",
        exception_mro=("ConnectionError", "OSError", "Exception"),
        message="db-main.internal:5432 refused",
    )
    began = time.perf_counter()
    outcome = manager.handle(alert, severity=Severity.CRITICAL)
    took = time.perf_counter() - began
    results = {
        c.channel: (
            ("ok" if c.delivery.ok else c.delivery.detail[:40]) if c.delivery else c.decision.reason.value
        )
        for c in outcome.channels
    }
    return took, results


@contextmanager
def local_pagerduty(url: str) -> Iterator[None]:
    """Point the stock PagerDuty hook's client at ``url`` (plain HTTP on 127.0.0.1).

    Its Events API URL is fixed and must be HTTPS, so the attribute behind the validating
    setter is set after construction; the requests themselves are the stock client's.
    """
    import pagerduty

    client: Any = pagerduty.EventsApiV2Client
    original = client.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._url = url

    client.__init__ = init
    try:
        yield
    finally:
        client.__init__ = original


def warm_up() -> None:
    """Import the hooks and clients outside the timed section, as a running worker already has.

    The first import costs seconds on a loaded machine; a callback in a worker never pays it.
    """
    import pagerduty  # noqa: F401
    from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook  # noqa: F401
    from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier  # noqa: F401
    from airflow.providers.slack.hooks.slack import SlackHook  # noqa: F401
    from airflow.providers.slack.notifications.slack import SlackNotifier  # noqa: F401
    from airflow.providers.smtp.hooks.smtp import SmtpHook  # noqa: F401
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier  # noqa: F401
    from airflow.sdk import BaseHook  # noqa: F401

    import airflow_alerting.channels.email
    import airflow_alerting.channels.pagerduty
    import airflow_alerting.channels.slack  # noqa: F401


def stock(timeout: float) -> tuple[float, dict[str, str]]:
    """The stock callback list for a critical failure: Slack, PagerDuty, e-mail, one after another.

    :param timeout: the Slack client's timeout (the notifier's ``timeout``)
    """
    from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier
    from airflow.providers.slack.notifications.slack import SlackNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    notifiers: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        (
            "slack",
            SlackNotifier(
                slack_conn_id=SLACK_CONN, text="orders.load failed", channel="#alerts", timeout=int(timeout)
            ),
        ),
        (
            "pagerduty",
            PagerdutyNotifier(
                summary="orders.load failed", severity="critical", pagerduty_events_conn_id=PAGERDUTY_CONN
            ),
        ),
        (
            "email",
            SmtpNotifier(
                to="oncall@example.test",
                from_email="airflow@example.test",
                subject="orders.load failed",
                html_content="orders.load failed",
                smtp_conn_id=SMTP_CONN,
            ),
        ),
    ]
    context: dict[str, Any] = {"ti": SimpleNamespace(dag_id="orders", task_id="load"), "dag": None}
    results: dict[str, str] = {}
    began = time.perf_counter()
    for name, notifier in notifiers:
        # Airflow runs a callback list in order and logs what one raises before the next
        try:
            notifier(context)
            results[name] = "ok"
        except Exception as err:
            results[name] = f"{type(err).__name__}"[:40]
    return time.perf_counter() - began, results


def run(options: Options) -> Result:
    """Time the callback with a stalled Slack, ours and stock, and tabulate against the deadline.

    :param options: the run's options
    """
    quiet()
    deadline, timeout, attempts = (1.0, 2.0, 2) if options.short else (5.0, 10.0, 3)
    repeats = 1 if options.short else 3
    rows: list[tuple[str, ...]] = []
    checks = []
    figures: dict[str, object] = {}
    warm_up()
    with connections() as (_, pagerduty, smtp):
        ours_runs = [ours(deadline, timeout, attempts) for _ in range(repeats)]
        # abandoned attempts finish in the background (within one timeout): count them with ours
        time.sleep(timeout)
        ours_pd, ours_mail = len(pagerduty.events), len(smtp.messages)
        with local_pagerduty(pagerduty.url):
            stock_runs = [stock(timeout) for _ in range(repeats)]
        stock_pd, stock_mail = len(pagerduty.events) - ours_pd, len(smtp.messages) - ours_mail
    for label, runs, delivered in (
        ("ours", ours_runs, (ours_pd, ours_mail)),
        ("stock", stock_runs, (stock_pd, stock_mail)),
    ):
        times = [t for t, _ in runs]
        median = statistics.median(times)
        rows.append(
            (
                label,
                f"{median:.2f}",
                f"{max(times):.2f}",
                f"{deadline:g}",
                f"{timeout:g} x {attempts if label == 'ours' else 1}",
                f"{median / deadline:.2f}",
                f"{delivered[0]}/{repeats}",
                f"{delivered[1]}/{repeats}",
                ", ".join(f"{k}={v}" for k, v in sorted(runs[-1][1].items())),
            )
        )
        figures[f"slow.{label}.median_s"] = round(median, 2)
    figures["slow.deadline_s"] = deadline
    # counts, not timings: the healthy channels still delivered every time despite the stall
    lost = 2 * repeats - ours_pd - ours_mail
    checks.append(at_most("slow: healthy-channel deliveries lost (ours)", lost, 0))
    table = Table(
        "5. Slow channel: Slack never answers; callback wall time, ours vs stock callback list",
        (
            "approach",
            "median s",
            "max s",
            "deadline s",
            "timeout s x tries",
            "median / deadline",
            "pagerduty",
            "email",
            "channel results (last run)",
        ),
        tuple(rows),
        (
            f"ours: callback_deadline_seconds={deadline:g}, delivery_timeout_seconds={timeout:g},"
            f" delivery_attempts={attempts}: the sum of Slack's timeouts would be {timeout * attempts:g} s;",
            "stock: SlackNotifier(timeout=...), PagerdutyNotifier, SmtpNotifier, in order (no deadline);",
            f"{repeats} run(s) each; pagerduty / email = deliveries that reached the healthy servers.",
        ),
    )
    return Result(NAME, (table,), tuple(checks), figures)
