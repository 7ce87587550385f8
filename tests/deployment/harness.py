"""A real, distributed Airflow 3 deployment on 127.0.0.1, started and stopped by a context manager.

:func:`airflow_deployment` creates a fresh PostgreSQL metadata database, writes an
``AIRFLOW_HOME`` with a dags folder holding ``dags/alerting_deploy_dags.py``, runs
``airflow db migrate`` and starts the API server, the scheduler, the DAG processor and two
Celery workers (Redis broker, PostgreSQL result backend), each as the leader of its own
session.  On exit it stops every process it started -- task runners included, although
Airflow's supervisor moves each into its own process group -- verifies that none is left,
drops the metadata database, the alerting tables and its broker queue, and prints the
components' log tails if starting failed.

Used by ``tests/deployment/test_celery_deployment.py`` and ``bench/scenarios/api_server.py``.
Nothing but 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from airflow_alerting.state.sql import SqlStore

HERE = Path(__file__).resolve().parent
DAG_FILE = HERE / "dags" / "alerting_deploy_dags.py"
#: the benchmark's DAG (``bench/scenarios/api_server.py``), copied only with ``bench_dags=True``
BENCH_DAG_FILE = HERE / "dags" / "alerting_bench_dags.py"

PG_HOST = os.environ.get("ALERTING_DEPLOY_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ALERTING_DEPLOY_PG_PORT", "5432"))
PG_USER = os.environ.get("ALERTING_DEPLOY_PG_USER", "postgres")
#: the database holding the SQL state store's tables (the metadata database is a fresh one)
PG_STATE_DB = os.environ.get("ALERTING_DEPLOY_PG_STATE_DB", "test")
REDIS_HOST = os.environ.get("ALERTING_DEPLOY_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ALERTING_DEPLOY_REDIS_PORT", "6379"))
#: the broker's Redis database number; the queue name is unique per deployment anyway
REDIS_DB = int(os.environ.get("ALERTING_DEPLOY_REDIS_DB", "11"))

#: the DAGs of :data:`DAG_FILE`
SQL_DAG = "alerting_deploy_sql"
VARIABLES_DAG = "alerting_deploy_variables"
#: ``create_maintenance_dag`` on the manager (and SQL store) of :data:`SQL_DAG`
MAINTENANCE_DAG = "alerting_deploy_maintenance"
DAG_IDS = (SQL_DAG, VARIABLES_DAG, MAINTENANCE_DAG)
#: the DAG of :data:`BENCH_DAG_FILE`
BENCH_DECISION_DAG = "alerting_bench_decision"
#: the exception every mapped instance raises (see the DAG file)
ROOT_CAUSE = "database db-main.internal:5432 refused connection"

_T = TypeVar("_T")


class DeploymentError(RuntimeError):
    """The deployment could not start, a component died, or a wait timed out."""


def services_unavailable() -> str | None:
    """Why this machine cannot run a deployment (PostgreSQL/Redis down, Celery missing), or ``None``."""
    for name, host, port in (("PostgreSQL", PG_HOST, PG_PORT), ("Redis", REDIS_HOST, REDIS_PORT)):
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError as err:
            return f"{name} is not reachable on {host}:{port}: {err}"
    # find_spec, not import: importing Airflow here would read the caller's Airflow configuration
    missing = [
        name
        for name in ("airflow.providers.celery", "celery", "redis", "psycopg2", "asyncpg")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return f"not installed: {', '.join(missing)} (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(
    what: str,
    check: Callable[[], _T | None],
    *,
    timeout: float,
    interval: float = 0.25,
    alive: Callable[[], None] | None = None,
) -> _T:
    """Call ``check`` until it returns something other than ``None``; raise after ``timeout`` seconds.

    Connection errors count as "not yet".

    :param alive: called before every attempt; raises when the deployment broke, to fail fast
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            result = check()
        except (httpx.HTTPError, OSError) as err:
            last_error, result = err, None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise DeploymentError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Component:
    """One long-running Airflow process, the leader of its own session."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]

    @property
    def session(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return "\n".join(text.splitlines()[-lines:])


def processes_in_sessions(sessions: set[int]) -> dict[int, tuple[int, str]]:
    """``pid -> (process group, command)`` of the live processes whose session is in ``sessions``.

    Airflow's task supervisor moves each task runner into a process group of its own, so the
    group of the process we started does not cover them; its session does.
    """
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may itself contain spaces and parentheses
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if session in sessions and state != "Z":
            found[int(entry.name)] = (pgrp, comm)
    return found


def _signal_sessions(sessions: set[int], sig: signal.Signals) -> None:
    for pgrp in {pgrp for pgrp, _ in processes_in_sessions(sessions).values()}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgrp, sig)


def _wait_until_gone(components: list[Component], sessions: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for component in components:
            component.process.poll()  # reap our own children, or they linger as zombies
        if not processes_in_sessions(sessions):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_components(components: list[Component], *, grace: float = 20.0) -> list[str]:
    """Stop ``components`` and everything in their sessions; return what is still alive afterwards.

    Each leader gets SIGTERM first, so it can shut its own children down (a Celery worker's warm
    shutdown); after ``grace`` seconds whatever is left in the sessions gets SIGTERM, then SIGKILL.

    :return: descriptions of surviving processes (empty when everything is gone)
    """
    sessions = {c.session for c in components}
    for component in reversed(components):  # workers first, the API server last
        if component.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                component.process.send_signal(signal.SIGTERM)
    if not _wait_until_gone(components, sessions, grace):
        _signal_sessions(sessions, signal.SIGTERM)
        if not _wait_until_gone(components, sessions, 5.0):
            _signal_sessions(sessions, signal.SIGKILL)
            _wait_until_gone(components, sessions, 10.0)
    for component in components:
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(timeout=5)
        component.log_file.close()
    return [f"pid {pid} ({comm})" for pid, (_, comm) in sorted(processes_in_sessions(sessions).items())]


# --- the deployment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StormResult:
    """One triggered run of a storm DAG, after its run finished and all its callbacks returned."""

    dag_id: str
    run_id: str
    state: str
    #: one record per mapped instance, written by the DAG's marker callback after the notifier
    markers: list[dict[str, Any]]
    #: seconds from trigger to the last callback marker
    seconds: float
    #: seconds between the first and the last instance raising the exception
    failure_spread: float

    @property
    def fingerprints(self) -> set[str | None]:
        return {m["fingerprint"] for m in self.markers}

    @property
    def incidents(self) -> set[str | None]:
        """The incident ids the callbacks joined (one for a storm of one root cause)."""
        return {m.get("incident") for m in self.markers}

    @property
    def workers(self) -> set[str]:
        return {str(m["worker"]) for m in self.markers}

    @property
    def callback_spread(self) -> float:
        """Seconds between the first instance raising and the last alert callback returning."""
        return float(max(m["finished_at"] for m in self.markers)) - self.first_raised_at

    #: Unix time the first instance raised its exception
    first_raised_at: float = 0.0

    def decisions(self, channel: str = "slack") -> list[dict[str, Any]]:
        return [c for m in self.markers for c in m["channels"] if c["channel"] == channel]


@dataclass
class Deployment:
    """A running deployment; see :func:`airflow_deployment`."""

    root: Path
    home: Path
    sync_dir: Path
    api_url: str
    env: dict[str, str]
    metadata_db: str
    table_prefix: str
    queue: str
    broker_url: str
    worker_names: tuple[str, ...]
    width: int
    concurrency: int
    update_interval: float
    #: the DAGs waited for and unpaused at start-up
    dag_ids: tuple[str, ...] = DAG_IDS
    components: list[Component] = field(default_factory=list)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0, trust_env=False))
    _runs: int = 0
    #: the run id of the latest :meth:`run_maintenance`
    last_maintenance_run: str | None = None

    # --- health ---------------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise :class:`DeploymentError` if a component has exited."""
        dead = [c for c in self.components if c.process.poll() is not None]
        if dead:
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
            raise DeploymentError(f"component(s) exited: {names}; logs in {self.root / 'logs'}")

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` of every component's log, for failure reports."""
        parts = [f"----- {c.name}: {c.log_path} -----\n{c.tail(lines)}" for c in self.components]
        return "\n".join(parts)

    def _healthy(self) -> bool | None:
        response = self.client.get(f"{self.api_url}/api/v2/monitor/health")
        if response.status_code != 200:  # still starting
            return None
        health = response.json()
        wanted = ("metadatabase", "scheduler", "dag_processor")
        return True if all((health.get(k) or {}).get("status") == "healthy" for k in wanted) else None

    def _workers_ready(self) -> bool | None:
        from celery import Celery

        app = Celery("alerting-deploy-probe", broker=self.broker_url)
        try:
            replies = app.control.ping(destination=list(self.worker_names), timeout=1.0)
        finally:
            app.close()
        answered = {name for reply in replies for name in reply}
        return True if answered >= set(self.worker_names) else None

    def _dags_parsed(self, dag_ids: tuple[str, ...]) -> bool | None:
        errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
        if errors:
            raise DeploymentError(f"the DAG processor reported import errors: {errors}")
        for dag_id in dag_ids:
            if self.client.get(f"{self.api_url}/api/v2/dags/{dag_id}").status_code != 200:
                return None
        return True

    def wait_until_ready(self, timeout: float = 240.0) -> None:
        """Wait for the API server, scheduler, DAG processor, workers and the parsed DAGs."""
        checks: list[tuple[str, Callable[[], bool | None]]] = [
            ("the API server, scheduler and DAG processor to be healthy", self._healthy),
            ("the Celery workers to answer a ping", self._workers_ready),
            ("the DAGs to be parsed", lambda: self._dags_parsed(self.dag_ids)),
        ]
        for what, check in checks:
            poll(what, check, timeout=timeout, interval=0.5, alive=self.check_alive)
        for dag_id in self.dag_ids:
            self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    # --- REST API ---------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (the simple auth manager admits everyone as admin) and return its JSON."""
        response = self.client.request(method, f"{self.api_url}{path}", **kwargs)
        if response.status_code >= 400:
            raise DeploymentError(f"{method} {path} -> {response.status_code}: {response.text[:1000]}")
        return response.json() if response.content else None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, prefix: str = "storm") -> str:
        """Start a run of ``dag_id`` through the REST API; return its run id."""
        self._runs += 1
        run_id = f"{prefix}_{self._runs}_{secrets.token_hex(4)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        return run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 360.0) -> str:
        """Wait until the run has finished; return its state (``failed`` for a storm)."""

        def finished() -> str | None:
            state = str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            return state if state in ("success", "failed") else None

        what = f"run {run_id} of {dag_id} to finish"
        return poll(what, finished, timeout=timeout, interval=1.0, alive=self.check_alive)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom ``key`` a task of a run pushed (its return value by default)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        value = self.api("GET", path)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def run_maintenance(self, timeout: float = 180.0) -> tuple[str, Any]:
        """Trigger :data:`MAINTENANCE_DAG`, wait for it; return its state and the sweep's counts (XCom).

        The run's id is kept in :attr:`last_maintenance_run` (for :meth:`task_states`, :meth:`xcom`).
        """
        run_id = self.trigger(MAINTENANCE_DAG, prefix="maintenance")
        self.last_maintenance_run = run_id
        state = self.wait_for_run(MAINTENANCE_DAG, run_id, timeout)
        counts = self.xcom(MAINTENANCE_DAG, run_id, "redeliver_outbox") if state == "success" else None
        return state, counts

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``task_id -> state`` of a run's task instances (unmapped tasks)."""
        found = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in found["task_instances"]}

    def wait_for_callbacks(self, run_id: str, timeout: float = 180.0) -> list[dict[str, Any]]:
        """Wait for the marker every mapped instance writes after its alert callback; return them."""
        done = self.sync_dir / run_id / "done"

        def markers() -> list[dict[str, Any]] | None:
            files = sorted(done.glob("*.json")) if done.is_dir() else []
            if len(files) < self.width:
                return None
            return [json.loads(path.read_text()) for path in files]

        what = f"{self.width} alert callbacks of run {run_id}"
        return poll(what, markers, timeout=timeout, interval=0.2, alive=self.check_alive)

    def run_storm(
        self, dag_id: str, *, not_before: float | None = None, timeout: float = 360.0
    ) -> StormResult:
        """Trigger ``dag_id``, wait for the run and for every instance's alert callback.

        :param not_before: Unix time before which no instance may fail (they start and wait)
        """
        started = time.monotonic()
        run_id = self.trigger(dag_id, {"not_before": not_before} if not_before else None)
        state = self.wait_for_run(dag_id, run_id, timeout)
        markers = self.wait_for_callbacks(run_id)
        raised = [float(p.read_text()) for p in (self.sync_dir / run_id / "raised").iterdir()]
        return StormResult(
            dag_id,
            run_id,
            state,
            markers,
            time.monotonic() - started,
            max(raised) - min(raised),
            first_raised_at=min(raised),
        )

    # --- state ------------------------------------------------------------------------------------

    @property
    def state_url(self) -> str:
        """SQLAlchemy URL of the database holding the SQL state store's tables."""
        return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_STATE_DB}"

    def sql_store(self) -> SqlStore:
        """The SQL state store the DAGs use (same database and table prefix), for reading history."""
        from airflow_alerting.state.sql import SqlStore

        return SqlStore(url=self.state_url, table_prefix=self.table_prefix)

    def sql_outbox(self) -> list[dict[str, Any]]:
        """The SQL store's outbox, oldest first.

        Each item: ``id``, ``next_attempt_at``, ``reason`` (``summary`` for a deferred edit or
        follow-up), ``action`` (``update`` for an edit), ``fingerprint`` and ``incident`` (its id).
        """
        with _pg(PG_STATE_DB) as cursor:
            table = f'"{self.table_prefix}outbox"'
            cursor.execute(f"SELECT id, next_attempt_at, notification FROM {table} ORDER BY created_at")
            rows = cursor.fetchall()
        items = []
        for item_id, next_attempt_at, notification in rows:
            document = json.loads(notification)
            items.append(
                {
                    "id": item_id,
                    "next_attempt_at": next_attempt_at,
                    "reason": document["decision"]["reason"],
                    "action": document.get("action"),
                    "fingerprint": document["fingerprint"],
                    "incident": (document.get("incident") or {}).get("id"),
                }
            )
        return items

    def variable(self, key: str) -> Any:
        """The JSON value of Variable ``key`` (through the REST API), or ``None`` if there is none."""
        response = self.client.get(f"{self.api_url}/api/v2/variables/{key}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise DeploymentError(f"GET variable {key} -> {response.status_code}: {response.text[:500]}")
        return json.loads(response.json()["value"])

    def clear_alerting_variables(self) -> int:
        """Delete the Variables store's state (``alerting.*`` Variables); return how many were deleted."""
        with _pg(self.metadata_db) as cursor:
            cursor.execute("DELETE FROM variable WHERE key LIKE %s", ("alerting.%",))
            return int(cursor.rowcount)


@contextlib.contextmanager
def _pg(database: str) -> Iterator[Any]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def _component_env(overrides: Mapping[str, str]) -> dict[str, str]:
    # nothing of the caller's Airflow setup (the test session's AIRFLOW_HOME, connections) leaks in
    env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
    env.update(overrides)
    return env


def _start(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path) -> Component:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Component(name, argv, log_path, process, log_file)


@contextlib.contextmanager
def airflow_deployment(
    *,
    root: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    workers: int = 2,
    concurrency: int = 12,
    width: int = 24,
    update_interval: float = 30.0,
    ready_timeout: float = 240.0,
    bench_dags: bool = False,
) -> Iterator[Deployment]:
    """Start a CeleryExecutor deployment on 127.0.0.1; stop and clean up everything on exit.

    :param root: directory for ``AIRFLOW_HOME``, logs and barrier files (default: a new temp dir,
        kept afterwards so the logs can be read)
    :param extra_env: more environment for every component, e.g. ``AIRFLOW_CONN_SLACK_API_DEFAULT``
    :param workers: Celery workers (each ``-H w<n>-<token>@alerting-deploy``)
    :param concurrency: task slots per worker
    :param width: mapped instances per storm run
    :param update_interval: ``incidents.update_interval`` of ``alerting_deploy_sql``'s policy, seconds:
        at most one in-place edit per incident in it; the deferred edit of a storm's held-back
        failures is due that long after the first of them, so longer than a storm's callbacks
        usually take (~3 s, ~11 s on a loaded machine) and short enough to wait for
    :param ready_timeout: how long to wait for the deployment to become healthy
    :param bench_dags: also deploy :data:`BENCH_DAG_FILE` (the benchmark's DAG)
    """
    token = secrets.token_hex(4)
    root = root or Path(tempfile.mkdtemp(prefix=f"alerting-deploy-{token}-"))
    home, dags, sync_dir, log_dir = root / "airflow-home", root / "dags", root / "sync", root / "logs"
    for directory in (home, dags, sync_dir, log_dir):
        directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    dag_ids: tuple[str, ...] = DAG_IDS
    if bench_dags:
        shutil.copy(BENCH_DAG_FILE, dags / BENCH_DAG_FILE.name)
        dag_ids = (*DAG_IDS, BENCH_DECISION_DAG)

    metadata_db = f"alerting_deploy_{token}"
    metadata_url = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{metadata_db}"
    broker_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    queue = f"alerting_deploy_{token}"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    state_conn = {
        "conn_type": "postgres",
        "host": PG_HOST,
        "port": PG_PORT,
        "login": PG_USER,
        "schema": PG_STATE_DB,
    }
    env = _component_env(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": str(max(32, 2 * width)),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, width)),
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # failure callbacks run after the final state is reported; on a loaded machine 24 of
            # them take longer than the default 20 s, and the supervisor would SIGKILL them
            "AIRFLOW__CORE__TASK_SUCCESS_OVERTIME": "180",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{metadata_db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": str(max(16, 2 * width)),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_ALERTING_STATE": json.dumps(state_conn),
            "ALERTING_DEPLOY_SYNC_DIR": str(sync_dir),
            "ALERTING_DEPLOY_TABLE_PREFIX": f"adeploy_{token}_",
            "ALERTING_DEPLOY_WIDTH": str(width),
            "ALERTING_DEPLOY_UPDATE_INTERVAL": str(update_interval),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    worker_names = tuple(f"w{n}-{token}@alerting-deploy" for n in range(1, workers + 1))
    deployment = Deployment(
        root=root,
        home=home,
        sync_dir=sync_dir,
        api_url=api_url,
        env=env,
        metadata_db=metadata_db,
        table_prefix=env["ALERTING_DEPLOY_TABLE_PREFIX"],
        queue=queue,
        broker_url=broker_url,
        worker_names=worker_names,
        width=width,
        concurrency=concurrency,
        update_interval=update_interval,
        dag_ids=dag_ids,
    )
    airflow = [sys.executable, "-m", "airflow"]
    failed = True
    leftovers: list[str] = []
    with _pg("postgres") as cursor:
        cursor.execute(f'CREATE DATABASE "{metadata_db}"')
    try:
        migrate_log = log_dir / "db-migrate.log"
        with migrate_log.open("wb") as out:
            migrated = subprocess.run(
                [*airflow, "db", "migrate"],
                env=env,
                cwd=home,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if migrated.returncode != 0:
            tail = "\n".join(migrate_log.read_text(errors="replace").splitlines()[-40:])
            raise DeploymentError(f"airflow db migrate failed ({migrated.returncode}):\n{tail}")
        start = [
            ("api-server", [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)], env),
            ("scheduler", [*airflow, "scheduler"], env),
            ("dag-processor", [*airflow, "dag-processor"], env),
        ]
        for n, name in enumerate(worker_names, start=1):
            argv = [
                *airflow,
                "celery",
                "worker",
                f"--celery-hostname={name}",
                f"--concurrency={concurrency}",
                f"--queues={queue}",
                "--skip-serve-logs",  # each would bind the same log-server port
                "--without-gossip",
                "--without-mingle",
            ]
            # the task runners inherit it, so markers tell which worker ran each instance
            start.append((f"worker-{n}", argv, {**env, "ALERTING_DEPLOY_WORKER": f"w{n}"}))
        for name, argv, component_env in start:
            deployment.components.append(_start(name, argv, component_env, log_dir, home))
        deployment.wait_until_ready(ready_timeout)
        failed = False
        yield deployment
    except BaseException:
        failed = True
        raise
    finally:
        deployment.client.close()
        leftovers = stop_components(deployment.components)
        if failed:
            print(f"\nAirflow deployment logs in {log_dir}:\n{deployment.log_tails()}", file=sys.stderr)
        _cleanup(deployment)
        if leftovers:
            message = f"processes survived the deployment's shutdown: {leftovers}"
            if failed:  # do not mask the original error
                print(message, file=sys.stderr)
            else:
                raise DeploymentError(message)


def _cleanup(deployment: Deployment) -> None:
    """Drop what the deployment created outside its directory: database, tables, broker queue."""
    with contextlib.suppress(Exception):
        deployment.sql_store().drop_tables()
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
        # the queue itself and kombu's bindings for it (``_kombu.binding_permanent.<queue>`` ...)
        keys = list(client.scan_iter(match=f"*{deployment.queue}*"))
        if keys:
            client.delete(*keys)
        if not any(b"alerting_deploy_" in key for key in client.scan_iter(match="_kombu.*")):
            # kombu's delayed-delivery binding, shared by every queue of this database
            client.delete("_kombu.binding_deadlines")
        client.close()
    with _pg("postgres") as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{deployment.metadata_db}" WITH (FORCE)')


# --- measurements -------------------------------------------------------------------------------


def slack_messages_for(messages: list[dict[str, Any]], fingerprint: str) -> list[dict[str, Any]]:
    """The Slack messages (as recorded by ``SlackServer.messages``) that carry ``fingerprint``."""
    needle = f"Fingerprint: {fingerprint}"
    return [m for m in messages if needle in json.dumps(m)]


def top_level_posts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The top-level Slack posts among ``messages`` (``SlackServer.messages``): no edits, no replies."""
    return [m for m in messages if m.get("via") in ("api", "webhook") and not m.get("thread_ts")]


def _variables_reader(deployment: Deployment) -> Any:
    """A read-only ``VariableStore`` over the deployment's Variables (through its REST API)."""
    from airflow_alerting.state.variables import VariableStore

    class DeployedVariables(VariableStore):
        def _read(self, key: str) -> dict[str, Any] | None:
            value = deployment.variable(key)
            return value if isinstance(value, dict) else None

        def _write(self, key: str, document: dict[str, Any]) -> None:
            raise RuntimeError("the harness only reads the deployment's state")

        def _delete(self, key: str) -> None:
            raise RuntimeError("the harness only reads the deployment's state")

    return DeployedVariables(verify_delay=0)


def deferred_summaries(reader: Any) -> list[dict[str, Any]]:
    """The deferred edits and follow-ups (``summary`` decisions) in the Variables outbox.

    One Variable per item, found through the ``alerting.outbox.index.<n>`` shards; a 0.1.0
    ``alerting.outbox`` document (every item in one Variable) is read too, until
    ``prune_state()`` has moved its items.

    :param reader: a store over the deployment's Variables (:func:`_variables_reader`)
    """
    items = [*reader._outbox(), *_list_of_dicts((reader._read(reader.OUTBOX_KEY) or {}).get("items"))]
    return [i for i in items if (i.get("notification") or {}).get("decision", {}).get("reason") == "summary"]


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class DuplicateRate:
    """Top-level Slack posts per storm with the Variables store, where exactly one would be right.

    Every storm is one root cause, so one incident and one announcement (``chat.postMessage``);
    later failures fold into it as in-place edits (``chat.update``), which are not duplicates.
    """

    #: top-level Slack posts (announcements) per storm
    messages_per_run: list[int]
    reasons_per_run: list[dict[str, int]]
    #: runs whose (incident, slack) claim was still pending after every callback had returned (a
    #: loser's token, written back by a stale read-modify-write): nobody will confirm or release it
    orphaned_claims: list[bool]
    #: ``chat.update`` calls per storm (inline and deferred edits of the announcement)
    edits_per_run: list[int]
    #: distinct incidents the callbacks joined per storm (1 is right)
    incidents_per_run: list[int]
    #: failures the store's incidents of the storm counted (width is right; lost writes count fewer)
    failures_recorded: list[int]
    #: deferred edits left in the outbox Variable after the storm
    deferred_queued: list[int]
    storm_seconds: list[float]
    failure_spreads: list[float]
    width: int
    workers: int
    concurrency: int

    @property
    def runs(self) -> int:
        return len(self.messages_per_run)

    @property
    def extra_messages(self) -> int:
        return sum(max(0, n - 1) for n in self.messages_per_run)

    @property
    def lost_runs(self) -> int:
        """Storms that produced no top-level Slack message at all (a lost alert)."""
        return sum(1 for n in self.messages_per_run if n == 0)

    @property
    def rate(self) -> float:
        """Extra (duplicate) top-level messages per storm."""
        return self.extra_messages / self.runs if self.runs else 0.0

    def report(self) -> str:
        from importlib.metadata import version

        lines = [
            "Variables state store: duplicate Slack announcements for one root cause (one incident)",
            f"measured {time.strftime('%Y-%m-%d %H:%M:%S %Z')} with Airflow {version('apache-airflow-core')},"
            f" CeleryExecutor ({self.workers} workers x {self.concurrency} slots, Redis broker,"
            f" PostgreSQL metadata DB), {os.cpu_count()} CPUs",
            f"storm: {self.width} mapped tasks failing together with the same ConnectionError,"
            " retries=0, medium severity (Slack Web API only), default policy (incidents by cause,"
            " edits at most every 30 s, escalation after 3 runs in 1 h), alerting Variables cleared"
            " before each run",
            f"runs: {self.runs}",
            f"top-level slack posts per run (1 is right): {self.messages_per_run}",
            f"chat.update edits per run: {self.edits_per_run}",
            f"decisions per run (slack channel): {self.reasons_per_run}",
            f"incidents joined per run (1 is right): {self.incidents_per_run}",
            f"failures counted by the run's incidents ({self.width} is right): {self.failures_recorded}",
            f"claim left pending on the incident after the storm (orphaned) per run: {self.orphaned_claims}",
            f"deferred edits left in the outbox Variables per run: {self.deferred_queued}",
            f"failure spread per run (s): {[round(s, 2) for s in self.failure_spreads]}",
            f"storm duration per run (s): {[round(s, 1) for s in self.storm_seconds]}",
            f"duplicate rate: {self.rate:.2f} extra top-level messages per storm"
            f" ({self.extra_messages} extra / {self.runs} runs; exact would be 0)",
            f"lost alerts: {self.lost_runs} of {self.runs} storms posted no message at all",
        ]
        return "\n".join(lines) + "\n"


def measure_variables_duplicates(
    deployment: Deployment, slack: Any, runs: int, *, budget_seconds: float | None = None
) -> DuplicateRate:
    """Run the Variables storm ``runs`` times, clearing state between runs; count top-level Slack posts.

    :param slack: the ``SlackServer`` the deployment's ``slack_api_default`` connection points at
    :param runs: the most storms
    :param budget_seconds: start no storm after this many seconds (at least one always runs)
    """
    began = time.monotonic()
    reader = _variables_reader(deployment)
    counts: list[int] = []
    reasons: list[dict[str, int]] = []
    orphaned: list[bool] = []
    edits: list[int] = []
    incidents: list[int] = []
    failures: list[int] = []
    deferred: list[int] = []
    durations: list[float] = []
    spreads: list[float] = []
    for _ in range(runs):
        if counts and budget_seconds is not None and time.monotonic() - began >= budget_seconds:
            break
        deployment.clear_alerting_variables()
        slack.clear()
        result = deployment.run_storm(VARIABLES_DAG)
        messages = slack.messages
        counts.append(len(top_level_posts(messages)))
        edits.append(sum(1 for m in messages if m.get("via") == "update"))
        tally: dict[str, int] = {}
        for decision in result.decisions("slack"):
            key = f"sent/{decision['reason']}" if decision["send"] else decision["reason"]
            tally[key] = tally.get(key, 0) + 1
        reasons.append(dict(sorted(tally.items())))
        ids = sorted(str(i) for i in result.incidents if i)
        incidents.append(len(ids))
        pending, counted = False, 0
        for incident_id in ids:
            state = reader.channel_state(incident_id, "slack")
            pending = pending or (state is not None and state.claim_token is not None)
            incident = reader.incident(incident_id)
            counted += incident.failures if incident is not None else 0
        orphaned.append(pending)
        failures.append(counted)
        deferred.append(len(deferred_summaries(reader)))
        durations.append(result.seconds)
        spreads.append(result.failure_spread)
    deployment.clear_alerting_variables()
    return DuplicateRate(
        counts,
        reasons,
        orphaned,
        edits,
        incidents,
        failures,
        deferred,
        durations,
        spreads,
        deployment.width,
        len(deployment.worker_names),
        deployment.concurrency,
    )
