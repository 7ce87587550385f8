"""Policy loading: the happy path, and bad policies that must fail naming the field."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.classify import CriticalWindow
from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import Alert, Severity
from airflow_alerting.policy import DEFAULT_WINDOWS, AlertPolicy, PolicyError

FULL_POLICY: dict[str, Any] = {
    "classification": {
        "default_severity": "low",
        "include_default_rules": True,
        "retry": "silent",
        "impact_param": "impact",
        "downstream_threshold": 5,
        "business_hours": {
            "timezone": "Europe/Berlin",
            "days": [1, 2, 3, 4],
            "start": "08:30",
            "end": "17:00",
            "off_hours_lower_by": 2,
        },
        "rules": [
            {
                "name": "finance_warehouse",
                "severity": "critical",
                "description": "the close depends on it",
                "match": {"dag_ids": ["finance_*"], "exception_types": ["PermissionError"]},
            },
            {"name": "sandbox_quieter", "raise_by": -1, "match": {"tags": ["sandbox"]}},
            {
                "name": "killed",
                "severity": "HIGH",
                "match": {"no_exception": True, "kinds": ["task_failure"]},
            },
        ],
    },
    "routing": {
        "matrix": {"medium": ["slack", "slack-data"]},
        "routes": [
            {
                "name": "finance",
                "match": {"dag_ids": "finance_*"},
                "matrix": {"critical": ["pagerduty", "email-finance"], "high": "email-finance"},
            }
        ],
    },
    "throttle": {
        "windows": {"critical": 0, "high": "10m", "medium": "1h", "low": 7200},
        "group_by": ["dag_id", "exception", "message"],
    },
    "escalation": {"after": 5, "within": "30m"},
    "channels": {
        "slack-data": {"type": "slack", "channel": "#data-alerts", "conn_id": "slack_api_data"},
        "email-finance": {"type": "email", "to": "finance@example.com"},
        "pagerduty": {"conn_id": "pd_finance"},
    },
    "resolve_on_success": False,
    "lease": "90s",
}


def alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "dag_id": "etl",
        "task_id": "load",
        "exception_type": "ValueError",
        "exception_mro": ("ValueError", "Exception"),
        "message": "x",
    }
    fields.update(overrides)
    return Alert(**fields)


def test_full_policy_from_dict() -> None:
    policy = AlertPolicy.from_dict(FULL_POLICY)

    assert policy.window_for(Severity.CRITICAL) == timedelta(0)
    assert policy.window_for(Severity.HIGH) == timedelta(minutes=10)
    assert policy.window_for(Severity.MEDIUM) == timedelta(hours=1)
    assert policy.window_for(Severity.LOW) == timedelta(hours=2)
    assert policy.escalation.after == 5
    assert policy.escalation.within == timedelta(minutes=30)
    assert policy.group_by == ("dag_id", "exception", "message")
    assert policy.resolve_on_success is False
    assert policy.lease == timedelta(seconds=90)

    classifier = policy.classifier
    assert classifier.default_severity is Severity.LOW
    assert classifier.retry_severity is None
    assert classifier.impact_param == "impact"
    assert classifier.downstream_threshold == 5
    assert classifier.off_hours_lower_by == 2
    hours = classifier.business_hours
    assert hours is not None
    assert (hours.timezone, hours.days, hours.start, hours.end) == (
        "Europe/Berlin",
        (1, 2, 3, 4),
        time(8, 30),
        time(17, 0),
    )
    assert [r.name for r in classifier.rules] == ["finance_warehouse", "sandbox_quieter", "killed"]

    assert policy.channel_spec("slack-data").type == "slack"
    assert policy.channel_spec("slack-data").options["channel"] == "#data-alerts"
    assert policy.channel_spec("email-finance").options["to"] == ("finance@example.com",)
    assert policy.channel_spec("pagerduty").options["conn_id"] == "pd_finance"
    assert policy.channel_spec("slack").type == "slack"  # built-in, undeclared


def test_full_policy_behaves_as_written() -> None:
    policy = AlertPolicy.from_dict(FULL_POLICY)
    # pin "now" inside the configured business hours (Monday 11:00 in Berlin) so nothing is lowered
    classifier = dataclasses.replace(
        policy.classifier, clock=lambda: datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
    )

    finance = alert(
        dag_id="finance_close",
        exception_type="PermissionError",
        exception_mro=("PermissionError", "OSError", "Exception"),
    )
    result = classifier.classify(finance)
    assert result.severity is Severity.CRITICAL
    assert result.rules[0] == "finance_warehouse"
    assert set(policy.router.route(finance, Severity.CRITICAL).channels) == {"pagerduty", "email-finance"}
    assert policy.router.route(finance, Severity.HIGH).channels == ("email-finance",)

    assert classifier.classify(alert(message="odd")).severity is Severity.LOW  # default_severity
    assert classifier.classify(alert(params={"impact": "high"})).severity is Severity.HIGH
    assert classifier.classify(alert(try_number=1, max_tries=2)).silent

    medium = set(policy.router.route(alert(), Severity.MEDIUM).channels)
    assert medium == {"slack", "slack-data"}
    # a severity the matrix section leaves out keeps the default
    assert set(policy.router.route(alert(), Severity.HIGH).channels) == {"email", "slack"}


def test_empty_policy_is_the_default_policy() -> None:
    policy = AlertPolicy.from_dict({})
    default = AlertPolicy()

    assert dict(policy.windows) == dict(default.windows) == dict(DEFAULT_WINDOWS)
    assert policy.group_by == default.group_by
    assert policy.escalation == default.escalation
    assert policy.resolve_on_success is True
    for severity in Severity:
        assert (
            policy.router.route(alert(), severity).channels
            == default.router.route(alert(), severity).channels
        )


def test_from_dict_does_not_mutate_its_input() -> None:
    data = copy.deepcopy(FULL_POLICY)

    AlertPolicy.from_dict(data)

    assert data == FULL_POLICY


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        (" 5 m ", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1.5h", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("300", timedelta(minutes=5)),
        (300, timedelta(minutes=5)),
        (0.5, timedelta(milliseconds=500)),
        (0, timedelta(0)),
    ],
)
def test_window_durations(value: Any, expected: timedelta) -> None:
    policy = AlertPolicy.from_dict({"throttle": {"windows": {"medium": value}}})

    assert policy.window_for(Severity.MEDIUM) == expected
    assert policy.window_for(Severity.HIGH) == DEFAULT_WINDOWS[Severity.HIGH]


def test_declared_channel_can_be_routed_to() -> None:
    policy = AlertPolicy.from_dict(
        {
            "channels": {"ops-mail": {"type": "email", "to": ["a@example.com", "b@example.com"]}},
            "routing": {"matrix": {"high": ["ops-mail"]}},
        }
    )

    assert policy.router.route(alert(), Severity.HIGH).channels == ("ops-mail",)
    assert policy.channel_spec("ops-mail").options["to"] == ("a@example.com", "b@example.com")


def test_severity_values_are_case_insensitive() -> None:
    policy = AlertPolicy.from_dict({"classification": {"default_severity": "High"}})

    assert policy.classifier.default_severity is Severity.HIGH


# --- bad policies -------------------------------------------------------------------------

RULE = "policy.classification.rules[0]"
ROUTE = "policy.routing.routes[0]"
HOURS = "policy.classification.business_hours"


def _rule(**fields: Any) -> dict[str, Any]:
    return {"classification": {"rules": [fields]}}


def _hours(**fields: Any) -> dict[str, Any]:
    return {"classification": {"business_hours": fields}}


BAD_POLICIES: list[tuple[str, Any, str, str]] = [
    # id, data, exact path, a fragment the message must contain
    ("root_not_mapping", ["routing"], "policy", "mapping"),
    ("unknown_top_level_key", {"routng": {}}, "policy.routng", "unknown field"),
    (
        "unknown_severity_in_matrix",
        {"routing": {"matrix": {"urgent": ["slack"]}}},
        "policy.routing.matrix.urgent",
        "unknown field",
    ),
    (
        "upper_case_severity_key",
        {"throttle": {"windows": {"HIGH": "5m"}}},
        "policy.throttle.windows.HIGH",
        "unknown field",
    ),
    (
        "negative_window_seconds",
        {"throttle": {"windows": {"high": -5}}},
        "policy.throttle.windows.high",
        "negative",
    ),
    (
        "negative_window_string",
        {"throttle": {"windows": {"high": "-5m"}}},
        "policy.throttle.windows.high",
        "-5m",
    ),
    ("window_soon", {"throttle": {"windows": {"medium": "soon"}}}, "policy.throttle.windows.medium", "soon"),
    ("window_bool", {"throttle": {"windows": {"low": True}}}, "policy.throttle.windows.low", "duration"),
    (
        "window_unknown_unit",
        {"throttle": {"windows": {"low": "5 weeks"}}},
        "policy.throttle.windows.low",
        "5 weeks",
    ),
    (
        "matrix_channel_not_string",
        {"routing": {"matrix": {"high": ["slack", 3]}}},
        "policy.routing.matrix.high[1]",
        "string",
    ),
    (
        "matrix_channel_empty",
        {"routing": {"matrix": {"high": [""]}}},
        "policy.routing.matrix.high[0]",
        "string",
    ),
    ("rule_without_name", _rule(severity="high"), f"{RULE}.name", "required"),
    ("rule_both_severity_and_raise_by", _rule(name="r", severity="high", raise_by=1), RULE, "raise_by"),
    ("rule_neither", _rule(name="r", match={"tags": ["x"]}), RULE, "severity"),
    ("rule_unknown_severity", _rule(name="r", severity="urgent"), f"{RULE}.severity", "urgent"),
    ("rule_raise_by_too_big", _rule(name="r", raise_by=7), f"{RULE}.raise_by", "7"),
    ("rule_raise_by_not_int", _rule(name="r", raise_by="1"), f"{RULE}.raise_by", "integer"),
    ("rule_unknown_field", _rule(name="r", severity="high", when={}), f"{RULE}.when", "unknown field"),
    (
        "invalid_regex",
        _rule(name="r", severity="high", match={"message_patterns": ["ok", "(["]}),
        f"{RULE}.match.message_patterns[1]",
        "regular expression",
    ),
    (
        "unknown_matcher_field",
        _rule(name="r", severity="high", match={"dag": ["x"]}),
        f"{RULE}.match.dag",
        "unknown field",
    ),
    (
        "unknown_kind",
        _rule(name="r", severity="high", match={"kinds": ["task_failure", "task_failed"]}),
        f"{RULE}.match.kinds[1]",
        "task_failed",
    ),
    (
        "no_exception_not_bool",
        _rule(name="r", severity="high", match={"no_exception": "yes"}),
        f"{RULE}.match.no_exception",
        "true or false",
    ),
    ("rules_not_list", {"classification": {"rules": {"name": "r"}}}, "policy.classification.rules", "list"),
    ("rule_not_mapping", {"classification": {"rules": ["r"]}}, RULE, "mapping"),
    ("unknown_time_zone", _hours(timezone="Mars/Olympus_Mons"), f"{HOURS}.timezone", "Mars/Olympus_Mons"),
    ("bad_business_start", _hours(start="25:00"), f"{HOURS}.start", "25:00"),
    ("bad_business_end", _hours(end="6pm"), f"{HOURS}.end", "6pm"),
    ("bad_business_day", _hours(days=[1, 8]), f"{HOURS}.days[1]", "7"),
    ("business_days_not_list", _hours(days="weekdays"), f"{HOURS}.days", "list"),
    ("off_hours_lower_by_too_big", _hours(off_hours_lower_by=5), f"{HOURS}.off_hours_lower_by", "5"),
    ("business_hours_unknown_field", _hours(tz="UTC"), f"{HOURS}.tz", "unknown field"),
    ("unknown_retry", {"classification": {"retry": "sometimes"}}, "policy.classification.retry", "silent"),
    (
        "unknown_default_severity",
        {"classification": {"default_severity": "meh"}},
        "policy.classification.default_severity",
        "meh",
    ),
    (
        "negative_downstream_threshold",
        {"classification": {"downstream_threshold": -1}},
        "policy.classification.downstream_threshold",
        "-1",
    ),
    (
        "include_defaults_not_bool",
        {"classification": {"include_default_rules": "no"}},
        "policy.classification.include_default_rules",
        "true or false",
    ),
    (
        "channel_unknown_type",
        {"channels": {"teams": {"type": "teams"}}},
        "policy.channels.teams.type",
        "teams",
    ),
    (
        "channel_untyped_unknown_name",
        {"channels": {"ops": {"channel": "#ops"}}},
        "policy.channels.ops.type",
        "slack",
    ),
    (
        "channel_unknown_option",
        {"channels": {"slack-data": {"type": "slack", "webhook": "x"}}},
        "policy.channels.slack-data.webhook",
        "slack",
    ),
    (
        "channel_email_option_on_slack",
        {"channels": {"s": {"type": "slack", "to": ["a@b.c"]}}},
        "policy.channels.s.to",
        "unknown option",
    ),
    ("channel_not_mapping", {"channels": {"slack-data": "slack"}}, "policy.channels.slack-data", "mapping"),
    (
        "group_by_invalid",
        {"throttle": {"group_by": ["dag_id", "run_id"]}},
        "policy.throttle.group_by",
        "subset",
    ),
    ("group_by_empty", {"throttle": {"group_by": []}}, "policy.throttle.group_by", "non-empty"),
    ("escalation_after_negative", {"escalation": {"after": -1}}, "policy.escalation.after", "-1"),
    ("escalation_within_bad", {"escalation": {"within": "soon"}}, "policy.escalation.within", "soon"),
    ("escalation_unknown_field", {"escalation": {"count": 3}}, "policy.escalation.count", "unknown field"),
    ("lease_zero", {"lease": 0}, "policy.lease", "positive"),
    ("resolve_not_bool", {"resolve_on_success": "yes"}, "policy.resolve_on_success", "yes"),
    (
        "route_without_name",
        {"routing": {"routes": [{"matrix": {"high": ["slack"]}}]}},
        f"{ROUTE}.name",
        "required",
    ),
    (
        "route_without_matrix",
        {"routing": {"routes": [{"name": "r", "match": {"tags": ["x"]}}]}},
        f"{ROUTE}.matrix",
        "required",
    ),
    (
        "route_unknown_severity",
        {"routing": {"routes": [{"name": "r", "matrix": {"sev1": ["slack"]}}]}},
        f"{ROUTE}.matrix.sev1",
        "unknown field",
    ),
    ("routes_not_list", {"routing": {"routes": {"name": "r"}}}, "policy.routing.routes", "list"),
    # non-mapping sections
    ("routing_not_mapping", {"routing": ["slack"]}, "policy.routing", "mapping"),
    ("classification_not_mapping", {"classification": "strict"}, "policy.classification", "mapping"),
    ("throttle_not_mapping", {"throttle": 300}, "policy.throttle", "mapping"),
    ("windows_not_mapping", {"throttle": {"windows": ["5m"]}}, "policy.throttle.windows", "mapping"),
    ("escalation_not_mapping", {"escalation": 3}, "policy.escalation", "mapping"),
    ("channels_not_mapping", {"channels": ["slack"]}, "policy.channels", "mapping"),
    ("matrix_not_mapping", {"routing": {"matrix": ["slack"]}}, "policy.routing.matrix", "mapping"),
    ("business_hours_not_mapping", {"classification": {"business_hours": "9-5"}}, HOURS, "mapping"),
    ("match_not_mapping", _rule(name="r", severity="high", match=["x"]), f"{RULE}.match", "mapping"),
]


@pytest.mark.parametrize(
    ("data", "path", "fragment"), [pytest.param(d, p, f, id=i) for i, d, p, f in BAD_POLICIES]
)
def test_bad_policy_names_the_field(data: Any, path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict(data)

    err = caught.value
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert fragment in err.problem
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"routing": {"matrix": {"high": ["email", "teams"]}}}, id="matrix"),
        pytest.param({"routing": {"routes": [{"name": "r", "matrix": {"high": ["teams"]}}]}}, id="route"),
    ],
)
def test_route_to_undeclared_channel_fails_naming_the_channel(data: dict[str, Any]) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict(data)

    assert caught.value.path.startswith("policy.routing")
    assert "teams" in caught.value.problem
    assert "undeclared" in caught.value.problem


def test_route_to_undeclared_channel_names_the_exact_field() -> None:
    data = {"routing": {"routes": [{"name": "r", "matrix": {"critical": ["pagerduty", "teams"]}}]}}

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict(data)

    assert caught.value.path == "policy.routing.routes[0].matrix.critical[1]"


def test_custom_root_path_prefixes_every_error() -> None:
    with pytest.raises(PolicyError) as section_error:
        AlertPolicy.from_dict({"throttle": {"windows": {"high": "soon"}}}, path="Variable alerting_policy")
    with pytest.raises(PolicyError) as post_init_error:
        AlertPolicy.from_dict({"routing": {"matrix": {"high": ["teams"]}}}, path="Variable alerting_policy")

    assert section_error.value.path == "Variable alerting_policy.throttle.windows.high"
    assert post_init_error.value.path == "Variable alerting_policy.routing.matrix.high[0]"


def test_direct_construction_validates_too() -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy(windows={**DEFAULT_WINDOWS, Severity.HIGH: timedelta(seconds=-1)})
    assert caught.value.path == "policy.throttle.windows.high"

    with pytest.raises(PolicyError) as missing:
        AlertPolicy(windows={Severity.HIGH: timedelta(minutes=5)})
    assert missing.value.path.startswith("policy.throttle.windows.")


# --- YAML ---------------------------------------------------------------------------------

YAML_POLICY = """\
classification:
  rules:
    - name: finance_warehouse
      severity: critical
      match:
        dag_ids: ["finance_*"]
        exception_types: [PermissionError]
routing:
  matrix:
    medium: [slack, slack-data]
throttle:
  windows:
    high: 10m
    medium: 1h
escalation:
  after: 4
  within: 2h
channels:
  slack-data:
    type: slack
    channel: "#data"
"""


def test_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(YAML_POLICY, encoding="utf-8")

    for source in (path, str(path)):
        policy = AlertPolicy.from_yaml(source)
        assert policy.window_for(Severity.HIGH) == timedelta(minutes=10)
        assert policy.window_for(Severity.MEDIUM) == timedelta(hours=1)
        assert policy.escalation.after == 4
        assert policy.escalation.within == timedelta(hours=2)
        assert policy.classifier.rules[0].name == "finance_warehouse"
        assert set(policy.router.route(alert(), Severity.MEDIUM).channels) == {"slack", "slack-data"}


def test_from_yaml_text() -> None:
    policy = AlertPolicy.from_yaml(YAML_POLICY)

    assert policy.window_for(Severity.HIGH) == timedelta(minutes=10)


def test_from_yaml_empty_file_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")

    assert dict(AlertPolicy.from_yaml(path).windows) == dict(DEFAULT_WINDOWS)


def test_from_yaml_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("throttle:\n  windows: [high: 5m\n", encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(path)

    assert caught.value.path == "policy(broken.yaml)"
    assert "invalid YAML" in caught.value.problem


def test_from_yaml_error_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text("throttle:\n  windows:\n    high: -5m\n", encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(path)

    assert caught.value.path == "policy(team.yaml).throttle.windows.high"


def test_from_yaml_post_init_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text("routing:\n  matrix:\n    high: [teams]\n", encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(path)

    assert caught.value.path.startswith("policy(team.yaml).routing")
    assert "teams" in caught.value.problem


def test_from_yaml_root_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- slack\n- email\n", encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(path)

    assert caught.value.path == "policy(list.yaml)"
    assert "mapping" in caught.value.problem


def test_from_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(tmp_path / "nope.yaml")

    assert caught.value.path == "policy(nope.yaml)"
    assert "cannot read" in caught.value.problem


def test_inverted_business_hours_are_rejected_or_wrap_midnight() -> None:
    try:
        policy = AlertPolicy.from_dict(_hours(start="22:00", end="06:00", days=[1, 2, 3, 4, 5, 6, 7]))
    except PolicyError as err:
        assert err.path.startswith(HOURS)
        return
    hours = policy.classifier.business_hours
    assert hours is not None
    assert hours.contains(datetime(2026, 1, 5, 23, 30, tzinfo=timezone.utc))


def test_from_yaml_accepts_unquoted_business_hours() -> None:
    policy = AlertPolicy.from_yaml("classification:\n  business_hours:\n    start: 9:30\n    end: 18:00\n")

    hours = policy.classifier.business_hours
    assert hours is not None
    assert (hours.start, hours.end) == (time(9, 30), time(18, 0))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            float("inf"),
            id="inf",
        ),
        pytest.param(
            float("nan"),
            id="nan",
        ),
        pytest.param(
            10**20,
            id="huge",
        ),
    ],
)
def test_unrepresentable_window_names_the_field(value: float) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict({"throttle": {"windows": {"low": value}}})

    assert caught.value.path == "policy.throttle.windows.low"


# --- critical windows ---------------------------------------------------------------------

WINDOWS = "policy.classification.critical_windows"


def _windows(*items: Any) -> dict[str, Any]:
    return {"classification": {"critical_windows": list(items)}}


def test_critical_windows_parse_every_field() -> None:
    policy = AlertPolicy.from_dict(
        _windows(
            {
                "name": "month-end",
                "timezone": "Europe/Berlin",
                "days_of_month": [-1, -2],
                "weekdays": [1, 2, 3, 4, 5],
                "start": "22:00",
                "end": "02:00",
                "raise_by": 2,
                "match": {"dag_ids": ["finance_*"]},
            },
            {"name": "everything"},
        )
    )

    assert policy.classifier.critical_windows == (
        CriticalWindow(
            name="month-end",
            timezone="Europe/Berlin",
            days_of_month=(-1, -2),
            weekdays=(1, 2, 3, 4, 5),
            start=time(22),
            end=time(2),
            raise_by=2,
            match=AlertMatcher(dag_ids=("finance_*",)),
        ),
        # the defaults: every day, all day, UTC, one level, every alert
        CriticalWindow(name="everything", timezone="UTC", start=time(0), end=time(0), raise_by=1, match=None),
    )


def test_no_critical_windows_by_default() -> None:
    assert AlertPolicy.from_dict({}).classifier.critical_windows == ()


def test_critical_window_from_yaml_behaves_as_written() -> None:
    policy = AlertPolicy.from_yaml(
        "classification:\n"
        "  business_hours: {timezone: Europe/Berlin, off_hours_lower_by: 1}\n"
        "  critical_windows:\n"
        "    - name: month-end\n"
        "      timezone: Europe/Berlin\n"
        "      days_of_month: [-1]\n"
        "      start: 18:00\n"
        "      end: 6:00\n"
        "      match: {dag_ids: [finance_*]}\n"
    )
    # Monday 2026-11-30, 21:00 in Berlin: outside business hours, inside the month-end evening
    late = datetime(2026, 11, 30, 20, 0, tzinfo=timezone.utc)

    finance = policy.classifier.classify(alert(dag_id="finance_close", occurred_at=late))
    other = policy.classifier.classify(alert(occurred_at=late))

    assert finance.severity is Severity.MEDIUM  # medium, lowered off-hours, raised back
    assert finance.reasons[-2:] == (
        "outside business hours: lowered to low",
        "inside critical window month-end (2026-11-30 Europe/Berlin; dag finance_close): raised to medium",
    )
    assert other.severity is Severity.LOW


BAD_WINDOWS: list[tuple[str, Any, str, str]] = [
    # id, data, exact path, a fragment the message must contain
    ("not_a_list", {"classification": {"critical_windows": {"name": "w"}}}, WINDOWS, "list"),
    ("item_not_mapping", _windows("month-end"), f"{WINDOWS}[0]", "mapping"),
    ("missing_name", _windows({"days_of_month": [-1]}), f"{WINDOWS}[0].name", "required"),
    ("empty_name", _windows({"name": " "}), f"{WINDOWS}[0].name", "non-empty"),
    ("name_not_string", _windows({"name": 3}), f"{WINDOWS}[0].name", "non-empty"),
    ("unknown_field", _windows({"name": "w", "days": [1]}), f"{WINDOWS}[0].days", "unknown field"),
    ("day_zero", _windows({"name": "w", "days_of_month": [-1, 0]}), f"{WINDOWS}[0].days_of_month[1]", "0"),
    ("day_32", _windows({"name": "w", "days_of_month": [32]}), f"{WINDOWS}[0].days_of_month[0]", "31"),
    (
        "day_minus_32",
        _windows({"name": "w", "days_of_month": [-32]}),
        f"{WINDOWS}[0].days_of_month[0]",
        "-31",
    ),
    (
        "day_string",
        _windows({"name": "w", "days_of_month": ["-1"]}),
        f"{WINDOWS}[0].days_of_month[0]",
        "integer",
    ),
    (
        "days_not_list",
        _windows({"name": "w", "days_of_month": "last"}),
        f"{WINDOWS}[0].days_of_month",
        "list",
    ),
    ("weekday_8", _windows({"name": "w", "weekdays": [1, 8]}), f"{WINDOWS}[0].weekdays[1]", "7"),
    ("weekday_0", _windows({"name": "w", "weekdays": [0]}), f"{WINDOWS}[0].weekdays[0]", "1"),
    ("bad_start", _windows({"name": "w", "start": "25:00"}), f"{WINDOWS}[0].start", "25:00"),
    ("bad_end", _windows({"name": "w", "end": "6pm"}), f"{WINDOWS}[0].end", "6pm"),
    ("raise_by_zero", _windows({"name": "w", "raise_by": 0}), f"{WINDOWS}[0].raise_by", "1"),
    ("raise_by_negative", _windows({"name": "w", "raise_by": -1}), f"{WINDOWS}[0].raise_by", "-1"),
    ("raise_by_too_big", _windows({"name": "w", "raise_by": 4}), f"{WINDOWS}[0].raise_by", "4"),
    ("raise_by_not_int", _windows({"name": "w", "raise_by": "1"}), f"{WINDOWS}[0].raise_by", "integer"),
    (
        "unknown_zone",
        _windows({"name": "w", "timezone": "Mars/Olympus_Mons"}),
        f"{WINDOWS}[0].timezone",
        "Mars/Olympus_Mons",
    ),
    (
        "second_window_named",
        _windows({"name": "a"}, {"name": "b", "timezone": "Europe/Berlln"}),
        f"{WINDOWS}[1].timezone",
        "Europe/Berlln",
    ),
    (
        "match_unknown_field",
        _windows({"name": "w", "match": {"dag": ["x"]}}),
        f"{WINDOWS}[0].match.dag",
        "unknown",
    ),
    (
        "match_bad_regex",
        _windows({"name": "w", "match": {"message_patterns": ["(["]}}),
        f"{WINDOWS}[0].match.message_patterns[0]",
        "regular expression",
    ),
    ("match_not_mapping", _windows({"name": "w", "match": ["x"]}), f"{WINDOWS}[0].match", "mapping"),
]


@pytest.mark.parametrize(
    ("data", "path", "fragment"), [pytest.param(d, p, f, id=i) for i, d, p, f in BAD_WINDOWS]
)
def test_bad_critical_window_names_the_field(data: Any, path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict(data)

    assert caught.value.path == path
    assert fragment in caught.value.problem


def test_bad_critical_window_in_a_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("classification:\n  critical_windows:\n    - {name: close, days_of_month: [-1, 0]}\n")

    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_yaml(path)

    assert caught.value.path == "policy(p.yaml).classification.critical_windows[0].days_of_month[1]"
