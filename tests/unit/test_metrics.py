"""Metrics never raise into the alert pipeline, whatever the names and whatever the backend does."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting import metrics

_SAFE_NAME = re.compile(r"alerting(\.[A-Za-z0-9_.-]+)*")


class RecordingStats:
    """Stands in for Airflow's ``Stats``: records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def incr(self, name: str, count: int) -> None:
        self.calls.append(("incr", name, count))

    def timing(self, name: str, milliseconds: float) -> None:
        self.calls.append(("timing", name, milliseconds))


class BrokenStats:
    """A backend that fails every call, as a misconfigured StatsD/OpenTelemetry client can."""

    def incr(self, name: str, count: int) -> None:
        raise OSError("statsd host unreachable")

    def timing(self, name: str, milliseconds: float) -> None:
        raise ValueError(f"invalid metric name {name}")


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> RecordingStats:
    recorder = RecordingStats()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    return recorder


def test_names_are_joined_and_made_safe(stats: RecordingStats) -> None:
    metrics.incr("config_errors", "delivery attempts/\udcff", count=2)
    metrics.timing(1.5, "delivery_latency", "ops-slack")

    assert stats.calls == [
        ("incr", "alerting.config_errors.delivery_attempts__", 2),
        ("timing", "alerting.delivery_latency.ops-slack", 1500.0),
    ]


@pytest.mark.parametrize(
    "stats_factory",
    [
        pytest.param(BrokenStats, id="backend-raises"),
        pytest.param(
            lambda: (_ for _ in ()).throw(RuntimeError("[metrics] misconfigured")), id="import-fails"
        ),
        pytest.param(lambda: object(), id="backend-without-methods"),
    ],
)
def test_a_broken_backend_never_raises(monkeypatch: pytest.MonkeyPatch, stats_factory: Any) -> None:
    monkeypatch.setattr(metrics, "_stats", stats_factory)

    metrics.incr("sent", "slack")
    metrics.timing(0.25, "delivery_latency", "slack")


def test_wrongly_typed_arguments_never_raise(stats: RecordingStats) -> None:
    metrics.incr("suppressed", None, 5)  # type: ignore[arg-type]
    metrics.timing("soon", "delivery_latency")  # type: ignore[arg-type]
    metrics.incr("sent", count="many")  # type: ignore[arg-type]

    assert stats.calls[0] == ("incr", "alerting.suppressed.5", 1)


def test_no_backend_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_stats", lambda: None)
    metrics.incr("sent", "slack")
    metrics.timing(1.0, "delivery_latency")


def test_the_real_airflow_backend_takes_hostile_names() -> None:
    # Airflow's own Stats, unconfigured (no StatsD/OTel): the full path, no stand-ins
    metrics.incr("config_errors", "\udcff\ud800 \n", count=1)
    metrics.timing(float("nan"), "x" * 1000)


_PART = st.one_of(st.text(), st.none(), st.integers(), st.floats())


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_PART, max_size=5), count=st.integers(-(10**6), 10**6), seconds=st.floats())
def test_any_name_is_emitted_safely(parts: list[Any], count: int, seconds: float) -> None:
    recorder = RecordingStats()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_stats", lambda: recorder)
        metrics.incr(*parts, count=count)
        metrics.timing(seconds, *parts)
    names = [name for _, name, _ in recorder.calls]
    assert len(names) == 2
    for name in names:
        assert _SAFE_NAME.fullmatch(name), name
        assert len(name) <= 250
        name.encode("ascii")  # what a StatsD datagram needs


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_PART, max_size=5))
def test_a_broken_backend_never_raises_for_any_name(parts: list[Any]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_stats", BrokenStats)
        metrics.incr(*parts)
        metrics.timing(1.0, *parts)
