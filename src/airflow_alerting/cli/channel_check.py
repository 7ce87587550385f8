"""``test-channel [NAME...]``: send a clearly marked test alert through each configured channel.

Each channel gets one delivery attempt (no retries: the point is to see the error), bounded by
``[alerting] delivery_timeout_seconds`` (or ``--timeout``). A PagerDuty test incident is resolved
right after the trigger -- and the resolve is sent even when the trigger failed or timed out,
because PagerDuty may have opened the incident anyway -- so no test ever leaves a page open.
"""

from __future__ import annotations

import argparse
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow_alerting.cli.output import BadInput, print_json, print_table, wants_json
from airflow_alerting.cli.spec import Argument, Command

if TYPE_CHECKING:
    from airflow_alerting.config import AlertingSettings
    from airflow_alerting.model import DeliveryResult, Notification
    from airflow_alerting.policy import AlertPolicy, ChannelSpec

__all__ = ["TEST_CHANNEL", "ChannelCheck", "check_channel", "known_channels"]

TEST_TITLE: Final = "[TEST] airflow-alerting test alert: please ignore"
TEST_MESSAGE: Final = (
    "This is a test sent by `airflow alerting test-channel` to check this channel's connection. "
    "No task failed. PagerDuty test incidents are resolved right away."
)
#: attempts at resolving a PagerDuty test incident before the operator is told to close it by hand
RESOLVE_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class ChannelCheck:
    """The outcome of testing one channel.

    :param channel: the channel's name
    :param type: slack, email or pagerduty
    :param connection: the connection id(s) it uses
    :param ok: the test alert was accepted (and, for PagerDuty, the test incident resolved)
    :param detail: what the service said, or the exact error
    :param fix: what to do about a failure (empty when it worked)
    :param seconds: how long the check took
    :param resolved: PagerDuty only: whether the test incident was resolved (``None`` elsewhere)
    :param dedup_key: PagerDuty only: the test incident's ``dedup_key``
    """

    channel: str
    type: str
    connection: str
    ok: bool
    detail: str
    fix: str
    seconds: float
    resolved: bool | None = None
    dedup_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form, as printed by ``--output json``."""
        return {
            "channel": self.channel,
            "type": self.type,
            "connection": self.connection,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
            "seconds": round(self.seconds, 3),
            "resolved": self.resolved,
            "dedup_key": self.dedup_key,
        }


def known_channels(policy: AlertPolicy) -> list[str]:
    """The channels ``policy`` can send to: built-ins, declared ones and those it routes to, sorted.

    :param policy: the routing policy
    """
    from airflow_alerting.policy import BUILTIN_CHANNELS

    names = set(BUILTIN_CHANNELS) | set(policy.channels) | policy.router.channel_names()
    return sorted(names)


def _connection_ids(spec: ChannelSpec, settings: AlertingSettings) -> str:
    # the same defaults as channels.factory.build_channel, so the report names what is really used
    options = dict(spec.options)
    if spec.type == "slack":
        api = options.get("conn_id", settings.slack_conn_id)
        webhook = options.get("webhook_conn_id", settings.slack_webhook_conn_id)
        return f"{api} (or webhook {webhook})"
    if spec.type == "email":
        return str(options.get("conn_id", settings.smtp_conn_id))
    return str(options.get("conn_id", settings.pagerduty_conn_id))


_CONN_TYPES: Final = {"slack": "slack", "email": "smtp", "pagerduty": "pagerduty_events"}


def _fix(spec: ChannelSpec, result: DeliveryResult, connection: str) -> str:
    """What an operator should do about a failed test, from what the channel reported."""
    if result.ok:
        return ""
    detail = result.detail.lower()
    first = connection.split(" ")[0]
    if "not found" in detail or "not defined" in detail or "no usable connection" in detail:
        return (
            f"add the connection: airflow connections add {first} --conn-type {_CONN_TYPES[spec.type]} "
            "... (or in Admin > Connections), then run test-channel again"
        )
    if "no routing key" in detail or "has no host" in detail or "recipient" in detail:
        return f"complete connection {first!r} or the [alerting] settings as the error says"
    if "http 401" in detail or "http 403" in detail or "invalid_auth" in detail or "not_authed" in detail:
        return f"the credentials of connection {first!r} were refused: replace the token or key"
    if result.retryable:
        return (
            f"the endpoint of connection {first!r} failed or could not be reached: check its host and "
            "the service's status, then run test-channel again"
        )
    return f"correct connection {first!r} or the channel's policy options as the error says"


def _test_notification(spec: ChannelSpec, run_id: str, now: datetime) -> Notification:
    from airflow_alerting.model import (
        Alert,
        AlertKind,
        Classification,
        Decision,
        DecisionReason,
        Notification,
        Severity,
    )

    alert = Alert(
        dag_id="airflow_alerting_test",
        kind=AlertKind.CUSTOM,
        task_id="test_channel",
        run_id=run_id,
        message=TEST_MESSAGE,
        occurred_at=now,
        detected_by="user",
        title=TEST_TITLE,
    )
    return Notification(
        alert=alert,
        # info-level in PagerDuty: a test must not wake anyone before it is resolved
        classification=Classification(Severity.LOW, ("test alert sent by airflow alerting test-channel",)),
        fingerprint=f"test-channel-{run_id}",
        channel=spec.name,
        decision=Decision(True, DecisionReason.FIRST, detail="test-channel"),
    )


_T = TypeVar("_T")


def _within(call: Callable[[], _T], timeout: float) -> tuple[bool, _T | None]:
    """Run ``call`` on a thread for at most ``timeout`` s: ``(True, result)``, or ``(False, None)``.

    Exceptions of ``call`` propagate.  One call at a time, so a connection look-up through the
    Task SDK never runs concurrently with another.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as err:  # handed to the caller's thread, which raises it
            outcome.append((False, err))

    # a daemon thread: a call that never returns must not hold the command's exit either
    # (a ThreadPoolExecutor's worker is joined at interpreter exit, however it was shut down)
    worker = threading.Thread(target=target, name="test-channel", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return False, None
    ok, value = outcome[0]
    if not ok:
        raise value
    return True, value


def _deliver(channel: Any, notification: Notification, timeout: float) -> DeliveryResult | None:
    """One delivery bounded by ``timeout``; ``None`` when the channel did not answer in time."""
    _, result = _within(lambda: channel.deliver(notification), timeout)
    return result  # type: ignore[no-any-return]


def check_channel(spec: ChannelSpec, settings: AlertingSettings, *, timeout: float) -> ChannelCheck:
    """Send one test alert through the channel ``spec`` describes and report what happened.

    :param spec: the channel (from the policy, or a built-in)
    :param settings: the ``[alerting]`` configuration (connections, allowed hosts)
    :param timeout: seconds the delivery (and for PagerDuty each resolve) may take
    :return: the outcome; never raises for a delivery problem
    """
    import time
    from dataclasses import replace

    from airflow_alerting.channels.factory import build_channel
    from airflow_alerting.model import DeliveryResult, NotificationAction

    started = time.monotonic()
    connection = _connection_ids(spec, settings)
    settings = replace(settings, delivery_timeout_seconds=timeout)
    channel = build_channel(spec, settings)
    # connections are read here, before the delivery, one look-up at a time; a secrets backend
    # that does not answer is bounded by the same timeout as the delivery
    prepare = getattr(channel, "prepare", None)
    if prepare is not None and not _within(prepare, timeout)[0]:
        detail = f"{_NO_ANSWER} within {timeout:g}s (connection look-up of {connection})"
        return ChannelCheck(
            channel=spec.name,
            type=spec.type,
            connection=connection,
            ok=False,
            detail=detail,
            fix=f"check that the secrets backend or metadata database holding {connection} answers",
            seconds=time.monotonic() - started,
            resolved=None,
            dedup_key=None,
        )
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    notification = _test_notification(spec, run_id, datetime.now(timezone.utc))
    result = _deliver(channel, notification, timeout) or DeliveryResult(
        spec.name, ok=False, retryable=True, detail=f"{_NO_ANSWER} within {timeout:g}s (delivery timeout)"
    )
    resolved: bool | None = None
    dedup_key: str | None = None
    if spec.type == "pagerduty":
        dedup_key = notification.dedup_key
        if _may_have_opened(result):
            closing = replace(notification, action=NotificationAction.RESOLVE, resolved=True)
            resolved = _resolve(channel, closing, timeout)
        if not resolved and result.ok:
            result = replace(
                result,
                ok=False,
                detail=f"{result.detail}; but the test incident {dedup_key} could not be resolved",
            )
    fix = _fix(spec, result, connection)
    if spec.type == "pagerduty" and resolved is False:
        fix = (fix + "; " if fix else "") + f"resolve PagerDuty incident {dedup_key} by hand"
    return ChannelCheck(
        channel=spec.name,
        type=spec.type,
        connection=connection,
        ok=result.ok,
        detail=result.detail,
        fix=fix,
        seconds=time.monotonic() - started,
        resolved=resolved,
        dedup_key=dedup_key,
    )


_NO_ANSWER: Final = "no answer"


def _may_have_opened(result: DeliveryResult) -> bool:
    """Whether PagerDuty may hold an open test incident after this trigger result.

    A definitive failure (missing connection, refused endpoint, HTTP 4xx) opened nothing; a trigger
    that was sent and timed out or got a 5xx may have been processed before failing.
    """
    if result.ok:
        return True
    sent = result.detail.startswith("pagerduty trigger") or result.detail.startswith(_NO_ANSWER)
    return sent and result.retryable


def _resolve(channel: Any, notification: Notification, timeout: float) -> bool:
    """Resolve the PagerDuty test incident, retrying a few times: it must not stay open."""
    import time

    for attempt in range(RESOLVE_ATTEMPTS):
        result = _deliver(channel, notification, timeout)
        if result is not None and result.ok:
            return True
        if result is not None and not result.retryable:
            return False
        time.sleep(0.5 * (attempt + 1))
    return False


def _run(args: argparse.Namespace) -> int:
    from rich.status import Status

    from airflow_alerting.cli.output import console
    from airflow_alerting.cli.runtime import configured_manager, configured_settings

    settings = configured_settings()
    policy = configured_manager(settings).policy
    known = known_channels(policy)
    names = list(dict.fromkeys(args.names)) or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput("NAME", f"unknown channel {unknown[0]!r}; this policy's channels: {', '.join(known)}")
    timeout = args.timeout if args.timeout is not None else settings.delivery_timeout_seconds
    checks: list[ChannelCheck] = []
    for name in names:
        spec = policy.channel_spec(name)
        if wants_json(args):
            checks.append(check_channel(spec, settings, timeout=timeout))
            continue
        with Status(f"testing {name} ...", console=console(stderr=True)):
            checks.append(check_channel(spec, settings, timeout=timeout))
    failed = [c for c in checks if not c.ok]
    if wants_json(args):
        print_json({"ok": not failed, "timeout_seconds": timeout, "channels": [c.to_json() for c in checks]})
    else:
        _print_checks(checks)
    return 1 if failed else 0


def _print_checks(checks: list[ChannelCheck]) -> None:
    from rich.text import Text

    from airflow_alerting.cli.output import clean, console

    print_table(
        "Test alerts",
        ("channel", "type", "connection", "result", "seconds"),
        ((c.channel, c.type, c.connection, "ok" if c.ok else "FAILED", f"{c.seconds:.2f}") for c in checks),
        styles={3: lambda v: "green" if v == "ok" else "bold red"},
    )
    out = console()
    for check in checks:
        # details are long (exact errors, dedup keys): one line each instead of a squeezed column
        line = Text(f"{check.channel}: ", style="bold")
        line.append(clean(check.detail))
        if check.resolved:
            line.append(clean(f"; test incident {check.dedup_key} resolved"))
        out.print(line)
        if check.fix:
            out.print(Text(f"  fix: {clean(check.fix)}", style="yellow"))


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0 and 300 seconds")
    return value


TEST_CHANNEL = Command(
    name="test-channel",
    help="Send a clearly marked test alert through each configured channel",
    description=(
        "Send a test alert through each channel (all of the policy's channels when no NAME is given) "
        "and report success, or the exact error with the connection id and the fix. One attempt per "
        "channel, within the delivery timeout. A PagerDuty test incident is resolved right after it "
        "opens. Exits 1 when any channel failed."
    ),
    arguments=(
        Argument(
            ("names",),
            "channel names (default: every channel of the policy)",
            {"nargs": "*", "metavar": "NAME"},
        ),
        Argument(
            ("--timeout",),
            "seconds to wait for each channel (default: [alerting] delivery_timeout_seconds)",
            {"type": _timeout, "default": None},
        ),
    ),
    run=_run,
)
