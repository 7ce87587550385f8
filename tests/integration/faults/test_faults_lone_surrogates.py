"""Lone surrogates in alert text are delivered, not lost.

``os.fsdecode`` turns the bytes of a file name that are not UTF-8 into lone surrogates
(``b"caf\\xe9.csv"`` -> ``"caf\\udce9.csv"``), and exceptions about files carry those names in
their messages.  UTF-8 cannot encode a lone surrogate, so the email channel writes them out.
"""

from __future__ import annotations

import os

import pytest
from faults_support import RECIPIENT, Faults, InspectableStore, by_channel, failure
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_alerting.model import Severity

pytestmark = pytest.mark.integration

#: what open() reports for a Latin-1 file name on a UTF-8 system
FILE_NAME = os.fsdecode(b"/data/incoming/caf\xe9-\xff.csv")


@pytest.mark.parametrize(
    "message",
    [
        # OSError's own message shows the name with repr(), escaped; user code often does not
        pytest.param(f"cannot load {FILE_NAME}: unexpected column 'price'", id="fsdecoded-file-name"),
        pytest.param("half of a pair: \ud83d", id="high-surrogate"),
        pytest.param("\udcff" * 50, id="only-surrogates"),
    ],
)
def test_an_exception_message_with_lone_surrogates_is_delivered_by_email(
    faults: Faults, message: str
) -> None:
    store = InspectableStore()
    manager = faults.manager(store=store)

    outcome = manager.handle(failure(message=message), severity=Severity.CRITICAL)

    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None and delivery.ok, delivery
    assert set(outcome.sent_to) == {"email", "slack", "pagerduty"}
    [mail] = faults.smtp.wait_for_messages(1)
    assert mail["To"] == RECIPIENT
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    # written out, not dropped: the reader can still tell which file it was
    assert "\\x" in text or "\\u" in text
    assert "\\x" in html or "\\u" in html
    assert store.outbox() == []


def test_a_latin1_file_name_shows_its_bytes(faults: Faults) -> None:
    manager = faults.manager()

    manager.handle(failure(message=f"cannot parse {FILE_NAME}"), severity=Severity.CRITICAL)

    [mail] = faults.smtp.wait_for_messages(1)
    assert "cannot parse /data/incoming/caf\\xe9-\\xff.csv" in mail.get_body(("plain",)).get_content()


_TEXT = st.lists(
    st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    min_size=1,
    max_size=60,
).map("".join)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=_TEXT)
def test_any_message_is_delivered_by_email(faults: Faults, message: str) -> None:
    manager = faults.manager()

    outcome = manager.handle(failure(message=message), severity=Severity.CRITICAL)

    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None and delivery.ok, (message, delivery)
