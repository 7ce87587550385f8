"""Trending causes over a generated day of failures (MemoryStore, simulated clock), and the
maintenance digest that names them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from analytics_support import Failure, build_manager, play, scenario

from airflow_alerting.analytics import Analytics, Trend
from airflow_alerting.incidents.digest import DIGEST_TRENDS, digest_alert, trend_lines
from airflow_alerting.incidents.signature import cause_signature
from airflow_alerting.maintenance import send_digest
from airflow_alerting.manager import AlertManager
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Day:
    failures: list[Failure]
    manager: AlertManager
    store: MemoryStore
    clock: FrozenClock
    channels: dict[str, RecordingChannel]


@pytest.fixture(scope="module")
def day() -> Iterator[Day]:
    from airflow_alerting import metrics

    failures = scenario(NOW)
    clock = FrozenClock(NOW - timedelta(hours=26))
    store = MemoryStore(history_limit=100_000)
    manager, channels = build_manager(store, clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        # silenced failures are what the digest reports: it goes out only with something to report
        manager.add_silence(duration=timedelta(days=3), dag_ids=["steady_dag"], comment="known flaky")
        play(manager, clock, failures)
    clock.advance(NOW - clock.now)
    yield Day(failures, manager, store, clock, channels)


def expected_trends(
    failures: list[Failure], now: datetime, recent: timedelta, baseline: timedelta, *, min_recent: int = 3
) -> list[tuple[str, int, int, float]]:
    """(cause title, recent, baseline, ratio) straight from the generated failures."""
    split, start = now - recent, now - recent - baseline
    rows = []
    for name in sorted({f.cause for f in failures}):
        mine = [f for f in failures if f.cause == name]
        in_recent = sum(1 for f in mine if split <= f.at < now)
        in_baseline = sum(1 for f in mine if start <= f.at < split)
        hours, baseline_hours = recent / timedelta(hours=1), baseline / timedelta(hours=1)
        ratio = (in_recent / hours) / max(in_baseline / baseline_hours, 1 / baseline_hours)
        if in_recent >= min_recent and ratio >= 2.0:
            title = cause_signature(mine[0].alert.exception_type, mine[0].alert.message)
            rows.append((title, in_recent, in_baseline, round(ratio, 9)))
    return sorted(rows, key=lambda r: (-r[3], -r[1], r[0]))


def shape(trends: list[Trend]) -> list[tuple[str, int, int, float]]:
    # rounded: both sides compute the same ratio, not necessarily in the same float operations
    return [(t.cause, t.recent, t.baseline, round(t.ratio, 9)) for t in trends]


def test_rising_and_new_causes_trend_steady_and_busy_ones_do_not(day: Day) -> None:
    trends = Analytics(day.store).trending(now=NOW)

    expected = expected_trends(day.failures, NOW, timedelta(hours=1), timedelta(days=1))
    assert shape(trends) == expected
    # the scenario is built so that exactly these two rise: guard against a vacuous comparison
    titles = {cause_signature(f.alert.exception_type, f.alert.message): f.cause for f in day.failures}
    assert sorted(titles[t.cause] for t in trends) == ["fresh", "rising"]
    rising = next(t for t in trends if titles[t.cause] == "rising")
    assert (rising.recent, rising.baseline) == (8, 2)
    assert rising.recent_per_hour == 8.0 and rising.baseline_per_hour == pytest.approx(2 / 24)
    assert all(t.severity in {"low", "medium", "high", "critical"} for t in trends)


@pytest.mark.parametrize(
    ("recent", "baseline"),
    [(timedelta(hours=2), timedelta(hours=12)), (timedelta(minutes=30), timedelta(hours=6))],
)
def test_windows_are_arguments(day: Day, recent: timedelta, baseline: timedelta) -> None:
    trends = Analytics(day.store).trending(now=NOW, recent=recent, baseline=baseline, min_recent=2)

    assert shape(trends) == expected_trends(day.failures, NOW, recent, baseline, min_recent=2)


def test_nothing_trends_before_the_failures_or_with_a_zero_limit(day: Day) -> None:
    analytics = Analytics(day.store)

    assert analytics.trending(now=NOW - timedelta(hours=27)) == []
    assert analytics.trending(now=NOW, limit=0) == []
    assert len(analytics.trending(now=NOW, limit=1)) == 1


def test_the_maintenance_digest_names_the_trending_causes(day: Day) -> None:
    slack = day.channels["slack"]
    before = len(slack.notifications)

    result = send_digest(day.manager)

    assert result == {"channels": 1, "delivered": 1}
    digest = slack.notifications[before:]
    assert len(digest) == 1
    message = digest[0].alert.message
    expected = expected_trends(day.failures, NOW, timedelta(hours=1), timedelta(days=1))
    assert "Trending causes" in message
    positions = [message.index(f"] {title}: {recent} failures") for title, recent, _, _ in expected]
    assert positions == sorted(positions)  # most rising first
    assert "1 silenced" in message or "silenced" in digest[0].alert.title
    assert digest[0].alert.title.endswith(f"; {len(expected)} trending causes")


def test_digest_alert_bounds_the_trends() -> None:
    trends = [Trend(f"cause {i}", 10, 0, 10.0, 0.0, 240.0 - i, "high") for i in range(DIGEST_TRENDS + 3)]

    lines = trend_lines(trends)
    alert = digest_alert([], NOW, trends)

    assert lines[0].startswith("Trending causes")
    assert lines[1] == "- [high] cause 0: 10 failures, 10.0/h against not seen in the day before (x240.0)"
    assert len([line for line in lines if line.startswith("- [")]) == DIGEST_TRENDS
    assert lines[-1] == "- and 3 more trending causes"
    assert alert.message.splitlines()[1:] == lines
    assert digest_alert([], NOW).message == ""  # without trends the digest is as before
