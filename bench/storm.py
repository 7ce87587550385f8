"""Measure what a failure storm costs in messages and time: ours against the stock approach.

Replays the storm of :func:`airflow_alerting.testing.storm.generate_storm` (a PostgreSQL outage
failing 500 tasks in 20 DAGs within 10 minutes, mixed with 30 unrelated causes) at scale 1, 10
and 100 through the default policy, the in-memory store and recording channels (Slack editable,
e-mail, PagerDuty with its actions), with a frozen clock.  For each scale and channel the report
gives the messages a human sees, ours and stock (one message per failure the default matrix
routes there), their ratio to the floor (messages per distinct cause), the incidents, the
failures unaccounted for, the causes no message names, and the wall time of ``handle()`` per
alert (p50/p95/p99).  It prints the table and writes it to ``--output``.

No Airflow, no network.  ``bench/run.py`` runs the same replay side by side with the other
scenarios; this script adds the latency columns and scale 100 by default::

    .venv/bin/python bench/storm.py            # scale 1, 10 and 100
    .venv/bin/python bench/storm.py --short    # scale 1 only (CI)
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios.storm import replay_scale

from airflow_alerting import metrics
from airflow_alerting.testing.storm import OUTAGE_CAUSE, ReplayReport

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "storm.txt"
SCALES = (1, 10, 100)


def run(scale: int, seed: int) -> tuple[ReplayReport, float]:
    """Replay one storm (the same replay as ``bench/run.py``'s storm scenario); report and wall time."""
    _, report, _, seconds = replay_scale(scale, seed)
    return report, seconds


def table(results: Sequence[tuple[int, ReplayReport, float]]) -> str:
    """The report: one row per scale and channel, then per scale the outage and timings."""
    header = (
        f"{'scale':>5} {'failures':>8} {'causes':>6} {'channel':<9} {'ours':>6} {'stock':>7} "
        f"{'ours/floor':>10} {'stock/floor':>11} {'edits':>6} {'incidents':>9} {'unaccounted':>11} "
        f"{'double':>6} {'unnamed':>7}"
    )
    lines = [header, "-" * len(header)]
    for scale, report, _ in results:
        for name in report.channels:
            lines.append(
                f"{scale:>5} {report.failures:>8} {report.causes:>6} {name:<9} "
                f"{report.messages.get(name, 0):>6} {report.stock_messages.get(name, 0):>7} "
                f"{report.floor_ratio(name):>10.2f} {report.stock_ratio(name):>11.2f} "
                f"{report.edits.get(name, 0):>6} {len(report.incidents):>9} {report.unaccounted:>11} "
                f"{report.double_counted:>6} {len(report.unnamed_causes.get(name, ())):>7}"
            )
    lines.append("")
    lines.append(
        f"{'scale':>5} {'outage incident':<48} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'replay s':>9}"
    )
    for scale, report, seconds in results:
        outage = report.incident_of(OUTAGE_CAUSE)
        if outage is not None:
            told = outage.describe()
        else:  # split over several incidents (or none): say how many
            told = f"split into {len(report.cause_incidents.get(OUTAGE_CAUSE, ()))} incidents"
        p50, p95, p99 = (1000 * report.latency(q) for q in (0.5, 0.95, 0.99))
        lines.append(f"{scale:>5} {told:<48} {p50:>7.2f} {p95:>7.2f} {p99:>7.2f} {seconds:>9.1f}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="scale 1 only (for CI)")
    parser.add_argument("--scales", type=int, nargs="+", help=f"scales to run (default: {SCALES})")
    parser.add_argument("--seed", type=int, default=0, help="storm seed (default: 0)")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"where to write the report (default: {DEFAULT_OUTPUT.name}, --short: storm_short.txt)",
    )
    args = parser.parse_args(argv)
    scales = (1,) if args.short else tuple(args.scales or SCALES)
    if any(s < 1 for s in scales):
        parser.error("scales must be at least 1")
    # metrics would import Airflow's Stats on every alert; the bench measures the pipeline, not StatsD
    metrics._stats = lambda: None  # type: ignore[method-assign]
    # one INFO line per alert would measure the terminal, not the pipeline
    logging.getLogger("airflow_alerting").setLevel(logging.WARNING)
    results = []
    for scale in scales:
        print(f"scale {scale}: replaying ...", file=sys.stderr, flush=True)
        report, seconds = run(scale, args.seed)
        results.append((scale, report, seconds))
    report_text = (
        f"storm replay, seed {args.seed}, default policy, MemoryStore; "
        f"Python {platform.python_version()} on {platform.machine()}\n\n{table(results)}"
    )
    print(report_text, end="")
    # a CI run must not overwrite the full measurement
    output = args.output or (DEFAULT_OUTPUT.with_name("storm_short.txt") if args.short else DEFAULT_OUTPUT)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
