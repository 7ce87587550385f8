"""The redaction catalogue: every documented credential shape goes, the text around it stays.

The samples live in ``tests/redaction_catalogue.py`` (shared with the end-to-end check in the
fault-injection suite) and are listed in ``docs/security.md``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from airflow_alerting.render import redact
from airflow_alerting.render.redact import REPLACEMENT, sanitize, scrub
from redaction_catalogue import HARMLESS, SAMPLES, Sample

DOCS = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def test_the_catalogue_is_large_and_distinct() -> None:
    assert len(SAMPLES) >= 40
    assert len({s.shape for s in SAMPLES}) == len(SAMPLES)
    for sample in SAMPLES:
        assert sample.secret in sample.text, sample.shape
        assert sample.context in sample.text, sample.shape


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.shape)
def test_each_shape_is_redacted_and_its_context_kept(sample: Sample) -> None:
    for clean in (scrub(sample.text), sanitize(sample.text)):
        assert sample.secret not in clean, clean
        assert [f for f in sample.fragments if f in clean] == [], clean
        assert sample.context in clean, clean
        assert REPLACEMENT in clean


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.shape)
def test_each_shape_is_redacted_inside_a_traceback(sample: Sample) -> None:
    """The same shapes embedded in a multi-line traceback, as the manager logs and renders it."""
    text = (
        "Traceback (most recent call last):\n"
        '  File "/opt/airflow/dags/etl.py", line 42, in load\n'
        "    run(cmd)\n"
        f"RuntimeError: {sample.text}\n"
        "[2024-05-01, 12:00:00 UTC] {taskinstance.py:123} ERROR - Task failed"
    )
    clean = scrub(text)
    assert sample.secret not in clean
    assert [f for f in sample.fragments if f in clean] == []
    assert clean.startswith("Traceback (most recent call last):\n")
    assert clean.endswith("ERROR - Task failed")


def test_all_shapes_in_one_message() -> None:
    text = "\n".join(s.text for s in SAMPLES)
    clean = scrub(text)
    assert [s.shape for s in SAMPLES if s.secret in clean] == []


@pytest.mark.parametrize("harmless", HARMLESS)
def test_ordinary_text_is_left_alone(harmless: str) -> None:
    assert scrub(harmless) == harmless


@pytest.mark.parametrize(
    ("label", "secret"),
    [
        ("password", True),
        ("DB_PASSWORD", True),
        ("PGPASSWORD", True),
        ("MYSQL_PWD", True),
        ("--api-key", True),
        ("apiKey", True),
        ("X-Amz-Signature", True),
        ("AccountKey", True),
        ("SharedAccessKey", True),
        ("sig", True),
        ("client_secret", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("aws_session_token", True),
        ("csrftoken", True),
        ("routing_key", True),
        ("REDISCLI_AUTH", True),
        ("-Djavax.net.ssl.keyStorePassword", True),
        ("key", False),
        ("auth", False),
        ("max_tokens", False),
        ("tokenizer", False),
        ("token_type", False),
        ("password_file", False),
        ("api_key_id", False),
        ("secret_name", False),
        ("page", False),
    ],
)
def test_secret_labels(label: str, secret: bool) -> None:
    assert redact.is_secret_label(label) is secret


def test_non_secret_labels_do_not_hide_secret_ones_behind_them() -> None:
    """A value that is not secret is scanned for secrets of its own."""
    clean = scrub("url=https://api.example.com/x?token=NestedTok123Fake&page=2")
    assert "NestedTok123Fake" not in clean
    assert "page=2" in clean


def test_the_catalogue_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [s.shape for s in SAMPLES if f"| {s.shape} |" not in text]
    assert missing == []


# -- complexity guard -----------------------------------------------------------------------------

_SIZE = 64 * 1024


def _fill(unit: str, prefix: str = "", suffix: str = "") -> str:
    return prefix + unit * ((_SIZE - len(prefix) - len(suffix)) // len(unit) + 1) + suffix


#: 64 KB inputs built to make a backtracking pattern take quadratic (or worse) time
ADVERSARIAL = {
    "letters": _fill("a"),
    "word chars": _fill("_a"),
    "dashes": _fill("-"),
    "spaces": _fill(" "),
    "newlines": _fill("\n"),
    "colons": _fill("a:"),
    "equals": _fill("a="),
    "quotes": _fill("'"),
    "double quotes": _fill('"'),
    "backslashes": _fill("\\"),
    "open JSON strings": _fill('"a\\'),
    "URL prefixes": _fill("x://a:"),
    "URL without @": _fill("b", prefix="x://a:"),
    "URL at signs": _fill("@", prefix="x://a:"),
    "URL schemes": _fill("a://"),
    "PEM begins": _fill("-----BEGIN PRIVATE KEY-----"),
    "PEM without end": _fill("A", prefix="-----BEGIN RSA PRIVATE KEY-----\n"),
    "PEM dashes": _fill("-a", prefix="-----BEGIN PRIVATE KEY-----"),
    "JWT heads": _fill("eyJ"),
    "JWT dashes": _fill("eyJ-"),
    "JWT dots": _fill("eyJaaaaaaa."),
    "token prefixes": _fill("ghp_"),
    "slack prefixes": _fill("xoxb-"),
    "sk prefixes": _fill("sk-"),
    "AWS ids": _fill("AKIA"),
    "password labels": _fill("password="),
    "password colons": _fill("password: "),
    "password words": _fill("password "),
    "quoted keys": _fill("'password': "),
    "flags": _fill("--password "),
    "flag lists": _fill("'--password', "),
    "mysql flags": _fill(" -p", prefix="mysql"),
    "mysql words": _fill("mysql -"),
    "mysql glued flags": _fill(" -px", prefix="mysql"),
    "curl users": _fill(" -u a:", prefix="curl"),
    "sshpass flags": _fill(" -p x", prefix="sshpass"),
    "bearer": _fill("Bearer "),
    "headers": _fill("Authorization: "),
    "header values": _fill("x", prefix="Cookie: "),
    "yaml lines": _fill("\n  password: "),
    "webhook paths": _fill("/services/T/B/"),
    "camel labels": _fill("aB"),
    "digits": _fill("1"),
    "mixed": _fill("aA1_=/+"),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_scrub_is_linear_on_adversarial_input(name: str) -> None:
    """A complexity guard, not a benchmark: quadratic behaviour would take seconds here."""
    text = ADVERSARIAL[name]
    assert len(text) >= _SIZE
    started = time.process_time()
    scrub(text)
    assert time.process_time() - started < 0.5


def test_patterns_have_bounded_repetitions_and_no_nested_quantifiers() -> None:
    """Keep the catalogue linear by construction: no ``*``/``+``, no quantified group holding one."""
    patterns = [p.pattern for p in redact._STRUCTURES]
    for rule in redact._LABELLED:
        patterns += [rule.label.pattern, rule.value.pattern]
    for pattern in patterns:
        unescaped = re.sub(r"\\.|\[(?:\\.|[^\]\\])*\]", "x", pattern)  # drop escapes and classes
        assert not re.search(r"[*+]", unescaped), pattern
        # a group holding a {m,n} quantifier must not be repeated itself ("?" is fine: 0 or 1)
        holds_quantifier: list[bool] = []
        for i, char in enumerate(unescaped):
            if char == "(":
                holds_quantifier.append(False)
            elif char == "{" and holds_quantifier:
                holds_quantifier[-1] = True
            elif char == ")":
                inner = holds_quantifier.pop()
                assert not (inner and unescaped[i + 1 : i + 2] == "{"), pattern
                if holds_quantifier:
                    holds_quantifier[-1] = holds_quantifier[-1] or inner
