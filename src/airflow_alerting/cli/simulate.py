"""``airflow alerting simulate FILE``: replay failure events through a policy, or two side by side.

Also runnable on its own: ``python -m airflow_alerting.cli.simulate FILE [--policy P] ...``.
Exit codes: 0 done, 2 bad input (an events line, a policy, a missing file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.spec import OUTPUT, Argument, Command

if TYPE_CHECKING:
    from rich.console import Console

    from airflow_alerting.incidents.silences import Silence
    from airflow_alerting.policy import AlertPolicy
    from airflow_alerting.simulation.compare import Comparison
    from airflow_alerting.simulation.run import SimulationResult

__all__ = ["SIMULATE", "configured_policy", "load_policy", "load_silences", "main", "run_standalone"]

#: rows of the incidents and causes tables in human output by default (JSON has them all)
TOP = 10
#: exit code for bad input (argparse's own)
BAD_INPUT = 2


class InputError(Exception):
    """Bad input the user must fix; the message says what and where."""


def configured_policy() -> tuple[AlertPolicy, str]:
    """The deployment's policy: ``[alerting] policy_variable``, then ``policy_file``, then the defaults."""
    from airflow_alerting.config import load_settings
    from airflow_alerting.manager import configured_policy as from_settings

    settings = load_settings()
    policy, key = from_settings(settings)
    return policy, f"configured ({key.split(':', 1)[0] if key != 'default' else 'default policy'})"


def load_policy(path: str | None) -> tuple[AlertPolicy, str]:
    """The policy in the YAML/JSON file ``path``, or the configured one when ``None``.

    :raises InputError: the file is missing or the policy does not validate (naming the field)
    """
    from airflow_alerting.policy import AlertPolicy, PolicyError

    if path is None:
        return configured_policy()
    if not Path(path).is_file():
        raise InputError(f"--policy {path}: no such file")
    try:
        return AlertPolicy.from_yaml(Path(path)), Path(path).name
    except PolicyError as err:
        raise InputError(f"--policy {path}: {err}") from err


def load_silences(path: str) -> list[Silence]:
    """The silences in the JSON/YAML file ``path`` (a list, as in ``[alerting] silences_variable``).

    :raises InputError: the file is unreadable or a silence does not validate (naming it)
    """
    from airflow_alerting.incidents.silences import SilenceError, parse_silences

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"--silences {path}: cannot read: {err.strerror or err}") from err
    try:
        return parse_silences(text, source=f"--silences {Path(path).name}")
    except SilenceError as err:
        raise InputError(str(err)) from err


def parse_duration(text: str, option: str) -> timedelta:
    """``90s``, ``5m``, ``2h``, ``1d`` or plain seconds as a duration.

    :raises InputError: naming ``option``
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", text)
    if match is None:
        raise InputError(f"{option} {text!r}: expected a duration such as 90s, 5m, 2h or 1d")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]
    if seconds > 366 * 86400:
        raise InputError(f"{option} {text!r}: at most a year")
    return timedelta(seconds=seconds)


def console(*, stderr: bool = False) -> Console:
    """A rich console; at least 100 columns wide when not a terminal, so tables stay readable in files."""
    from rich.console import Console

    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else max(100, probe.width)
    return Console(stderr=stderr, width=width, highlight=False)


def fail(message: str, code: int = BAD_INPUT) -> int:
    """Print ``message`` on stderr and return ``code``.

    Plain text, one line, never wrapped or styled: scripts grep it, and it may quote input.
    """
    sys.stderr.write(f"error: {message}\n")
    return code


def _print_result(result: SimulationResult, out: Console, top: int = TOP) -> None:
    from rich.table import Table
    from rich.text import Text

    span = (
        f"{result.start:%Y-%m-%d %H:%M:%S} to {result.end:%H:%M:%S}" if result.start and result.end else "-"
    )
    out.print(
        Text(
            f"{result.events} events ({result.failures} final failures, {result.retries} retries, "
            f"{result.recoveries} recoveries), {span}, policy {result.policy}",
            style="bold",
        )
    )
    table = Table(title="Per channel: sent vs folded")
    for column in ("channel", "messages", "edits", "follow-ups", "folded", "silenced", "stock"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for c in result.channels:
        table.add_row(
            Text(c.name),
            str(c.messages),
            str(c.edits),
            str(c.follow_ups),
            str(c.folded),
            str(c.silenced),
            str(c.stock),
        )
    out.print(table)
    out.print("stock: one message per final failure routed there (Airflow's notifiers without this provider)")
    incidents = Table(title=f"Incidents ({len(result.incidents)})")
    for column in ("severity", "failures", "DAGs", "tasks", "state", "announced on", "title"):
        incidents.add_column(column, justify="right" if column in ("failures", "DAGs", "tasks") else "left")
    for i in result.incidents[:top]:
        incidents.add_row(
            i.severity,
            str(i.failures),
            str(i.dag_count),
            str(i.task_count),
            i.state,
            Text(", ".join(i.announced_on) or "-"),
            Text(i.title, overflow="fold"),
        )
    out.print(incidents)
    if len(result.incidents) > top:
        out.print(f"... and {len(result.incidents) - top} more (--output json lists them all)")
    causes = Table(title=f"Causes ({len(result.causes)})")
    for column in ("failures", "DAGs", "tasks", "incidents", "messages", "cause"):
        causes.add_column(column, justify="left" if column == "cause" else "right")
    for cause in result.causes[:top]:
        causes.add_row(
            str(cause.failures),
            str(cause.dags),
            str(cause.tasks),
            str(cause.incidents),
            str(cause.messages),
            Text(cause.cause, overflow="fold"),
        )
    out.print(causes)
    if len(result.causes) > top:
        out.print(f"... and {len(result.causes) - top} more (--output json lists them all)")
    if result.held:
        out.print("held back: " + ", ".join(f"{reason}={n}" for reason, n in result.held.items()))


def _print_comparison(comparison: Comparison, out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    a, b = comparison.left, comparison.right
    out.print(Text(f"{a.events} events; A = {a.policy}, B = {b.policy}", style="bold"))
    table = Table(title="Messages per channel: A vs B")
    table.add_column("channel")
    for column in ("messages A", "messages B", "change", "edits A", "edits B", "folded A", "folded B"):
        table.add_column(column, justify="right")

    def cell(value: int | None) -> str:
        return "-" if value is None else str(value)

    for row in comparison.channels:
        table.add_row(
            Text(row.name),
            cell(row.left_messages),
            cell(row.right_messages),
            f"{row.messages_change:+d}",
            cell(row.left_edits),
            cell(row.right_edits),
            cell(row.left_folded),
            cell(row.right_folded),
        )
    table.add_row(
        "all",
        str(a.messages),
        str(b.messages),
        f"{b.messages - a.messages:+d}",
        str(sum(c.edits for c in a.channels)),
        str(sum(c.edits for c in b.channels)),
        str(sum(c.folded for c in a.channels)),
        str(sum(c.folded for c in b.channels)),
        style="bold",
    )
    out.print(table)
    summary = Table(title="Incidents: A vs B")
    summary.add_column("")
    summary.add_column("A", justify="right")
    summary.add_column("B", justify="right")
    summary.add_row("incidents", str(len(a.incidents)), str(len(b.incidents)))
    for severity in ("critical", "high", "medium", "low"):
        summary.add_row(
            severity,
            str(sum(1 for i in a.incidents if i.severity == severity)),
            str(sum(1 for i in b.incidents if i.severity == severity)),
        )
    summary.add_row("largest (failures)", _largest(a), _largest(b))
    out.print(summary)


def _largest(result: SimulationResult) -> str:
    return str(result.incidents[0].failures) if result.incidents else "-"


def _run(args: argparse.Namespace) -> int:
    from airflow_alerting.simulation.compare import compare
    from airflow_alerting.simulation.events import EventError, read_events
    from airflow_alerting.simulation.run import simulate

    try:
        events = read_events(args.file)
        policy, label = load_policy(args.policy)
        right = load_policy(args.compare) if args.compare else None
    except EventError as err:
        return fail(f"{args.file}: {err}")
    except OSError as err:
        return fail(f"{args.file}: cannot read: {err.strerror or err}")
    except InputError as err:
        return fail(str(err))
    try:
        settle = parse_duration(args.settle, "--settle") if args.settle is not None else None
    except InputError as err:
        return fail(str(err))
    if args.top < 0:
        return fail(f"--top {args.top}: must not be negative")
    try:
        silences = load_silences(args.silences) if args.silences else []
    except InputError as err:
        return fail(str(err))
    slack_api = args.slack != "webhook"
    document: Any
    out = console()
    if right is None:
        result = simulate(events, policy, label=label, slack_api=slack_api, settle=settle, silences=silences)
        if args.output == "json":
            document = result.to_json()
        else:
            _print_result(result, out, args.top)
    else:
        labels = (label, right[1]) if label != right[1] else (f"{label} (1)", f"{right[1]} (2)")
        comparison = compare(
            events, policy, right[0], labels=labels, slack_api=slack_api, settle=settle, silences=silences
        )
        if args.output == "json":
            document = comparison.to_json()
        else:
            _print_comparison(comparison, out)
    if args.output == "json":
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0


SIMULATE = Command(
    name="simulate",
    help="replay failure events through a policy: what each channel would get, incidents, causes",
    description=(
        "Replays a JSON-lines file of failure events (or the alert history exported by the state "
        "store) on an in-memory store with a simulated clock; nothing is sent. Prints per channel "
        "the messages sent versus folded into incidents, the incidents and per-cause counts."
    ),
    arguments=(
        Argument(("file",), "JSON-lines events file (time, dag, task, try, max_tries, exception, message)"),
        Argument(("--policy",), "policy YAML/JSON file (default: the configured policy)", {"default": None}),
        Argument(
            ("--compare",),
            "a second policy file: show both side by side",
            {"default": None, "metavar": "POLICY2"},
        ),
        Argument(
            ("--slack",),
            "how Slack channels post: api (edits in place, default) or webhook (new messages only)",
            {"choices": ("api", "webhook"), "default": "api"},
        ),
        Argument(
            ("--settle",),
            "how long after the last event deferred edits and follow-ups are counted, e.g. 5m or 2h "
            "(default: long enough for everything the policy defers)",
            {"default": None},
        ),
        Argument(
            ("--silences",),
            "a JSON/YAML file of silences in force during the replay (the silences Variable's format)",
            {"default": None},
        ),
        Argument(
            ("--top",),
            f"rows of the incidents and causes tables (default {TOP}; --output json lists all)",
            {"type": int, "default": TOP},
        ),
        OUTPUT,
    ),
    run=_run,
)


def parser_for(command: Command, prog: str) -> argparse.ArgumentParser:
    """A standalone :mod:`argparse` parser for one command (``python -m`` entry points)."""
    parser = argparse.ArgumentParser(prog=prog, description=command.description or command.help)
    for argument in command.arguments:
        parser.add_argument(*argument.flags, help=argument.help, **dict(argument.kwargs))
    return parser


def run_standalone(command: Command, prog: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` for ``command`` and run it; return the exit code."""
    args = parser_for(command, prog).parse_args(argv)
    return command.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_alerting.cli.simulate``."""
    return run_standalone(SIMULATE, "python -m airflow_alerting.cli.simulate", argv)


if __name__ == "__main__":
    sys.exit(main())
