"""``history`` and ``stats``: the alert history and what is noisy, over :mod:`airflow_alerting.analytics`.

Over the Variables (or memory) store the figures come from its bounded history: the output says
so, because a busy deployment's last 500 decisions may cover less than the period asked for.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_alerting.cli.output import (
    BadInput,
    OperationFailed,
    human_duration,
    print_json,
    print_kv,
    print_table,
    severity_style,
    wants_json,
    warning,
)
from airflow_alerting.cli.runtime import duration, positive_int
from airflow_alerting.cli.spec import Argument, Command

if TYPE_CHECKING:
    from airflow_alerting.analytics import Analytics

__all__ = ["HISTORY", "STATS"]

_INCOMPLETE = (
    "the {store} state store keeps only its last decisions ([alerting] history_limit): "
    "figures may cover less than the period asked for; the sql store keeps the whole history"
)


def _analytics() -> Analytics:
    from airflow_alerting.analytics import Analytics
    from airflow_alerting.cli.runtime import configured_settings
    from airflow_alerting.state import store_from_settings

    return Analytics(store_from_settings(configured_settings()))


def _history(args: argparse.Namespace) -> int:
    from airflow_alerting.analytics import history_entry_json
    from airflow_alerting.manager_base import utcnow
    from airflow_alerting.state.base import StateUnavailableError

    analytics = _analytics()
    since = utcnow() - args.since if args.since is not None else None
    try:
        entries = analytics.history(since=since, limit=args.limit, dag_id=args.dag, severity=args.severity)
    except StateUnavailableError as err:
        raise OperationFailed(f"could not read the alert history: {err}") from err
    except ValueError as err:  # argparse checked the types; the API's message names what is wrong
        raise BadInput("--since/--limit/--dag/--severity", str(err)) from err
    if wants_json(args):
        print_json(
            {
                "complete": analytics.complete,
                "since": since.isoformat() if since else None,
                "entries": [history_entry_json(e) for e in entries],
            }
        )
        return 0
    if not analytics.complete:
        warning(_INCOMPLETE.format(store=analytics.store.name))
    print_table(
        "Alert history (newest first)",
        ("at", "source", "kind", "severity", "channel", "reason", "sent", "delivered", "detail"),
        (
            (
                e.at,
                e.source,
                e.kind,
                e.severity,
                e.channel,
                e.reason,
                "yes" if e.sent else "no",
                "-" if e.delivered is None else ("yes" if e.delivered else "FAILED"),
                e.detail,
            )
            for e in entries
        ),
        empty="no recorded decisions",
        styles={3: severity_style},
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from airflow_alerting.manager_base import utcnow
    from airflow_alerting.state.base import StateUnavailableError

    analytics = _analytics()
    now = utcnow()
    since = now - args.since
    try:
        report = analytics.report(since, now, limit=args.limit)
    except StateUnavailableError as err:
        raise OperationFailed(f"could not read the alert history: {err}") from err
    if wants_json(args):
        print_json({"backend": analytics.store.name, **report.to_json()})
        return 0
    if not report.complete:
        warning(_INCOMPLETE.format(store=analytics.store.name))
    suppression = report.suppression
    times = report.response_times
    totals: dict[str, int] = {}
    for bucket in report.volume:
        totals[bucket.key] = totals.get(bucket.key, 0) + bucket.alerts
    period = human_duration(args.since.total_seconds())
    print_kv(
        f"Alerting since {since.isoformat(timespec='seconds')} ({period})",
        [
            ("alerts by severity", ", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "none"),
            (
                "suppression",
                f"{suppression.suppressed} of {suppression.decisions} channel decisions held back "
                f"({suppression.ratio:.0%})",
            ),
            (
                "held back because",
                ", ".join(f"{k} {n}" for k, n in sorted(suppression.by_reason.items())) or "-",
            ),
            ("incidents opened", times.incidents),
            ("acknowledged / resolved", f"{times.acknowledged} / {times.resolved}"),
            ("MTTA", human_duration(times.mtta_seconds)),
            ("MTTR", human_duration(times.mttr_seconds)),
        ],
    )
    columns = ("alerts", "sent", "suppressed", "last seen")
    for title, rows in (
        ("Noisiest DAGs", report.noisiest_dags),
        ("Noisiest tasks", report.noisiest_tasks),
        ("Noisiest causes", report.noisiest_causes),
    ):
        print_table(
            title,
            (title.split()[-1][:-1].lower(), *columns),
            ((r.key, r.alerts, r.sent, r.suppressed, r.last_seen) for r in rows),
            empty="none",
        )
    print_table(
        "Trending causes (last hour against the day before)",
        ("cause", "severity", "last hour", "day before", "per hour now", "per hour before", "rise"),
        (
            (
                t.cause,
                t.severity,
                t.recent,
                t.baseline,
                f"{t.recent_per_hour:.1f}",
                f"{t.baseline_per_hour:.2f}",
                f"x{t.ratio:.1f}",
            )
            for t in report.trending
        ),
        empty="none rising",
        styles={1: severity_style},
    )
    return 0


_SEVERITIES = ("critical", "high", "medium", "low")

HISTORY = Command(
    name="history",
    help="Show the recorded alert decisions, newest first",
    arguments=(
        Argument(
            ("--since",), "only the last DURATION, e.g. 24h, 7d (default: all kept)", {"type": duration}
        ),
        Argument(("--limit",), "at most this many (default 50)", {"type": positive_int, "default": 50}),
        Argument(("--dag",), "only this DAG's decisions", {"default": None, "metavar": "DAG_ID"}),
        Argument(
            ("--severity",), "only this severity's decisions", {"choices": _SEVERITIES, "default": None}
        ),
    ),
    run=_history,
)

STATS = Command(
    name="stats",
    help="What is noisy: volume, noisiest DAGs/tasks/causes, suppression, MTTA/MTTR, trending causes",
    arguments=(
        Argument(
            ("--since",),
            "the period, e.g. 24h, 7d (default 24h)",
            {"type": duration, "default": timedelta(hours=24)},
        ),
        Argument(("--limit",), "rows per list (default 10)", {"type": positive_int, "default": 10}),
    ),
    run=_stats,
)
