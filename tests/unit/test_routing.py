"""Routing: severity (and team matchers) -> channel names."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import Alert, Severity
from airflow_alerting.routing import Route, SeverityRouter


def make_alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {"dag_id": "etl_daily", "task_id": "load", "owner": "airflow"}
    fields.update(overrides)
    return Alert(**fields)


# The design's default matrix (DESIGN.md), written out independently of routing.DEFAULT_MATRIX.
DESIGN_MATRIX = {
    Severity.CRITICAL: {"email", "slack", "pagerduty"},
    Severity.HIGH: {"email", "slack"},
    Severity.MEDIUM: {"slack"},
    Severity.LOW: set(),
}


@pytest.mark.parametrize("severity", list(Severity), ids=lambda s: s.label)
def test_default_matrix(severity: Severity) -> None:
    result = SeverityRouter().route(make_alert(), severity)

    assert set(result.channels) == DESIGN_MATRIX[severity]
    assert len(result.channels) == len(set(result.channels))
    assert result.reason == f"default matrix for {severity.label}"


FINANCE = Route(
    "finance",
    AlertMatcher(dag_ids=("finance_*",)),
    MappingProxyType({Severity.CRITICAL: ("pagerduty-finance",), Severity.HIGH: ("slack-finance",)}),
)
ML = Route("ml", AlertMatcher(tags=("team:ml",)), MappingProxyType({Severity.HIGH: ("slack-ml",)}))
PLATFORM = Route(
    "platform", AlertMatcher(owners=("data-platform",)), MappingProxyType({Severity.MEDIUM: ("email",)})
)
ROUTER = SeverityRouter(routes=(FINANCE, ML, PLATFORM))


@pytest.mark.parametrize(
    ("alert", "severity", "channels", "reason_parts"),
    [
        pytest.param(
            make_alert(dag_id="finance_close"),
            Severity.HIGH,
            ("slack-finance",),
            ("route finance", "dag finance_close"),
            id="dag_glob",
        ),
        pytest.param(
            make_alert(dag_id="finance_close"),
            Severity.CRITICAL,
            ("pagerduty-finance",),
            ("route finance",),
            id="dag_glob_critical",
        ),
        pytest.param(
            make_alert(tags=frozenset({"Team:ML", "nightly"})),
            Severity.HIGH,
            ("slack-ml",),
            ("route ml", "tag"),
            id="tag_case_insensitive",
        ),
        pytest.param(
            make_alert(owner="Data-Platform"),
            Severity.MEDIUM,
            ("email",),
            ("route platform", "owner Data-Platform"),
            id="owner_case_insensitive",
        ),
        pytest.param(
            make_alert(dag_id="finance"),
            Severity.HIGH,
            ("email", "slack"),
            ("default matrix for high",),
            id="glob_needs_suffix_match",
        ),
        pytest.param(
            make_alert(dag_id="marketing", tags=frozenset({"team:data"})),
            Severity.HIGH,
            ("email", "slack"),
            ("default matrix",),
            id="no_route_matches",
        ),
    ],
)
def test_team_routes(
    alert: Alert, severity: Severity, channels: tuple[str, ...], reason_parts: tuple[str, ...]
) -> None:
    result = ROUTER.route(alert, severity)

    assert set(result.channels) == set(channels)
    for part in reason_parts:
        assert part in result.reason


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        pytest.param(Severity.MEDIUM, DESIGN_MATRIX[Severity.MEDIUM], id="medium"),
        pytest.param(Severity.LOW, DESIGN_MATRIX[Severity.LOW], id="low"),
    ],
)
def test_route_leaving_a_severity_out_falls_back_to_the_matrix(
    severity: Severity, expected: set[str]
) -> None:
    result = SeverityRouter(routes=(FINANCE,)).route(make_alert(dag_id="finance_close"), severity)

    assert set(result.channels) == expected
    assert "default matrix" in result.reason


def test_fallback_uses_the_routers_own_matrix() -> None:
    matrix = MappingProxyType({**{s: () for s in Severity}, Severity.MEDIUM: ("email",)})
    router = SeverityRouter(matrix=matrix, routes=(FINANCE,))

    assert router.route(make_alert(dag_id="finance_close"), Severity.MEDIUM).channels == ("email",)


def test_first_matching_route_wins() -> None:
    by_dag = Route("by_dag", AlertMatcher(dag_ids=("finance_*",)), MappingProxyType({Severity.HIGH: ("a",)}))
    by_tag = Route("by_tag", AlertMatcher(tags=("finance",)), MappingProxyType({Severity.HIGH: ("b",)}))
    alert = make_alert(dag_id="finance_close", tags=frozenset({"finance"}))

    assert SeverityRouter(routes=(by_dag, by_tag)).route(alert, Severity.HIGH).channels == ("a",)
    result = SeverityRouter(routes=(by_tag, by_dag)).route(alert, Severity.HIGH)
    assert result.channels == ("b",)
    assert "route by_tag" in result.reason


def test_first_matching_route_without_the_severity_falls_back_to_the_matrix_not_to_later_routes() -> None:
    critical_only = Route(
        "finance_pager",
        AlertMatcher(dag_ids=("finance_*",)),
        MappingProxyType({Severity.CRITICAL: ("pagerduty-finance",)}),
    )
    catch_all = Route("everything", AlertMatcher(), MappingProxyType({Severity.HIGH: ("slack-noise",)}))
    router = SeverityRouter(routes=(critical_only, catch_all))

    result = router.route(make_alert(dag_id="finance_close"), Severity.HIGH)

    assert set(result.channels) == DESIGN_MATRIX[Severity.HIGH]


def test_route_criteria_are_combined_with_and() -> None:
    both = Route(
        "finance_ml",
        AlertMatcher(dag_ids=("finance_*",), tags=("team:ml",)),
        MappingProxyType({Severity.HIGH: ("slack-fin-ml",)}),
    )
    router = SeverityRouter(routes=(both,))

    assert router.route(make_alert(dag_id="finance_x"), Severity.HIGH).channels != ("slack-fin-ml",)
    assert router.route(make_alert(tags=frozenset({"team:ml"})), Severity.HIGH).channels != ("slack-fin-ml",)
    matched = make_alert(dag_id="finance_x", tags=frozenset({"team:ml"}))
    assert router.route(matched, Severity.HIGH).channels == ("slack-fin-ml",)


def test_route_to_nothing_is_respected() -> None:
    muted = Route("sandbox", AlertMatcher(dag_ids=("sandbox_*",)), MappingProxyType({Severity.HIGH: ()}))

    result = SeverityRouter(routes=(muted,)).route(make_alert(dag_id="sandbox_x"), Severity.HIGH)

    assert result.channels == ()
    assert "route sandbox" in result.reason


def test_channel_names_cover_matrix_and_routes() -> None:
    assert ROUTER.channel_names() == {
        "email",
        "slack",
        "pagerduty",
        "pagerduty-finance",
        "slack-finance",
        "slack-ml",
    }
