"""Scenario 1, the alert storm: messages per channel, ours against the stock notifiers, at 1x, 10x, 100x.

Replays :func:`airflow_alerting.testing.storm.generate_storm` (a PostgreSQL outage failing 500
tasks in 20 DAGs, plus 30 unrelated causes, some recurring; scaled) through the default policy,
``MemoryStore`` and recording channels (Slack editable, e-mail, PagerDuty with its Events API
actions) under a frozen clock.  Stock is one provider notifier per channel in
``on_failure_callback``: one message per failure on every channel the default matrix routes it
to, counted from the same storm.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime

from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import NotificationAction
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.testing.storm import (
    OUTAGE_CAUSE,
    ReplayReport,
    Storm,
    StormEvent,
    generate_storm,
    replay,
    storm_alert,
)

from .common import Options, Result, Table, at_most, quiet, ratio, target_at_most

NAME = "storm"
#: the issue's target: Slack messages per distinct cause at every scale
SLACK_BUDGET = 1.15
#: PagerDuty's Events API: trigger, acknowledge, resolve (no edits, no follow-ups)
PAGERDUTY_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.ACKNOWLEDGE,
        NotificationAction.RESOLVE,
    }
)


def replay_scale(scale: int, seed: int) -> tuple[Storm, ReplayReport, dict[str, set[str]], float]:
    """Replay one storm through the default pipeline.

    :param scale: the storm's scale (1 is 606 failures of 31 causes)
    :param seed: the storm's seed
    :return: the storm, its report, per channel the causes the default policy routes there, and
        the replay's wall time in seconds
    """
    storm = generate_storm(seed, scale=scale)
    clock = FrozenClock()
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=PAGERDUTY_ACTIONS),
    }
    policy = AlertPolicy()
    manager = AlertManager(
        policy,
        store=MemoryStore(),
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    routed = routed_causes(storm, policy, clock.now)
    began = time.perf_counter()
    report = replay(storm, manager, clock, channels=channels)
    return storm, report, routed, time.perf_counter() - began


def routed_causes(storm: Storm, policy: AlertPolicy, start: datetime) -> dict[str, set[str]]:
    """Per channel, the causes with at least one failure the policy routes there.

    A cause routed nowhere on a channel cannot be named there, so "never named" counts only these.

    :param storm: the storm
    :param policy: the policy deciding severity and routes
    :param start: when the storm starts
    """
    routed: dict[str, set[str]] = defaultdict(set)
    for event in storm.events:
        alert = storm_alert(event, start)
        classification = policy.classifier.classify(alert)
        if classification.silent:
            continue
        for channel in policy.router.route(alert, classification.severity).channels:
            routed[channel].add(event.cause)
    return routed


def routed_failures(events: Sequence[StormEvent], policy: AlertPolicy, start: datetime) -> dict[str, int]:
    """Per channel, the failures the policy routes there: what the stock notifiers would send.

    :param events: the failures
    :param policy: the policy deciding severity and routes
    :param start: when the storm starts
    """
    counts: Counter[str] = Counter()
    for event in events:
        alert = storm_alert(event, start)
        classification = policy.classifier.classify(alert)
        if not classification.silent:
            counts.update(policy.router.route(alert, classification.severity).channels)
    return dict(counts)


def run(options: Options) -> Result:
    """Replay the storm at every scale of ``options`` and tabulate ours against stock.

    :param options: the run's options
    """
    quiet()
    rows: list[tuple[str, ...]] = []
    outage_rows: list[tuple[str, ...]] = []
    checks = []
    figures: dict[str, object] = {}
    for scale in options.storm_scales:
        _, report, routed, seconds = replay_scale(scale, options.seed)
        for name in report.channels:
            ours = report.messages.get(name, 0)
            stock = report.stock_messages.get(name, 0)
            unnamed = sorted(set(report.unnamed_causes.get(name, ())) & routed.get(name, set()))
            rows.append(
                (
                    f"{scale}x {name}",
                    str(report.failures),
                    str(report.causes),
                    str(len(routed.get(name, ()))),
                    str(ours),
                    str(stock),
                    ratio(ours, report.causes),
                    ratio(stock, report.causes),
                    ratio(stock, ours),
                    str(report.edits.get(name, 0)),
                    str(len(report.incidents)),
                    str(report.unaccounted),
                    str(report.double_counted),
                    str(len(unnamed)),
                )
            )
            checks.append(at_most(f"storm {scale}x {name}: routed causes never named", len(unnamed), 0))
            figures[f"storm.{scale}x.{name}.ours"] = ours
            figures[f"storm.{scale}x.{name}.stock"] = stock
        slack = report.messages.get("slack", 0)
        checks.append(
            target_at_most(f"storm {scale}x slack messages / causes", slack / report.causes, SLACK_BUDGET)
        )
        checks.append(at_most(f"storm {scale}x failures unaccounted", report.unaccounted, 0))
        checks.append(at_most(f"storm {scale}x failures counted twice", report.double_counted, 0))
        figures[f"storm.{scale}x.causes"] = report.causes
        figures[f"storm.{scale}x.failures"] = report.failures
        figures[f"storm.{scale}x.unaccounted"] = report.unaccounted
        figures[f"storm.{scale}x.replay_seconds"] = round(seconds, 1)
        outage = report.incident_of(OUTAGE_CAUSE)
        told = (
            outage.describe()
            if outage is not None
            else f"split into {len(report.cause_incidents.get(OUTAGE_CAUSE, ()))} incidents"
        )
        outage_rows.append((f"{scale}x", told, f"{seconds:.1f}"))
    storm_table = Table(
        "1. Alert storm: messages a human sees per channel, ours vs stock (one notifier per channel)",
        (
            "scale channel",
            "failures",
            "causes",
            "routed",
            "ours",
            "stock",
            "ours/floor",
            "stock/floor",
            "stock/ours",
            "edits",
            "incidents",
            "unaccounted",
            "double",
            "unnamed",
        ),
        tuple(rows),
        (
            "floor = one message per distinct cause; routed = causes the default policy sends there;",
            "ours = new posts and thread replies (announce, follow-up, escalate, renotify, resolve); edits",
            "update a message in place; unnamed = routed causes no message there names (0 is right);",
            f"target: slack ours/floor <= {SLACK_BUDGET} at every scale.",
        ),
    )
    outage_table = Table(
        "1b. The outage's incident after the replay, and the replay's wall time",
        ("scale", "outage incident", "replay s"),
        tuple(outage_rows),
    )
    return Result(NAME, (storm_table, outage_table), tuple(checks), figures)
