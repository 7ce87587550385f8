"""Benchmark harness: every scenario side by side with the stock notifiers, in one table per scenario.

Scenarios (``--only`` takes these names; repeat it to pick several):

1. ``storm``: the alert storm at 1x, 10x and 100x (``--storm-scales`` picks others): messages per
   channel, ours and stock, ratio to the floor, incidents, failures unaccounted, causes never named.
2. ``decision``: decision cost per alert (context to notifications, recording channels) for
   ``MemoryStore``, ``SqlStore`` on SQLite and PostgreSQL, with the state of one storm and of one
   hundred, and ``VariableStore`` on the metadata database (ORM) and through a real API server
   (a deployment: the callback runs in a Celery worker's task process; ``scenarios.api_server``).
3. ``parse``: what importing the provider and building one notifier adds to a DAG file over
   ``import airflow.sdk``, against the stock Slack, PagerDuty and SMTP notifiers.
4. ``concurrency``: 16 processes alerting mixed causes through ``SqlStore`` on PostgreSQL, and
   16 processes alerting one cause through ``VariableStore``, storm after storm, on the metadata
   DB (``measure()`` of ``bench/variables_duplicate_rate.py``) and through a real API server
   (16 task processes of two Celery workers).
5. ``slow``: one channel that never answers: callback time against the deadline, ours and stock.

Needs PostgreSQL on 127.0.0.1:5432 (db ``test``; ``ALERTING_BENCH_POSTGRES_URL`` overrides it);
Prints the tables, writes them to
``bench/results/run.txt`` (``run_short.txt`` with ``--short``) and exits 1 when a count that
must hold does not (never for a timing)::

    .venv/bin/python bench/run.py                 # everything (see docs/performance.md for how long)
    .venv/bin/python bench/run.py --storm-scales 1 10   # ... without the 100x storm
    .venv/bin/python bench/run.py --short         # CI: small sizes, under a minute
    .venv/bin/python bench/run.py --only storm --only slow
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import concurrency, decision, parse, slow, storm
from scenarios.common import RESULTS, Check, Options, Result, Table, loopback_only, machine

SCENARIOS: dict[str, Callable[[Options], Result]] = {
    storm.NAME: storm.run,
    decision.NAME: decision.run,
    parse.NAME: parse.run,
    concurrency.NAME: concurrency.run,
    slow.NAME: slow.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode: small sizes, under a minute")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--storm-scales",
        type=int,
        nargs="+",
        metavar="N",
        help="storm scales to replay (default: 1 10 100; --short: 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="storm seed (default: 0)")
    parser.add_argument(
        "--variables-storms",
        type=int,
        help=(
            "most Variables storms, within 5 min, on the metadata DB and through the API server "
            "(default: 100; 0 skips both; --short: 0)"
        ),
    )
    parser.add_argument(
        "--output", type=Path, help="where to write the tables (default: bench/results/run.txt)"
    )
    parser.add_argument("--json", type=Path, help="also write the checks and headline figures as JSON here")
    args = parser.parse_args(argv)
    if args.variables_storms is not None and args.variables_storms < 0:
        parser.error("--variables-storms must be at least 0")
    if args.storm_scales is not None and min(args.storm_scales) < 1:
        parser.error("--storm-scales must be at least 1")
    scales = tuple(args.storm_scales or ((1,) if args.short else (1, 10, 100)))
    chosen = args.only or list(SCENARIOS)
    loopback_only()
    results: list[Result] = []
    failures: list[str] = []
    began = time.perf_counter()
    default_storms = 0 if args.short else 100
    with tempfile.TemporaryDirectory(prefix="bench_run_") as scratch:
        options = Options(
            short=args.short,
            seed=args.seed,
            storm_scales=scales,
            variables_storms=default_storms if args.variables_storms is None else args.variables_storms,
            workdir=Path(scratch),
        )
        for name in chosen:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                result = SCENARIOS[name](options)
            except Exception:  # one broken scenario must not hide the others' figures
                failures.append(f"{name}: {traceback.format_exc()}")
                print(f"[bench] {name} FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                continue
            seconds = time.perf_counter() - started
            results.append(Result(result.scenario, result.tables, result.checks, result.figures, seconds))
            # each scenario's tables as soon as it is done: a long run shows its progress
            print("\n".join(t.format() for t in result.tables), file=sys.stderr, flush=True)
            print(f"[bench] {name} done in {seconds:.1f} s", file=sys.stderr, flush=True)
    text = report(results, failures, args.short, time.perf_counter() - began)
    print(text, end="")
    output = args.output or RESULTS / ("run_short.txt" if args.short else "run.txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    checks = [c for r in results for c in r.checks]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "short": args.short,
                    "scenarios": [r.scenario for r in results],
                    "failed_scenarios": [f.split(":", 1)[0] for f in failures],
                    "checks": [c.__dict__ for c in checks],
                    "figures": {k: v for r in results for k, v in r.figures.items()},
                },
                indent=2,
            )
        )
    return 0 if not failures and all(c.ok for c in checks if not c.target) else 1


def report(results: Sequence[Result], failures: Sequence[str], short: bool, seconds: float) -> str:
    """The whole run as text: the machine, every scenario's tables, then the checks.

    :param results: what the scenarios measured
    :param failures: scenarios that raised, with their tracebacks
    :param short: whether this was the CI mode
    :param seconds: the run's wall time
    """
    lines = [
        f"bench/run.py{' --short' if short else ''}: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {machine()}",
        "",
    ]
    for result in results:
        for table in result.tables:
            lines.append(table.format())
        lines.append(f"({result.scenario}: {result.seconds:.1f} s)")
        lines.append("")
    checks: list[Check] = [c for r in results for c in r.checks]
    for title, chosen, verdict in (
        ("Targets of the issue (reported; the exit status ignores them)", True, "met"),
        ("Counts that must hold (exit status 1 when one does not)", False, "ok"),
    ):
        rows = tuple(
            (c.name, f"{c.value:g}", f"{c.limit:g}", "yes" if c.ok else "NO")
            for c in checks
            if c.target is chosen
        )
        if rows:
            lines.append(Table(title, ("check", "value", "limit", verdict), rows).format())
    for failure in failures:
        lines.append(f"FAILED {failure}")
    lines.append(f"total: {seconds:.1f} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
