"""State in Airflow Variables: zero setup, works in workers, the DAG processor and the triggerer.

One Variable per fingerprint (``alerting.fp.<fingerprint>``), one per open incident and one
bounded history document.  Airflow Variables are last-writer-wins with no compare-and-set,
so two workers that race on the same fingerprint can both decide to send.  To narrow the
race, a worker that decides to send writes a claim token, waits a short randomised delay,
re-reads, and proceeds only if its token survived; the worker whose write landed last wins
and the others stand down.  What remains is measured and documented in docs/guarantees.md;
choose the SQL store when duplicates are unacceptable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any

from airflow_alerting import metrics
from airflow_alerting.model import Decision, DecisionReason
from airflow_alerting.state.base import Claim, DocumentStore, StateUnavailableError

log = logging.getLogger(__name__)


class VariableStore(DocumentStore):
    """State kept in Airflow Variables through the Task SDK.

    :param verify_delay: seconds to wait before re-reading a written claim (randomised up to 2x)
    :param history_limit: decisions kept in the history document
    """

    name = "variables"

    def __init__(self, *, verify_delay: float = 0.05, history_limit: int = 500) -> None:
        super().__init__(history_limit)
        self.verify_delay = verify_delay

    # --- Variable access ------------------------------------------------------------------

    def _read(self, key: str) -> dict[str, Any] | None:
        raw = self._call("get", key)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except (TypeError, ValueError):
            document = None
        if not isinstance(document, dict):
            # a corrupt document must not block alerts: treat it as absent and overwrite it
            log.warning("alerting state Variable %s holds no valid JSON document; ignoring it", key)
            metrics.incr("state_corrupt")
            return None
        return document

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self._call("set", key, json.dumps(document, separators=(",", ":"), sort_keys=True))

    def _delete(self, key: str) -> None:
        self._call("delete", key)

    def _call(self, operation: str, key: str, value: str | None = None) -> Any:
        """Run a Variable operation through the Task SDK, falling back to the ORM model.

        The Task SDK works wherever a supervisor exists (workers, DAG processor, triggerer);
        the main process of ``dag.test()``, where DAG-level callbacks run, has none, but may
        use the ORM model directly.
        """
        errors: list[str] = []
        for variable in _variable_classes():
            try:
                if operation == "get":
                    # positional: the SDK calls it "default", the ORM model "default_var"
                    return variable.get(key, None)
                if operation == "set":
                    variable.set(key, value, description="airflow-provider-alerting state (managed)")
                    return None
                variable.delete(key)
                return None
            except Exception as err:  # any backend error means "state unavailable", never a crash
                errors.append(f"{variable.__module__}: {type(err).__name__}: {err}")
        raise StateUnavailableError(f"Variable {operation} {key!r} failed: {'; '.join(errors)[:500]}")

    # --- claim verification ---------------------------------------------------------------

    def _after_claim_written(
        self, fingerprint: str, channel: str, claim: Claim, before: dict[str, Any] | None
    ) -> Claim:
        sending = claim.token is not None
        if sending and self.verify_delay > 0:
            # give a racing writer time to land, so the last writer (the winner) is what we read
            time.sleep(random.uniform(self.verify_delay, 2 * self.verify_delay))
        key = self.fingerprint_key(fingerprint)
        stored = (self._read(key) or {}).get("channels", {}).get(channel)
        stored_token = stored.get("claim_token") if isinstance(stored, dict) else None
        if sending and stored_token == claim.token:
            return claim
        if stored == before or _shadowed(key):
            # Our write left no trace: an AIRFLOW_VAR_* variable or a secrets backend shadows the
            # key and Airflow ignores writes to it.  Failing open (capped) is safer than obeying
            # a frozen document that could suppress this alert forever.
            log.warning(
                "alerting state Variable %s is shadowed by AIRFLOW_VAR_%s or a secrets backend; "
                "remove it there, alerts fail open until then",
                key,
                key.upper(),
            )
            metrics.incr("state_shadowed")
            raise StateUnavailableError(f"Variable {key} is shadowed; alerting state cannot be stored there")
        if not sending:
            return claim
        metrics.incr("claim_lost")
        return Claim(Decision(False, DecisionReason.IN_FLIGHT, detail="another worker claimed this alert"))


def read_variable(key: str) -> str | None:
    """Read a Variable as text from wherever this code runs (worker, DAG processor, scheduler, script).

    :raises StateUnavailableError: when no Variable API could answer
    """
    value = VariableStore(verify_delay=0)._call("get", key)
    return str(value) if value is not None else None


def _shadowed(key: str) -> bool:
    return f"AIRFLOW_VAR_{key.upper()}" in os.environ or f"AIRFLOW_VAR_{key}" in os.environ


def _variable_classes() -> list[Any]:
    """The Variable APIs to use here, best first.

    Under a supervisor (workers, DAG-processor children, triggerer) only the Task SDK may be
    used: the ORM is blocked there.  Anywhere else (``dag.test()``'s main process, where
    DAG-level callbacks run, the scheduler, scripts) the SDK silently finds nothing, because
    its fallback secrets chain skips the metastore, so the ORM model comes first.
    """
    sdk_variable: Any = None
    orm_variable: Any = None
    try:
        from airflow.sdk import Variable as sdk_variable
    except ImportError:
        log.debug("airflow.sdk.Variable unavailable")
    if _under_supervisor():
        return [sdk_variable] if sdk_variable is not None else []
    try:
        from airflow.models import Variable as orm_variable
    except ImportError:
        log.debug("airflow.models.Variable unavailable")
    return [v for v in (orm_variable, sdk_variable) if v is not None]


def _under_supervisor() -> bool:
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None
