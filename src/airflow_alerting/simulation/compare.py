"""Two policies side by side on the same events: :func:`compare` and :class:`Comparison`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow_alerting.incidents.silences import Silence
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation.events import FailureEvent
from airflow_alerting.simulation.run import SimulationResult, simulate

__all__ = ["ChannelDelta", "Comparison", "compare"]


@dataclass(frozen=True)
class ChannelDelta:
    """One channel under both policies (``None``: that policy never routes there).

    :param name: the channel
    :param left_messages: new messages under the first policy
    :param right_messages: new messages under the second
    :param left_edits: edits under the first policy
    :param right_edits: edits under the second
    :param left_folded: failures folded in under the first policy
    :param right_folded: failures folded in under the second
    """

    name: str
    left_messages: int | None
    right_messages: int | None
    left_edits: int | None
    right_edits: int | None
    left_folded: int | None
    right_folded: int | None

    @property
    def messages_change(self) -> int:
        """Messages under the second policy minus under the first (a missing side counts 0)."""
        return (self.right_messages or 0) - (self.left_messages or 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "messages": [self.left_messages, self.right_messages],
            "edits": [self.left_edits, self.right_edits],
            "folded": [self.left_folded, self.right_folded],
            "messages_change": self.messages_change,
        }


@dataclass(frozen=True)
class Comparison:
    """Two simulations of the same events.

    :param left: under the first policy
    :param right: under the second policy
    """

    left: SimulationResult
    right: SimulationResult

    @property
    def channels(self) -> tuple[ChannelDelta, ...]:
        """Every channel either policy routes to, by name."""
        names = sorted({c.name for c in self.left.channels} | {c.name for c in self.right.channels})
        rows = []
        for name in names:
            a, b = self.left.channel(name), self.right.channel(name)
            rows.append(
                ChannelDelta(
                    name=name,
                    left_messages=a.messages if a else None,
                    right_messages=b.messages if b else None,
                    left_edits=a.edits if a else None,
                    right_edits=b.edits if b else None,
                    left_folded=a.folded if a else None,
                    right_folded=b.folded if b else None,
                )
            )
        return tuple(rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "policies": [self.left.policy, self.right.policy],
            "channels": [c.to_json() for c in self.channels],
            "incidents": [len(self.left.incidents), len(self.right.incidents)],
            "messages": [self.left.messages, self.right.messages],
            "left": self.left.to_json(),
            "right": self.right.to_json(),
        }


def compare(
    events: Sequence[FailureEvent],
    left: AlertPolicy,
    right: AlertPolicy,
    *,
    labels: tuple[str, str] = ("left", "right"),
    slack_api: bool = True,
    settle: timedelta | None = None,
    silences: Sequence[Silence] = (),
) -> Comparison:
    """Simulate ``events`` under both policies, each on its own fresh state.

    :param events: the events, sorted by time
    :param left: the first policy (usually the current one)
    :param right: the second policy (the candidate)
    :param labels: how the results name the two policies
    :param slack_api: Slack channels edit in place (Web API); ``False`` simulates incoming webhooks
    :param settle: how long after the last event deferred messages are swept; by default each
        policy's own :func:`~airflow_alerting.simulation.run.settle_time`
    :param silences: silences in force during both replays
    """
    return Comparison(
        simulate(events, left, label=labels[0], slack_api=slack_api, settle=settle, silences=silences),
        simulate(events, right, label=labels[1], slack_api=slack_api, settle=settle, silences=silences),
    )
