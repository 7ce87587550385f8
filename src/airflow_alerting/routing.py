"""Routing: which channels hear about an alert of a given severity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import Alert, Severity

#: The default routing matrix (docs/routing.md); low is recorded, counted and digested, never sent.
DEFAULT_MATRIX: Mapping[Severity, tuple[str, ...]] = MappingProxyType(
    {
        Severity.CRITICAL: ("email", "slack", "pagerduty"),
        Severity.HIGH: ("email", "slack"),
        Severity.MEDIUM: ("slack",),
        Severity.LOW: (),
    }
)


@dataclass(frozen=True)
class Route:
    """A team-specific route: alerts that ``match`` use ``matrix`` instead of the default.

    :param name: shown in the routing reason
    :param match: which alerts take this route (dag/task globs, tags, owners, ...)
    :param matrix: severity -> channel names; severities it leaves out fall back to the default matrix
    """

    name: str
    match: AlertMatcher
    matrix: Mapping[Severity, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RoutingResult:
    channels: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class SeverityRouter:
    """Maps a severity (and optionally the alert's dag/tags/owner) to channel names.

    :param matrix: the default severity -> channels matrix
    :param routes: team routes, first match wins
    """

    matrix: Mapping[Severity, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_MATRIX)
    routes: tuple[Route, ...] = ()

    def route(self, alert: Alert, severity: Severity) -> RoutingResult:
        """Return the channels for ``alert`` at ``severity`` and which route chose them."""
        for route in self.routes:
            why = route.match.explain(alert)
            if why is None:
                continue
            if severity in route.matrix:
                return RoutingResult(route.matrix[severity], f"route {route.name} ({why})")
            # the first matching route owns the alert; severities it leaves out use the default matrix
            return RoutingResult(
                tuple(self.matrix.get(severity, ())),
                f"route {route.name} ({why}) has no {severity.label} entry: default matrix",
            )
        return RoutingResult(tuple(self.matrix.get(severity, ())), f"default matrix for {severity.label}")

    def channel_names(self) -> frozenset[str]:
        """Every channel name any route or the matrix can produce (validated against the policy)."""
        names = {c for chans in self.matrix.values() for c in chans}
        for route in self.routes:
            names.update(c for chans in route.matrix.values() for c in chans)
        return frozenset(names)
