"""The ``airflow alerting`` commands, by module path, and their conversion to Airflow and argparse.

Both front ends -- Airflow's ``airflow alerting ...`` (through the provider info's ``cli`` key)
and the ``airflow-alerting`` console script -- are built from :data:`COMMAND_PATHS`, so they
offer the same commands with the same arguments and run the same code.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any, Final

from airflow_alerting.cli.output import run_guarded
from airflow_alerting.cli.spec import OUTPUT, Argument, Command, Group

__all__ = [
    "COMMAND_PATHS",
    "GROUP_HELP",
    "GROUP_NAME",
    "OPTIONAL_COMMANDS",
    "add_to_parser",
    "load_commands",
]

GROUP_NAME: Final = "alerting"
GROUP_HELP: Final = "Test channels, explain and simulate alerts, manage silences and incidents, analytics"

#: every command, in the order ``--help`` lists them: ``module:ATTRIBUTE``
COMMAND_PATHS: Final = (
    "airflow_alerting.cli.channel_check:TEST_CHANNEL",
    "airflow_alerting.cli.explain:EXPLAIN",
    "airflow_alerting.cli.simulate:SIMULATE",
    "airflow_alerting.cli.silence:SILENCE",
    "airflow_alerting.cli.incidents:INCIDENTS",
    "airflow_alerting.cli.analytics:HISTORY",
    "airflow_alerting.cli.analytics:STATS",
    "airflow_alerting.cli.state:STATE",
)

#: commands whose module may not exist yet (written separately); a missing one is left out
OPTIONAL_COMMANDS: Final = frozenset(
    {
        "airflow_alerting.cli.explain:EXPLAIN",
        "airflow_alerting.cli.simulate:SIMULATE",
        "airflow_alerting.cli.analytics:HISTORY",
        "airflow_alerting.cli.analytics:STATS",
    }
)

#: keyword arguments Airflow's ``Arg`` accepts besides ``flags`` and ``help``
AIRFLOW_ARG_KWARGS: Final = frozenset(
    {"action", "default", "nargs", "type", "choices", "required", "metavar", "dest"}
)


def _load(path: str) -> Command | Group | None:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # only the command's own module may be missing; a missing dependency inside it is a bug
        if path in OPTIONAL_COMMANDS and err.name in (module_name, _dependency_of(path)):
            return None
        raise
    declared = getattr(module, attribute)
    if not isinstance(declared, Command | Group):
        raise TypeError(f"{path} is a {type(declared).__name__}, not a Command or Group")
    return declared


def _dependency_of(path: str) -> str | None:
    # history and stats read the analytics API, which ships separately
    return "airflow_alerting.analytics" if path.startswith("airflow_alerting.cli.analytics:") else None


def load_commands(paths: Sequence[str] = COMMAND_PATHS) -> list[Command | Group]:
    """Import every command declaration; optional ones whose module is missing are skipped.

    :param paths: ``module:ATTRIBUTE`` paths
    :return: the declarations, in order
    :raises ValueError: when two declarations share a name
    """
    commands: list[Command | Group] = []
    for path in paths:
        declared = _load(path)
        if declared is not None:
            commands.append(declared)
    names = [c.name for c in commands]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate alerting command name(s): {', '.join(duplicates)}")
    return commands


def arguments_of(command: Command) -> tuple[Argument, ...]:
    """The command's arguments plus the shared ``--output``, unless it declares it itself.

    :param command: the declaration
    """
    if any(OUTPUT.flags == argument.flags or "--output" in argument.flags for argument in command.arguments):
        return command.arguments
    return (*command.arguments, OUTPUT)


class _Runner:
    """The callable both front ends store as the command's function; it returns the exit code."""

    def __init__(self, command: Command) -> None:
        self.command = command

    def __repr__(self) -> str:
        return f"alerting {self.command.name}"

    def __call__(self, args: argparse.Namespace) -> int:
        return run_guarded(self.command.run, args)


def add_to_parser(subparsers: Any, declared: Command | Group) -> None:
    """Add one declaration to an argparse ``subparsers`` object (the console script's parser).

    :param subparsers: what ``add_subparsers`` returned
    :param declared: a command or a group
    """
    if isinstance(declared, Group):
        group = subparsers.add_parser(declared.name, help=declared.help, description=declared.help)
        inner = group.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
        for command in declared.commands:
            add_to_parser(inner, command)
        return
    parser = subparsers.add_parser(
        declared.name,
        help=declared.help,
        description=declared.description or declared.help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for argument in arguments_of(declared):
        parser.add_argument(*argument.flags, help=argument.help, **dict(argument.kwargs))
    parser.set_defaults(func=_Runner(declared))


def runner(command: Command) -> _Runner:
    """The function a front end calls with the parsed arguments; it returns the exit code.

    :param command: the declaration
    """
    return _Runner(command)
