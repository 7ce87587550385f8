"""The main job: run ``custom_alerting_dag`` in an embedded Airflow and show what was routed where.

By default, Slack, PagerDuty and email go to local servers on 127.0.0.1 that speak their
protocols (nothing leaves the machine).  With ``--real``, the connections you configured
(``slack_api_default`` or ``slack_default``, ``smtp_default``, ``pagerduty_events_default``,
e.g. as ``AIRFLOW_CONN_*`` variables) are used instead, and real notifications are sent.

Three runs: the first fails in every way the example DAG knows; the second is triggered with
``{"recover": true}`` so two tasks recover (their alerts are resolved) while the repeated
failures fall inside their throttle windows and are counted instead of sent; in the third,
the failures that recurred three times within the hour are escalated one severity level.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def configure_airflow(home: Path, *, state_backend: str) -> dict[str, str]:
    """Environment for an embedded Airflow; must be in place before ``airflow`` is imported."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        "AIRFLOW__ALERTING__STATE_BACKEND": state_backend,
        "AIRFLOW__ALERTING__EMAIL_TO": os.environ.get(
            "AIRFLOW__ALERTING__EMAIL_TO", "data-oncall@example.test"
        ),
        "AIRFLOW__ALERTING__SLACK_CHANNEL": os.environ.get(
            "AIRFLOW__ALERTING__SLACK_CHANNEL", "#data-alerts"
        ),
    }
    os.environ.update(env)
    return env


@contextmanager
def local_servers() -> Iterator[dict[str, Any]]:
    """Start the local Slack, PagerDuty and SMTP servers and point Airflow's connections at them."""
    from airflow_alerting.testing.servers import (
        PagerDutyServer,
        SlackServer,
        SmtpServer,
        connection_env,
        pagerduty_connection,
        slack_api_connection,
        smtp_connection,
    )

    with ExitStack() as stack:
        slack = stack.enter_context(SlackServer())
        pagerduty = stack.enter_context(PagerDutyServer())
        smtp = stack.enter_context(SmtpServer())
        for conn_id, conn in (
            ("slack_api_default", slack_api_connection(slack)),
            ("pagerduty_events_default", pagerduty_connection(pagerduty)),
            ("smtp_default", smtp_connection(smtp)),
        ):
            name, value = connection_env(conn_id, conn)
            os.environ[name] = value
        yield {"slack": slack, "pagerduty": pagerduty, "smtp": smtp}


def migrate(home: Path) -> None:
    if (home / "airflow.db").exists():
        return
    print("Creating the Airflow metadata database (SQLite, first run only) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def forget_alerting_state() -> None:
    """Start each demo from a clean slate: drop the Variables the previous demo left."""
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("alerting.%")).delete(synchronize_session=False)


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Airflow's task logs) to ``path`` at the fd level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dag(recover: bool, log_path: Path) -> str:
    from airflow.dag_processing.dagbag import DagBag

    with output_to(log_path):
        bag = DagBag(str(ROOT / "example_dags"))
        dag = bag.get_dag("custom_alerting_dag")
        if dag is None:
            raise SystemExit(f"example DAG failed to import: {bag.import_errors}")
        dag_run = dag.test(run_conf={"recover": recover})
    return str(dag_run.run_id)


def print_routing(run_id: str, title: str) -> None:
    from airflow_alerting.state.variables import VariableStore

    entries = [e for e in reversed(VariableStore(verify_delay=0).history(500)) if e.run_id == run_id]
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for entry in entries:
        grouped[(entry.source, entry.kind)].append(entry)
    print(f"\n=== {title} ===")
    print(f"{'what':<48} {'severity':<9} {'routed to / decision'}")
    for (source, kind), items in grouped.items():
        what = f"{source.removeprefix('custom_alerting_dag.') or source} [{kind}]"
        verdicts = [f"{e.channel}: {_verdict(e)}" if e.channel != "-" else _verdict(e) for e in items]
        decisions = ", ".join(
            v if verdicts.count(v) == 1 else f"{v} x{verdicts.count(v)}" for v in dict.fromkeys(verdicts)
        )
        print(f"{what:<48} {items[0].severity:<9} {decisions}")
        why = items[0].why
        if why:
            print(textwrap.indent(textwrap.fill(f"why: {why}", 100), " " * 4))


def _verdict(entry: Any) -> str:
    if entry.delivered is True:
        return "sent" if entry.reason == "first" else f"sent ({entry.reason.replace('_', ' ')})"
    if entry.delivered is False:
        return f"FAILED ({entry.detail})"
    return {
        "not_routed": "recorded only (severity routes nowhere)",
        "throttled": "suppressed: inside its throttle window",
        "duplicate_callback": "ignored: duplicate callback",
        "silenced": "recorded only (silent by policy)",
    }.get(entry.reason, entry.reason)


def print_received(servers: dict[str, Any]) -> None:
    print("\n=== What the local servers received ===")
    print("Slack:")
    for message in servers["slack"].messages:
        print(f"  {message.get('channel', '(webhook)')}: {message.get('text', '')[:110]}")
    print("Email:")
    for message in servers["smtp"].messages:
        print(f"  to {message['To']}: {message['Subject']}")
    print("PagerDuty:")
    for event in servers["pagerduty"].events:
        payload = event.get("payload") or {}
        summary = payload.get("summary", "")
        action, severity = event["event_action"], payload.get("severity", "")
        print(f"  {action:<8} {severity:<8} {event['dedup_key']}  {summary[:70]}")
    states = ", ".join(f"{key}: {state}" for key, state in servers["pagerduty"].incidents.items())
    print(f"  incidents now: {states or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real", action="store_true", help="use your configured connections, send for real")
    parser.add_argument("--fresh", action="store_true", help="recreate the embedded Airflow home")
    args = parser.parse_args()

    home = WORK / "airflow-home"
    if args.fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    configure_airflow(home, state_backend="variables")
    migrate(home)

    with ExitStack() as stack:
        servers = None if args.real else stack.enter_context(local_servers())
        forget_alerting_state()
        log_path = WORK / "airflow-task-logs.txt"
        log_path.unlink(missing_ok=True)
        print(f"Running custom_alerting_dag (run 1: everything fails; task logs: {log_path}) ...", flush=True)
        first = run_dag(recover=False, log_path=log_path)
        print("Running custom_alerting_dag (run 2: recover=true) ...", flush=True)
        second = run_dag(recover=True, log_path=log_path)
        print("Running custom_alerting_dag (run 3: recover=true, the same failures again) ...", flush=True)
        third = run_dag(recover=True, log_path=log_path)
        print_routing(first, f"Run 1 {first}")
        print_routing(second, f"Run 2 {second} (recover=true)")
        print_routing(third, f"Run 3 {third} (recover=true: recurring failures escalate)")
        if servers is not None:
            print_received(servers)


if __name__ == "__main__":
    main()
