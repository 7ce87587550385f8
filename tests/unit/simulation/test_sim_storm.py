"""``simulate`` on the default storm counts what the storm replay counts.

The storm is exported to an events file, read back and simulated through the ``simulate``
command (``--output json``); the same storm is replayed by
:func:`~airflow_alerting.testing.storm.replay` with the set-up of ``tests/unit/test_storm_replay.py``
(default policy, Slack editing in place, e-mail posting, PagerDuty's actions).  Both runs are
real; nothing is compared with a hard-coded figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections import Counter
from typing import Any

import pytest

from airflow_alerting import metrics
from airflow_alerting.channels.pagerduty import PAGERDUTY_ACTIONS
from airflow_alerting.cli.simulate import SIMULATE
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation import storm_file
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.testing.storm import OUTAGE_CAUSE, SETTLE, ReplayReport, generate_storm, replay


@pytest.fixture(scope="module")
def replayed() -> ReplayReport:
    storm = generate_storm()
    clock = FrozenClock()
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=PAGERDUTY_ACTIONS),
    }
    manager = AlertManager(
        AlertPolicy(),
        store=MemoryStore(),
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        return replay(storm, manager, clock, channels=channels)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("storm") / "storm.jsonl"
    written = storm_file.export_storm(path)
    assert written == generate_storm().failures
    policy = tmp_path_factory.mktemp("policy") / "default.yaml"
    policy.write_text("{}\n")  # the default policy, read from a file like a user's
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = SIMULATE.run(
            argparse.Namespace(
                file=str(path),
                policy=str(policy),
                compare=None,
                slack="api",
                # the replay's settling time, so both count the same deferred messages
                settle=f"{int(SETTLE.total_seconds())}s",
                silences=None,
                top=10,
                output="json",
            )
        )
    assert code == 0
    document: dict[str, Any] = json.loads(out.getvalue())
    return document


def test_same_failures_and_causes(replayed: ReplayReport, simulated: dict[str, Any]) -> None:
    assert simulated["failures"] == replayed.failures
    assert len(simulated["causes"]) == replayed.causes
    assert len(simulated["incidents"]) == len(replayed.incidents)


def test_same_messages_and_edits_per_channel(replayed: ReplayReport, simulated: dict[str, Any]) -> None:
    channels = {c["name"]: c for c in simulated["channels"]}
    assert set(channels) == set(replayed.channels)
    for name in replayed.channels:
        assert channels[name]["messages"] == replayed.messages.get(name, 0), name
        assert channels[name]["edits"] == replayed.edits.get(name, 0), name
        assert channels[name]["stock"] == replayed.stock_messages.get(name, 0), name
        actions = {a.value: n for a, n in replayed.actions.get(name, {}).items()}
        assert channels[name]["actions"] == actions, name


def test_same_incidents(replayed: ReplayReport, simulated: dict[str, Any]) -> None:
    ours = Counter((i["failures"], i["dag_count"], i["severity"]) for i in simulated["incidents"])
    theirs = Counter((i.failures, i.dag_count, i.severity.label) for i in replayed.incidents)
    assert ours == theirs
    outage = replayed.incident_of(OUTAGE_CAUSE)
    assert outage is not None
    assert simulated["incidents"][0]["failures"] == outage.failures  # the largest is the outage
    assert simulated["causes"][0]["incidents"] == 1


def test_every_cause_is_one_incident(simulated: dict[str, Any]) -> None:
    assert all(c["incidents"] == 1 for c in simulated["causes"])
    assert sum(c["failures"] for c in simulated["causes"]) == simulated["failures"]
