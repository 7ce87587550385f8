"""``compare()``: two policies on the same events, each on its own fresh state."""

from __future__ import annotations

from sim_support import outage_events

from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation import simulate
from airflow_alerting.simulation.compare import compare

PER_TASK = AlertPolicy.from_dict({"incidents": {"correlate_by": []}})


def test_two_policies_side_by_side() -> None:
    events = outage_events()
    comparison = compare(events, AlertPolicy(), PER_TASK, labels=("cause", "per-task"))
    left, right = simulate(events, AlertPolicy()), simulate(events, PER_TASK)
    assert (len(comparison.left.incidents), len(comparison.right.incidents)) == (
        len(left.incidents),
        len(right.incidents),
    )
    assert len(comparison.left.incidents) < len(comparison.right.incidents)
    rows = {row.name: row for row in comparison.channels}
    assert set(rows) == {"slack", "email", "pagerduty"}
    slack_left, slack_right = left.channel("slack"), right.channel("slack")
    assert slack_left is not None and slack_right is not None
    assert (rows["slack"].left_messages, rows["slack"].right_messages) == (
        slack_left.messages,
        slack_right.messages,
    )
    assert rows["slack"].messages_change == slack_right.messages - slack_left.messages > 0
    data = comparison.to_json()
    assert data["policies"] == ["cause", "per-task"]
    assert data["incidents"] == [len(left.incidents), len(right.incidents)]
    assert data["right"]["policy"] == "per-task"


def test_a_channel_only_one_policy_routes_to() -> None:
    team = AlertPolicy.from_dict(
        {
            "channels": {"team_mail": {"type": "email", "to": "team@example.com"}},
            "routing": {"matrix": {"medium": ["team_mail"], "high": ["team_mail"]}},
        }
    )
    comparison = compare(outage_events(), AlertPolicy(), team)
    rows = {row.name: row for row in comparison.channels}
    assert rows["team_mail"].left_messages is None
    assert rows["team_mail"].right_messages is not None and rows["team_mail"].right_messages > 0
    assert rows["team_mail"].to_json()["messages"][0] is None
