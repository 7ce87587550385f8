"""Many processes alerting one failure storm through ``VariableStore`` on a shared PostgreSQL metadata DB.

No scheduler and no executor: ``N`` worker processes (each its own interpreter, Airflow ORM and
store, as separate worker hosts would be) are started once; for every storm the parent clears the
alerting Variables and the local Slack server, and tells every process to handle its share of the
storm's failures (one mapped task instance each by default: same DAG, task, run and
``ConnectionError``) at the same wall-clock instant through the default policy's
``AlertManager``.  Exactly one Slack post per storm would be right.  The parent then reads the
state back straight from the ``variable`` table (stored in plain text: no Fernet key).

Used by ``bench/variables_duplicate_rate.py`` and ``tests/integration/state``.  Run as a script, this
file is one worker process (``--worker``), driven through its stdin and stdout, one JSON line each.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# no Airflow import happens here: a worker's environment is set before it starts
from airflow_alerting.state.variables import VariableStore

PG_HOST = os.environ.get("ALERTING_DEPLOY_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ALERTING_DEPLOY_PG_PORT", "5432"))
PG_USER = os.environ.get("ALERTING_DEPLOY_PG_USER", "postgres")
DAG_ID = "variables_storm"
TASK_ID = "call_database"
ROOT_CAUSE = "could not connect to server: Connection refused (127.0.0.1:5999)"
#: seconds the processes get between the parent's "go" and the storm's start (they must all be waiting)
LEAD = 1.0
#: seconds a storm, a start-up or a migration may take
TIMEOUT = 600.0


# --- the worker process -----------------------------------------------------------------------


def _worker() -> int:
    """Handle the failures the parent sends, one storm per line on stdin; report on stdout."""
    from airflow_alerting import AlertManager, AlertPolicy
    from airflow_alerting.model import Alert, AlertKind

    store = VariableStore()
    manager = AlertManager(AlertPolicy(), store=store)
    store._read("alerting.warm-up")  # connected: the race starts at the storm, not at the first query
    _answer({"ready": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("stop"):
            break
        time.sleep(max(0.0, float(command["start"]) - time.time()))
        handled = []
        for map_index in command["map_indexes"]:
            alert = Alert(
                dag_id=DAG_ID,
                kind=AlertKind.TASK_FAILURE,
                task_id=TASK_ID,
                run_id=str(command["run_id"]),
                map_index=int(map_index),
                exception_type="ConnectionError",
                exception_mro=("builtins.ConnectionError", "builtins.OSError", "builtins.Exception"),
                message=ROOT_CAUSE,
                hostname=f"worker-{os.getpid()}",
            )
            outcome = manager.handle(alert)
            handled.append(
                {
                    "map_index": map_index,
                    "incident": outcome.incident.id if outcome.incident is not None else None,
                    "channels": [
                        {
                            "channel": c.channel,
                            "send": c.decision.send,
                            "reason": c.decision.reason.value,
                            "delivered": c.delivery is not None and c.delivery.ok,
                        }
                        for c in outcome.channels
                    ],
                }
            )
        _answer({"handled": handled, "finished_at": time.time()})
    return 0


#: marks the worker's answers on stdout, where Airflow's start-up may print too
ANSWER = "@@variables-storm "


def _answer(payload: dict[str, Any]) -> None:
    print(ANSWER + json.dumps(payload), flush=True)


# --- the parent -------------------------------------------------------------------------------


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


def postgres_unavailable() -> str | None:
    """Why the storm cannot run here, or ``None``."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (the dev extra)"
    try:
        with _pg("postgres") as cursor:
            cursor.execute("SELECT 1")
    except Exception as err:
        return f"PostgreSQL on {PG_HOST}:{PG_PORT} unreachable: {type(err).__name__}"
    return None


@contextlib.contextmanager
def metadata_database(home: Path) -> Iterator[str]:
    """A fresh, migrated Airflow metadata database on PostgreSQL; dropped afterwards.

    :param home: the ``AIRFLOW_HOME`` to migrate from (its ``airflow.cfg`` is generated there)
    :return: its SQLAlchemy URL
    """
    name = f"alerting_varstorm_{uuid.uuid4().hex[:10]}"
    url = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    with _pg("postgres") as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        migrated = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=worker_env(home, url, {}),
            cwd=home,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        if migrated.returncode != 0:
            tail = "\n".join(migrated.stdout.decode(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"airflow db migrate failed ({migrated.returncode}):\n{tail}")
        yield url
    finally:
        with _pg("postgres") as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_env(home: Path, url: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a worker: nothing of the caller's Airflow setup leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Variables in plain text, so the parent reads them from the table
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


@dataclass(frozen=True)
class StormResult:
    """What one storm produced.

    :param posts: top-level Slack posts (announcements); 1 is right
    :param decisions: the Slack decisions of every failure, by reason (``sent/<reason>`` for sends)
    :param incidents: distinct incidents the failures joined, as the manager returned them
    :param stored_incidents: incidents listed in the store after the storm
    :param failures_counted: failures the store's incidents counted (``width`` is right)
    :param held_back: failures the Slack channel did not announce (suppressed, or an edit of the
        announcement)
    :param held_back_counted: held-back failures the store counted for the next notification
    :param orphaned: the Slack claim of an incident was still pending after every process returned
    :param seconds: from the storm's start to the last process's report
    """

    width: int
    posts: int
    decisions: dict[str, int]
    incidents: int
    stored_incidents: int
    failures_counted: int
    held_back: int
    held_back_counted: int
    orphaned: bool
    seconds: float

    @property
    def duplicates(self) -> int:
        return max(0, self.posts - 1)

    @property
    def lost_occurrences(self) -> int:
        """Failures no incident counted."""
        return max(0, self.width - self.failures_counted)


@dataclass
class StormWorkers:
    """``processes`` worker processes on one metadata database, and the Slack server they post to."""

    url: str
    home: Path
    slack: Any
    processes: int
    children: list[subprocess.Popen[str]] = field(default_factory=list)
    storms: int = 0
    #: where the workers' stderr goes (their warnings: contended or shadowed state)
    log: IO[bytes] | None = None

    def start(self) -> None:
        from airflow_alerting.testing.servers import connection_env, slack_api_connection

        self.log = (self.home / "workers.log").open("ab")
        env = worker_env(
            self.home, self.url, dict([connection_env("slack_api_default", slack_api_connection(self.slack))])
        )
        for _ in range(self.processes):
            self.children.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker"],
                    env=env,
                    cwd=self.home,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self.log,
                    text=True,
                )
            )
        for child in self.children:
            _reply(child, "ready")

    def stop(self) -> None:
        for child in self.children:
            with contextlib.suppress(OSError, ValueError):
                assert child.stdin is not None
                child.stdin.write(json.dumps({"stop": True}) + "\n")
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=30)
        if self.log is not None:
            self.log.close()

    def clear(self) -> None:
        database = self.url.rsplit("/", 1)[1]
        with _pg(database) as cursor:
            cursor.execute("DELETE FROM variable WHERE key LIKE %s", ("alerting.%",))
        self.slack.clear()

    def variables(self) -> dict[str, Any]:
        database = self.url.rsplit("/", 1)[1]
        with _pg(database) as cursor:
            cursor.execute("SELECT key, val FROM variable WHERE key LIKE %s", ("alerting.%",))
            rows = cursor.fetchall()
        found: dict[str, Any] = {}
        for key, value in rows:
            with contextlib.suppress(TypeError, ValueError):
                found[str(key)] = json.loads(value)
        return found

    def storm(self, alerts_per_process: int = 1) -> StormResult:
        """Clear the state, run one storm, read what it left."""
        self.clear()
        self.storms += 1
        start = time.time() + LEAD
        run_id = f"storm-{self.storms}-{uuid.uuid4().hex[:6]}"
        for n, child in enumerate(self.children):
            indexes = [n * alerts_per_process + k for k in range(alerts_per_process)]
            assert child.stdin is not None
            child.stdin.write(json.dumps({"start": start, "run_id": run_id, "map_indexes": indexes}) + "\n")
            child.stdin.flush()
        reports = [_reply(child, "handled") for child in self.children]
        handled = [h for r in reports for h in r["handled"]]
        seconds = max(float(r["finished_at"]) for r in reports) - start
        decisions: dict[str, int] = {}
        held_back = 0
        for h in handled:
            for c in h["channels"]:
                if c["channel"] != "slack":
                    continue
                key = f"sent/{c['reason']}" if c["send"] else str(c["reason"])
                decisions[key] = decisions.get(key, 0) + 1
                # an inline edit of the announcement reports the failure as held back, like a suppression
                held_back += 0 if c["send"] and c["reason"] == "first" else 1
        reader = TableReader(self.variables())
        ids = sorted({str(h["incident"]) for h in handled if h["incident"]})
        counted = held = 0
        pending = False
        for incident_id in ids:
            incident = reader.incident(incident_id)
            counted += incident.failures if incident is not None else 0
            state = reader.channel_state(incident_id, "slack")
            if state is not None:
                held += state.suppressed.count
                pending = pending or state.claim_token is not None
        posts = [
            m for m in self.slack.messages if m.get("via") in ("api", "webhook") and not m.get("thread_ts")
        ]
        return StormResult(
            width=len(handled),
            posts=len(posts),
            decisions=dict(sorted(decisions.items())),
            incidents=len(ids),
            stored_incidents=len(reader.incidents(limit=1000)),
            failures_counted=counted,
            held_back=held_back,
            held_back_counted=held,
            orphaned=pending,
            seconds=seconds,
        )


def _reply(child: subprocess.Popen[str], kind: str) -> dict[str, Any]:
    stdout: IO[str] | None = child.stdout
    assert stdout is not None
    line = stdout.readline()
    while line and not line.startswith(ANSWER):
        line = stdout.readline()
    if not line:
        raise RuntimeError(f"storm worker {child.pid} exited ({child.poll()}) before answering {kind!r}")
    reply: dict[str, Any] = json.loads(line[len(ANSWER) :])
    if kind not in reply:
        raise RuntimeError(f"storm worker {child.pid} answered {line.strip()!r}, expected {kind!r}")
    return reply


class TableReader(VariableStore):
    """A read-only ``VariableStore`` over a snapshot of the ``variable`` table (alerting keys)."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        super().__init__(verify_delay=0)
        self.snapshot = snapshot

    def _read(self, key: str) -> dict[str, Any] | None:
        value = self.snapshot.get(key)
        return value if isinstance(value, dict) else None

    def _write(self, key: str, document: dict[str, Any]) -> None:
        raise RuntimeError("the storm's reader only reads")

    def _delete(self, key: str) -> None:
        raise RuntimeError("the storm's reader only reads")


@contextlib.contextmanager
def storm_workers(processes: int) -> Iterator[StormWorkers]:
    """A migrated metadata database, a Slack server and ``processes`` ready workers; all gone afterwards."""
    from airflow_alerting.testing.servers import SlackServer

    with tempfile.TemporaryDirectory(prefix="alerting-varstorm-") as tmp:
        home = Path(tmp)
        with metadata_database(home) as url, SlackServer() as slack:
            workers = StormWorkers(url, home, slack, processes)
            try:
                workers.start()
                yield workers
            finally:
                workers.stop()


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--worker"]:
        return _worker()
    print("usage: variables_storm.py --worker (started by StormWorkers)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
