"""``incidents list|show|ack|resolve``: the incidents of the configured state store.

``ack`` and ``resolve`` go through the alert manager, so every channel that announced the
incident is told (PagerDuty acknowledge/resolve, the Slack message edited), exactly as when
someone acknowledges from Slack or a task recovers.
"""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from airflow_alerting.cli.output import (
    BadInput,
    OperationFailed,
    human_duration,
    print_json,
    print_kv,
    print_table,
    severity_style,
    wants_json,
)
from airflow_alerting.cli.runtime import positive_int
from airflow_alerting.cli.spec import Argument, Command, Group

if TYPE_CHECKING:
    from airflow_alerting.incidents.model import Incident
    from airflow_alerting.manager import AlertManager

__all__ = ["INCIDENTS"]

_STATES = ("open", "acknowledged", "resolved", "all")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


def _incident(manager: AlertManager, incident_id: str) -> Incident:
    from airflow_alerting.state.base import StateUnavailableError

    try:
        found = manager.store.incident(incident_id)
    except StateUnavailableError as err:
        raise OperationFailed(f"could not read incident {incident_id!r}: {err}") from err
    if found is None:
        raise BadInput("INCIDENT_ID", f"no incident {incident_id!r}; see `incidents list --state all`")
    return found


def _list(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager
    from airflow_alerting.incidents.model import IncidentState
    from airflow_alerting.state.base import StateUnavailableError

    if args.state == "all":
        states: tuple[IncidentState, ...] = ()
    elif args.state == "open":
        states = (IncidentState.OPEN, IncidentState.ACKNOWLEDGED)
    else:
        states = (IncidentState(args.state),)
    manager = configured_manager()
    try:
        incidents = manager.store.incidents(states=states, limit=args.limit)
    except StateUnavailableError as err:
        raise OperationFailed(f"could not read incidents: {err}") from err
    if wants_json(args):
        print_json({"state": args.state, "incidents": [i.to_json() for i in incidents]})
        return 0
    print_table(
        f"Incidents ({args.state})",
        ("id", "state", "severity", "title", "failures", "tasks", "dags", "opened", "last seen"),
        (
            (
                i.id,
                i.state.value,
                i.severity.label,
                i.title,
                i.failures,
                i.task_count,
                i.dag_count,
                i.opened_at,
                i.last_seen_at,
            )
            for i in incidents
        ),
        empty="none",
        styles={2: severity_style},
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from airflow_alerting.cli.runtime import configured_manager

    incident = _incident(configured_manager(), args.incident_id)
    if wants_json(args):
        print_json(incident.to_json())
        return 0
    _print_incident(incident)
    return 0


def _print_incident(incident: Incident) -> None:
    tta = incident.time_to_acknowledge
    ttr = incident.time_to_resolve
    print_kv(
        f"Incident {incident.id}",
        [
            ("title", incident.title),
            ("state", incident.state.value),
            ("severity", incident.severity.label),
            ("why", "; ".join(incident.severity_reasons) or "-"),
            ("key", incident.key),
            ("scope", incident.describe()),
            ("failing", f"{incident.failing_count} of {incident.member_count} members"),
            ("silenced", incident.silenced),
            ("opened", incident.opened_at),
            ("last seen", incident.last_seen_at),
            (
                "acknowledged",
                f"{incident.acknowledged_at.isoformat(timespec='seconds')} by {incident.acknowledged_by} "
                f"after {human_duration(tta.total_seconds() if tta else None)}"
                if incident.acknowledged_at
                else "-",
            ),
            (
                "resolved",
                f"{incident.resolved_at.isoformat(timespec='seconds')} by {incident.resolved_by} "
                f"after {human_duration(ttr.total_seconds() if ttr else None)}"
                if incident.resolved_at
                else "-",
            ),
            ("announced on", ", ".join(sorted(incident.announcements)) or "-"),
        ],
    )
    print_table(
        "Members (most recent first)",
        ("member", "failures", "first", "last", "last run", "recovered"),
        ((m.key, m.failures, m.first_at, m.last_at, m.last_run_id, m.recovered_at) for m in incident.members),
        empty="none recorded",
    )


def _transition(args: argparse.Namespace, action: str) -> int:
    from airflow_alerting.cli.runtime import configured_manager

    manager = configured_manager()
    before = _incident(manager, args.incident_id)
    by = args.by or _user()
    after = manager.acknowledge(before.id, by=by) if action == "ack" else manager.resolve(before.id, by=by)
    if after is None:
        current = _incident(manager, args.incident_id)
        verb = "acknowledge" if action == "ack" else "resolve"
        raise OperationFailed(f"cannot {verb} incident {current.id}: it is already {current.state.value}")
    told = _told(manager, after, action)
    if wants_json(args):
        print_json({"incident": after.to_json(), "channels": told})
        return 0
    verb = "acknowledged" if action == "ack" else "resolved"
    print_kv(
        f"Incident {after.id} {verb} by {by}",
        [("title", after.title), ("state", after.state.value)]
        + [(f"told {t['channel']}", "ok" if t["ok"] else f"FAILED: {t['detail']}") for t in told],
    )
    return 0


def _told(manager: AlertManager, incident: Incident, action: str) -> list[dict[str, Any]]:
    """What the channels answered, from the history entries the manager just recorded."""
    from airflow_alerting.state.base import StateUnavailableError

    wanted = f"{'acknowledge' if action == 'ack' else 'resolve'} incident {incident.id}"
    try:
        recent = manager.store.history(limit=50)
    except StateUnavailableError:
        return []
    seen: dict[str, dict[str, Any]] = {}
    for entry in recent:  # most recent first: keep each channel's latest
        if entry.why == wanted and entry.channel not in seen:
            seen[entry.channel] = {
                "channel": entry.channel,
                "ok": bool(entry.delivered),
                "detail": entry.detail,
            }
    return sorted(seen.values(), key=lambda t: str(t["channel"]))


def _ack(args: argparse.Namespace) -> int:
    return _transition(args, "ack")


def _resolve(args: argparse.Namespace) -> int:
    return _transition(args, "resolve")


_ID = Argument(("incident_id",), "the incident's id (see `incidents list`)", {"metavar": "INCIDENT_ID"})
_BY = Argument(("--by",), "who (default: your login name)", {"default": ""})

INCIDENTS = Group(
    name="incidents",
    help="List, show, acknowledge and resolve incidents",
    commands=(
        Command(
            name="list",
            help="List incidents, most recently seen first",
            arguments=(
                Argument(
                    ("--state",),
                    "which incidents: open (incl. acknowledged, default), acknowledged, resolved, all",
                    {"choices": _STATES, "default": "open"},
                ),
                Argument(
                    ("--limit",), "at most this many (default 50)", {"type": positive_int, "default": 50}
                ),
            ),
            run=_list,
        ),
        Command(name="show", help="Show one incident and its members", arguments=(_ID,), run=_show),
        Command(
            name="ack",
            help="Acknowledge an incident (stops repeats; PagerDuty acknowledge, Slack marked)",
            arguments=(_ID, _BY),
            run=_ack,
        ),
        Command(
            name="resolve",
            help="Resolve an incident by hand and tell every channel that announced it",
            arguments=(_ID, _BY),
            run=_resolve,
        ),
    ),
)
