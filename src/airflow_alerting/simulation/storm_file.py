"""Write a generated failure storm as a ``simulate`` events file.

``python -m airflow_alerting.simulation.storm_file storm.jsonl [--seed 0] [--scale 1]`` writes the
storm of :func:`~airflow_alerting.testing.storm.generate_storm` (by default a PostgreSQL outage
failing 500 tasks in 20 DAGs, mixed with 30 unrelated causes), so ``simulate`` can be tried, and
policies compared, on the same storm the tests and benchmarks replay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_alerting.simulation.events import storm_events, write_events

__all__ = ["export_storm", "main"]


def export_storm(path: str | Path, *, seed: int = 0, scale: int = 1) -> int:
    """Write the storm for ``seed`` and ``scale`` to ``path`` as JSON lines; return the number of events.

    :param path: the file to write (overwritten)
    :param seed: the storm's seed
    :param scale: the storm's scale (1: 500 outage failures and 30 unrelated causes)
    """
    from airflow_alerting.testing.storm import generate_storm

    return write_events(storm_events(generate_storm(seed, scale=scale)), path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``OUT [--seed N] [--scale N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_alerting.simulation.storm_file",
        description="write a generated failure storm as a simulate events file (JSON lines)",
    )
    parser.add_argument("out", help="the file to write")
    parser.add_argument("--seed", type=int, default=0, help="the storm's seed (default 0)")
    parser.add_argument("--scale", type=int, default=1, help="the storm's scale (default 1)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    count = export_storm(args.out, seed=args.seed, scale=args.scale)
    print(f"wrote {count} events to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
