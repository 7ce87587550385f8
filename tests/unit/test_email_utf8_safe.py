"""``utf8_safe``: the email channel's guard against lone surrogates in alert text."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from airflow_alerting.channels.email import utf8_safe

_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_ANY = st.lists(st.one_of(st.characters(), _SURROGATE)).map("".join)


@given(_ANY)
def test_the_result_always_encodes_as_utf8(text: str) -> None:
    utf8_safe(text).encode("utf-8")


@given(st.text())
def test_text_without_lone_surrogates_is_unchanged(text: str) -> None:
    # st.text() never produces surrogates: every such string is valid UTF-8 already
    assert utf8_safe(text) == text


@given(st.binary())
def test_fsdecoded_bytes_are_shown_as_the_bytes_they_stand_for(raw: bytes) -> None:
    decoded = raw.decode("utf-8", "surrogateescape")
    expected = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in decoded)
    assert utf8_safe(decoded) == expected


def test_examples() -> None:
    assert utf8_safe(os.fsdecode(b"caf\xe9.csv")) == "caf\\xe9.csv"
    assert utf8_safe("pair half \ud83d!") == "pair half \\ud83d!"
    assert utf8_safe("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"
