"""Message normalisation costs linear time on adversarial input.

Exception messages are untrusted and arrive on every failure, so a regex that backtracks
quadratically (or worse) turns one odd message into seconds or minutes of CPU in a callback.
These tests are a *complexity guard, not a speed benchmark*: the CPU budget is generous (a
linear implementation needs a few milliseconds for any of these inputs, a quadratic one on 32 KB
needs seconds to minutes), so they fail only on a change of complexity, not on a slow machine.
CPU time (``time.process_time``) is measured rather than wall time so that a busy machine does not
make them flaky.
"""

from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable
from functools import partial

import pytest

from airflow_alerting import fingerprint as fingerprint_module
from airflow_alerting.fingerprint import fingerprint, normalise_message
from airflow_alerting.incidents import signature as signature_module
from airflow_alerting.incidents.signature import cause_signature, normalise_cause
from airflow_alerting.model import Alert

#: CPU seconds one call may take; see the module docstring for why it is this loose
BUDGET = 0.25


def _random_mix(alphabet: str, seed: int, size: int = 32 * 1024) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(size))


ADVERSARIAL = {
    "dash_runs": "a-" * 20_000,
    "dotted_digits": "1." * 30_000,
    "deep_path": "/" + "a/" * 20_000,
    "colons": "::" * 20_000,
    "colons_then_letter": "::" * 20_000 + "g",
    "at_signs": "x@" * 20_000,
    "dotted_labels": "a." * 20_000,
    "long_local_part": "a." * 20_000 + "@",
    "scheme_like": "a+" * 20_000 + "://",
    "long_word": "a" * 32_000,
    "long_digits": "1" * 32_000 + "x",
    "long_hex": "ab12" * 8_000,
    "hex_literal_runs": "0x" + "f" * 32_000 + "g",
    "ipv6_like": "1:" * 16_000,
    "ipv6_groups": "fe80:" * 8_000 + "z",
    "instance_names": "host-" * 8_000,
    "identifier_runs": "a_1" * 10_000,
    "word_digit_dots": "a1." * 10_000,
    "date_like": "2026-11-2" * 4_000,
    "keywords": "host port HTTP exit code " * 1_500,
    "url_tail": "http://" + "a" * 32_000,
    "random_mix": _random_mix(string.digits + string.ascii_letters + string.punctuation + " ", seed=1),
    "random_hex_mix": _random_mix("0123456789abcdef:.-_", seed=2),
    "random_punctuation_mix": _random_mix("a1.-_:/@ ", seed=3),
    "whitespace": "a" + " " * 32_000 + "1",
    "blank_lines": "\n" * 32_000 + "x",
    "traceback": "Traceback (most recent call last):\n"
    + '  File "x.py", line 1\n' * 4_000
    + "E: "
    + "a-" * 5_000,
}


def _make_alert(message: str) -> Alert:
    return Alert(dag_id="etl", task_id="load", exception_type="RuntimeError", message=message)


FUNCTIONS: dict[str, Callable[[str], object]] = {
    "cause_signature": lambda message: cause_signature("psycopg2.OperationalError", message),
    "normalise_cause": normalise_cause,
    "normalise_message": normalise_message,
    "fingerprint": lambda message: fingerprint(_make_alert(message)),
}


def _cpu_seconds(call: Callable[[], object]) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    # the first call may pay for lazy imports; that is not what is measured
    for function in FUNCTIONS.values():
        function("warm up 10.0.0.1 host-3")


@pytest.mark.parametrize("function_name", list(FUNCTIONS))
@pytest.mark.parametrize("input_name", list(ADVERSARIAL))
def test_adversarial_message_costs_linear_time(function_name: str, input_name: str) -> None:
    function, message = FUNCTIONS[function_name], ADVERSARIAL[input_name]

    elapsed = _cpu_seconds(partial(function, message))

    assert elapsed < BUDGET, f"{function_name}({input_name}) took {elapsed:.2f}s CPU"


def test_megabyte_message_is_bounded() -> None:
    message = "could not connect to 10.0.0.3:5432 " * 30_000  # ~1 MB, one line

    for name, function in FUNCTIONS.items():
        elapsed = _cpu_seconds(partial(function, message))
        assert elapsed < BUDGET, f"{name} took {elapsed:.2f}s CPU"


# The functions bound their input before matching, which alone would hide a quadratic pattern up
# to the bound.  So each pattern is also run on the first 32 KB of each input, unbounded: linear
# patterns take milliseconds to a few hundred (the tokeniser tries ~20 alternatives per position);
# the quadratic ones this replaced took 5-40 s here.
PATTERN_BUDGET = 2.0
PATTERN_INPUT = 32 * 1024


@pytest.mark.parametrize("input_name", list(ADVERSARIAL))
def test_fingerprint_patterns_are_linear_without_the_input_bound(input_name: str) -> None:
    message = ADVERSARIAL[input_name][:PATTERN_INPUT]
    for pattern, replacement in fingerprint_module._NORMALISERS:
        elapsed = _cpu_seconds(partial(pattern.sub, replacement, message))
        assert elapsed < PATTERN_BUDGET, f"{pattern.pattern!r} took {elapsed:.2f}s CPU"


@pytest.mark.parametrize("input_name", list(ADVERSARIAL))
def test_signature_tokeniser_is_linear_without_the_input_bound(input_name: str) -> None:
    message = " ".join(ADVERSARIAL[input_name][:PATTERN_INPUT].split())
    tokens: re.Pattern[str] = signature_module._TOKEN

    elapsed = _cpu_seconds(partial(tokens.sub, signature_module._replace, message))

    assert elapsed < PATTERN_BUDGET, f"took {elapsed:.2f}s CPU"
