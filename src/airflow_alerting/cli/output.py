"""What every command prints: rich tables for people, one JSON document for machines, errors on stderr.

Exit codes are the contract scripts rely on: 0 success, 1 a failed operation (a channel test
that failed, a store that cannot be reached), 2 bad input (the message names the argument).
Text from the state store and from remote services is untrusted: it is printed as plain text,
never as rich markup, and control characters are replaced so it cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "BadInput",
    "CliError",
    "OperationFailed",
    "clean",
    "console",
    "print_json",
    "print_kv",
    "print_table",
    "run_guarded",
    "wants_json",
]

EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2

# C0 and C1 controls except tab; an ANSI escape in an exception message would otherwise reach
# the operator's terminal as a command
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class CliError(Exception):
    """An error a command reports on stderr before exiting with :attr:`exit_code`."""

    exit_code: int = EXIT_FAILED


class BadInput(CliError):
    """The arguments are wrong; the message names the argument (``argument --until: ...``)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"argument {argument}: {problem}")
        self.argument = argument


class OperationFailed(CliError):
    """The arguments were fine but the operation did not succeed."""

    exit_code = EXIT_FAILED


def clean(value: object) -> str:
    """``value`` as one line of plain text: control characters replaced, ``None`` as ``-``.

    :param value: anything; datetimes are shown as ISO 8601 to the second
    """
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, timedelta):
        return human_duration(value.total_seconds())
    return _CONTROL.sub("?", str(value).replace("\n", " ").replace("\r", " "))


def human_duration(seconds: float | None) -> str:
    """``90.0`` -> ``"1m30s"``; ``None`` -> ``"-"``.

    :param seconds: a duration in seconds
    """
    if seconds is None:
        return "-"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = "".join(f"{n}{unit}" for n, unit in parts if n)
    return shown or "0s"


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command was asked for ``--output json``.

    :param args: the parsed arguments
    """
    return getattr(args, "output", "table") == "json"


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that never interprets markup in printed data.

    :param stderr: write to stderr instead of stdout
    """
    from rich.console import Console

    # a pipe has no terminal width; 200 columns keep rows on one line for grep and logs
    width = None if (sys.stderr if stderr else sys.stdout).isatty() else 200
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, width=width)


def print_json(document: Any) -> None:
    """Print ``document`` as one JSON document on stdout.

    :param document: JSON-serialisable data; datetimes are written as ISO 8601
    """
    # ASCII only: C1 control characters in untrusted text would otherwise be written raw
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    empty: str = "nothing to show",
    styles: Mapping[int, Callable[[object], str]] | None = None,
) -> None:
    """Print a rich table of plain-text cells; ``empty`` when there are no rows.

    :param title: shown above the table
    :param columns: column headers
    :param rows: one sequence of cells per row (cleaned with :func:`clean`)
    :param empty: what to print instead of an empty table
    :param styles: per column index, a function of the raw cell giving a rich style (``"red"``)
    """
    from rich.table import Table
    from rich.text import Text

    out = console()
    materialised = [list(row) for row in rows]
    if not materialised:
        out.print(Text(f"{title}: {empty}"))
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in materialised:
        cells = []
        for index, cell in enumerate(row):
            style_of = (styles or {}).get(index)
            cells.append(Text(clean(cell), style=style_of(cell) if style_of else ""))
        table.add_row(*cells)
    out.print(table)


def print_kv(title: str, pairs: Sequence[tuple[str, object]]) -> None:
    """Print ``key: value`` lines under a bold title.

    :param title: the heading
    :param pairs: label and value, in order (values cleaned with :func:`clean`)
    """
    from rich.text import Text

    out = console()
    out.print(Text(title, style="bold"))
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        line = Text(f"  {key.ljust(width)}  ")
        line.append(clean(value))
        out.print(line)


def severity_style(value: object) -> str:
    """The colour of a severity label in tables.

    :param value: a severity label (``"critical"``...)
    """
    return {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}.get(str(value), "")


def error(message: str) -> None:
    """Print ``error: message`` on stderr (plain, one line per message line).

    :param message: what went wrong and, where known, how to fix it
    """
    sys.stdout.flush()
    sys.stderr.write(f"error: {_CONTROL.sub('?', message)}\n")
    sys.stderr.flush()


def warning(message: str) -> None:
    """Print ``warning: message`` on stderr.

    :param message: the warning
    """
    sys.stderr.write(f"warning: {_CONTROL.sub('?', message)}\n")
    sys.stderr.flush()


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command and turn its errors into a message on stderr and an exit code.

    :param run: the command's implementation
    :param args: the parsed arguments
    :return: the exit code: the command's own, :attr:`CliError.exit_code`, 1 for any other
        exception, 130 when interrupted
    """
    from airflow_alerting.cli.runtime import prepare_process

    prepare_process()
    try:
        return run(args)
    except CliError as err:
        error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as err:  # an unexpected failure is still a failed operation, not a traceback
        error(f"{type(err).__name__}: {err}")
        return EXIT_FAILED
