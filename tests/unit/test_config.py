"""``[alerting]`` settings: parsing, validation and ``AIRFLOW__ALERTING__*`` overrides."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterator

import pytest

from airflow_alerting.config import OPTIONS, AlertingSettings, load_settings


@pytest.fixture(scope="module", autouse=True)
def _isolated_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Airflow reads AIRFLOW_HOME once, on first import; without this the first test that
    # imports it would read (and create) ~/airflow on the developer's machine.
    with pytest.MonkeyPatch.context() as mp:
        if "airflow.configuration" not in sys.modules and "AIRFLOW_HOME" not in os.environ:
            mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        yield


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Overrides from the developer's shell or CI would otherwise change expected values.
    for name in list(os.environ):
        if name.startswith("AIRFLOW__ALERTING__") or name in {
            "AIRFLOW__API__BASE_URL",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT",
        }:
            monkeypatch.delenv(name)


def _env(option: str) -> str:
    return f"AIRFLOW__ALERTING__{option.upper()}"


def test_airflow_conf_reads_environment_at_get_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings relies on this instead of caching; if Airflow ever snapshots the
    # environment at import time, overrides set after import would silently be ignored.
    from airflow.configuration import conf

    assert conf.get("alerting", "slack_channel", fallback="#fallback") in {"#alerts", "#fallback"}
    monkeypatch.setenv(_env("slack_channel"), "#late")
    assert conf.get("alerting", "slack_channel", fallback="#fallback") == "#late"


def test_defaults() -> None:
    settings = AlertingSettings.defaults()
    assert settings == AlertingSettings(
        state_backend="variables",
        sql_conn_id="",
        slack_conn_id="slack_api_default",
        slack_webhook_conn_id="slack_default",
        slack_channel="#alerts",
        smtp_conn_id="smtp_default",
        email_to=(),
        email_from="",
        pagerduty_conn_id="pagerduty_events_default",
        base_url="",
        policy_file="",
        policy_variable="",
        callback_deadline_seconds=30.0,
        delivery_attempts=3,
        delivery_timeout_seconds=10.0,
        allowed_http_hosts=("127.0.0.1", "localhost", "::1"),
        history_limit=500,
        maintenance_schedule="*/5 * * * *",
    )


def test_every_option_has_exactly_one_field() -> None:
    assert [field.name for field in dataclasses.fields(AlertingSettings)] == list(OPTIONS)


def test_settings_are_frozen() -> None:
    settings = AlertingSettings.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.state_backend = "sql"  # type: ignore[misc]


ENV_OVERRIDES = [
    # (environment, field, expected value)
    ({"STATE_BACKEND": "sql", "SQL_CONN_ID": "alerting_db"}, "state_backend", "sql"),
    ({"STATE_BACKEND": " Memory "}, "state_backend", "memory"),
    ({"SQL_CONN_ID": "alerting_db"}, "sql_conn_id", "alerting_db"),
    ({"SLACK_CONN_ID": "slack_bot"}, "slack_conn_id", "slack_bot"),
    ({"SLACK_WEBHOOK_CONN_ID": "hook"}, "slack_webhook_conn_id", "hook"),
    ({"SLACK_CHANNEL": "#data-alerts"}, "slack_channel", "#data-alerts"),
    ({"SMTP_CONN_ID": "smtp_ops"}, "smtp_conn_id", "smtp_ops"),
    (
        {"EMAIL_TO": "a@example.com, b@example.com,,a@example.com"},
        "email_to",
        ("a@example.com", "b@example.com"),
    ),
    ({"EMAIL_FROM": "Airflow <af@example.com>"}, "email_from", "Airflow <af@example.com>"),
    ({"PAGERDUTY_CONN_ID": "pd"}, "pagerduty_conn_id", "pd"),
    ({"BASE_URL": "https://airflow.example.com/"}, "base_url", "https://airflow.example.com"),
    ({"POLICY_FILE": "/etc/alerting.yaml"}, "policy_file", "/etc/alerting.yaml"),
    ({"POLICY_VARIABLE": "alerting_policy"}, "policy_variable", "alerting_policy"),
    ({"CALLBACK_DEADLINE_SECONDS": "12.5"}, "callback_deadline_seconds", 12.5),
    ({"DELIVERY_ATTEMPTS": "5"}, "delivery_attempts", 5),
    ({"DELIVERY_TIMEOUT_SECONDS": "2"}, "delivery_timeout_seconds", 2.0),
    ({"ALLOWED_HTTP_HOSTS": "Mock.Internal, [::1]"}, "allowed_http_hosts", ("mock.internal", "::1")),
    ({"ALLOWED_HTTP_HOSTS": ""}, "allowed_http_hosts", ()),
    ({"HISTORY_LIMIT": "0"}, "history_limit", 0),
]


@pytest.mark.parametrize(("env", "field", "expected"), ENV_OVERRIDES, ids=lambda v: str(v)[:40])
def test_env_override_reaches_load_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: object
) -> None:
    for option, value in env.items():
        monkeypatch.setenv(_env(option), value)
    assert getattr(load_settings(), field) == expected


def test_load_settings_does_not_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_env("delivery_attempts"), "4")
    assert load_settings().delivery_attempts == 4
    monkeypatch.setenv(_env("delivery_attempts"), "7")
    assert load_settings().delivery_attempts == 7


BAD_VALUES = [
    # (option, value, fragment of the problem)
    ("state_backend", "redis", "is not one of: variables, sql, memory"),
    ("state_backend", "", "is not one of"),
    ("callback_deadline_seconds", "-1", "> 0"),
    ("callback_deadline_seconds", "0", "> 0"),
    ("callback_deadline_seconds", "nan", "finite"),
    ("callback_deadline_seconds", "soon", "number of seconds"),
    ("delivery_attempts", "three", "whole number"),
    ("delivery_attempts", "2.5", "whole number"),
    ("delivery_attempts", "0", ">= 1"),
    ("delivery_timeout_seconds", "inf", "finite"),
    ("history_limit", "-5", ">= 0"),
    ("email_to", "oncall", "not an e-mail address"),
    ("email_from", "airflow", "not an e-mail address"),
    ("base_url", "airflow.example.com", "absolute http(s) URL"),
    ("base_url", "ftp://airflow.example.com", "absolute http(s) URL"),
    ("allowed_http_hosts", "http://localhost", "bare host name"),
    ("allowed_http_hosts", "localhost:8080", "without a port"),
    ("slack_channel", "#alerts\r\nBcc: x@example.com", "control characters"),
]


@pytest.mark.parametrize(("option", "value", "problem"), BAD_VALUES)
def test_bad_env_value_raises_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(_env(option), value)
    with pytest.raises(ValueError, match=re.escape(f"[alerting] {option}:")) as excinfo:
        load_settings()
    assert problem in str(excinfo.value)
    assert _env(option) in str(excinfo.value)


@pytest.mark.parametrize(("option", "value", "problem"), BAD_VALUES)
def test_bad_mapping_value_raises_naming_the_option(option: str, value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"[alerting] {option}:")) as excinfo:
        AlertingSettings.from_mapping({option: value})
    assert problem in str(excinfo.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [("delivery_attempts", True), ("delivery_attempts", 1.0), ("callback_deadline_seconds", [1])],
)
def test_mapping_rejects_wrongly_typed_values(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"[alerting] {option}:")):
        AlertingSettings.from_mapping({option: value})


def test_mapping_accepts_typed_values() -> None:
    settings = AlertingSettings.from_mapping(
        {"delivery_attempts": 2, "callback_deadline_seconds": 5, "email_to": ["x@example.com"]}
    )
    assert settings.delivery_attempts == 2
    assert settings.callback_deadline_seconds == 5.0
    assert settings.email_to == ("x@example.com",)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("[alerting] slack_chanel: unknown option")):
        AlertingSettings.from_mapping({"slack_chanel": "#x"})


def test_sql_backend_requires_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_env("state_backend"), "sql")
    with pytest.raises(ValueError, match=re.escape("[alerting] sql_conn_id:")):
        load_settings()


def test_deadline_must_stay_below_the_dag_processor_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", "20")
    monkeypatch.setenv(_env("callback_deadline_seconds"), "20")
    with pytest.raises(ValueError, match=re.escape("[alerting] callback_deadline_seconds:")) as excinfo:
        load_settings()
    assert "[dag_processor] dag_file_processor_timeout (20)" in str(excinfo.value)
    monkeypatch.setenv(_env("callback_deadline_seconds"), "15")
    assert load_settings().callback_deadline_seconds == 15.0


@pytest.mark.parametrize(
    ("alerting_url", "api_url", "expected"),
    [
        ("", "https://api.example.com/airflow/", "https://api.example.com/airflow"),
        ("https://ui.example.com", "https://api.example.com", "https://ui.example.com"),
        # [api] base_url follows Airflow's rules, not ours: an unusable one means "no links".
        ("", "/relative", ""),
        ("", "", ""),
    ],
)
def test_base_url_falls_back_to_api_base_url(
    monkeypatch: pytest.MonkeyPatch, alerting_url: str, api_url: str, expected: str
) -> None:
    monkeypatch.setenv(_env("base_url"), alerting_url)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", api_url)
    assert load_settings().base_url == expected
