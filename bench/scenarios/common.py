"""What the scenarios share: their options, their results (tables and checks) and the table printer."""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
POSTGRES_URL = os.environ.get(
    "ALERTING_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Options:
    """How a scenario runs.

    :param short: the CI mode: small sizes, few repeats, nothing that needs minutes
    :param seed: the storm seed
    :param storm_scales: the storm scales to replay
    :param variables_storms: storms of the Variables deployment run (0 skips it)
    :param workdir: a private scratch directory (Airflow home, SQLite files)
    """

    short: bool
    seed: int
    storm_scales: tuple[int, ...]
    variables_storms: int
    workdir: Path


@dataclass(frozen=True)
class Table:
    """One table of figures.

    :param title: what it measures
    :param columns: column headers
    :param rows: cells, already formatted
    :param notes: lines printed under it (method, caveats)
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {row!r} has {len(row)} cells, not {len(widths)}")
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            # first column (a name) left-aligned, figures right-aligned
            return "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        out = [self.title, line(self.columns), line(["-" * w for w in widths])]
        out.extend(line(row) for row in self.rows)
        out.extend(f"  {note}" for note in self.notes)
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Check:
    """A count that must hold whatever the machine, or an issue's target (reported, not enforced).

    :param name: what is checked, e.g. ``storm x1 slack messages / causes <= 1.15``
    :param value: the measured value
    :param limit: the bound it must respect
    :param ok: whether it does
    :param target: a target of the issue (a ratio or a timing): reported as met or not, while
        the exit status follows only the counts that must hold
    """

    name: str
    value: float
    limit: float
    ok: bool
    target: bool = False


@dataclass(frozen=True)
class Result:
    """What one scenario measured.

    :param scenario: its name (``--only`` value)
    :param tables: its tables, in print order
    :param checks: its counts that must hold
    :param figures: named headline figures (for ``--json`` and the docs)
    :param seconds: how long the scenario took
    """

    scenario: str
    tables: tuple[Table, ...]
    checks: tuple[Check, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def at_most(name: str, value: float, limit: float) -> Check:
    """A :class:`Check` that ``value <= limit``.

    :param name: what is checked
    :param value: the measured value
    :param limit: the largest acceptable value
    """
    return Check(name, float(value), float(limit), value <= limit)


def target_at_most(name: str, value: float, limit: float) -> Check:
    """A target that ``value <= limit``: reported as met or not, never failing the run.

    :param name: what is measured against the target
    :param value: the measured value
    :param limit: the target
    """
    return Check(name, float(value), float(limit), value <= limit, target=True)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` with linear interpolation; NaN when empty.

    :param values: the sample
    :param q: the quantile
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(1.0, max(0.0, q))
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals.

    :param seconds: a duration
    """
    return f"{1000 * seconds:.2f}"


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` with two decimals, ``-`` when the denominator is 0.

    :param numerator: the value compared
    :param denominator: the reference
    """
    return f"{numerator / denominator:.2f}" if denominator else "-"


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def loopback_only() -> None:
    """Refuse to resolve any host but loopback in this process: the bench never reaches the internet.

    The stock notifiers default to real endpoints (``events.pagerduty.com``, ``slack.com``); a
    mistake in pointing them at the local servers must fail, not send.
    """
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: the benchmark only talks to 127.0.0.1")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded


def quiet() -> None:
    """Keep per-alert logging and StatsD out of the measurements (they would time the terminal)."""
    from airflow_alerting import metrics

    metrics._stats = lambda: None
    logging.getLogger("airflow_alerting").setLevel(logging.ERROR)


def warm_pipeline() -> None:
    """Run one alert through a throwaway in-memory pipeline, so lazy imports are paid before timing.

    The first alert imports Airflow (for its secrets masker) and the channel modules: seconds on
    a loaded machine, paid once per worker process, never per alert.  Forked workers inherit them.
    """
    from airflow_alerting.manager import AlertManager, DeliveryOptions
    from airflow_alerting.model import Alert
    from airflow_alerting.policy import AlertPolicy
    from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

    quiet()
    manager = AlertManager(
        AlertPolicy(),
        store=MemoryStore(),
        channels={name: RecordingChannel(name) for name in ("slack", "email", "pagerduty")},
        clock=FrozenClock(),
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    manager.handle(
        Alert(
            dag_id="warm_up",
            task_id="task",
            run_id="run",
            exception_type="ConnectionError",
            exception_mro=("ConnectionError", "OSError", "Exception"),
            message="password=hunter2 host db-main.internal:5432 refused",
        )
    )


def airflow_env(workdir: Path) -> dict[str, str]:
    """The environment of an Airflow process private to this run (its own home, SQLite metadata DB).

    :param workdir: the run's scratch directory
    """
    home = workdir / "airflow_home"
    home.mkdir(parents=True, exist_ok=True)
    inherited = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    return env


def migrate_metadata_db(workdir: Path) -> dict[str, str]:
    """Create and migrate the run's SQLite metadata DB (once) and return the environment using it.

    :param workdir: the run's scratch directory
    """
    env = airflow_env(workdir)
    marker = Path(env["AIRFLOW_HOME"]) / ".migrated"
    if not marker.exists():
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {done.stderr[-2000:]}")
        marker.touch()
    return env


def machine() -> str:
    """One line describing this machine and the versions measured."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}){ram}; Python {platform.python_version()},"
        f" Airflow {version('apache-airflow-core')}, {platform.system()} {platform.release()}"
    )
