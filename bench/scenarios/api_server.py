"""``VariableStore`` through a real Airflow API server: decision cost (scenario 2) and storms (scenario 4).

Both run on the distributed deployment of ``tests/deployment/harness.py`` (fresh PostgreSQL
metadata DB, API server, scheduler, DAG processor, two Celery workers with a Redis broker), where
the alert callbacks run in task processes under the Task SDK supervisor, so every Variable read
and write goes through the supervisor to the API server.  Every component sends StatsD
(DogStatsD, for the tags) to a UDP listener in this process.

Decision cost (:func:`decision_costs`): for each scale the alerting Variables are cleared and the
state of ``N`` storms is preloaded straight into the metadata DB through Airflow's ORM (the same
``preload`` as ``decision.py``, with ``VariableStore(verify_delay=0)``: the claim pauses would
make 10 storms take minutes, and the state they leave is the same); then ``alerting_bench_decision``
is triggered, and its failure callback runs ``decision.py``'s sample of the default storm's
failures in the task process, with recording channels.  The samples are the
``alerting.callback.duration`` timers (``AlertManager.handle``; ``alert_from_context`` not
included) tagged ``store:VariableStore``.

Storms (:func:`storms`): ``measure_variables_duplicates`` of the harness: ``alerting_deploy_variables``
(default policy, Slack Web API on a local server) with ``width`` mapped instances of one task and
run failing at once with the same cause, Variables cleared between storms, for a time budget.

Standalone (both, one deployment; about 4 min of start-up and preload plus the storm budget)::

    PYTHONPATH=bench .venv/bin/python -m scenarios.api_server --minutes 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import ROOT, ms, quantile

sys.path.insert(0, str(ROOT / "tests"))

#: the timer ``AlertManager.handle`` sends per alert, with Airflow's default ``statsd_prefix``
TIMER = "airflow.alerting.callback.duration"
#: storm width: 16 simultaneous task processes (2 Celery workers x 8 slots)
WIDTH = 16
WORKERS = 2


class StatsdListener:
    """Collects every StatsD line sent to a UDP port on 127.0.0.1, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._lines.extend(x for x in data.decode("utf-8", "replace").splitlines() if x)

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def timings(self, name: str, **tags: str) -> list[float]:
        """Milliseconds of the DogStatsD timer lines ``name:<ms>|ms|#k:v,...`` carrying ``tags``."""
        with self._lock:
            lines = list(self._lines)
        found = []
        for line in lines:
            metric, _, rest = line.partition(":")
            parts = rest.split("|")
            if metric != name or len(parts) < 2 or parts[1] != "ms":
                continue
            sent = dict(
                t.split(":", 1) for p in parts[2:] if p.startswith("#") for t in p[1:].split(",") if ":" in t
            )
            if all(sent.get(k) == v for k, v in tags.items()):
                found.append(float(parts[0]))
        return found


@dataclass(frozen=True)
class Bench:
    """A running deployment with the benchmark's DAG, its StatsD listener and its Slack server."""

    deployment: Any
    listener: StatsdListener
    slack: Any


@contextlib.contextmanager
def bench_deployment(root: Path, width: int = WIDTH) -> Iterator[Bench]:
    """Start the deployment (``width`` slots over two workers) with StatsD to a local listener.

    :param root: directory for its ``AIRFLOW_HOME``, logs and sync files
    :param width: mapped instances per storm, and Celery slots in all
    """
    from airflow_alerting.testing.servers import SlackServer, connection_env, slack_api_connection
    from deployment.harness import airflow_deployment, services_unavailable

    reason = services_unavailable()
    if reason is not None:
        raise RuntimeError(f"the API server deployment cannot run here: {reason}")
    listener = StatsdListener()
    try:
        with SlackServer() as slack:
            env = {
                **dict([connection_env("slack_api_default", slack_api_connection(slack))]),
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_DATADOG_ENABLED": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
                "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
                # the decision sample runs in one failure callback: minutes at large states
                "AIRFLOW__CORE__TASK_SUCCESS_OVERTIME": "3600",
                "ALERTING_BENCH_DIR": str(ROOT / "bench"),
            }
            concurrency = -(-width // WORKERS)
            with airflow_deployment(
                root=root,
                extra_env=env,
                workers=WORKERS,
                concurrency=concurrency,
                width=width,
                bench_dags=True,
            ) as deployment:
                yield Bench(deployment, listener, slack)
    finally:
        listener.close()


def _preload(deployment: Any, scale: int) -> dict[str, Any]:
    """Clear the alerting Variables and preload ``scale`` storms of state through the ORM (a child)."""
    deployment.clear_alerting_variables()
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "from airflow_alerting.state.variables import VariableStore\n"
        "from airflow_alerting.testing import FrozenClock\n"
        "from scenarios.decision import preload, recording_manager\n"
        "store = VariableStore(verify_delay=0)\n"
        "clock = FrozenClock()\n"
        "manager, _ = recording_manager(store, clock)\n"
        f"seconds = preload(manager, store, clock, {scale})\n"
        "print('BENCH ' + json.dumps({'preload_seconds': seconds, 'clock': clock.now.isoformat()}))\n"
    )
    # the preload's own handle() calls must not reach the listener
    env = {**deployment.env, "AIRFLOW__METRICS__STATSD_ON": "False"}
    log = deployment.root / "logs" / f"preload-{scale}x.log"
    with log.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=err, timeout=7200
        )
    out = done.stdout.decode(errors="replace")
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"preloading {scale}x failed ({done.returncode}):\n{tail}")
    found: dict[str, Any] = json.loads(line[len("BENCH ") :])
    return found


def _variable_requests(deployment: Any) -> int:
    """Requests the API server has logged so far on its Execution API's Variables endpoints."""
    log: Path = deployment.root / "logs" / "api-server.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return text.count("path=/execution/variables/")


def decision_costs(
    bench: Bench,
    scales: Sequence[int],
    alerts: int,
    seed: int,
    *,
    preload_budget: float = 900.0,
    log: Any = None,
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Time ``alerts`` decisions through the API server at each scale of preloaded state.

    A scale is skipped (and named in the notes) when the previous preload, scaled up linearly,
    would take longer than ``preload_budget`` seconds.

    :param bench: the running deployment (:func:`bench_deployment`)
    :param scales: storms' worth of state, increasing
    :param alerts: decisions timed per scale
    :param seed: the storm seed
    :param preload_budget: the longest preload attempted, in estimated seconds
    :param log: where to print progress (``sys.stderr`` by default)
    :return: per scale ``seconds`` (the StatsD timers), ``preload_seconds``, ``sent``,
        ``callback_seconds`` (the callback's own timings, ``alert_from_context`` included);
        and notes on skipped scales
    """
    from deployment.harness import BENCH_DECISION_DAG, poll

    out = log or sys.stderr
    deployment = bench.deployment
    measured: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    previous: tuple[int, float] | None = None
    for scale in scales:
        if previous is not None:
            estimate = previous[1] * scale / previous[0]
            if estimate > preload_budget:
                notes.append(
                    f"{scale}x not measured: its preload would take ~{estimate:.0f} s"
                    f" (the {previous[0]}x one took {previous[1]:.0f} s; budget {preload_budget:.0f} s)"
                )
                continue
        print(f"[api_server] preloading {scale}x ...", file=out, flush=True)
        loaded = _preload(deployment, scale)
        previous = (scale, float(loaded["preload_seconds"]))
        bench.listener.clear()
        requests_before = _variable_requests(deployment)
        conf = {"alerts": alerts, "seed": seed, "clock": loaded["clock"]}
        run_id = deployment.trigger(BENCH_DECISION_DAG, conf, prefix=f"decision{scale}x")
        deployment.wait_for_run(BENCH_DECISION_DAG, run_id, timeout=600)
        result_file = deployment.sync_dir / run_id / "decisions.json"

        def written(path: Path = result_file) -> dict[str, Any] | None:
            # the callback runs after the run is "failed": its file comes later
            return json.loads(path.read_text()) if path.exists() else None

        record = poll(
            f"the decisions of {run_id}",
            written,
            timeout=3600,
            interval=1.0,
            alive=deployment.check_alive,
        )
        if not record["under_supervisor"]:
            raise RuntimeError("the decision callback did not run under the Task SDK supervisor")

        def timers(count: int = len(record["seconds"])) -> list[float] | None:
            # UDP is asynchronous: the last datagrams may still be on their way
            found = bench.listener.timings(TIMER, store="VariableStore")
            return found if len(found) >= count else None

        try:
            milliseconds = poll("the callback timers", timers, timeout=10, interval=0.2)
        except Exception:
            milliseconds = bench.listener.timings(TIMER, store="VariableStore")
            notes.append(f"{scale}x: {len(milliseconds)} of {len(record['seconds'])} StatsD timers arrived")
        measured[scale] = {
            "seconds": [m / 1000 for m in milliseconds],
            "preload_seconds": previous[1],
            "sent": record["sent"],
            "callback_seconds": record["seconds"],
            # a count, not a timing: what each decision costs the API server whatever the load
            "variable_requests": _variable_requests(deployment) - requests_before,
        }
        p50 = quantile(measured[scale]["seconds"], 0.5)
        print(f"[api_server] {scale}x: p50 {1000 * p50:.1f} ms", file=out, flush=True)
    deployment.clear_alerting_variables()
    return measured, notes


def decision_notes(found: dict[int, dict[str, Any]], skipped: Sequence[str]) -> list[str]:
    """The notes under the decision table for :func:`decision_costs`' result.

    :param found: its measurements by scale
    :param skipped: its notes on scales not measured
    """
    requests = ", ".join(
        f"{s}x {f['variable_requests'] / max(1, len(f['callback_seconds'])):.1f}"
        for s, f in sorted(found.items())
    )
    callback = ", ".join(
        f"{s}x {ms(quantile(f['callback_seconds'], 0.5))} ms" for s, f in sorted(found.items())
    )
    return [
        "VariableStore (API server): failure callback of a real task on the Celery deployment of"
        " tests/deployment (Task SDK -> supervisor -> API server -> PostgreSQL metadata DB);",
        "  samples = the alerting.callback.duration StatsD timer of handle() (alert_from_context not"
        " included), recording channels; state preloaded through the ORM into the same metadata DB"
        " (verify_delay=0);",
        f"  the callback's own p50, alert_from_context included: {callback};",
        f"  Execution API Variable requests per decision (API server access log): {requests}",
        *(f"  {note}" for note in skipped),
    ]


def storms(bench: Bench, most: int, budget_seconds: float) -> dict[str, Any]:
    """Storms of ``alerting_deploy_variables`` for ``budget_seconds``: posts, duplicates, losses.

    :param bench: the running deployment (:func:`bench_deployment`)
    :param most: the most storms
    :param budget_seconds: start no storm after this long (one always runs)
    :return: ``storms``, ``width``, ``processes`` (Celery slots), ``posts`` (top-level Slack posts
        per storm), ``duplicates``, ``lost_occurrences``, ``lost_alerts``, ``storms_with_duplicates``,
        ``seconds``, and ``callback_ms`` (every callback's ``alerting.callback.duration``)
    """
    from deployment.harness import measure_variables_duplicates

    deployment = bench.deployment
    bench.listener.clear()
    began = time.monotonic()
    rate = measure_variables_duplicates(deployment, bench.slack, most, budget_seconds=budget_seconds)
    lost = sum(max(0, rate.width - n) for n in rate.failures_recorded)
    return {
        "storms": rate.runs,
        "width": rate.width,
        "processes": rate.workers * rate.concurrency,
        "posts": rate.messages_per_run,
        "duplicates": rate.extra_messages,
        "storms_with_duplicates": sum(1 for n in rate.messages_per_run if n > 1),
        "lost_alerts": rate.lost_runs,
        "lost_occurrences": lost,
        "failures_recorded": rate.failures_recorded,
        "storm_seconds": rate.storm_seconds,
        "seconds": time.monotonic() - began,
        "callback_ms": bench.listener.timings(TIMER, store="VariableStore"),
    }


def storm_row(found: dict[str, Any]) -> tuple[str, ...]:
    """The Variables row of ``concurrency.py``'s table for :func:`storms`' result.

    :param found: what :func:`storms` returned
    """
    count = found["storms"]
    per_100 = 100 / count if count else 0.0
    return (
        "VariableStore (API server)",
        str(found["processes"]),
        f"{count} storms x {found['width']}",
        "1 per storm",
        "-",
        "-",
        str(sum(found["posts"])),
        str(count * found["width"]),
        f"{found['duplicates'] * per_100:.1f} / 100 storms",
        f"{found['lost_occurrences'] * per_100:.1f} / 100 storms",
        "-",
    )


def storm_notes(found: dict[str, Any]) -> list[str]:
    """The notes under ``concurrency.py``'s table for :func:`storms`' result.

    :param found: what :func:`storms` returned
    """
    callbacks = found["callback_ms"]
    return [
        f"VariableStore (API server): {found['storms']} storms of alerting_deploy_variables on the"
        f" Celery deployment ({found['processes']} task slots), {found['width']} mapped instances of one"
        f" task and run failing at once; {found['seconds']:.0f} s of storms;",
        f"  top-level Slack posts per storm (1 is right): {found['posts']};"
        f" storms with duplicates: {found['storms_with_duplicates']}; storms that posted nothing:"
        f" {found['lost_alerts']};",
        f"  failures counted per storm ({found['width']} is right): {found['failures_recorded']};"
        f" callback duration under the storm: p50 {quantile(callbacks, 0.5):.0f} ms,"
        f" p95 {quantile(callbacks, 0.95):.0f} ms ({len(callbacks)} callbacks).",
    ]


def measure_decisions(
    workdir: Path, scales: Sequence[int], alerts: int, seed: int, *, preload_budget: float = 900.0
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """:func:`decision_costs` on a deployment of its own (``decision.py``'s row); see there.

    :param workdir: a scratch directory for the deployment
    :param scales: storms' worth of state, increasing
    :param alerts: decisions timed per scale
    :param seed: the storm seed
    :param preload_budget: the longest preload attempted, in estimated seconds
    """
    with bench_deployment(workdir / "api_server_decision") as bench:
        return decision_costs(bench, scales, alerts, seed, preload_budget=preload_budget)


def measure_storms(workdir: Path, most: int, budget_seconds: float) -> dict[str, Any]:
    """:func:`storms` on a deployment of its own (``concurrency.py``'s row); see there.

    :param workdir: a scratch directory for the deployment
    :param most: the most storms
    :param budget_seconds: start no storm after this long
    """
    with bench_deployment(workdir / "api_server_storms") as bench:
        return storms(bench, most, budget_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from .common import Table, loopback_only, machine, ratio

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100], help="state scales")
    parser.add_argument("--alerts", type=int, default=100, help="decisions timed per scale")
    parser.add_argument("--seed", type=int, default=0, help="storm seed")
    parser.add_argument("--preload-budget", type=float, default=900.0, help="longest preload, seconds")
    parser.add_argument("--storms", type=int, default=100, help="the most storms (0 skips them)")
    parser.add_argument("--minutes", type=float, default=5.0, help="storms stop after this long")
    args = parser.parse_args(argv)
    loopback_only()
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench_api_server_") as scratch,
        bench_deployment(Path(scratch)) as bench,
    ):
        started = time.monotonic() - began
        measured, notes = decision_costs(
            bench, sorted(args.scales), args.alerts, args.seed, preload_budget=args.preload_budget
        )
        found = storms(bench, args.storms, args.minutes * 60) if args.storms > 0 else None
    first = min(measured) if measured else 1
    rows = []
    for scale, m in sorted(measured.items()):
        p50 = quantile(m["seconds"], 0.5)
        rows.append(
            (
                "VariableStore (API server)",
                f"{scale}x",
                str(len(m["seconds"])),
                ms(p50),
                ms(quantile(m["seconds"], 0.95)),
                ms(quantile(m["seconds"], 0.99)),
                ratio(p50, quantile(measured[first]["seconds"], 0.5)),
                f"{m['preload_seconds']:.1f}",
            )
        )
    print(f"machine: {machine()}; deployment start-up {started:.0f} s")
    print(
        Table(
            "2. Decision cost per alert, VariableStore through the API server (StatsD timer of handle())",
            ("store", "state", "alerts", "p50 ms", "p95 ms", "p99 ms", f"p50 / {first}x", "preload s"),
            tuple(rows),
            tuple(decision_notes(measured, notes)),
        ).format()
    )
    if found is not None:
        print(
            Table(
                "4. Storms, VariableStore through the API server",
                _COLUMNS,
                (storm_row(found),),
                tuple(storm_notes(found)),
            ).format()
        )
    print(f"total: {time.monotonic() - began:.0f} s")
    return 0


_COLUMNS = (
    "store",
    "processes",
    "failures",
    "causes",
    "incidents",
    "decisions/s",
    "slack msgs",
    "stock slack",
    "duplicates",
    "lost",
    "split",
)

if __name__ == "__main__":
    raise SystemExit(main())
