"""Connection look-ups for the channels: serialised, snapshotted, and honest about why they failed.

Three problems with asking the Task SDK directly from a delivery:

* Under a task runner (and ``airflow dags test``) every Task SDK call goes through one
  supervisor channel.  Concurrent callers corrupt it (``airflow dags test`` even removes the
  channel while it answers), so a connection that exists was reported missing.  The channels
  therefore look connections up in ``prepare()``, on the calling thread, and this module
  serialises the look-ups it makes anyway (a channel delivering unprepared).
* ``Connection.extra_dejson`` of a Task SDK connection sends a ``MaskSecret`` message through
  that same channel on every access, and the provider hooks read it repeatedly.  A look-up
  therefore returns a :class:`ConnectionSnapshot`: a plain copy, its extra parsed (and masked)
  once, that hooks can read from any thread without a Task SDK call.
* The Task SDK reports *every* failure of every secrets backend -- a garbled supervisor
  answer, a timeout, a backend outage -- as ``AirflowNotFoundException``.  Treating that as
  "the connection does not exist" lost the alert instead of retrying it.  So a "not found" is
  checked by asking each backend once more: only when every one of them answers "no such
  connection" (or holds a value that cannot be read as one) is it :class:`ConnectionMissing`;
  anything else is :class:`ConnectionUnavailable`, which the channels report as retryable.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from airflow_alerting.channels._results import _causes, describe

log = logging.getLogger(__name__)

#: the exception a Task SDK look-up raises for "not found" -- and for every other failure
_NOT_FOUND = "AirflowNotFoundException"
#: the secrets backend that asks the supervisor (task runner, ``airflow dags test``)
_SUPERVISOR_BACKEND = "ExecutionAPISecretsBackend"
#: Task SDK calls of this process made through this module, one at a time (re-entrant: a
#: look-up that re-checks a "not found" calls the SDK again while holding it)
_SDK_LOCK = threading.RLock()
#: how the fix for a missing connection is described in details and logs
_HOW_TO_ADD = "add it in Admin > Connections or with `airflow connections add`"


class ConnectionUnusable(Exception):
    """A connection look-up failed; ``str()`` is a detail that names the connection.

    :param conn_id: the connection asked for
    :param message: what went wrong and, for a definitive failure, how to fix it (no secrets)
    """

    #: whether asking again later may succeed
    retryable = False

    def __init__(self, conn_id: str, message: str) -> None:
        super().__init__(message)
        self.conn_id = conn_id


class ConnectionMissing(ConnectionUnusable):
    """The connection is definitively unusable: no secrets backend defines it, or its stored value
    cannot be read as a connection.  Retrying cannot help; a person has to add or correct it."""

    #: whether a backend holds a value for it that is not a connection (rather than nothing)
    malformed = False

    @classmethod
    def not_defined(cls, conn_id: str) -> ConnectionMissing:
        return cls(conn_id, f"connection not found: {conn_id!r} is not defined; {_HOW_TO_ADD}")

    @classmethod
    def unreadable(cls, conn_id: str, backend: str) -> ConnectionMissing:
        missing = cls(
            conn_id,
            f"connection not found: the value stored for {conn_id!r} in {backend} cannot be read as a "
            "connection; correct it",
        )
        missing.malformed = True
        return missing


class ConnectionUnavailable(ConnectionUnusable):
    """The look-up itself failed (supervisor channel, secrets backend, timeout): try again later."""

    retryable = True

    def __init__(self, conn_id: str, reason: str) -> None:
        super().__init__(conn_id, f"connection {conn_id!r} could not be looked up ({reason}); will retry")


@dataclass(frozen=True)
class ConnectionSnapshot:
    """A plain, immutable copy of an Airflow connection, read by hooks without any Task SDK call.

    Duck-types the attributes of :class:`airflow.sdk.Connection` the provider hooks read.
    Password and extra are left out of ``repr``: they hold credentials.
    """

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: str | None = field(default=None, repr=False)
    #: the extra, parsed once; a JSON object that does not parse is ``{}``, as Airflow reads it
    extra_json: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, conn: Any) -> ConnectionSnapshot:
        """Copy a connection.  Reading its extra masks the secrets in it: a Task SDK call, made here.

        :param conn: an :class:`airflow.sdk.Connection` (or anything with its attributes)
        :return: the snapshot
        """
        extra = conn.extra_dejson
        return cls(
            conn_id=conn.conn_id,
            conn_type=conn.conn_type,
            host=conn.host,
            schema=conn.schema,
            login=conn.login,
            password=conn.password,
            port=conn.port,
            extra=conn.extra,
            extra_json=copy.deepcopy(extra) if isinstance(extra, dict) else {},
        )

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The parsed extra, as :attr:`airflow.sdk.Connection.extra_dejson` (a copy: hooks may edit it)."""
        return copy.deepcopy(self.extra_json)


def lookup(conn_id: str, *, timeout: float) -> ConnectionSnapshot:
    """Look a connection up through the Task SDK, as ``BaseHook.get_connection`` does.

    :param conn_id: the connection
    :param timeout: seconds to wait for another look-up of this process to finish first
    :return: a snapshot of the connection
    :raises ConnectionMissing: when it definitively does not exist (or cannot be read)
    :raises ConnectionUnavailable: when the look-up failed in any other way
    """
    if not _SDK_LOCK.acquire(timeout=max(0.0, timeout)):
        raise ConnectionUnavailable(conn_id, f"another connection look-up did not finish within {timeout:g}s")
    try:
        return _lookup(conn_id)
    finally:
        _SDK_LOCK.release()


def _lookup(conn_id: str) -> ConnectionSnapshot:
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        if not _is_not_found(exc):
            # e.g. AirflowSecretsBackendAccessDenied: not "does not exist", so not final either
            raise ConnectionUnavailable(conn_id, describe(exc)) from exc
        verdict = _recheck(conn_id)
        if verdict is not None:
            raise verdict from exc
        # every backend was asked again and one has it: the first answer was the failure
        log.warning("connection %r: reported missing, but it exists; looking it up again", conn_id)
        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception as again:
            raise ConnectionUnavailable(
                conn_id, f"reported missing, yet it exists: {describe(again)}"
            ) from again
    answered = getattr(conn, "conn_id", None)
    if answered and answered != conn_id:
        # a crossed answer from a corrupted supervisor channel: never use another connection's secrets
        raise ConnectionUnavailable(conn_id, "the look-up answered with another connection")
    try:
        return ConnectionSnapshot.of(conn)
    except Exception as exc:
        raise ConnectionUnavailable(conn_id, f"reading it failed: {describe(exc)}") from exc


def _is_not_found(exc: BaseException) -> bool:
    return any(type(cause).__name__ == _NOT_FOUND for cause in _causes(exc))


class _Malformed(Exception):
    """A backend holds a value for the connection that cannot be read as one."""


class _Unanswered(Exception):
    """The supervisor gave no usable answer; the message says what it gave (no secrets)."""


def _recheck(conn_id: str) -> ConnectionUnusable | None:
    """Why the Task SDK reported ``conn_id`` missing: ``None`` when a backend has it after all.

    Each secrets backend the Task SDK consulted is asked again, one by one, in its order.
    """
    try:
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        backends = list(ensure_secrets_backend_loaded())
    except Exception as exc:  # a Task SDK without this: its own answer is all there is
        log.debug("connection %r: cannot re-check a missing connection (%s)", conn_id, describe(exc))
        return ConnectionMissing.not_defined(conn_id)
    malformed: str | None = None
    for backend in backends:
        name = type(backend).__name__
        try:
            if _has_connection(backend, conn_id):
                return None
        except _Malformed:
            malformed = malformed or name
        except _Unanswered as exc:
            return ConnectionUnavailable(conn_id, f"secrets backend {name}: {exc}")
        except Exception as exc:
            return ConnectionUnavailable(conn_id, f"secrets backend {name} failed: {describe(exc)}")
    if malformed is not None:
        return ConnectionMissing.unreadable(conn_id, malformed)
    return ConnectionMissing.not_defined(conn_id)


def _has_connection(backend: Any, conn_id: str) -> bool:
    """Whether ``backend`` defines ``conn_id``; raises when it cannot tell (or holds garbage)."""
    if type(backend).__name__ == _SUPERVISOR_BACKEND:
        # it turns every failure into "not found" too; the supervisor's own answer tells them apart
        return _supervisor_has(conn_id)
    try:
        value = backend.get_conn_value(conn_id)
    except NotImplementedError:  # a backend that builds connections itself (the metastore)
        return backend.get_connection(conn_id) is not None
    if not value:
        return False
    try:
        backend.deserialize_connection(conn_id, value)
    except Exception as exc:
        raise _Malformed(describe(exc)) from exc
    return True


def _supervisor_has(conn_id: str) -> bool:
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import ConnectionResult, ErrorResponse, GetConnection

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        raise _Unanswered("the supervisor channel is not available")
    try:
        answer = comms.send(GetConnection(conn_id=conn_id))
    except Exception as exc:
        # an error frame (AirflowRuntimeError) carries the supervisor's error type
        error = getattr(getattr(exc, "error", None), "error", None)
        said = f"answered {error.value}" if isinstance(error, ErrorType) else f"failed: {describe(exc)}"
        raise _Unanswered(f"the supervisor {said}") from exc
    if isinstance(answer, ErrorResponse):
        if answer.error == ErrorType.CONNECTION_NOT_FOUND:
            return False
        raise _Unanswered(f"the supervisor answered {answer.error.value}")
    if isinstance(answer, ConnectionResult) and answer.conn_id == conn_id:
        return True
    raise _Unanswered(f"the supervisor answered {type(answer).__name__}")
