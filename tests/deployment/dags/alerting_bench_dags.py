"""A benchmark DAG: decision cost of ``VariableStore`` in a real task process, through the API server.

Copied into the dags folder only by ``airflow_deployment(bench_dags=True)`` (``bench/scenarios/
api_server.py``); the deployment tests never parse it.

``alerting_bench_decision`` has one task that fails; its failure callback runs, in the task
process under the Task SDK supervisor (so every ``airflow.sdk.Variable`` read and write goes
through the supervisor to the API server), the decision sample of ``bench/scenarios/decision.py``:
an even sample of the default storm's failures, each through ``alert_from_context`` and
``AlertManager.handle`` with ``VariableStore`` and recording channels (no network but the API
server), on a frozen clock that starts where the bench's preload of the state left it.
``AlertManager.handle`` sends the ``alerting.callback.duration`` timer of each decision to the
bench's StatsD listener; the callback also writes ``decisions.json`` (its own timings, the
notifications recorded, whether it ran under the supervisor) to the run's sync directory.

The run's conf: ``alerts`` (decisions), ``seed`` (storm seed), ``clock`` (ISO start time).
Settings from the environment: ``ALERTING_DEPLOY_SYNC_DIR`` (see ``alerting_deploy_dags.py``) and
``ALERTING_BENCH_DIR`` (the repository's ``bench`` directory, for ``scenarios.decision``).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

SYNC_DIR = Path(os.environ.get("ALERTING_DEPLOY_SYNC_DIR", "/tmp/alerting-deploy-sync"))
BENCH_DIR = os.environ.get("ALERTING_BENCH_DIR", "")
DECISION_DAG = "alerting_bench_decision"


def _warm_up() -> None:
    """One alert through an in-memory pipeline: the imports a long-running worker has already paid.

    Not ``scenarios.common.warm_pipeline``: it silences the metrics this DAG is measured by.  The
    warm-up's timer is tagged ``store:MemoryStore``, which the bench ignores.
    """
    from scenarios.decision import recording_manager

    from airflow_alerting.model import Alert
    from airflow_alerting.testing import FrozenClock, MemoryStore

    manager, _ = recording_manager(MemoryStore(), FrozenClock())
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


def run_decisions(context: dict[str, Any]) -> None:
    """The failure callback: time the decision sample through ``VariableStore``; write the result."""
    if BENCH_DIR and BENCH_DIR not in sys.path:
        sys.path.insert(0, BENCH_DIR)
    from scenarios.decision import decide, recording_manager, sample_events

    from airflow_alerting.state.variables import VariableStore, _under_supervisor
    from airflow_alerting.testing import FrozenClock

    conf = context["dag_run"].conf or {}
    _warm_up()
    clock = FrozenClock(datetime.fromisoformat(str(conf["clock"])))
    manager, channels = recording_manager(VariableStore(), clock)
    seconds = decide(manager, clock, sample_events(int(conf["seed"]), int(conf["alerts"])))
    record = {
        "seconds": seconds,
        "sent": sum(len(c.notifications) for c in channels.values()),
        "under_supervisor": _under_supervisor(),
        "pid": os.getpid(),
    }
    directory = SYNC_DIR / context["ti"].run_id
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / ".decisions.tmp"
    partial.write_text(json.dumps(record))
    partial.rename(directory / "decisions.json")  # atomic: the bench never reads half a file


@dag(
    dag_id=DECISION_DAG,
    description="Benchmark: VariableStore decisions in a task process, through the API server.",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["alerting-bench"],
)
def decision_bench() -> None:
    @task(retries=0, on_failure_callback=run_decisions)
    def fail_then_decide() -> None:
        raise RuntimeError("the failure whose callback runs the benchmark's decisions")

    fail_then_decide()


decision_bench()
