"""The ``[alerting]`` configuration section: option specs, typed settings and their loader.

:data:`OPTIONS` (declared in :mod:`airflow_alerting.config_options`, re-exported here) is the
single source of truth for every option's type, default and description.
:func:`airflow_alerting.get_provider_info.get_provider_info` publishes it to Airflow (so
``airflow config list --section alerting`` shows it and ``AIRFLOW__ALERTING__<OPTION>``
overrides it), and :func:`load_settings` uses the same defaults as ``fallback=`` so behaviour
does not depend on whether Airflow has loaded provider configuration yet.

A bad value never stops alerts: :func:`read_settings` substitutes the option's default for
each unusable value on its own and returns a :class:`ConfigProblem` per substitution, and
:func:`load_settings` (alert time) and :func:`check_settings` (DAG parse time) log those as
errors and count them in the ``alerting.config_errors.<option>`` metric. Only
:meth:`AlertingSettings.from_mapping`, the programmatic constructor, raises.

This module must not import Airflow at import time: it is imported while Airflow
discovers providers (inside Airflow's own configuration bootstrap) and from DAG files.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from airflow_alerting import metrics
from airflow_alerting.config_options import _EMPTY_MEANS, OPTIONS, OptionSpec
from airflow_alerting.config_options import OptionType as OptionType  # re-exported for annotations
from airflow_alerting.config_validation import (
    _MAX_ECHO,
    _PARSERS,
    SECTION,
    STATE_BACKENDS,
    _bad,
    _http_url,
)

__all__ = [
    "OPTIONS",
    "SECTION",
    "STATE_BACKENDS",
    "AlertingSettings",
    "ConfigProblem",
    "LoadedSettings",
    "OptionSpec",
    "check_settings",
    "load_settings",
    "read_settings",
    "report_problems",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigProblem:
    """An ``[alerting]`` value that could not be used, and what is used instead.

    :param option: the option's name, as in :data:`OPTIONS`
    :param error: what is wrong; starts with ``[alerting] <option>:`` and names the bad value
        and where to fix it
    :param fallback: the value used instead, as shown to operators
    """

    option: str
    error: str
    fallback: str

    @property
    def message(self) -> str:
        """One log line: the error, then the fallback (``...; using the default 3 instead``)."""
        return f"{self.error}; using {self.fallback} instead"


def _show_default(option: str, value: object) -> str:
    if isinstance(value, tuple):
        value = ",".join(value)
    shown = (
        f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
    )
    meaning = _EMPTY_MEANS.get(option) if value == "" else None
    return f"the default {shown}" + (f" ({meaning})" if meaning else "")


@functools.cache
def _defaults() -> Mapping[str, Any]:
    """Every option's parsed default (they are valid: tests/unit/test_config.py::test_defaults)."""
    return MappingProxyType({name: _PARSERS[name](name, spec.default) for name, spec in OPTIONS.items()})


def _parse(values: Mapping[str, object]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Validate each option on its own; an unusable value is replaced by its option's default."""
    parsed: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for name, default in _defaults().items():
        if name not in values:
            parsed[name] = default
            continue
        try:
            parsed[name] = _PARSERS[name](name, values[name])
        except ValueError as err:
            parsed[name] = default
            problems.append(ConfigProblem(name, str(err), _show_default(name, default)))
    if parsed["state_backend"] == "sql" and not parsed["sql_conn_id"]:
        # Naming the missing option here beats a vague "connection '' not found" from inside
        # an alert callback; the Variables backend needs no setup, so alerts keep flowing.
        fallback = OPTIONS["state_backend"].default
        parsed["state_backend"] = fallback
        problems.append(
            ConfigProblem(
                "sql_conn_id",
                f"[{SECTION}] sql_conn_id: must name a connection when [{SECTION}] state_backend "
                f"is 'sql' (set in airflow.cfg or AIRFLOW__{SECTION.upper()}__SQL_CONN_ID)",
                f"state_backend {fallback!r}",
            )
        )
    return parsed, problems


@dataclass(frozen=True)
class AlertingSettings:
    """Validated, typed values of the ``[alerting]`` section.

    Build it with :func:`load_settings` (from Airflow configuration) or
    :meth:`from_mapping` (tests); direct construction skips validation. Empty strings mean
    "not set"; see :data:`OPTIONS` for each option's meaning.

    :param state_backend: ``"variables"``, ``"sql"`` or ``"memory"``.
    :param sql_conn_id: connection for the ``sql`` state backend; ``""`` when unused.
    :param slack_conn_id: Slack Web API (bot token) connection id.
    :param slack_webhook_conn_id: Slack incoming-webhook connection id.
    :param slack_channel: channel for Web API messages.
    :param smtp_conn_id: SMTP connection id.
    :param email_to: recipients; empty means the task's ``email`` argument.
    :param email_from: sender; ``""`` means the SMTP connection's ``from_email``.
    :param pagerduty_conn_id: PagerDuty Events API v2 connection id.
    :param base_url: Airflow UI base URL without a trailing slash; :func:`load_settings`
        has already applied the ``[api] base_url`` fallback. ``""`` means unknown.
    :param policy_file: path of a YAML routing policy, or ``""``.
    :param policy_variable: name of a Variable holding a JSON/YAML policy, or ``""``.
    :param silences_variable: name of a Variable holding a JSON/YAML list of silences, or ``""``.
    :param callback_deadline_seconds: time budget of a whole callback, > 0.
    :param delivery_attempts: attempts per channel, >= 1.
    :param delivery_timeout_seconds: timeout of one delivery attempt, > 0.
    :param allowed_http_hosts: lower-case hosts that may be reached over plain http.
    :param history_limit: maximum alert history entries kept, >= 0.
    :param maintenance_schedule: schedule of the ``alerting_maintenance`` DAG.
    :param zero_touch: whether the cluster policy attaches alerting to DAGs without it.
    """

    state_backend: str
    sql_conn_id: str
    slack_conn_id: str
    slack_webhook_conn_id: str
    slack_channel: str
    smtp_conn_id: str
    email_to: tuple[str, ...]
    email_from: str
    pagerduty_conn_id: str
    base_url: str
    policy_file: str
    policy_variable: str
    silences_variable: str
    callback_deadline_seconds: float
    delivery_attempts: int
    delivery_timeout_seconds: float
    allowed_http_hosts: tuple[str, ...]
    history_limit: int
    maintenance_schedule: str
    zero_touch: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> AlertingSettings:
        """Parse and validate option values; missing options take their defaults.

        Values may be strings as Airflow stores them (``"3"``, ``"a@x,b@y"``) or already
        typed (``3``, ``["a@x"]``).

        :param values: option name -> value, using the names in :data:`OPTIONS`.
        :return: the validated settings.
        :raises ValueError: for an unknown option or a bad value; the message starts with
            ``[alerting] <option>``.
        """
        unknown = sorted(str(name) for name in set(values) - set(OPTIONS))
        if unknown:
            raise ValueError(f"[{SECTION}] {unknown[0]}: unknown option; known options: {', '.join(OPTIONS)}")
        parsed, problems = _parse(values)
        if problems:
            # Code that builds settings itself gets the error: substituting a default would
            # hide a bug in that code. Operators' values go through read_settings instead.
            raise ValueError(problems[0].error)
        return cls(**parsed)

    @classmethod
    def defaults(cls) -> AlertingSettings:
        """Return the settings with every option at its default.

        :return: settings built from :data:`OPTIONS` defaults alone.
        """
        return cls.from_mapping({})


class _ConfGetter(Protocol):
    """The one method of Airflow's config parser this module uses."""

    def get(self, section: str, key: str, **kwargs: Any) -> str | None: ...


def _processor_timeout(conf: _ConfGetter) -> float | None:
    try:
        raw = conf.get("dag_processor", "dag_file_processor_timeout", fallback="50")
        timeout = float(raw) if raw is not None else None
    except Exception:
        # Not our option to validate; Airflow reports its own bad values.
        return None
    return timeout if timeout is not None and math.isfinite(timeout) and timeout > 0 else None


#: share of the DAG processor timeout a substituted callback deadline may use: the default
#: deadline (30 s) is this share of Airflow's default dag_file_processor_timeout (50 s)
_DEADLINE_SHARE: Final = 0.6
# Policy errors are echoed into one log line; YAML errors span several lines and can be long.
_MAX_POLICY_ERROR = 300


def _policy_file_error(path: str) -> str | None:
    """Why the policy file at ``path`` cannot be used, or ``None`` when it loads and validates."""
    # Imported here: the policy pulls in classification and routing, which provider discovery
    # (the other importer of this module) never needs.
    from airflow_alerting.policy import AlertPolicy

    try:
        AlertPolicy.from_yaml(Path(path))
    except Exception as err:  # PolicyError, and also e.g. UnicodeDecodeError from a binary file
        text = " ".join(str(err).split()) or type(err).__name__
        return text if len(text) <= _MAX_POLICY_ERROR else text[: _MAX_POLICY_ERROR - 3] + "..."
    return None


class _UnreadableConf:
    """Stands in for Airflow's configuration when it cannot even be imported."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get(self, section: str, key: str, **kwargs: Any) -> str | None:
        raise self.error


def _airflow_conf() -> _ConfGetter:
    try:
        # Imported here so importing this module (from DAG files, and from provider discovery
        # while Airflow's configuration is still initialising) stays cheap and cycle-free.
        from airflow.configuration import conf
    except Exception as err:
        return _UnreadableConf(err)
    return conf


@dataclass(frozen=True)
class LoadedSettings:
    """What :func:`read_settings` found: usable settings, and what had to be substituted.

    :param settings: the settings, with a default in place of every unusable value
    :param problems: one entry per substituted value, in :data:`OPTIONS` order
    """

    settings: AlertingSettings
    problems: tuple[ConfigProblem, ...] = ()


def read_settings() -> LoadedSettings:
    """Read the ``[alerting]`` section from Airflow configuration; never raises, never logs.

    Every option is read with ``fallback=`` its :data:`OPTIONS` default, so this works
    whether or not Airflow has loaded provider configuration. Nothing is cached: Airflow
    resolves ``AIRFLOW__ALERTING__*`` environment variables on each read, so callers see
    changes without restarting.

    Each option is validated on its own, and an unusable value is replaced by that option's
    default (one typo must not silence alerts). Beyond the per-value checks:

    * ``state_backend = sql`` without ``sql_conn_id`` falls back to the ``variables`` backend;
    * ``callback_deadline_seconds`` at or above ``[dag_processor] dag_file_processor_timeout``
      falls back to the default, capped at 60% of that timeout;
    * a ``policy_file`` that cannot be read or does not validate falls back to ``""`` (the
      built-in default policy, or ``policy_variable``'s);
    * an empty ``base_url`` falls back to ``[api] base_url`` when that is an absolute URL.

    :return: the settings and the substitutions made
    """
    conf = _airflow_conf()
    values: dict[str, object] = {}
    unreadable: list[ConfigProblem] = []
    for name, spec in OPTIONS.items():
        try:
            values[name] = conf.get(SECTION, name, fallback=spec.default)
        except Exception as err:  # a failing *_cmd / *_secret, interpolation of a stray '%', ...
            shown = " ".join(f"{type(err).__name__}: {err}".split())[:_MAX_ECHO]
            env = f"AIRFLOW__{SECTION.upper()}__{name.upper()}"
            error = f"[{SECTION}] {name}: could not be read ({shown}) (set in airflow.cfg or {env})"
            unreadable.append(ConfigProblem(name, error, _show_default(name, _defaults()[name])))
    parsed, problems = _parse(values)
    problems[:0] = unreadable

    if parsed["policy_file"]:
        why = _policy_file_error(parsed["policy_file"])
        if why is not None:
            problems.append(
                ConfigProblem(
                    "policy_file",
                    f"[{SECTION}] policy_file: {parsed['policy_file']!r} is not a usable policy: {why} "
                    f"(set in airflow.cfg or AIRFLOW__{SECTION.upper()}__POLICY_FILE)",
                    _show_default("policy_file", ""),
                )
            )
            parsed["policy_file"] = ""

    timeout = _processor_timeout(conf)
    deadline = parsed["callback_deadline_seconds"]
    if timeout is not None and deadline >= timeout:
        default = _defaults()["callback_deadline_seconds"]
        substitute = min(default, timeout * _DEADLINE_SHARE)
        too_long = _bad(
            "callback_deadline_seconds",
            deadline,
            f"must be below [dag_processor] dag_file_processor_timeout ({timeout:g}), and well "
            "below it: the DAG processor kills callbacks that outlive it",
        )
        shown = _show_default("callback_deadline_seconds", default)
        if substitute != default:
            shown = f"{substitute:g} ({_DEADLINE_SHARE:.0%} of dag_file_processor_timeout)"
        problems.append(ConfigProblem("callback_deadline_seconds", str(too_long), shown))
        parsed["callback_deadline_seconds"] = substitute

    settings = AlertingSettings(**parsed)
    if not settings.base_url:
        try:
            api_url = conf.get("api", "base_url", fallback="") or ""
            fallback_url = _http_url("base_url", api_url)
        except Exception:
            # [api] base_url is Airflow's option with its own rules (it may be relative);
            # links without a base are better than failing the alert.
            log.debug("Ignoring [api] base_url for alert links: not an absolute http(s) URL", exc_info=True)
            fallback_url = ""
        if fallback_url:
            settings = replace(settings, base_url=fallback_url)
    return LoadedSettings(settings, tuple(problems))


# Problems already reported by check_settings in this process (see there).
_REPORTED: set[str] = set()
# The environment check_settings last validated, and what it found (see there).
_CHECKED: dict[tuple[tuple[str, str], ...], tuple[ConfigProblem, ...]] = {}
_REPORTED_LOCK = threading.Lock()
# Environment variables that can change what read_settings finds within one process;
# airflow.cfg itself is read once per process by Airflow.
_ENV_PREFIXES: Final = (
    f"AIRFLOW__{SECTION.upper()}__",
    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT",
    "AIRFLOW__API__BASE_URL",
)


def report_problems(problems: Sequence[ConfigProblem], *, once: bool = False) -> None:
    """Log each problem as an ERROR and count it in ``alerting.config_errors.<option>``.

    :param problems: what :func:`read_settings` substituted
    :param once: report a given problem only the first time this process sees it
    """
    for problem in problems:
        if once:
            with _REPORTED_LOCK:
                if problem.message in _REPORTED:
                    continue
                _REPORTED.add(problem.message)
        log.error("%s", problem.message)
        metrics.count("alerting.config_errors", option=problem.option)


def load_settings() -> AlertingSettings:
    """Read the ``[alerting]`` section for an alert: settings that always work; never raises.

    Every substitution :func:`read_settings` makes is logged as an ERROR naming the option, the
    bad value and the value used instead, and counted in ``alerting.config_errors.<option>``,
    each time: this runs once per alert, and the task log is where an operator looks.

    :return: the settings; see :func:`read_settings` for the fallbacks
    """
    loaded = read_settings()
    report_problems(loaded.problems)
    return loaded.settings


def check_settings() -> tuple[ConfigProblem, ...]:
    """Validate the ``[alerting]`` section when a DAG file is parsed; never raises.

    Reports each problem like :func:`load_settings`, but once per process: a DAG file
    typically builds several notifiers (a DAG factory, hundreds), and one error per problem in
    the parse log is enough. For the same reason the section is read again only when the
    ``AIRFLOW__ALERTING__*`` environment changed; alert time always reads it afresh.
    Problems are not raised: ``[alerting]`` is deployment-wide, so raising would turn one
    operator typo into an import error in every DAG file that alerts, while at alert time the
    fallback still delivers.

    :return: the problems found (reported or not)
    """
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    with _REPORTED_LOCK:
        known = _CHECKED.get(key)
    if known is not None:
        return known
    problems = read_settings().problems
    report_problems(problems, once=True)
    with _REPORTED_LOCK:
        _CHECKED.clear()  # only the latest environment: a process rarely changes it
        _CHECKED[key] = problems
    return problems
