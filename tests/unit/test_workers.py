"""The delivery threads: reused when idle, never shared with a hung call, a fresh context per call."""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_alerting.workers import WORKERS, Workers

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("test_workers_mark", default="unset")


@pytest.fixture
def workers() -> Iterator[Workers]:
    pool = Workers(name="test_workers", idle_seconds=5.0)
    yield pool
    assert pool.wait_idle(timeout=5)


def current_thread_name() -> str:
    return threading.current_thread().name


def test_an_idle_thread_is_reused(workers: Workers) -> None:
    first = workers.submit(current_thread_name).result(timeout=5)
    assert workers.wait_idle(timeout=5)

    second = workers.submit(current_thread_name).result(timeout=5)

    assert first == second
    assert first.startswith("test_workers_")
    assert workers.threads == 1


def test_a_hung_call_does_not_hold_up_the_next(workers: Workers) -> None:
    release = threading.Event()
    hung = workers.submit(release.wait, 10)

    other = workers.submit(current_thread_name)

    assert other.result(timeout=5).startswith("test_workers_")
    assert not hung.done()
    assert workers.threads == 2
    assert not workers.wait_idle(timeout=0.05)  # the hung call is still running
    release.set()
    assert hung.result(timeout=5) is True


def test_concurrent_calls_each_get_a_thread(workers: Workers) -> None:
    barrier = threading.Barrier(3, timeout=5)

    futures = [workers.submit(barrier.wait) for _ in range(3)]

    # all three wait for each other: they can only pass if they run at the same time
    assert sorted(f.result(timeout=10) for f in futures) == [0, 1, 2]


def test_results_and_exceptions_reach_the_future(workers: Workers) -> None:
    assert workers.submit(lambda a, b=0: a + b, 2, b=3).result(timeout=5) == 5

    failed = workers.submit(int, "not a number")

    with pytest.raises(ValueError, match="not a number"):
        failed.result(timeout=5)
    # the thread survives a failing call and runs the next one
    assert workers.submit(current_thread_name).result(timeout=5).startswith("test_workers_")


def test_every_call_starts_from_a_fresh_context(workers: Workers) -> None:
    def set_and_read() -> str:
        before = MARK.get()
        MARK.set("set by an earlier call")
        return before

    MARK.set("the caller's")
    try:
        assert workers.submit(set_and_read).result(timeout=5) == "unset"
        assert workers.wait_idle(timeout=5)
        # same thread, but nothing left behind by the call before, nor taken from the caller
        assert workers.submit(set_and_read).result(timeout=5) == "unset"
        assert workers.threads == 1
    finally:
        MARK.set("unset")


def test_idle_threads_exit_after_the_idle_time() -> None:
    pool = Workers(name="test_workers_short", idle_seconds=0.05)
    pool.submit(current_thread_name).result(timeout=5)

    deadline = time.monotonic() + 5
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.01)

    assert pool.threads == 0
    # and a new call starts a new thread
    assert pool.submit(current_thread_name).result(timeout=5) == "test_workers_short_2"


def test_a_call_handed_over_as_a_thread_times_out_still_runs() -> None:
    # many short idle periods: submissions race with threads deciding to exit
    pool = Workers(name="test_workers_race", idle_seconds=0.001)
    for n in range(300):
        assert pool.submit(lambda n=n: n).result(timeout=5) == n
        if n % 7 == 0:
            time.sleep(0.001)
    assert pool.wait_idle(timeout=5)


def test_idle_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_seconds"):
        Workers(idle_seconds=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_its_own_threads() -> None:
    # the parent's idle thread does not exist in the child: a task handed to it would never run
    WORKERS.submit(current_thread_name).result(timeout=5)
    assert WORKERS.wait_idle(timeout=5)

    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            code = 0 if WORKERS.submit(lambda: 42).result(timeout=5) == 42 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
