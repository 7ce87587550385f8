"""The digest: what routed nowhere (low severity) or was silenced, summarised instead of vanishing.

The ``alerting_maintenance`` DAG sends it on its schedule; each incident is reported once
per digest, again only if it failed again since.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import Alert, AlertKind, Severity

#: incidents named in one digest; the rest are counted
DIGEST_SHOWN = 30


def digest_candidates(incidents: Sequence[Incident]) -> list[Incident]:
    """Low-severity or silenced incidents with failures the last digest did not report."""
    return [
        i
        for i in incidents
        if (i.severity is Severity.LOW or i.silenced > 0)
        and (i.digested_at is None or i.last_seen_at > i.digested_at)
    ]


def digest_alert(incidents: Sequence[Incident], now: datetime) -> Alert:
    """The digest as an alert whose message lists each incident: counts, DAGs, first and last seen."""
    failures = sum(i.failures for i in incidents)
    silenced = sum(i.silenced for i in incidents)
    lines = []
    for incident in incidents[:DIGEST_SHOWN]:
        dags = ", ".join(incident.dag_ids[:5]) + (" …" if incident.dag_count > 5 else "")
        muted = f", {incident.silenced} silenced" if incident.silenced else ""
        lines.append(
            f"- [{incident.severity.label}] {incident.title}: {incident.describe()}{muted}; "
            f"DAGs {dags}; first {incident.opened_at:%Y-%m-%d %H:%M}, "
            f"last {incident.last_seen_at:%Y-%m-%d %H:%M} UTC"
            + (f"; {incident.state.value}" if not incident.is_open else "")
        )
    if len(incidents) > DIGEST_SHOWN:
        lines.append(f"- and {len(incidents) - DIGEST_SHOWN} more incidents")
    noun = "incident" if len(incidents) == 1 else "incidents"
    return Alert(
        dag_id="alerting_digest",
        kind=AlertKind.CUSTOM,
        occurred_at=now,
        detected_by="maintenance",
        title=f"Alerting digest: {len(incidents)} low-severity or silenced {noun}, "
        f"{failures} failures ({silenced} silenced)",
        message="\n".join(lines),
    )
