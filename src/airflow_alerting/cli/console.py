"""``airflow-alerting ...``: the same commands as ``airflow alerting ...``, as a plain console script.

For Airflow versions whose CLI does not load provider commands, and for scripts that want to
skip building Airflow's whole parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_alerting.cli.registry import GROUP_HELP, add_to_parser, load_commands

__all__ = ["build_parser", "main"]

PROG = "airflow-alerting"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The console script's parser: one sub-command per declaration.

    :param prog: the program name shown in usage and errors
    """
    parser = argparse.ArgumentParser(prog=prog, description=GROUP_HELP + ".")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for declared in load_commands():
        add_to_parser(subparsers, declared)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Parse ``argv`` and run the command; argparse exits with 2 on bad arguments.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :param prog: the program name shown in usage and errors
    :return: the exit code
    """
    args = build_parser(prog).parse_args(argv)
    code: int = args.func(args)
    return code


def entry_point() -> None:
    """The ``airflow-alerting`` console script."""
    sys.exit(main())
