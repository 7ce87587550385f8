"""The threads deliveries run on: reused between alerts, never shared with a hung delivery.

Starting a thread per delivery costs more than the rest of an alert's pipeline on a loaded
machine, so a delivery goes to an idle thread when there is one.  There is no upper bound on
threads: a channel that hangs keeps its thread, and the next delivery starts another, so a
hung channel never delays the others (as with a fresh thread per delivery).  Idle threads exit
after :data:`IDLE_SECONDS`.
"""

from __future__ import annotations

import atexit
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

#: an idle thread waits this long for another delivery before it exits
IDLE_SECONDS = 30.0

_T = TypeVar("_T")
_Task = tuple["Future[Any]", Callable[[], Any]]


class Workers:
    """Runs calls on reusable daemon threads, each call in a fresh :mod:`contextvars` context.

    :param name: the threads' name prefix
    :param idle_seconds: how long an idle thread waits for work before it exits
    """

    def __init__(self, name: str = "alerting", idle_seconds: float = IDLE_SECONDS) -> None:
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds!r}")
        self.name = name
        self.idle_seconds = idle_seconds
        self._reset()

    def _reset(self) -> None:
        # also the state of a forked child: the parent's threads do not exist there
        self._lock = threading.Lock()
        # notified whenever a call finishes (for wait_idle)
        self._finished = threading.Condition(self._lock)
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        #: threads waiting for a task, less the tasks already handed to them
        self._idle = 0
        #: calls submitted and not finished
        self._running = 0
        self._alive = 0
        self._started = 0

    @property
    def threads(self) -> int:
        """Threads alive now (idle or busy)."""
        with self._lock:
            return self._alive

    def submit(self, call: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Run ``call(*args, **kwargs)`` on an idle thread, or on a new one when none is idle.

        :param call: what to run; its result or exception ends up in the returned future
        """
        future: Future[_T] = Future()
        task: _Task = (future, lambda: contextvars.Context().run(call, *args, **kwargs))
        with self._lock:
            self._running += 1
            if self._idle:
                # a thread is waiting on the queue: hand the task over (counted taken, under the lock)
                self._idle -= 1
                self._tasks.put(task)
                return future
            self._started += 1
            self._alive += 1
            name = f"{self.name}_{self._started}"
        try:
            threading.Thread(target=self._work, args=(task,), name=name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._running -= 1
                self._alive -= 1
            raise
        return future

    def _work(self, task: _Task) -> None:
        while True:
            future, call = task
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as err:
                    future.set_exception(err)
                else:
                    future.set_result(result)
            del future, call, task  # nothing of a finished delivery stays alive while idle
            with self._lock:
                self._running -= 1
                self._idle += 1
                self._finished.notify_all()
            next_task = self._next_task()
            if next_task is None:
                return
            task = next_task

    def _next_task(self) -> _Task | None:
        """The next task for an idle thread, or ``None`` when it should exit (idle for too long)."""
        while True:
            try:
                return self._tasks.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    # a task handed to "an idle thread" after the timeout is still in the queue:
                    # take it rather than leave it to a thread that may be exiting too
                    if self._tasks.empty():
                        self._idle -= 1
                        self._alive -= 1
                        return None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every call submitted so far has finished; ``True`` unless ``timeout`` passed first.

        At interpreter exit this lets a delivery that outlived its alert's deadline complete,
        as :mod:`concurrent.futures` waits for its threads.

        :param timeout: seconds to wait at most; ``None`` waits as long as it takes
        """
        with self._finished:
            return self._finished.wait_for(lambda: self._running == 0, timeout)


#: the process's delivery threads
WORKERS = Workers()

# a delivery that outlived its alert's deadline still completes before the process exits
atexit.register(WORKERS.wait_idle)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WORKERS._reset)
