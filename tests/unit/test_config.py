"""``[alerting]`` settings: parsing, validation and ``AIRFLOW__ALERTING__*`` overrides."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import config, metrics
from airflow_alerting.config import (
    OPTIONS,
    AlertingSettings,
    LoadedSettings,
    check_settings,
    load_settings,
    read_settings,
)


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


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # check_settings reports a problem once per process; each test starts with none reported
    monkeypatch.setattr(config, "_REPORTED", set())
    monkeypatch.setattr(config, "_CHECKED", {})


@pytest.fixture
def metric_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(
        metrics,
        "count",
        lambda name, n=1, **tags: calls.extend([(name.removeprefix("alerting."), tags["option"])] * n),
    )
    return calls


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
        silences_variable="",
        callback_deadline_seconds=15.0,
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
    # policy_file: the file must exist and validate, see test_a_usable_policy_file_is_kept
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
    ("policy_variable", "alerting\npolicy", "control characters"),
    ("maintenance_schedule", "every five minutes", "cron expression"),
    ("maintenance_schedule", "*/5 * * *", "cron expression"),
    ("zero_touch", "sometimes", "True or False"),
    ("base_url", "http://[::1", "absolute http(s) URL"),
]


@pytest.mark.parametrize(("option", "value", "problem"), BAD_VALUES)
def test_bad_env_value_falls_back_to_the_default_and_is_reported(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    metric_calls: list[tuple[str, ...]],
    option: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv(_env(option), value)

    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        settings = load_settings()

    assert getattr(settings, option) == getattr(AlertingSettings.defaults(), option)
    [record] = [r for r in caplog.records if r.name == "airflow_alerting.config"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith(f"[alerting] {option}: ")
    assert problem in message
    assert _env(option) in message
    assert repr(value)[:40] in message  # the bad value, as the operator wrote it
    assert "; using the default " in message
    assert metric_calls == [("config_errors", option)]


def test_each_bad_option_falls_back_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_env("delivery_attempts"), "three")
    monkeypatch.setenv(_env("state_backend"), "redis")
    monkeypatch.setenv(_env("slack_channel"), "#data-alerts")
    monkeypatch.setenv(_env("history_limit"), "9")

    loaded = read_settings()

    assert [p.option for p in loaded.problems] == ["state_backend", "delivery_attempts"]
    assert loaded.settings == dataclasses.replace(
        AlertingSettings.defaults(), slack_channel="#data-alerts", history_limit=9
    )
    assert load_settings() == loaded.settings


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


def test_sql_backend_without_a_connection_falls_back_to_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_env("state_backend"), "sql")

    loaded = read_settings()

    assert loaded.settings.state_backend == "variables"
    [problem] = loaded.problems
    assert problem.option == "sql_conn_id"
    assert problem.message.startswith("[alerting] sql_conn_id: must name a connection")
    assert problem.message.endswith("using state_backend 'variables' instead")
    with pytest.raises(ValueError, match=re.escape("[alerting] sql_conn_id:")):
        AlertingSettings.from_mapping({"state_backend": "sql"})


@pytest.mark.parametrize(
    ("processor_timeout", "deadline", "expected"),
    [
        # the option's default when that is still below the timeout
        ("50", "50", 15.0),
        ("50", "120", 15.0),
        # otherwise 60 % of the timeout
        ("20", "20", 12.0),
        ("10", None, 6.0),
    ],
)
def test_deadline_at_or_above_the_dag_processor_timeout_falls_back(
    monkeypatch: pytest.MonkeyPatch, processor_timeout: str, deadline: str | None, expected: float
) -> None:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", processor_timeout)
    if deadline is not None:
        monkeypatch.setenv(_env("callback_deadline_seconds"), deadline)

    loaded = read_settings()

    assert loaded.settings.callback_deadline_seconds == expected
    [problem] = loaded.problems
    assert problem.option == "callback_deadline_seconds"
    assert f"[dag_processor] dag_file_processor_timeout ({processor_timeout})" in problem.message
    assert f"using {expected:g}" in problem.message or f"using the default {expected:g}" in problem.message


def test_deadline_below_the_dag_processor_timeout_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", "20")
    monkeypatch.setenv(_env("callback_deadline_seconds"), "15")
    assert read_settings() == LoadedSettings(
        dataclasses.replace(AlertingSettings.defaults(), callback_deadline_seconds=15.0)
    )


@pytest.mark.parametrize("timeout", ["soon", "0", "-5", "nan"])
def test_an_unusable_dag_processor_timeout_is_not_ours_to_report(
    monkeypatch: pytest.MonkeyPatch, timeout: str
) -> None:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", timeout)
    monkeypatch.setenv(_env("callback_deadline_seconds"), "45")
    assert read_settings() == LoadedSettings(
        dataclasses.replace(AlertingSettings.defaults(), callback_deadline_seconds=45.0)
    )


def test_an_option_airflow_cannot_read_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.configuration import conf

    real_get = conf.get

    def get(section: str, key: str, **kwargs: Any) -> Any:
        if (section, key) == ("alerting", "slack_channel"):
            raise RuntimeError("slack_channel_cmd exited with status 1")
        return real_get(section, key, **kwargs)

    monkeypatch.setattr(conf, "get", get)

    loaded = read_settings()

    assert loaded.settings == AlertingSettings.defaults()
    [problem] = loaded.problems
    assert problem.option == "slack_channel"
    assert "could not be read (RuntimeError: slack_channel_cmd exited with status 1)" in problem.message
    assert problem.message.endswith("using the default '#alerts' instead")


# --- policy_file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid policy file and one of each kind of unusable one."""
    folder = tmp_path_factory.mktemp("policies")
    files = {
        "valid": "routing:\n  matrix:\n    medium: [email]\n",
        "malformed": "routing: [unclosed\n",
        "invalid": "routing:\n  matrix:\n    medium: [sms]\n",
        "binary": b"\xff\xfe\x00routing",
    }
    paths = {}
    for name, content in files.items():
        path = folder / f"{name}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        paths[name] = path
    paths["missing"] = folder / "missing.yaml"
    paths["directory"] = folder
    return paths


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "cannot read policy file: No such file or directory"),
        ("directory", "cannot read policy file"),
        ("malformed", "invalid YAML"),
        ("invalid", "policy(invalid.yaml).routing.matrix.medium[0]: undeclared channel 'sms'"),
        ("binary", "codec can't decode"),
    ],
)
def test_an_unusable_policy_file_falls_back_to_the_default_policy(
    monkeypatch: pytest.MonkeyPatch, policy_files: dict[str, Path], kind: str, fragment: str
) -> None:
    monkeypatch.setenv(_env("policy_file"), str(policy_files[kind]))

    loaded = read_settings()

    assert loaded.settings.policy_file == ""
    [problem] = loaded.problems
    assert problem.option == "policy_file"
    assert problem.message.startswith(
        f"[alerting] policy_file: {str(policy_files[kind])!r} is not a usable policy: "
    )
    assert fragment in problem.message
    assert "\n" not in problem.message  # one log line, even for multi-line YAML errors
    assert problem.message.endswith("using the default '' (the built-in default policy) instead")


def test_a_usable_policy_file_is_kept(monkeypatch: pytest.MonkeyPatch, policy_files: dict[str, Path]) -> None:
    monkeypatch.setenv(_env("policy_file"), str(policy_files["valid"]))
    assert read_settings() == LoadedSettings(
        dataclasses.replace(AlertingSettings.defaults(), policy_file=str(policy_files["valid"]))
    )


# --- reporting ----------------------------------------------------------------------------------


def test_load_settings_reports_on_every_call(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, metric_calls: list[tuple[str, ...]]
) -> None:
    # once per alert: the task log of every affected alert shows why it behaved as it did
    monkeypatch.setenv(_env("delivery_attempts"), "three")
    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        load_settings()
        load_settings()
    assert len([r for r in caplog.records if "delivery_attempts" in r.getMessage()]) == 2
    assert metric_calls == [("config_errors", "delivery_attempts")] * 2


def test_check_settings_reports_each_problem_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, metric_calls: list[tuple[str, ...]]
) -> None:
    # a DAG file builds several notifiers, each of which checks the configuration
    monkeypatch.setenv(_env("delivery_attempts"), "three")
    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        problems = [check_settings() for _ in range(3)]
        monkeypatch.setenv(_env("delivery_attempts"), "four")
        check_settings()
    assert all(len(found) == 1 for found in problems)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "'three'" in messages[0] and "'four'" in messages[1]
    assert metric_calls == [("config_errors", "delivery_attempts")] * 2


def test_check_settings_reads_the_configuration_again_only_when_the_environment_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # hundreds of notifiers in one DAG file must not each pay for reading the whole section
    reads = []
    real = config.read_settings
    monkeypatch.setattr(config, "read_settings", lambda: reads.append(1) or real())

    monkeypatch.setenv(_env("delivery_attempts"), "three")
    first = [check_settings() for _ in range(5)]
    monkeypatch.setenv(_env("delivery_attempts"), "4")
    second = [check_settings() for _ in range(5)]

    assert len(reads) == 2
    assert [len(found) for found in first + second] == [1] * 5 + [0] * 5


def test_check_settings_without_problems_is_silent(
    caplog: pytest.LogCaptureFixture, metric_calls: list[tuple[str, ...]]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_alerting"):
        assert check_settings() == ()
    assert caplog.records == []
    assert metric_calls == []


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
