"""Generated ``[alerting]`` values: loading never raises, good values round-trip, bad ones fall back.

Each example sets one ``AIRFLOW__ALERTING__<OPTION>`` and reads the configuration the way an alert
does (:func:`~airflow_alerting.config.load_settings`), so Airflow's own reading of the value
(environment-variable expansion included) is part of what is tested.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_alerting import config, metrics
from airflow_alerting.config import OPTIONS, STATE_BACKENDS, AlertingSettings, load_settings

# Each example reads Airflow's configuration ~20 times; keep the run in seconds, not minutes.
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Airflow's default [dag_processor] dag_file_processor_timeout; deadlines must stay below it
PROCESSOR_TIMEOUT = 50.0

_VALID_POLICY = "routing:\n  matrix:\n    medium: [email]\n"
_POLICY_DIR = Path(os.environ["AIRFLOW_HOME"]) / "fuzz-policies"
_POLICY_DIR.mkdir(exist_ok=True)
for _name, _content in {
    "valid.yaml": _VALID_POLICY.encode(),
    "malformed.yaml": b"routing: [unclosed\n",
    "invalid.yaml": b"routing:\n  matrix:\n    medium: [sms]\n",
    "binary.yaml": b"\xff\xfe\x00routing",
    "not-a-mapping.yaml": b"- email\n- slack\n",
}.items():
    (_POLICY_DIR / _name).write_bytes(_content)


def _env(option: str) -> str:
    return f"AIRFLOW__ALERTING__{option.upper()}"


def _env_safe(text: str) -> bool:
    # what os.environ can hold: no NUL, and only the lone surrogates surrogateescape can encode
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return "\x00" not in text


@contextmanager
def _only(option: str, value: str) -> Iterator[None]:
    """The environment with no [alerting] override except ``option = value``."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AIRFLOW__ALERTING__") or name in {
                "AIRFLOW__API__BASE_URL",
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT",
            }:
                mp.delenv(name)
        mp.setenv(_env(option), value)
        # nothing else may depend on what an earlier example reported
        mp.setattr(config, "_REPORTED", set())
        yield


class _Reports:
    """Errors logged and ``config_errors`` counted while loading."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.counted: list[tuple[str, ...]] = []


@contextmanager
def _reports() -> Iterator[_Reports]:
    reports = _Reports()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                reports.errors.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("airflow_alerting.config")
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(
                metrics,
                "count",
                lambda name, n=1, **tags: reports.counted.extend(
                    [(name.removeprefix("alerting."), tags["option"])] * n
                ),
            )
            yield reports
    finally:
        logger.removeHandler(handler)


def _load(option: str, value: str) -> tuple[AlertingSettings, AlertingSettings, str, _Reports]:
    """Load with ``option = value``: the settings, the baseline without it, what Airflow read, reports."""
    with _only(option, value):
        from airflow.configuration import conf

        seen = conf.get("alerting", option)
        with _reports() as reports:
            loaded = load_settings()
        assert config.read_settings().settings == loaded
    with _only(option, OPTIONS[option].default):
        baseline = load_settings()
    return loaded, baseline, seen, reports


def _assert_fell_back(option: str, value: str) -> None:
    loaded, baseline, _, reports = _load(option, value)
    assert getattr(loaded, option) == getattr(baseline, option)
    [error] = [e for e in reports.errors if e.startswith(f"[alerting] {option}: ")]
    assert _env(option) in error
    assert " instead" in error
    assert ("config_errors", option) in reports.counted


def _assert_kept(option: str, value: str, expected: object) -> None:
    loaded, _, _, reports = _load(option, value)
    assert reports.errors == []
    assert reports.counted == []
    assert getattr(loaded, option) == expected


# --- strategies -------------------------------------------------------------------------------

_PADDING = st.sampled_from(["", " ", "  "])
_WORD = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True)
_ADDRESS = st.builds(lambda local, host: f"{local}@{host}", _WORD, _HOST)
_CONTROL = st.sampled_from([chr(c) for c in (*range(1, 32), 127)])
_ANY_TEXT = st.text(max_size=40).filter(_env_safe)


def _padded(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda pad, value, tail: pad + value + tail, _PADDING, text, _PADDING)


def _with_control_char(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # inside the value, so stripping the ends does not remove it
    return st.builds(lambda a, c, b: a + c + b, text, _CONTROL, text)


def _seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, exclude_min=True, exclude_max=True, allow_nan=False)


#: option -> strategy of (value, expected typed value) for values that must be kept
VALID: dict[str, st.SearchStrategy[tuple[str, object]]] = {
    "state_backend": st.builds(
        lambda name, upper, pad: (pad + (name.upper() if upper else name) + pad, name),
        st.sampled_from([b for b in STATE_BACKENDS if b != "sql"]),  # sql needs sql_conn_id too
        st.booleans(),
        _PADDING,
    ),
    **{
        option: st.builds(lambda pad, word: (pad + word + pad, word), _PADDING, _WORD)
        for option in (
            "sql_conn_id",
            "slack_conn_id",
            "slack_webhook_conn_id",
            "smtp_conn_id",
            "pagerduty_conn_id",
            "policy_variable",
            "silences_variable",
        )
    },
    "slack_channel": st.builds(lambda word: ("#" + word, "#" + word), _WORD),
    "email_to": st.lists(_ADDRESS, min_size=1, max_size=4).map(
        lambda addresses: (" , ".join(addresses), tuple(dict.fromkeys(addresses)))
    ),
    "email_from": st.one_of(
        _ADDRESS.map(lambda a: (a, a)),
        st.builds(lambda name, a: (f"{name} <{a}>", f"{name} <{a}>"), _WORD, _ADDRESS),
    ),
    "base_url": st.builds(
        lambda scheme, host, path: (f"{scheme}://{host}{path}", f"{scheme}://{host}{path}".rstrip("/")),
        st.sampled_from(["http", "https"]),
        _HOST,
        st.sampled_from(["", "/", "/airflow", "/airflow/"]),
    ),
    "policy_file": st.just((str(_POLICY_DIR / "valid.yaml"), str(_POLICY_DIR / "valid.yaml"))),
    "callback_deadline_seconds": _seconds(0, PROCESSOR_TIMEOUT).map(lambda s: (repr(s), s)),
    "delivery_attempts": st.builds(lambda n, pad: (f"{pad}{n}{pad}", n), st.integers(1, 10**6), _PADDING),
    "delivery_timeout_seconds": _seconds(0, 1e6).map(lambda s: (repr(s), s)),
    "allowed_http_hosts": st.lists(_HOST, max_size=4, unique=True).map(
        lambda hosts: (",".join(hosts), tuple(hosts))
    ),
    "history_limit": st.builds(lambda n, pad: (f"{pad}{n}{pad}", n), st.integers(0, 10**6), _PADDING),
    "maintenance_schedule": st.one_of(
        st.sampled_from(
            ["@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"]
        ),
        st.builds(lambda m, h: f"{m} {h} * * *", st.integers(0, 59), st.sampled_from(["*", "*/2", "3"])),
    ).map(lambda schedule: (schedule, schedule)),
    "zero_touch": st.builds(
        lambda word, upper, pad: (
            pad + (word.upper() if upper else word) + pad,
            word in ("true", "1", "yes", "on"),
        ),
        st.sampled_from(["true", "false", "1", "0", "yes", "no", "on", "off"]),
        st.booleans(),
        _PADDING,
    ),
}

#: option -> strategy of values that must fall back to the default
INVALID: dict[str, st.SearchStrategy[str]] = {
    "state_backend": _ANY_TEXT.filter(lambda s: s.strip().lower() not in STATE_BACKENDS),
    **{
        option: _with_control_char(_WORD)
        for option in (
            "sql_conn_id",
            "slack_conn_id",
            "slack_webhook_conn_id",
            "slack_channel",
            "smtp_conn_id",
            "pagerduty_conn_id",
            "policy_variable",
            "silences_variable",
        )
    },
    "email_to": st.one_of(
        _WORD,
        st.lists(_ADDRESS, max_size=3).flatmap(lambda good: _WORD.map(lambda bad: ",".join([*good, bad]))),
        _with_control_char(_ADDRESS),
    ),
    "email_from": st.one_of(_WORD, _with_control_char(_ADDRESS)),
    "base_url": st.one_of(
        _HOST,
        _HOST.map(lambda h: f"ftp://{h}"),
        st.just("http://"),
        _HOST.map(lambda h: f"https://[{h}"),
    ),
    "policy_file": st.one_of(
        st.sampled_from(
            ["malformed.yaml", "invalid.yaml", "binary.yaml", "not-a-mapping.yaml", "missing.yaml"]
        ).map(lambda name: str(_POLICY_DIR / name)),
        st.just(str(_POLICY_DIR)),  # a directory
        _WORD.map(lambda w: f"/nonexistent/{w}.yaml"),
    ),
    "callback_deadline_seconds": st.one_of(
        st.floats(max_value=0).map(repr),
        st.floats(min_value=PROCESSOR_TIMEOUT).map(repr),  # includes inf
        st.sampled_from(["nan", "-nan", "soon", "", "30s", "1e400"]),
        _WORD,
    ),
    "delivery_attempts": st.one_of(
        st.integers(max_value=0).map(str),
        st.floats(allow_nan=True)
        .filter(lambda f: not f.is_integer() if math.isfinite(f) else True)
        .map(repr),
        st.sampled_from(["three", "", "1e3", "0x10", "True"]),
    ),
    "delivery_timeout_seconds": st.one_of(
        st.floats(max_value=0).map(repr),
        st.sampled_from(["inf", "nan", "-inf", "", "ten"]),
    ),
    "allowed_http_hosts": st.one_of(
        st.builds(lambda h, port: f"{h}:{port}", _HOST, st.integers(0, 65535)),
        _HOST.map(lambda h: f"http://{h}"),
        st.builds(lambda a, b: f"{a} {b}", _HOST, _HOST),
        st.lists(_HOST, max_size=2).flatmap(lambda good: _HOST.map(lambda h: ",".join([*good, h + "/x"]))),
    ),
    "history_limit": st.one_of(
        st.integers(max_value=-1).map(str), st.sampled_from(["lots", "", "1.5", "-0.5"])
    ),
    "maintenance_schedule": st.one_of(
        st.sampled_from(["", "every five minutes", "*/5 * * *", "@reboot", "61 * * * *", "* 25 * * *"]),
        _with_control_char(st.just("*/5 * * * *")),
    ),
    "zero_touch": st.one_of(
        st.sampled_from(["", "enabled", "2", "y", "truee"]),
        _WORD.filter(lambda w: w.lower() not in {"true", "false", "yes", "no", "on", "off"}),
    ),
}


def test_every_option_is_generated() -> None:
    assert set(VALID) == set(OPTIONS)
    assert set(INVALID) == set(OPTIONS)


# --- properties -----------------------------------------------------------------------------------


def _each_option(test: Callable[..., None]) -> Any:
    return pytest.mark.parametrize("option", list(OPTIONS))(test)


@_each_option
@FUZZ
@given(data=st.data())
def test_valid_values_round_trip(option: str, data: st.DataObject) -> None:
    value, expected = data.draw(VALID[option])
    _assert_kept(option, value, expected)


@_each_option
@FUZZ
@given(data=st.data())
def test_invalid_values_fall_back_to_the_default_and_are_reported(option: str, data: st.DataObject) -> None:
    value = data.draw(INVALID[option].filter(_env_safe))
    _assert_fell_back(option, value)


@_each_option
@FUZZ
@given(value=_ANY_TEXT)
def test_any_value_is_either_kept_or_reported_and_replaced(option: str, value: str) -> None:
    loaded, baseline, seen, reports = _load(option, value)

    # state_backend = sql is reported under sql_conn_id, the option that is missing
    related = {option, "sql_conn_id"} if option == "state_backend" else {option}
    reported = [e for e in reports.errors if any(e.startswith(f"[alerting] {o}: ") for o in related)]
    if reported:
        assert getattr(loaded, option) == getattr(baseline, option)
        assert {parts[1] for parts in reports.counted} & related
    else:
        # not reported: then it is exactly what the validating constructor makes of it
        assert getattr(loaded, option) == getattr(AlertingSettings.from_mapping({option: seen}), option)
    assert reports.errors == [] or reported, "only the option that was set may be reported"


@FUZZ
@given(values=st.fixed_dictionaries({}, optional={o: _ANY_TEXT for o in OPTIONS}))
def test_load_settings_never_raises_whatever_the_whole_section_holds(values: dict[str, str]) -> None:
    with _only("slack_channel", values.pop("slack_channel", "#alerts")), pytest.MonkeyPatch.context() as mp:
        for option, value in values.items():
            mp.setenv(_env(option), value)
        with _reports() as reports:
            settings = load_settings()
    assert isinstance(settings, AlertingSettings)
    assert settings.delivery_attempts >= 1
    assert 0 < settings.callback_deadline_seconds < PROCESSOR_TIMEOUT
    assert settings.state_backend in STATE_BACKENDS
    # every reported problem names an option that was set (or the sql pair), once per log line
    assert {parts[1] for parts in reports.counted} <= {*values, "slack_channel", "sql_conn_id"}
    assert len(reports.errors) == len(reports.counted)


# --- the cron check's fast path ------------------------------------------------------------------

_CRON_PART = st.one_of(
    st.just("*"),
    st.integers(-1, 70).map(str),
    st.tuples(st.integers(0, 65), st.integers(0, 65)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.sampled_from(["MON", "JAN", "L", "5#2", "?", "", "*/", "1/x", "²", "05", "0-"]),
)
_CRON_FIELD = st.builds(
    lambda parts, step: ",".join(parts) + (f"/{step}" if step is not None else ""),
    st.lists(_CRON_PART, min_size=1, max_size=3),
    st.one_of(st.none(), st.integers(0, 70)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_CRON_FIELD, min_size=4, max_size=6).map(" ".join))
def test_the_cron_fast_path_never_accepts_what_croniter_rejects(text: str) -> None:
    from croniter import croniter

    from airflow_alerting.config_validation import _plainly_cron

    if _plainly_cron(text):
        assert croniter.is_valid(text), text


def test_the_usual_schedules_are_checked_without_croniter() -> None:
    from airflow_alerting.config_validation import _plainly_cron

    for text in ("*/5 * * * *", "0 * * * *", "0 3 * * 1-5", "15,45 8-18/2 1 1,6 0"):
        assert _plainly_cron(text), text
    for text in ("0 3 * * MON", "61 * * * *", "*/5 * * *", "0 0 L * *", "0 0 * * 7"):
        assert not _plainly_cron(text), text
