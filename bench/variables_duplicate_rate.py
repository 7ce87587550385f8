"""Measure how often the Variables state store sends duplicate alerts, on a real deployment.

Starts the same distributed deployment as ``tests/deployment`` (API server, scheduler, DAG
processor, two Celery workers, Redis broker, fresh PostgreSQL metadata database; everything on
127.0.0.1), then triggers ``alerting_deploy_variables`` ``--runs`` times: each run has
``--width`` mapped tasks that fail at the same moment with the same ``ConnectionError``, after
the alerting Variables were cleared.  Exactly one Slack message per run would be right; the
report gives the messages per run, the decisions behind them, the duplicate rate (extra
messages per run) and lost alerts, plus how the burst was booked for reporting (suppressed
occurrences counted, follow-up summaries scheduled and left in the outbox), prints it and
writes it to ``--output``.

Needs PostgreSQL and Redis on 127.0.0.1 and the ``dev`` extra installed::

    .venv/bin/python bench/variables_duplicate_rate.py --runs 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from deployment.harness import (  # noqa: E402  (the harness lives with the tests)
    airflow_deployment,
    measure_variables_duplicates,
    services_unavailable,
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
            measured = measure_variables_duplicates(deployment, slack, args.runs)
    report = measured.report()
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
