"""What the commands share at run time: the process context, settings, the manager, argument types.

Commands are imported by Airflow for every ``airflow`` invocation (to build its parser), so this
module and the command modules import nothing heavy at module level: Airflow, SQLAlchemy and
the channels are imported inside the functions that run a command.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from airflow_alerting.config import AlertingSettings
    from airflow_alerting.manager import AlertManager

__all__ = [
    "configured_manager",
    "configured_settings",
    "duration",
    "positive_int",
    "prepare_process",
    "timestamp",
]

_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def prepare_process() -> None:
    """Make this process look connections up like Airflow's server processes, and keep stdout clean.

    Outside a task runner the Task SDK only consults environment variables and external secrets
    backends, unless the process declares itself a server (as the scheduler and API server do);
    then it also reads the metadata database, which is where ``airflow connections add`` stores
    connections. An operator's command line is such a process: it already has database access.
    """
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    # Airflow's logging writes to stdout; a warning there would corrupt `--output json` (Airflow's
    # own CLI moves it to stderr for commands with -o, the console script must do it itself)
    try:
        from airflow.cli.utils import redirect_stdout_log_handlers_to_stderr
    except ImportError:  # an Airflow without it: its logging is left as it is
        return
    redirect_stdout_log_handlers_to_stderr()
    _structlog_to_stderr()


def _structlog_to_stderr() -> None:
    """Point Airflow's structlog output at stderr: it writes to stdout when given no stream.

    Airflow logs some warnings (e.g. about a connection type's name) through structlog loggers
    that write straight to ``sys.stdout``, bypassing the logging handlers moved above.
    """
    try:
        import structlog
    except ImportError:
        return
    factory: Any = structlog.get_config().get("logger_factory")
    # Airflow's LoggerFactory keeps its stream in ``io``; None means sys.stdout
    if hasattr(factory, "io") and factory.io in (None, sys.stdout):
        # the process's own stderr: a replaced sys.stderr (a test's capture) may be closed later
        factory.io = sys.__stderr__ or sys.stderr


def configured_settings() -> AlertingSettings:
    """The ``[alerting]`` settings; every substituted bad value is printed as a warning on stderr."""
    from airflow_alerting.cli.output import warning
    from airflow_alerting.config import read_settings

    loaded = read_settings()
    for problem in loaded.problems:
        warning(problem.message)
    return loaded.settings


def configured_manager(settings: AlertingSettings | None = None) -> AlertManager:
    """An :class:`~airflow_alerting.manager.AlertManager` with the configured policy, store and channels.

    :param settings: the settings to use; read (with warnings) when omitted
    """
    from airflow_alerting.manager import AlertManager, configured_policy

    settings = settings or configured_settings()
    policy, _ = configured_policy(settings)
    return AlertManager(policy, settings=settings)


def duration(text: str) -> timedelta:
    """argparse type: ``90s``, ``15m``, ``2h``, ``1d12h`` -> a positive :class:`~datetime.timedelta`.

    :param text: the argument
    :raises argparse.ArgumentTypeError: naming the accepted forms
    """
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 30m, 2h, 1d12h or 90s")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive")
    return value


def timestamp(text: str) -> datetime:
    """argparse type: an ISO 8601 time; without a UTC offset it is read as UTC.

    :param text: the argument (``2026-12-01T02:00``, ``2026-12-01T02:00:00+01:00``)
    :raises argparse.ArgumentTypeError: when it does not parse
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-12-01T02:00:00+00:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    :param text: the argument
    :raises argparse.ArgumentTypeError: when it is not one
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value
