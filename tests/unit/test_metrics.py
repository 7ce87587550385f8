"""Metrics: the catalogue, its documentation, the names and tags sent, and that nothing ever raises."""

from __future__ import annotations

import ast
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.metrics import CATALOGUE, MetricType
from airflow_alerting.model import Alert, AlertKind, DeliveryResult
from airflow_alerting.policy import AlertPolicy, EscalationPolicy
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "airflow_alerting"
DOCS = ROOT / "docs" / "metrics.md"
_SAFE_NAME = re.compile(r"alerting(\.[A-Za-z0-9_.-]+)*")


class RecordingStats:
    """Stands in for Airflow's ``Stats``: records what it is given, tags included."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str] | None]] = []

    def incr(self, name: str, count: int = 1, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("incr", name, count, tags))

    def gauge(self, name: str, value: float, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("gauge", name, value, tags))

    def timing(self, name: str, milliseconds: float, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("timing", name, milliseconds, tags))

    def names(self) -> list[str]:
        return [name for _, name, _, _ in self.calls]

    def tagged(self, name: str) -> list[dict[str, str] | None]:
        return [tags for _, n, _, tags in self.calls if n == name]


class BrokenStats:
    """A backend that fails every call, as a misconfigured StatsD/OpenTelemetry client can."""

    def incr(self, name: str, count: int = 1, **kwargs: Any) -> None:
        raise OSError("statsd host unreachable")

    def gauge(self, name: str, value: float, **kwargs: Any) -> None:
        raise OSError("statsd host unreachable")

    def timing(self, name: str, milliseconds: float, **kwargs: Any) -> None:
        raise ValueError(f"invalid metric name {name}")


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> RecordingStats:
    recorder = RecordingStats()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    monkeypatch.setattr(metrics, "_legacy_on", True)
    return recorder


# --- the catalogue ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CATALOGUE.values(), ids=list(CATALOGUE))
def test_names_pass_airflows_own_validators(spec: metrics.MetricSpec) -> None:
    from airflow.sdk._shared.observability.metrics.validators import (
        stat_name_default_handler,
        stat_name_otel_handler,
    )

    names = [spec.name]
    if spec.legacy_name is not None:
        names.append(
            spec.legacy_name.format(**dict.fromkeys(spec.name_variables, "state_unavailable_capped"))
        )
    for name in names:
        # raise InvalidStatsNameException on a bad name; "airflow" is the default statsd_prefix
        assert stat_name_default_handler(name) == name
        assert stat_name_otel_handler("airflow", name) == f"airflow.{name}"
        assert name.startswith("alerting.")


@pytest.mark.parametrize("spec", CATALOGUE.values(), ids=list(CATALOGUE))
def test_legacy_names_fold_only_low_cardinality_tags(spec: metrics.MetricSpec) -> None:
    assert set(spec.name_variables) <= set(spec.tags)
    assert "dag_id" not in spec.name_variables
    assert spec.description.strip()
    assert CATALOGUE[spec.name] is spec


def _documented() -> dict[str, tuple[str, tuple[str, ...], str | None, str]]:
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `alerting."):
            continue
        name, kind, tags, legacy, description = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[name.strip("`")] = (
            kind,
            tuple(t.strip().strip("`") for t in tags.split(",")) if tags != "-" else (),
            legacy.strip("`") if legacy != "-" else None,
            description,
        )
    return rows


def test_docs_list_every_metric_exactly_as_the_catalogue_declares_it() -> None:
    documented = _documented()

    assert set(documented) == set(CATALOGUE), "docs/metrics.md and metrics.CATALOGUE differ"
    for name, spec in CATALOGUE.items():
        assert documented[name] == (
            spec.type.value,
            spec.tags,
            spec.legacy_name,
            spec.description.replace("``", "`"),
        ), name


# --- every call site names a catalogue metric, and every catalogue metric has a call site -------


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _emitted() -> dict[str, MetricType]:
    """The metrics the source emits, resolved from its ``metrics.*`` calls; fails on a dynamic name."""
    found: dict[str, MetricType] = {}
    kinds = {"count": MetricType.COUNTER, "gauge": MetricType.GAUGE, "timer": MetricType.TIMER}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_metrics = path.name == "metrics.py" and path.parent == SRC
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if func.value.id != "metrics":
                    continue
                method = func.attr
            elif in_metrics and isinstance(func, ast.Name):
                method = func.id
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if method in kinds:
                name = _literal(node.args[0]) if node.args else None
                if name is None and in_metrics:
                    continue  # the helpers' own generic calls, e.g. count(name, ...) in incr
                assert name is not None, f"{where}: metrics.{method} needs a literal catalogue name"
                found[name] = kinds[method]
            elif method == "incr" and not in_metrics:
                parts = [_literal(arg) for arg in node.args]
                assert None not in parts, f"{where}: metrics.incr parts must be literals"
                found[metrics.metric_name(*parts)] = MetricType.COUNTER
            elif method == "incident_event":
                event = _literal(node.args[0]) if node.args else None
                if event is not None:
                    found[f"alerting.incidents.{event}"] = MetricType.COUNTER
            elif method == "timing" and not in_metrics:
                raise AssertionError(f"{where}: use metrics.timer with a catalogue name")
    return found


def _named_by_helpers() -> set[str]:
    """Metric names the call-site helpers of metrics.py choose at run time (decision, incident_event)."""
    tree = ast.parse((SRC / "metrics.py").read_text(encoding="utf-8"))
    return {
        node.value
        for function in tree.body
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if re.fullmatch(r"alerting\.[a-z_.]+", node.value)
    }


def test_every_emitted_metric_is_in_the_catalogue_with_its_type() -> None:
    for name, kind in _emitted().items():
        assert name in CATALOGUE, f"{name} is emitted but not in metrics.CATALOGUE / docs/metrics.md"
        assert CATALOGUE[name].type is kind, name


def test_every_catalogue_metric_is_emitted_somewhere() -> None:
    assert set(CATALOGUE) - set(_emitted()) - _named_by_helpers() == set()


# --- what is sent -------------------------------------------------------------------------------


def test_a_counter_is_sent_tagged_and_under_its_legacy_name(stats: RecordingStats) -> None:
    metrics.count("alerting.alerts.sent", channel="ops-slack", severity="high", reason="first", dag_id="etl")

    assert stats.calls == [
        ("incr", "alerting.sent.ops-slack", 1, None),
        (
            "incr",
            "alerting.alerts.sent",
            1,
            {"channel": "ops-slack", "severity": "high", "reason": "first", "dag_id": "etl"},
        ),
    ]


def test_legacy_names_follow_airflows_switch(stats: RecordingStats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_legacy_on", False)

    metrics.count("alerting.alerts.suppressed", reason="throttled", channel="slack")
    metrics.timer("alerting.delivery.latency", 0.25, channel="slack", outcome="ok")

    assert stats.calls == [
        ("incr", "alerting.alerts.suppressed", 1, {"reason": "throttled", "channel": "slack"}),
        ("timing", "alerting.delivery.latency", 250.0, {"channel": "slack", "outcome": "ok"}),
    ]


def test_the_legacy_switch_is_read_from_airflows_metrics_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_legacy_on", None)
    monkeypatch.setenv("AIRFLOW__METRICS__LEGACY_NAMES_ON", "False")
    assert metrics._legacy_names_on() is False
    monkeypatch.setattr(metrics, "_legacy_on", None)
    monkeypatch.setenv("AIRFLOW__METRICS__LEGACY_NAMES_ON", "True")
    assert metrics._legacy_names_on() is True


def test_undocumented_or_mistyped_metrics_are_not_sent(stats: RecordingStats) -> None:
    metrics.count("alerting.alerts.snet", channel="slack")
    metrics.timer("alerting.alerts.sent", 1.0)  # a counter, not a timer
    metrics.incr("not", "in", "the", "catalogue")

    assert stats.calls == []


def test_tag_values_are_made_safe_and_unknown_tags_dropped(stats: RecordingStats) -> None:
    metrics.count(
        "alerting.alerts.suppressed",
        reason="throttled",
        channel="a,b=c:d|e#f g\u00e9\udcff",
        severity=None,
        dag_id="x" * 500,
        secret="never-sent",
    )

    legacy, tagged = stats.calls
    assert legacy[1] == "alerting.suppressed.throttled"
    assert tagged[3] == {"reason": "throttled", "channel": "a_b_c_d_e_f_g__", "dag_id": "x" * 100}


def test_a_missing_folded_tag_is_named_unknown(stats: RecordingStats) -> None:
    metrics.count("alerting.config_errors")

    assert stats.names() == ["alerting.config_errors.unknown", "alerting.config_errors"]


def test_the_gauge_and_timers(stats: RecordingStats) -> None:
    metrics.gauge("alerting.outbox.due", 7)
    incident = SimpleNamespace(
        severity=SimpleNamespace(label="critical"),
        time_to_acknowledge=timedelta(minutes=2),
        time_to_resolve=None,
    )
    metrics.incident_event("acknowledged", incident)
    metrics.incident_event("resolved", incident)  # not resolved yet: counted, not timed

    assert stats.calls == [
        ("gauge", "alerting.outbox.due", 7, None),
        ("incr", "alerting.incidents.acknowledged", 1, {"severity": "critical"}),
        ("timing", "alerting.incident_time_to_acknowledge", 120_000.0, None),
        ("timing", "alerting.incidents.time_to_acknowledge", 120_000.0, {"severity": "critical"}),
        ("incr", "alerting.incidents.resolved", 1, {"severity": "critical"}),
    ]


# --- through the real pipeline ----------------------------------------------------------------------


def _failure(run: int, **overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "dag_id": "sales_etl",
        "task_id": "load_orders",
        "run_id": f"run_{run}",
        "exception_type": "PermissionError",
        "exception_mro": ("PermissionError", "OSError", "Exception"),
        "message": "role LOADER lacks USAGE on warehouse",
    }
    fields.update(overrides)
    return Alert(**fields)


def _manager(policy: AlertPolicy, channels: dict[str, Any] | None = None) -> AlertManager:
    chans = {name: RecordingChannel(name) for name in ("email", "slack", "pagerduty")}
    chans.update(channels or {})
    fast = DeliveryOptions(attempts=1, deadline=5, backoff_base=0.01, backoff_cap=0.02)
    return AlertManager(policy, store=MemoryStore(), channels=chans, clock=FrozenClock(), delivery=fast)


def test_the_pipeline_counts_classified_sent_suppressed_and_failed(stats: RecordingStats) -> None:
    failing_slack = RecordingChannel(
        "slack", (DeliveryResult("slack", ok=False, retryable=True, detail="HTTP 500"),)
    )
    manager = _manager(AlertPolicy(escalation=EscalationPolicy(after=0)), {"slack": failing_slack})

    manager.handle(_failure(1))  # high: e-mail delivered, Slack fails
    manager.handle(_failure(2))  # the same problem again: folded into the open incident

    assert (
        stats.tagged("alerting.alerts.classified")
        == [{"severity": "high", "kind": "task_failure", "dag_id": "sales_etl"}] * 2
    )
    assert {"channel": "email", "severity": "high", "reason": "first", "dag_id": "sales_etl"} in stats.tagged(
        "alerting.alerts.sent"
    )
    assert stats.tagged("alerting.delivery.failures")[0] == {
        "channel": "slack",
        "severity": "high",
        "reason": "first",
        "dag_id": "sales_etl",
    }
    # e-mail told the incident already; Slack's failed message is still queued, holding its window
    assert stats.tagged("alerting.alerts.suppressed") == [
        {"reason": "correlated", "channel": "email", "severity": "high", "dag_id": "sales_etl"},
        {"reason": "throttled", "channel": "slack", "severity": "high", "dag_id": "sales_etl"},
    ]
    assert stats.tagged("alerting.incidents.opened") == [{"severity": "high", "dag_id": "sales_etl"}]
    assert {t["outcome"] for t in stats.tagged("alerting.delivery.latency") if t} == {"ok", "failed"}
    assert "alerting.outbox.added" in stats.names()
    assert "alerting.failed.slack" in stats.names()


def test_every_handled_alert_times_its_callback_by_kind_and_store(stats: RecordingStats) -> None:
    manager = _manager(AlertPolicy())

    manager.handle(_failure(1))
    manager.handle(_failure(1, kind=AlertKind.TASK_SUCCESS))

    timed = [(value, tags) for call, name, value, tags in stats.calls if name == "alerting.callback.duration"]
    assert [tags for _, tags in timed] == [
        {"kind": "task_failure", "store": "MemoryStore"},
        {"kind": "task_success", "store": "MemoryStore"},
    ]
    assert all(value > 0 for value, _ in timed)


def test_a_failure_routed_nowhere_outside_business_hours_is_counted_as_outside_hours(
    stats: RecordingStats,
) -> None:
    # FrozenClock starts on a Monday at noon: outside weekend-only business hours
    policy = AlertPolicy.from_dict(
        {
            "classification": {
                "business_hours": {"timezone": "UTC", "days": [6, 7], "off_hours_lower_by": 3},
            }
        }
    )

    _manager(policy).handle(_failure(1))

    assert stats.tagged("alerting.alerts.suppressed") == [
        {"channel": "-", "severity": "low", "reason": "outside_hours", "dag_id": "sales_etl"}
    ]
    assert "alerting.suppressed.outside_hours" in stats.names()


def test_escalation_is_counted(stats: RecordingStats) -> None:
    manager = _manager(AlertPolicy(escalation=EscalationPolicy(after=2)))
    for run in range(3):
        manager.handle(
            _failure(
                run,
                exception_type="AssertionError",
                exception_mro=("AssertionError", "Exception"),
                message=f"row count mismatch: {run} != 100",
            )
        )

    assert stats.tagged("alerting.alerts.escalated") != []
    assert all(t and t["dag_id"] == "sales_etl" for t in stats.tagged("alerting.alerts.escalated"))


# --- real Airflow backends over UDP, in this process ----------------------------------------------


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def _received(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(65535).decode() for _ in range(count)]


@pytest.fixture
def airflow_stats(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Airflow's real Stats module, re-initialised by each test and restored afterwards."""
    from airflow.sdk._shared.observability.metrics import stats as module

    monkeypatch.setattr(module, "_factory", module._factory)
    monkeypatch.setattr(module, "_backend", None)
    monkeypatch.setattr(metrics, "_legacy_on", True)
    yield module
    module._backend = None


def test_airflows_statsd_logger_with_influxdb_tags(airflow_stats: Any, udp: socket.socket) -> None:
    from airflow.sdk._shared.observability.metrics.statsd_logger import get_statsd_logger
    from statsd import StatsClient

    port = udp.getsockname()[1]
    logger = get_statsd_logger(
        stats_class=StatsClient,
        host="127.0.0.1",
        port=port,
        prefix="airflow",
        influxdb_tags_enabled=True,
        statsd_influxdb_enabled=True,
    )
    airflow_stats.initialize(factory=lambda: logger, export_legacy_names=True)

    metrics.count("alerting.alerts.sent", channel="slack", severity="high", reason="first", dag_id="etl")

    assert _received(udp, 2) == [
        "airflow.alerting.sent.slack:1|c",
        "airflow.alerting.alerts.sent,channel=slack,severity=high,reason=first,dag_id=etl:1|c",
    ]


def test_airflows_dogstatsd_logger(airflow_stats: Any, udp: socket.socket) -> None:
    from airflow.sdk._shared.observability.metrics.datadog_logger import get_dogstatsd_logger

    logger = get_dogstatsd_logger(
        host="127.0.0.1", port=udp.getsockname()[1], namespace="airflow", datadog_metrics_tags=True
    )
    logger.dogstatsd.disable_buffering = True
    airflow_stats.initialize(factory=lambda: logger, export_legacy_names=True)

    metrics.timer("alerting.delivery.latency", 0.5, channel="pagerduty", outcome="failed")

    assert [line.strip() for line in _received(udp, 2)] == [
        "airflow.alerting.delivery_latency.pagerduty:500.0|ms",
        "airflow.alerting.delivery.latency:500.0|ms|#channel:pagerduty,outcome:failed",
    ]


# --- never raises ---------------------------------------------------------------------------------


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

    metrics.incr("outbox", "added")
    metrics.count("alerting.alerts.sent", channel="slack")
    metrics.gauge("alerting.outbox.due", 3)
    metrics.timer("alerting.delivery.latency", 0.25, channel="slack")
    metrics.decision(object())
    metrics.alert_handled(None)
    metrics.incident_event("opened", None)


def test_wrongly_typed_arguments_never_raise(stats: RecordingStats) -> None:
    metrics.incr("outbox", None, "added")  # type: ignore[arg-type]
    metrics.timer("alerting.delivery.latency", "soon")  # type: ignore[arg-type]
    metrics.incr("outbox", "added", count="many")  # type: ignore[arg-type]
    metrics.count("alerting.alerts.sent", channel=object())

    assert stats.calls[0] == ("incr", "alerting.outbox.added", 1, None)
    assert len(stats.calls) == 4


def test_no_backend_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_stats", lambda: None)
    metrics.incr("outbox", "added")
    metrics.timer("alerting.delivery.latency", 1.0)


def test_the_real_airflow_backend_takes_hostile_tags() -> None:
    # Airflow's own Stats as this process configured it (no StatsD/OTel): the full path
    metrics.count("alerting.config_errors", option="\udcff\ud800 \n")
    metrics.timer("alerting.delivery.latency", float("nan"), channel="x" * 1000)


_PART = st.one_of(st.text(), st.none(), st.integers(), st.floats())


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_PART, max_size=5))
def test_any_name_is_made_safe(parts: list[Any]) -> None:
    name = metrics.metric_name(*parts)
    assert _SAFE_NAME.fullmatch(name), name
    assert len(name) <= 250
    name.encode("ascii")  # what a StatsD datagram needs


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(list(CATALOGUE)),
    tags=st.dictionaries(st.sampled_from(["channel", "reason", "severity", "dag_id", "option"]), _PART),
    value=st.one_of(st.integers(), st.floats()),
)
def test_any_tags_are_sent_safely(name: str, tags: dict[str, Any], value: float) -> None:
    recorder = RecordingStats()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_stats", lambda: recorder)
        mp.setattr(metrics, "_legacy_on", True)
        metrics.count(name, **tags)
        metrics.gauge(name, value, **tags)
        metrics.timer(name, value, **tags)
    assert recorder.calls, "a catalogue metric of one of the three types is always sent"
    for _, sent, _, sent_tags in recorder.calls:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", sent), sent
        for key, text in (sent_tags or {}).items():
            assert key in CATALOGUE[name].tags
            assert re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", text), text


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_PART, max_size=5))
def test_a_broken_backend_never_raises_for_any_name(parts: list[Any]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_stats", BrokenStats)
        metrics.incr(*parts)
        metrics.timing(1.0, *parts)
