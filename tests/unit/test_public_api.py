"""The public surface of ``airflow_alerting``: pinned, sorted, lazy and cheap to import."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import airflow_alerting

PINNED_ALL = [
    "Alert",
    "AlertKind",
    "AlertManager",
    "AlertMatcher",
    "AlertNotifier",
    "AlertOutcome",
    "AlertPolicy",
    "Incident",
    "IncidentState",
    "NotificationAction",
    "PolicyError",
    "Route",
    "Rule",
    "Severity",
    "SeverityClassifier",
    "SeverityRouter",
    "Silence",
    "alert_from_context",
    "classify_error_severity",
]

#: modules a DAG file must not pay for just by importing the package
HEAVY = ("airflow", "slack_sdk", "jinja2", "sqlalchemy", "requests")

#: public names whose module needs Airflow itself (importing Airflow takes seconds)
NEEDS_AIRFLOW = {"AlertNotifier"}


def test_all_is_sorted() -> None:
    assert list(airflow_alerting.__all__) == sorted(airflow_alerting.__all__)


def test_all_is_pinned() -> None:
    assert list(airflow_alerting.__all__) == PINNED_ALL


def test_dir_lists_the_public_names() -> None:
    assert set(PINNED_ALL) <= set(dir(airflow_alerting))


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = airflow_alerting.no_such_name
    assert not hasattr(airflow_alerting, "no_such_name")


def _defined_at_top_level(path: str, name: str) -> bool:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return any(isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name for node in tree.body)


@pytest.mark.parametrize("name", sorted(NEEDS_AIRFLOW))
def test_airflow_dependent_names_point_at_their_definition(name: str) -> None:
    # resolving them for real imports Airflow (seconds); check the lazy table points at a module
    # that defines the name, and resolve for real only if Airflow is already loaded in this process
    module_name = "airflow_alerting." + airflow_alerting._LOCATIONS[name]
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None
    assert _defined_at_top_level(spec.origin, name)
    if "airflow.sdk.bases.notifier" in sys.modules:
        assert getattr(airflow_alerting, name).__name__ == name


_PROBE = """
import importlib, json, sys
for module in {preload!r}:
    importlib.import_module(module)
import airflow_alerting
loaded_at_import = sorted(sys.modules)
resolved = {{}}
for name in airflow_alerting.__all__:
    if name in {skip!r}:
        continue
    value = getattr(airflow_alerting, name)
    resolved[name] = {{
        "is_module": type(value).__name__ == "module",
        "name": getattr(value, "__name__", None),
        "module": getattr(value, "__module__", None),
    }}
after_resolving = sorted(sys.modules)
print(json.dumps({{"at_import": loaded_at_import, "after_resolving": after_resolving, "resolved": resolved}}))
"""

Probe = dict[str, Any]


def run_probe(preload: list[str], airflow_home: Path) -> Probe:
    """Import the package in a fresh interpreter (after ``preload``), resolve every public name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(airflow_home)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(preload=preload, skip=sorted(NEEDS_AIRFLOW))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: Probe = json.loads(result.stdout.strip().splitlines()[-1])
    return data


@pytest.fixture(scope="module")
def fresh_interpreter(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    return run_probe([], tmp_path_factory.mktemp("airflow_home"))


@pytest.fixture(scope="module")
def after_submodules(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    # what a DAG file does when it imports from submodules before using the top-level names
    return run_probe(
        ["airflow_alerting.policy", "airflow_alerting.manager"], tmp_path_factory.mktemp("airflow_home")
    )


def _top_level(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


CORE_NAMES = sorted(set(PINNED_ALL) - NEEDS_AIRFLOW)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_every_name_resolves_lazily(fresh_interpreter: Probe, name: str) -> None:
    value = fresh_interpreter["resolved"][name]

    assert not value["is_module"]
    assert value["name"] == name
    assert value["module"].startswith("airflow_alerting.")


@pytest.mark.parametrize("name", CORE_NAMES)
def test_every_name_resolves_after_submodules_were_imported(after_submodules: Probe, name: str) -> None:
    value = after_submodules["resolved"][name]

    assert not value["is_module"]
    assert value["name"] == name


@pytest.mark.parametrize("heavy", HEAVY)
def test_import_does_not_load_heavy_dependencies(fresh_interpreter: Probe, heavy: str) -> None:
    assert heavy not in _top_level(fresh_interpreter["at_import"])


def test_import_loads_no_submodule_until_a_name_is_used(fresh_interpreter: Probe) -> None:
    loaded = {m for m in fresh_interpreter["at_import"] if m.startswith("airflow_alerting.")}

    assert loaded == set()


@pytest.mark.parametrize("heavy", [h for h in HEAVY if h != "airflow"])
def test_resolving_the_core_names_stays_light(fresh_interpreter: Probe, heavy: str) -> None:
    # policies, managers and classifiers are built in DAG files: they must not drag in channel SDKs
    assert heavy not in _top_level(fresh_interpreter["after_resolving"])
