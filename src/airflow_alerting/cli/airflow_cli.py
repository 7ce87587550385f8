"""``airflow alerting ...``: the commands as Airflow ``GroupCommand``, for the provider info's ``cli`` key.

Airflow imports and calls :func:`get_cli_commands` on every ``airflow`` invocation to build its
parser (``airflow/cli/cli_parser.py``), so the declarations it imports keep their heavy imports
inside the functions that run a command.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.registry import (
    AIRFLOW_ARG_KWARGS,
    GROUP_HELP,
    GROUP_NAME,
    arguments_of,
    load_commands,
    runner,
)
from airflow_alerting.cli.spec import Argument, Command, Group

if TYPE_CHECKING:
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

__all__ = ["get_cli_commands"]


def _arg(argument: Argument) -> Arg:
    from airflow.cli.cli_config import Arg

    unsupported = sorted(set(argument.kwargs) - AIRFLOW_ARG_KWARGS)
    if unsupported:
        raise ValueError(
            f"argument {'/'.join(argument.flags)}: Airflow's Arg does not accept {', '.join(unsupported)}"
        )
    return Arg(argument.flags, help=argument.help, **dict(argument.kwargs))  # type: ignore[no-untyped-call]


class _Exit:
    """Airflow ignores what a command function returns, so the exit code is raised instead."""

    def __init__(self, command: Command) -> None:
        self._run = runner(command)
        self.__name__ = f"alerting_{command.name.replace('-', '_')}"

    def __call__(self, args: argparse.Namespace) -> None:
        code = self._run(args)
        if code:
            raise SystemExit(code)


def _action(command: Command) -> ActionCommand:
    from airflow.cli.cli_config import ActionCommand

    return ActionCommand(
        name=command.name,
        help=command.help,
        func=_Exit(command),
        args=tuple(_arg(a) for a in arguments_of(command)),
        description=command.description or command.help,
    )


def _convert(declared: Command | Group) -> Any:
    from airflow.cli.cli_config import GroupCommand

    if isinstance(declared, Group):
        return GroupCommand(
            name=declared.name,
            help=declared.help,
            subcommands=tuple(_action(c) for c in declared.commands),
            description=declared.help,
        )
    return _action(declared)


def get_cli_commands() -> list[GroupCommand]:
    """The ``alerting`` command group, as Airflow's CLI classes.

    :return: one ``GroupCommand`` named ``alerting`` holding every command and command group
    """
    from airflow.cli.cli_config import GroupCommand

    return [
        GroupCommand(
            name=GROUP_NAME,
            help=GROUP_HELP,
            subcommands=tuple(_convert(d) for d in load_commands()),
            description=GROUP_HELP + ". The same commands are available as the airflow-alerting script.",
        )
    ]
