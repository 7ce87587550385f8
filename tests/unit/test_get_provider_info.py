"""The provider metadata Airflow discovers through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_alerting.config import OPTIONS, AlertingSettings, load_settings
from airflow_alerting.get_provider_info import PACKAGE_NAME, get_provider_info

ENTRY_POINT_VALUE = "airflow_alerting.get_provider_info:get_provider_info"


@pytest.fixture(scope="module", autouse=True)
def _isolated_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Airflow reads AIRFLOW_HOME once, on first import; without this a test that imports
    # it would read (and create) ~/airflow on the developer's machine.
    with pytest.MonkeyPatch.context() as mp:
        if "airflow.configuration" not in sys.modules and "AIRFLOW_HOME" not in os.environ:
            mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        yield


def _schema_path() -> Path:
    # find_spec locates the package without executing airflow/__init__.py, which would
    # bootstrap Airflow's configuration just to read a JSON file.
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations, "airflow is not installed"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "provider_info.schema.json"
        if candidate.is_file():
            return candidate
    raise AssertionError("provider_info.schema.json not found in the airflow package")


def _our_entry_point() -> EntryPoint:
    matches = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value == ENTRY_POINT_VALUE]
    assert len(matches) == 1, f"expected one apache_airflow_provider entry point, got {matches}"
    return matches[0]


def _distribution() -> Distribution:
    dist = _our_entry_point().dist
    assert dist is not None
    return dist


def _canonical(name: str) -> str:
    # PEP 503 normalisation, the same rule as packaging.utils.canonicalize_name that
    # Airflow applies before comparing with "package-name".
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture
def info() -> dict[str, Any]:
    return get_provider_info()


def test_validates_against_airflows_schema(info: dict[str, Any]) -> None:
    schema = json.loads(_schema_path().read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(info)


def test_options_use_only_keys_the_schema_defines(info: dict[str, Any]) -> None:
    # The schema spells "additional_properties" (not "additionalProperties") for options,
    # so jsonschema would accept a typo'd key that Airflow then silently ignores.
    schema = json.loads(_schema_path().read_text())
    allowed = set(schema["definitions"]["option"]["properties"])
    for name, option in info["config"]["alerting"]["options"].items():
        assert set(option) <= allowed, name


def test_entry_point_resolves_to_get_provider_info() -> None:
    assert _our_entry_point().load() is get_provider_info


def test_package_name_is_the_installed_distributions_canonical_name(info: dict[str, Any]) -> None:
    dist = _distribution()
    assert info["package-name"] == PACKAGE_NAME == "airflow-provider-alerting"
    assert info["package-name"] == _canonical(dist.metadata["Name"])


def test_versions_come_from_distribution_metadata(info: dict[str, Any]) -> None:
    assert info["versions"] == [_distribution().version]


def test_each_call_returns_a_fresh_dict() -> None:
    # Airflow writes "documentation-url" into the dict it receives.
    first = get_provider_info()
    first["documentation-url"] = "https://example.invalid"
    first["config"]["alerting"]["options"].clear()
    second = get_provider_info()
    assert "documentation-url" not in second
    assert set(second["config"]["alerting"]["options"]) == set(OPTIONS)


@pytest.mark.parametrize("class_path", get_provider_info()["notifications"])
def test_notification_classes_are_importable_notifiers(class_path: str) -> None:
    module_name, _, class_name = class_path.rpartition(".")
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} does not exist yet (being written in parallel)")
    from airflow.sdk import BaseNotifier

    notifier_class = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(notifier_class, type)
    assert issubclass(notifier_class, BaseNotifier)


def test_config_section_mirrors_the_settings_dataclass(info: dict[str, Any]) -> None:
    section = info["config"]["alerting"]
    assert section["description"]
    assert list(section["options"]) == [field.name for field in dataclasses.fields(AlertingSettings)]
    for name, option in section["options"].items():
        assert option["description"], name
        assert option["example"], name
        assert isinstance(option["default"], str), name
        assert option["type"] in {"string", "integer", "float", "boolean"}, name  # the schema's types


def test_published_defaults_parse(info: dict[str, Any]) -> None:
    options = info["config"]["alerting"]["options"]
    published = {name: option["default"] for name, option in options.items()}
    assert AlertingSettings.from_mapping(published) == AlertingSettings.defaults()


def test_load_settings_without_overrides_returns_the_published_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__ALERTING__", "AIRFLOW__API__BASE_URL")):
            monkeypatch.delenv(name)
    assert load_settings() == AlertingSettings.defaults()


def test_importing_provider_info_does_not_import_airflow() -> None:
    # Airflow imports this module while its own configuration is half-initialised; importing
    # airflow from here (directly or via airflow_alerting/__init__.py) would be circular.
    code = (
        "import sys, airflow_alerting.get_provider_info as m; m.get_provider_info(); "
        "print(sorted(n for n in sys.modules if n == 'airflow' or n.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_cli_functions_return_the_alerting_command_group(info: dict[str, Any]) -> None:
    # Airflow's cli_parser imports each "cli" path and extends its commands with the result.
    from airflow.cli.cli_config import ActionCommand, GroupCommand

    assert info["cli"] == ["airflow_alerting.cli.airflow_cli.get_cli_commands"]
    module_name, _, function_name = info["cli"][0].rpartition(".")
    commands = getattr(importlib.import_module(module_name), function_name)()
    assert [type(c) for c in commands] == [GroupCommand] and commands[0].name == "alerting"
    words = {c.name for c in commands[0].subcommands}
    assert {"test-channel", "silence", "incidents", "state"} <= words
    for command in commands[0].subcommands:
        leaves = command.subcommands if isinstance(command, GroupCommand) else (command,)
        for leaf in leaves:
            assert isinstance(leaf, ActionCommand)
            assert any("--output" in arg.flags for arg in leaf.args), leaf.name


def test_importing_provider_info_does_not_import_the_cli() -> None:
    # the cli key is a path: provider discovery must not pay for importing the commands
    code = (
        "import sys, airflow_alerting.get_provider_info as p; p.get_provider_info(); "
        "assert 'airflow_alerting.cli' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
