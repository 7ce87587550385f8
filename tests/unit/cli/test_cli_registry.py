"""The command registry and its two front ends: Airflow's parser and the console script's argparse."""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator

import pytest

from airflow_alerting.cli import registry
from airflow_alerting.cli.console import build_parser, main
from airflow_alerting.cli.spec import OUTPUT, Argument, Command, Group


def _leaves(declared: list[Command | Group]) -> dict[str, Command]:
    found: dict[str, Command] = {}
    for item in declared:
        if isinstance(item, Group):
            found.update({f"{item.name} {c.name}": c for c in item.commands})
        else:
            found[item.name] = item
    return found


def test_every_command_of_the_issue_is_registered() -> None:
    leaves = _leaves(registry.load_commands())
    assert {
        "test-channel",
        "silence add",
        "silence list",
        "silence expire",
        "incidents list",
        "incidents show",
        "incidents ack",
        "incidents resolve",
        "state init",
        "state prune",
        "state check",
        "history",
        "stats",
    } <= set(leaves)
    for name in ("explain", "simulate"):
        module = registry.COMMAND_PATHS[1 if name == "explain" else 2].partition(":")[0]
        present = __import__("importlib").util.find_spec(module) is not None
        assert (name in leaves) == present, name


def test_every_command_takes_the_shared_output_argument() -> None:
    for name, command in _leaves(registry.load_commands()).items():
        flags = [a.flags for a in registry.arguments_of(command)]
        assert flags.count(OUTPUT.flags) == 1 or any("--output" in f for f in flags), name


@pytest.fixture
def fake_module() -> Iterator[str]:
    module = types.ModuleType("airflow_alerting_cli_fake")
    module.ONE = Command("one", "first", (), lambda args: 0)  # type: ignore[attr-defined]
    module.AGAIN = Command("one", "same name", (), lambda args: 0)  # type: ignore[attr-defined]
    module.NOT_A_COMMAND = 42  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_duplicate_names_are_refused(fake_module: str) -> None:
    with pytest.raises(ValueError, match="duplicate alerting command name"):
        registry.load_commands((f"{fake_module}:ONE", f"{fake_module}:AGAIN"))


def test_a_declaration_that_is_not_a_command_is_refused(fake_module: str) -> None:
    with pytest.raises(TypeError, match="is a int, not a Command or Group"):
        registry.load_commands((f"{fake_module}:NOT_A_COMMAND",))


def test_only_optional_commands_may_be_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "airflow_alerting.cli.not_written_yet:THING"
    with pytest.raises(ModuleNotFoundError):
        registry.load_commands((missing,))
    monkeypatch.setattr(registry, "OPTIONAL_COMMANDS", frozenset({missing}))
    assert registry.load_commands((missing,)) == []


def test_airflow_refuses_argument_options_its_arg_does_not_know() -> None:
    from airflow_alerting.cli.airflow_cli import _arg

    with pytest.raises(ValueError, match="argument --x: Airflow's Arg does not accept const"):
        _arg(Argument(("--x",), "help", {"const": 1}))


def test_airflow_parser_builds_the_alerting_group_from_the_provider_info() -> None:
    # the real path: Airflow discovers the provider's "cli" key and builds its parser from it
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    args = parser.parse_args(
        ["alerting", "silence", "add", "--dag", "etl_*", "--duration", "2h", "-o", "json"]
    )
    assert args.dag == ["etl_*"] and args.duration.total_seconds() == 7200 and args.output == "json"
    assert args.func.__name__ == "alerting_add"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["alerting", "incidents", "list", "--limit", "0"])
    assert exited.value.code == 2


def test_console_parser_matches_the_declarations() -> None:
    parser = build_parser()
    args = parser.parse_args(["incidents", "ack", "abc123", "--by", "bob"])
    assert args.incident_id == "abc123" and args.by == "bob" and args.output == "table"
    assert callable(args.func)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["silence", "add", "--duration", "soon"], "argument --duration: 'soon' is not a duration"),
        (["silence", "add", "--until", "tomorrow"], "argument --until: 'tomorrow' is not an ISO 8601 time"),
        (["incidents", "list", "--state", "closed"], "argument --state: invalid choice: 'closed'"),
        (["stats", "--since", "0m"], "argument --since: '0m': the duration must be positive"),
        (["test-channel", "--timeout", "-1"], "argument --timeout: '-1': must be between 0 and 300"),
        (["history", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_runner_turns_errors_into_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from airflow_alerting.cli.output import BadInput, OperationFailed

    def raising(error: Exception) -> Command:
        def run(args: argparse.Namespace) -> int:
            raise error

        return Command("x", "x", (), run)

    namespace = argparse.Namespace(output="table")
    assert registry.runner(raising(BadInput("--dag", "empty")))(namespace) == 2
    assert capsys.readouterr().err == "error: argument --dag: empty\n"
    assert registry.runner(raising(OperationFailed("store down")))(namespace) == 1
    assert capsys.readouterr().err == "error: store down\n"
    assert registry.runner(raising(RuntimeError("boom")))(namespace) == 1
    assert capsys.readouterr().err == "error: RuntimeError: boom\n"
