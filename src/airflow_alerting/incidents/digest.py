"""The digest: what routed nowhere (low severity) or was silenced, summarised instead of vanishing.

The ``alerting_maintenance`` DAG sends it on its schedule; each incident is reported once
per digest, again only if it failed again since.  The digest also names the causes whose failure
rate is rising (:meth:`airflow_alerting.analytics.Analytics.trending`), before they are critical.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import Alert, AlertKind, Severity

if TYPE_CHECKING:
    from airflow_alerting.analytics.results import Trend

#: incidents named in one digest; the rest are counted
DIGEST_SHOWN = 30
#: trending causes named in one digest
DIGEST_TRENDS = 5


def trend_lines(trends: Sequence[Trend]) -> list[str]:
    """The digest's lines about trending causes: a heading, then one line per cause (at most
    :data:`DIGEST_TRENDS`)."""
    if not trends:
        return []
    lines = ["Trending causes (failures in the last hour against the day before):"]
    for trend in trends[:DIGEST_TRENDS]:
        before = f"{trend.baseline_per_hour:.2f}/h before" if trend.baseline else "not seen in the day before"
        lines.append(
            f"- [{trend.severity}] {trend.cause}: {trend.recent} failures, "
            f"{trend.recent_per_hour:.1f}/h against {before} (x{trend.ratio:.1f})"
        )
    if len(trends) > DIGEST_TRENDS:
        lines.append(f"- and {len(trends) - DIGEST_TRENDS} more trending causes")
    return lines


def digest_candidates(incidents: Sequence[Incident]) -> list[Incident]:
    """Low-severity or silenced incidents with failures the last digest did not report."""
    return [
        i
        for i in incidents
        if (i.severity is Severity.LOW or i.silenced > 0)
        and (i.digested_at is None or i.last_seen_at > i.digested_at)
    ]


def digest_alert(incidents: Sequence[Incident], now: datetime, trends: Sequence[Trend] = ()) -> Alert:
    """The digest as an alert whose message lists each incident: counts, DAGs, first and last seen.

    :param incidents: the incidents to report (:func:`digest_candidates`)
    :param now: when the digest is sent
    :param trends: trending causes to list after the incidents
    """
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
    if trends:
        lines.extend(["", *trend_lines(trends)])
    noun = "incident" if len(incidents) == 1 else "incidents"
    rising = f"; {len(trends)} trending cause{'s' if len(trends) != 1 else ''}" if trends else ""
    return Alert(
        dag_id="alerting_digest",
        kind=AlertKind.CUSTOM,
        occurred_at=now,
        detected_by="maintenance",
        title=f"Alerting digest: {len(incidents)} low-severity or silenced {noun}, "
        f"{failures} failures ({silenced} silenced){rising}",
        message="\n".join(lines),
    )
