"""Provider metadata returned through the ``apache_airflow_provider`` entry point.

Airflow calls :func:`get_provider_info` while it is still initialising its own
configuration, and from every CLI command. So this module imports no Airflow code
(that would be a circular import) and nothing heavy.
"""

from __future__ import annotations

from typing import Any, Final

from airflow_alerting.config import OPTIONS, SECTION

__all__ = ["CLI_COMMANDS", "PACKAGE_NAME", "get_provider_info"]

#: Canonical distribution name. Airflow compares it with the installed distribution's
#: name and, on a mismatch, raises in provider discovery, which breaks every CLI command.
PACKAGE_NAME: Final = "airflow-provider-alerting"

#: the function Airflow's CLI calls for this provider's commands (``airflow alerting ...``)
CLI_COMMANDS: Final = "airflow_alerting.cli.airflow_cli.get_cli_commands"

# Reported only when the distribution metadata is missing (e.g. running from a source
# tree on PYTHONPATH); a PEP 440 local version makes "unknown" explicit instead of
# pretending to be a release.
_FALLBACK_VERSION: Final = "0+unknown"

_SECTION_DESCRIPTION: Final = (
    "Settings of airflow-provider-alerting: state backend, channel connections, routing "
    "policy source and delivery limits. Every option can be overridden with "
    "AIRFLOW__ALERTING__<OPTION>."
)


def _installed_version() -> str:
    # importlib.metadata is imported lazily: only this call needs it, and a module-level
    # import would be paid by every DAG file that imports the package.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:
        return _FALLBACK_VERSION


def _config_section() -> dict[str, Any]:
    return {
        SECTION: {
            "description": _SECTION_DESCRIPTION,
            "options": {
                name: {
                    "description": spec.description,
                    "version_added": spec.version_added,
                    "type": spec.type,
                    "example": spec.example,
                    "default": spec.default,
                }
                for name, spec in OPTIONS.items()
            },
        }
    }


def get_provider_info() -> dict[str, Any]:
    """Return this provider's metadata in the shape of Airflow's ``provider_info.schema.json``.

    A new dict is built on every call because Airflow adds keys (``documentation-url``)
    to the dict it receives.

    :return: provider metadata: package name, description, versions, notifier class
        paths, the ``airflow alerting`` CLI commands and the ``[alerting]`` configuration section.
    """
    return {
        "package-name": PACKAGE_NAME,
        "name": "Alerting",
        "description": (
            "Alerting for Apache Airflow 3: classifies task and DAG failures by severity, "
            "routes them to Slack, e-mail and PagerDuty, throttles and deduplicates them, "
            "and resolves alerts when tasks recover."
        ),
        "versions": [_installed_version()],
        "notifications": ["airflow_alerting.notifications.alert.AlertNotifier"],
        # `airflow alerting ...`: Airflow imports and calls this on every CLI invocation
        "cli": [CLI_COMMANDS],
        "config": _config_section(),
    }
