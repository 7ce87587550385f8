"""Measure duplicate and lost alerts of the Variables state store: many processes, one storm, PostgreSQL.

``--processes`` worker processes (default 16), each its own interpreter with Airflow's ORM on one
fresh, migrated PostgreSQL metadata database, handle one failure storm at the same instant: every
process one mapped instance of the same task and run failing with the same ``ConnectionError``,
through the default policy's ``AlertManager`` with ``VariableStore``, posting to a local Slack
server.  The alerting Variables are cleared between storms.  Exactly one Slack post per storm is
right; the report gives the posts, duplicates and incidents per storm, the held-back failures (and
how many the store counted for the next notification) and the lost occurrences (failures no
incident counted), for as many storms as fit in ``--minutes``.  See
``tests/deployment/variables_storm.py`` for the machinery.

Needs PostgreSQL on 127.0.0.1 (trust auth) and the ``dev`` extra::

    .venv/bin/python bench/variables_duplicate_rate.py --minutes 15
    .venv/bin/python bench/variables_duplicate_rate.py --short      # 4 processes, 3 storms

``bench/run.py`` calls :func:`measure`.  The report goes to ``--output`` only when asked
(``bench/results/variables_duplicate_rate.txt`` is the committed measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from deployment.variables_storm import StormResult, postgres_unavailable, storm_workers  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "variables_duplicate_rate.txt"
#: the short mode (CI): a smoke run of the same scenario
SHORT_PROCESSES = 4
SHORT_STORMS = 3


class MeasurementUnavailableError(RuntimeError):
    """The measurement cannot run here (no PostgreSQL, no psycopg2)."""


@dataclass(frozen=True)
class VariablesDuplicateResult:
    """Storms of one root cause alerted by ``processes`` processes through ``VariableStore``.

    :param storms: what each storm produced
    :param startup_seconds: creating and migrating the metadata database and starting the processes
    :param wall_seconds: the storms alone, clearing and reading back included
    """

    processes: int
    alerts_per_process: int
    storms: tuple[StormResult, ...]
    startup_seconds: float
    wall_seconds: float
    measured_at: str
    airflow_version: str
    cpus: int

    @property
    def duplicates_per_storm(self) -> list[int]:
        return [s.duplicates for s in self.storms]

    @property
    def storms_with_duplicates(self) -> int:
        return sum(1 for s in self.storms if s.duplicates)

    @property
    def lost_alerts(self) -> int:
        """Storms that posted nothing at all."""
        return sum(1 for s in self.storms if s.posts == 0)

    @property
    def lost_occurrences(self) -> int:
        """Failures, over all storms, that no incident counted."""
        return sum(s.lost_occurrences for s in self.storms)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "variables_duplicate_rate",
            "processes": self.processes,
            "alerts_per_process": self.alerts_per_process,
            "storms": [{**dataclasses.asdict(s), "duplicates": s.duplicates} for s in self.storms],
            "storm_count": len(self.storms),
            "storms_with_duplicates": self.storms_with_duplicates,
            "duplicates": sum(self.duplicates_per_storm),
            "lost_alerts": self.lost_alerts,
            "lost_occurrences": self.lost_occurrences,
            "startup_seconds": round(self.startup_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 1),
            "measured_at": self.measured_at,
            "airflow_version": self.airflow_version,
            "cpus": self.cpus,
        }

    def report(self) -> str:
        storms = self.storms
        runs = len(storms)
        width = storms[0].width if storms else self.processes * self.alerts_per_process
        seconds = [s.seconds for s in storms]
        held_missing = [s.held_back - s.held_back_counted for s in storms]
        lines = [
            "Variables state store: duplicate and lost Slack alerts, one root cause, many processes",
            f"measured {self.measured_at} with Airflow {self.airflow_version}, {self.cpus} CPUs (shared with"
            " other work: timings are noisy)",
            f"setup: {self.processes} worker processes (own interpreter, Airflow ORM) on one fresh PostgreSQL"
            f" metadata DB; each storm: {width} failures of one mapped task and run, same ConnectionError,"
            f" {self.alerts_per_process} per process at the same instant, default policy, local Slack"
            " Web API; alerting Variables cleared before each storm",
            f"storms: {runs} in {self.wall_seconds:.0f} s (start-up {self.startup_seconds:.0f} s)",
            f"top-level Slack posts per storm (1 is right): {[s.posts for s in storms]}",
            f"duplicates per storm (posts beyond 1): {self.duplicates_per_storm}",
            f"storms with duplicates: {self.storms_with_duplicates} of {runs};"
            f" duplicates in all: {sum(self.duplicates_per_storm)}",
            f"lost alerts (storms that posted nothing): {self.lost_alerts} of {runs}",
            f"incidents the failures joined per storm (1 is right): {[s.incidents for s in storms]}",
            f"incidents listed in the store per storm (1 is right): {[s.stored_incidents for s in storms]}",
            f"failures counted by the storm's incidents ({width} is right):"
            f" {[s.failures_counted for s in storms]}",
            f"lost occurrences (failures no incident counted): {self.lost_occurrences} in all",
            f"held back per storm ({width - 1} is right): {[s.held_back for s in storms]}",
            f"held back but not counted for the next notification per storm (0 is right): {held_missing}",
            f"claim left pending after the storm: {sum(1 for s in storms if s.orphaned)} of {runs} storms",
            f"decisions (slack) per storm: {sorted({str(s.decisions) for s in storms})}",
        ]
        if seconds:
            lines.append(
                f"storm duration (s, start to last process done): median {statistics.median(seconds):.1f},"
                f" max {max(seconds):.1f}"
            )
        return "\n".join(lines) + "\n"


def measure(
    storms: int = 1000,
    processes: int = 16,
    *,
    short: bool = False,
    budget_seconds: float = 900.0,
    alerts_per_process: int = 1,
) -> VariablesDuplicateResult:
    """Run up to ``storms`` storms with ``processes`` processes, stopping once ``budget_seconds`` of
    storms have run.

    :param storms: the most storms to run (at least 1)
    :param processes: worker processes (at least 2)
    :param short: a smoke run: at most 4 processes and 3 storms
    :param budget_seconds: no storm starts after this many seconds of storms
    :param alerts_per_process: failures each process handles per storm, one after the other
    :raises ValueError: a parameter out of range, named
    :raises MeasurementUnavailableError: PostgreSQL or psycopg2 is missing
    """
    if storms < 1:
        raise ValueError(f"storms must be at least 1, got {storms}")
    if processes < 2:
        raise ValueError(f"processes must be at least 2, got {processes}")
    if alerts_per_process < 1:
        raise ValueError(f"alerts_per_process must be at least 1, got {alerts_per_process}")
    if budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    if short:
        storms, processes = min(storms, SHORT_STORMS), min(processes, SHORT_PROCESSES)
    reason = postgres_unavailable()
    if reason is not None:
        raise MeasurementUnavailableError(reason)
    from importlib.metadata import version

    began = time.monotonic()
    results: list[StormResult] = []
    with storm_workers(processes) as workers:
        started = time.monotonic()
        while len(results) < storms and time.monotonic() - started < budget_seconds:
            results.append(workers.storm(alerts_per_process))
        finished = time.monotonic()
    return VariablesDuplicateResult(
        processes=processes,
        alerts_per_process=alerts_per_process,
        storms=tuple(results),
        startup_seconds=started - began,
        wall_seconds=finished - started,
        measured_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        airflow_version=version("apache-airflow-core"),
        cpus=os.cpu_count() or 0,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--storms", type=int, default=1000, help="the most storms to run (default: 1000)")
    parser.add_argument("--processes", type=int, default=16, help="worker processes (default: 16)")
    parser.add_argument(
        "--minutes", type=float, default=15.0, help="storms stop after this long (default: 15)"
    )
    parser.add_argument("--alerts-per-process", type=int, default=1, help="failures per process per storm")
    parser.add_argument("--short", action="store_true", help="smoke run: 4 processes, 3 storms")
    parser.add_argument("--output", type=Path, help=f"also write the report here (e.g. {RESULTS})")
    args = parser.parse_args(argv)
    try:
        result = measure(
            args.storms,
            args.processes,
            short=args.short,
            budget_seconds=args.minutes * 60,
            alerts_per_process=args.alerts_per_process,
        )
    except ValueError as err:
        parser.error(str(err))
    except MeasurementUnavailableError as err:
        print(f"cannot run: {err}", file=sys.stderr)
        return 2
    report = result.report()
    print(report, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
