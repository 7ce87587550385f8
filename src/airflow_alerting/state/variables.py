"""State in Airflow Variables: zero setup, works in workers, the DAG processor and the triggerer.

One Variable per fingerprint (``alerting.fp.<fingerprint>``), one per open incident and one
bounded history document.  Airflow Variables are last-writer-wins with no compare-and-set,
so two workers that race on the same fingerprint can both decide to send.  To narrow the
race, a worker that decides to send writes its token to a claim Variable of its own
(``alerting.claim.<fingerprint>.<channel>``, written only by claimers), waits a short
randomised delay, re-reads, and proceeds only if its token survived: the last writer wins
and always sends, the others stand down.  Duplicates remain possible, losses are not; the
measured rate is in docs/guarantees.md.  Choose the SQL store when duplicates are unacceptable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import replace
from typing import Any

from airflow_alerting import metrics, throttle
from airflow_alerting.model import Decision, DecisionReason
from airflow_alerting.state.base import Claim, DocumentStore, StateUnavailableError

log = logging.getLogger(__name__)


class VariableStore(DocumentStore):
    """State kept in Airflow Variables through the Task SDK.

    :param verify_delay: seconds to wait before re-reading a written claim (randomised up to 2x)
    :param history_limit: decisions kept in the history document
    """

    name = "variables"

    def __init__(self, *, verify_delay: float = 0.1, history_limit: int = 500) -> None:
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

    @staticmethod
    def claim_key(fingerprint: str, channel: str) -> str:
        return f"alerting.claim.{fingerprint}.{channel}"[:250]

    def _after_claim_written(
        self, fingerprint: str, channel: str, claim: Claim, before: dict[str, Any] | None
    ) -> Claim:
        if claim.token is None:
            self._check_not_shadowed(fingerprint, channel, before)
            return claim
        # Senders race in a Variable of their own that only claimers write: the fingerprint
        # document is rewritten from stale reads by every suppression, which could resurrect
        # an abandoned token and leave nobody sending.  Last writer wins; the others stand down.
        claim_key = self.claim_key(fingerprint, channel)
        self._write(claim_key, {"token": claim.token})
        if self.verify_delay > 0:
            time.sleep(random.uniform(self.verify_delay, 2 * self.verify_delay))
        winner = (self._read(claim_key) or {}).get("token")
        if winner == claim.token:
            return claim
        if winner is None:
            raise StateUnavailableError(f"claim written to Variable {claim_key} did not persist")
        metrics.incr("claim_lost")
        return Claim(Decision(False, DecisionReason.IN_FLIGHT, detail="another worker claimed this alert"))

    def _check_not_shadowed(self, fingerprint: str, channel: str, before: dict[str, Any] | None) -> None:
        """A counted suppression must read back: a frozen document would suppress forever."""
        key = self.fingerprint_key(fingerprint)
        stored = (self._read(key) or {}).get("channels", {}).get(channel)
        if stored != before and not _shadowed(key):
            return
        # Our write left no trace: an AIRFLOW_VAR_* variable or a secrets backend shadows the
        # key and Airflow ignores writes to it.  Failing open (capped) is safer.
        log.warning(
            "alerting state Variable %s is shadowed by AIRFLOW_VAR_%s or a secrets backend; "
            "remove it there, alerts fail open until then",
            key,
            key.upper(),
        )
        metrics.incr("state_shadowed")
        raise StateUnavailableError(f"Variable {key} is shadowed; alerting state cannot be stored there")

    # The claim winner settles the document whatever token a racing loser left in it: the
    # Variable claim, not the document, decided who sends.
    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        self._update_channel(
            fingerprint, channel, lambda s: throttle.confirm(replace(s, claim_token=token), token)
        )

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        self._update_channel(
            fingerprint, channel, lambda s: throttle.release(replace(s, claim_token=token), token)
        )


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
