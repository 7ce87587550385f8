"""Measure how often the Variables state store sends duplicate alerts, on a real deployment.

Starts the same distributed deployment as ``tests/deployment`` (API server, scheduler, DAG
processor, two Celery workers, Redis broker, fresh PostgreSQL metadata database; everything on
127.0.0.1), then triggers ``alerting_deploy_variables`` ``--runs`` times: each run has
``--width`` mapped tasks that fail at the same moment with the same ``ConnectionError``, after
the alerting Variables were cleared.  Exactly one Slack message per run would be right; the
report gives the messages per run, the decisions behind them, the duplicate rate (extra
messages per run) and lost alerts, plus how the burst was booked for reporting (suppressed
occurrences counted, follow-up summaries scheduled and left in the outbox, as the store itself
reads them back through the REST API), prints it and writes it to ``--output``.

Needs PostgreSQL and Redis on 127.0.0.1 and the ``dev`` extra installed::

    .venv/bin/python bench/variables_duplicate_rate.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from airflow_alerting.state.variables import VariableStore  # noqa: E402
from deployment.harness import (  # noqa: E402  (the harness lives with the tests)
    VARIABLES_DAG,
    Deployment,
    airflow_deployment,
    services_unavailable,
    slack_messages_for,
)

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "variables_duplicate_rate.txt"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="storms to trigger (default: 5)")
    parser.add_argument("--width", type=int, default=24, help="mapped tasks per storm (default: 24)")
    parser.add_argument("--concurrency", type=int, default=12, help="slots per worker (default: 12)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the report")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.width < 1:
        parser.error("--runs and --width must be at least 1")
    if args.width > 2 * args.concurrency:
        parser.error("--width must not exceed the two workers' slots (2 x --concurrency)")
    reason = services_unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2

    from airflow_alerting.testing.servers import SlackServer, connection_env, slack_api_connection

    with SlackServer() as slack:
        env = dict([connection_env("slack_api_default", slack_api_connection(slack))])
        with airflow_deployment(extra_env=env, width=args.width, concurrency=args.concurrency) as deployment:
            print(f"deployment ready; logs in {deployment.root / 'logs'}", file=sys.stderr)
            measured = measure(deployment, slack, args.runs)
    report = measured.report()
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    return 0


class DeployedVariables(VariableStore):
    """The Variables store reading the deployment's Variables through its REST API (read-only)."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(verify_delay=0)
        self.deployment = deployment

    def _read(self, key: str) -> dict[str, Any] | None:
        value = self.deployment.variable(key)
        return value if isinstance(value, dict) else None

    def _write(self, key: str, document: dict[str, Any]) -> None:
        raise RuntimeError("the benchmark only reads the deployment's state")

    def _delete(self, key: str) -> None:
        raise RuntimeError("the benchmark only reads the deployment's state")


@dataclass
class Storms:
    """What each storm produced; exactly one message per storm would be right."""

    width: int
    workers: int
    concurrency: int
    messages: list[int] = field(default_factory=list)
    decisions: list[dict[str, int]] = field(default_factory=list)
    #: incidents the storm opened (1 is right: every failure has the same root cause)
    incidents: list[int] = field(default_factory=list)
    orphaned: list[bool] = field(default_factory=list)
    suppressed: list[int] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def report(self) -> str:
        from importlib.metadata import version

        runs = len(self.messages)
        extra = sum(max(0, n - 1) for n in self.messages)
        lost = sum(1 for n in self.messages if n == 0)
        lines = [
            "Variables state store: duplicate Slack alerts for one root cause",
            f"measured {time.strftime('%Y-%m-%d %H:%M:%S %Z')} with Airflow {version('apache-airflow-core')},"
            f" CeleryExecutor ({self.workers} workers x {self.concurrency} slots, Redis broker,"
            f" PostgreSQL metadata DB), {os.cpu_count()} CPUs",
            f"storm: {self.width} mapped tasks failing together with the same ConnectionError,"
            " retries=0, medium severity (Slack only), default policy (escalation after 3 runs in 1 h,"
            " summaries after 2 min), alerting Variables cleared before each run",
            f"runs: {runs}",
            f"slack messages per run: {self.messages}",
            f"decisions per run (slack channel): {self.decisions}",
            f"incidents opened per run (1 is right): {self.incidents}",
            "messages beyond one per incident per run (duplicates of one claim; 0 is right):"
            f" {[max(0, m - i) for m, i in zip(self.messages, self.incidents, strict=True)]}",
            f"claim left pending after the storm (orphaned) per run: {self.orphaned}",
            "held-back occurrences counted for the next notifications per run, over its incidents"
            f" ({self.width} - incidents is right): {self.suppressed}",
            "held-back occurrences that saw themselves as the first after the send (suppressed count 1;"
            " each schedules a follow-up or deferred edit where the channel takes one; 1 is right):"
            f" {self.scheduled}",
            f"deferred follow-ups and edits left in the outbox per run: {self.queued}",
            f"failure spread per run (s): {[round(s, 2) for s in self.spreads]}",
            f"storm duration per run (s): {[round(s, 1) for s in self.durations]}",
            f"duplicate rate: {extra / runs:.2f} extra messages per storm ({extra} extra / {runs} runs;"
            " exact would be 0)",
            f"lost alerts: {lost} of {runs} storms sent no message at all",
        ]
        return "\n".join(lines) + "\n"


def measure(deployment: Deployment, slack: Any, runs: int) -> Storms:
    """Run the Variables storm ``runs`` times, clearing state between runs, and read back its state."""
    state = DeployedVariables(deployment)
    storms = Storms(deployment.width, len(deployment.worker_names), deployment.concurrency)
    for _ in range(runs):
        deployment.clear_alerting_variables()
        slack.clear()
        result = deployment.run_storm(VARIABLES_DAG)
        (fingerprint,) = result.fingerprints
        storms.messages.append(len(slack_messages_for(slack.messages, str(fingerprint))))
        tally: dict[str, int] = {}
        for decision in result.decisions("slack"):
            key = f"sent/{decision['reason']}" if decision["send"] else decision["reason"]
            tally[key] = tally.get(key, 0) + 1
        storms.decisions.append(dict(sorted(tally.items())))
        incidents = state.incidents(limit=100)
        channels = [c for c in (state.channel_state(i.id, "slack") for i in incidents) if c is not None]
        storms.incidents.append(len(incidents))
        storms.orphaned.append(any(c.claim_token is not None for c in channels))
        storms.suppressed.append(sum(c.suppressed.count for c in channels))
        held_first = [d for d in result.decisions("slack") if not d["send"] and d["suppressed_count"] == 1]
        storms.scheduled.append(len(held_first))
        outbox = state._outbox()
        storms.queued.append(sum(1 for i in outbox if i["notification"]["decision"]["reason"] == "summary"))
        storms.spreads.append(result.failure_spread)
        storms.durations.append(result.seconds)
    deployment.clear_alerting_variables()
    return storms


if __name__ == "__main__":
    raise SystemExit(main())
