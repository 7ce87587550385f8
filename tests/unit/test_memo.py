"""The digest-keyed cache behind scrub() and the normalisers: exact, bounded, keeps no text."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from airflow_alerting._memo import memo_by_digest
from airflow_alerting.render.redact import _scrub, scrub


def test_results_are_those_of_the_function_and_repeated_calls_are_cached() -> None:
    calls: list[tuple[str | None, ...]] = []

    def upper(*texts: str | None) -> str:
        calls.append(texts)
        return "|".join("-" if t is None else t.upper() for t in texts)

    cached = memo_by_digest(upper, maxsize=2)
    assert cached("a", None) == "A|-"
    assert cached("a", None) == "A|-"
    assert cached("a", "") == "A|"  # None and "" are different keys
    assert cached("b") == "B"  # evicts ("a", None), the least recently used
    assert cached("a", None) == "A|-"
    assert calls == [("a", None), ("a", ""), ("b",), ("a", None)]


def test_long_texts_bypass_the_cache() -> None:
    calls: list[str] = []

    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    cached = memo_by_digest(length, max_length=10)
    assert cached("x" * 11) == 11
    assert cached("x" * 11) == 11
    assert len(calls) == 2


def test_the_cache_keeps_no_reference_to_the_texts() -> None:
    # built at runtime, so neither interned nor a constant of this module
    message = "".join(["connect failed: postgres://u:hunter2-", str(id(object())), "@db/x"])
    before = sys.getrefcount(message)

    scrubbed = scrub(message)
    again = scrub(message)

    assert "hunter2" not in scrubbed and again == scrubbed
    # an lru_cache would hold the text as a key: one more reference
    assert sys.getrefcount(message) == before


@given(st.text(max_size=300))
def test_cached_scrub_equals_uncached(text: str) -> None:
    assert scrub(text) == _scrub(text)
    assert scrub(text) == _scrub(text)
