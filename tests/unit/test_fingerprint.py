"""Fingerprints: which alerts are "the same problem"."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_alerting.fingerprint import GROUP_BY_FIELDS, MESSAGE_PREFIX, fingerprint, normalise_message
from airflow_alerting.model import Alert, AlertKind


def make_alert(message: str, **overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "dag_id": "etl",
        "task_id": "load",
        "run_id": "scheduled__2026-01-05T00:00:00+00:00",
        "exception_type": "RuntimeError",
        "exception_mro": ("RuntimeError", "Exception"),
        "message": message,
    }
    fields.update(overrides)
    return Alert(**fields)


SAME_PROBLEM = [
    ("numbers", "Loaded 1532 rows, expected 2000", "Loaded 17 rows, expected 2000"),
    ("durations", "query timed out after 31s", "query timed out after 29s"),
    ("durations_units", "step took 1200ms", "step took 95ms"),
    ("hosts", "timeout after 31s on host-3", "timeout after 29s on host-7"),
    ("worker_names", "lost heartbeat from worker_12", "lost heartbeat from worker_3"),
    ("dotted_hosts", "cannot reach db7.internal", "cannot reach db12.internal"),
    ("ipv4", "connect to 10.0.0.12:5432 refused", "connect to 192.168.1.7:5432 refused"),
    (
        "ipv6_full",
        "connect to 2001:0db8:85a3:0000:0000:8a2e:0370:7334 refused",
        "connect to fe80:0000:0000:0000:0202:b3ff:fe1e:8329 refused",
    ),
    (
        "uuids",
        "batch 123e4567-e89b-12d3-a456-426614174000 rejected",
        "batch 9F1C2D3E-AAAA-4BBB-8CCC-0123456789AB rejected",
    ),
    ("hex_literals", "segfault at 0xdeadbeef", "segfault at 0x7f3a"),
    ("hex_ids", "commit a3f9c2e1b7d4 not found", "commit 9e107d9d372bb682 not found"),
    ("iso_timestamps", "stale since 2024-01-05T12:00:00Z", "stale since 2025-11-30T23:59:59.123+02:00"),
    ("log_timestamps", "[2024-01-05 12:00:00] deadlock", "[2026-02-28 03:14:15] deadlock"),
    ("dates", "partition 2024-01-05 missing", "partition 2026-12-31 missing"),
    ("times", "window closed at 12:00:01", "window closed at 03:14:15"),
    ("paths", "cannot open /var/data/2024/orders.csv", "cannot open /srv/exports/customers.csv"),
    (
        "urls_with_credentials",
        "could not connect to postgresql://etl:s3cret@db-1.internal:5432/warehouse",
        "could not connect to postgresql://etl:hunter2@db-2.internal:5432/warehouse",
    ),
    (
        "http_urls",
        "GET https://api.example.com/v1/items?page=3 failed",
        "GET https://api.example.com/v1/x failed",
    ),
    ("emails", "mailbox alice@example.com is full", "mailbox bob.smith+etl@corp.example.org is full"),
    ("whitespace", "upstream   returned\tnothing", "upstream returned nothing"),
    ("only_first_line", "boom\n  File a.py, line 3", "boom\n  File b.py, line 99"),
    ("surrounding_space", "  boom  ", "boom"),
]


@pytest.mark.parametrize(("first", "second"), [pytest.param(a, b, id=i) for i, a, b in SAME_PROBLEM])
def test_messages_that_differ_only_in_variable_parts_group(first: str, second: str) -> None:
    assert fingerprint(make_alert(first)) == fingerprint(make_alert(second))
    assert normalise_message(first.splitlines()[0]) == normalise_message(second.splitlines()[0])


def test_compressed_ipv6_addresses_group() -> None:
    first = "connect to 2001:db8::1 refused"
    second = "connect to fe80::1ff:fe23:4567:890a refused"

    assert fingerprint(make_alert(first)) == fingerprint(make_alert(second))


def test_quoted_paths_group_like_unquoted_ones() -> None:
    first = "[Errno 2] No such file or directory: '/data/in/orders.csv'"
    second = "[Errno 2] No such file or directory: '/data/in/customers.csv'"

    assert fingerprint(make_alert(first)) == fingerprint(make_alert(second))


DIFFERENT_PROBLEMS = [
    ("exception_type", {"exception_type": "KeyError"}, "boom", "boom"),
    ("task", {"task_id": "transform"}, "boom", "boom"),
    ("dag", {"dag_id": "finance"}, "boom", "boom"),
    ("wording", {}, "connection refused", "connection reset"),
    ("table_names", {}, "table orders not found", "table customers not found"),
    ("missing_vs_present_exception", {"exception_type": None}, "boom", "boom"),
]


@pytest.mark.parametrize(
    ("changes", "first", "second"), [pytest.param(c, a, b, id=i) for i, c, a, b in DIFFERENT_PROBLEMS]
)
def test_different_problems_do_not_group(changes: dict[str, Any], first: str, second: str) -> None:
    assert fingerprint(make_alert(first)) != fingerprint(make_alert(second, **changes))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"run_id": "manual__2026-02-01T10:00:00+00:00"}, id="run_id"),
        pytest.param({"try_number": 4, "max_tries": 5}, id="try_number"),
        pytest.param({"map_index": 17}, id="map_index"),
        pytest.param({"kind": AlertKind.TASK_RETRY}, id="kind"),
        pytest.param({"occurred_at": datetime(2030, 1, 1, tzinfo=timezone.utc)}, id="occurred_at"),
        pytest.param({"logical_date": datetime(2030, 1, 1, tzinfo=timezone.utc)}, id="logical_date"),
        pytest.param({"hostname": "worker-99", "log_url": "http://x/log"}, id="host_and_log"),
        pytest.param({"owner": "someone-else", "tags": frozenset({"tier:1"})}, id="owner_and_tags"),
        pytest.param({"exception_mro": ("RuntimeError",)}, id="mro"),
    ],
)
def test_stable_across_run_specific_fields(changes: dict[str, Any]) -> None:
    alert = make_alert("timeout after 31s on host-3")

    assert fingerprint(alert) == fingerprint(dataclasses.replace(alert, **changes))


def test_fingerprint_is_short_hex_and_deterministic() -> None:
    alert = make_alert("boom")

    value = fingerprint(alert)

    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert fingerprint(make_alert("boom")) == value


def test_group_by_without_task_id_groups_across_tasks() -> None:
    by_root_cause = ("dag_id", "exception", "message")
    a = make_alert("could not connect to server 10.0.0.5", task_id="load_orders")
    b = make_alert("could not connect to server 10.0.0.9", task_id="load_customers", map_index=3)

    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a, by_root_cause) == fingerprint(b, by_root_cause)
    # still separates different root causes
    c = make_alert("permission denied for table orders", task_id="load_customers")
    assert fingerprint(a, by_root_cause) != fingerprint(c, by_root_cause)


def test_group_by_without_dag_groups_across_dags() -> None:
    a = make_alert("No space left on device", dag_id="finance", task_id="a")
    b = make_alert("No space left on device", dag_id="marketing", task_id="b")

    assert fingerprint(a, ("exception", "message")) == fingerprint(b, ("exception", "message"))


def test_group_by_order_does_not_matter() -> None:
    alert = make_alert("boom")

    assert fingerprint(alert, ("message", "dag_id")) == fingerprint(alert, ("dag_id", "message"))


@pytest.mark.parametrize("dropped", GROUP_BY_FIELDS)
def test_each_group_by_field_takes_part(dropped: str) -> None:
    changes: dict[str, Any] = {
        "dag_id": {"dag_id": "other"},
        "task_id": {"task_id": "other"},
        "exception": {"exception_type": "KeyError"},
        "message": {"message": "other text"},
    }[dropped]
    a = make_alert("boom")
    b = dataclasses.replace(a, **changes)
    without = tuple(f for f in GROUP_BY_FIELDS if f != dropped)

    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a, without) == fingerprint(b, without)


def test_empty_message_is_fine() -> None:
    assert fingerprint(make_alert("")) == fingerprint(make_alert("   \n  "))


# --- normalise_message --------------------------------------------------------------------


def test_normalise_documented_example() -> None:
    assert normalise_message("timeout after 31s on host-3") == "timeout after <n> on host<n>"


@pytest.mark.parametrize(
    ("message", "placeholder", "gone"),
    [
        pytest.param("id 123e4567-e89b-12d3-a456-426614174000", "<uuid>", "123e4567", id="uuid"),
        pytest.param("at 2024-01-05T12:00:00Z", "<ts>", "2024", id="timestamp"),
        pytest.param("to 10.1.2.3:8080 failed", "<ip>", "10.1.2.3", id="ipv4"),
        pytest.param("postgresql://etl:s3cret@db:5432/x down", "<url>", "s3cret", id="url_credentials"),
        pytest.param("notify ops@example.com", "<email>", "ops@example.com", id="email"),
        pytest.param("reading /var/lib/data/file.parquet", "<path>", "/var/lib", id="path"),
        pytest.param("at 0xDEADBEEF", "<hex>", "DEADBEEF", id="hex"),
        pytest.param("retry 3 of 5", "<n>", "3", id="numbers"),
    ],
)
def test_normalise_replaces_variable_parts(message: str, placeholder: str, gone: str) -> None:
    result = normalise_message(message)

    assert placeholder in result
    assert gone not in result


@pytest.mark.parametrize(
    "message",
    ["connection refused", "table orders not found", "KeyError: 'customer_id'", "HTTPError"],
)
def test_normalise_keeps_words(message: str) -> None:
    assert normalise_message(message) == message


@pytest.mark.parametrize(
    "message",
    [
        "timeout after 31s on host-3",
        "stale since 2024-01-05T12:00:00Z on 10.0.0.1:5432 (worker_7, /tmp/a/b)",
        "postgresql://u:p@h:1/d and bob@example.com at 0xff",
    ],
)
def test_normalise_is_idempotent(message: str) -> None:
    once = normalise_message(message)

    assert normalise_message(once) == once


def test_normalise_truncates_long_messages() -> None:
    result = normalise_message("word " * 1000)

    assert len(result) <= MESSAGE_PREFIX


def test_long_tails_do_not_split_a_fingerprint() -> None:
    head = "validation failed for batch: " + "x" * MESSAGE_PREFIX

    assert fingerprint(make_alert(head + " tail one")) == fingerprint(make_alert(head + " tail two"))
