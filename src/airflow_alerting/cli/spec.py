"""How an ``airflow alerting`` command is declared, independently of Airflow's CLI classes.

Each command module exposes one :class:`Command` (or a :class:`Group` of them). The provider's
``cli`` entry converts them to Airflow's ``ActionCommand``/``GroupCommand``; the
``airflow-alerting`` console script builds a plain :mod:`argparse` parser from the same
declarations, so both front ends run the same code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OUTPUT", "Argument", "Command", "Group"]


@dataclass(frozen=True)
class Argument:
    """One argparse argument.

    :param flags: as given to ``add_argument`` (``("--output",)`` or ``("name",)``)
    :param help: the help text
    :param kwargs: any other ``add_argument`` keyword (``choices``, ``default``, ``nargs``, ``type``...)
    """

    flags: tuple[str, ...]
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """A leaf command: ``run`` gets the parsed arguments and returns the process exit code.

    :param name: the sub-command word (``test-channel``)
    :param help: one line for the command list
    :param arguments: its arguments, in order
    :param run: the implementation; it prints its own output (human or ``--output json``)
    :param description: longer help, optional
    """

    name: str
    help: str
    arguments: tuple[Argument, ...]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


@dataclass(frozen=True)
class Group:
    """A word that groups commands (``silence add|list|expire``)."""

    name: str
    help: str
    commands: tuple[Command, ...]


#: every command accepts it: ``--output table`` (default, rich) or ``--output json``
OUTPUT = Argument(
    ("-o", "--output"),
    "output format: table (human, default) or json (machine-readable, on stdout)",
    {"choices": ("table", "json"), "default": "table"},
)
