"""State in Airflow Variables: zero setup, works in workers, the DAG processor and the triggerer.

Airflow Variables are last-writer-wins with no compare-and-set, and the Task SDK cannot list
them, so the layout keeps what many workers write apart and findable:

- ``alerting.fp.<key>``: occurrences and each channel's throttle state, written by senders
  (and by ``record_occurrence``), never by suppressions;
- ``alerting.claim.<key>.<channel>``: the claim token, written only by claimers.  A worker that
  decides to send writes its token there, waits a short randomised delay, re-reads, and
  proceeds only if its token survived: the last writer wins and always sends, the others
  stand down (and are counted as held back);
- ``alerting.sup.<key>.<channel>``: one counter per claimer (store instance) of the
  occurrences held back, so no increment is lost to another worker's stale write;
- ``alerting.outbox.item.<id>``: one Variable per outbox item, found through the
  ``alerting.outbox.index.<n>`` shards; ``alerting.history.<n>[.<chunk>]``: history shards;
  ``alerting.keys.<n>``: the index ``prune_state`` walks.

A change that must not be lost (a counter, an index entry, a history batch) is re-read after
the delay and written again until it reads back; a Variable that ignores two consecutive
writes is shadowed (``AIRFLOW_VAR_*`` or a secrets backend) and the store fails open.
Duplicates remain possible, losses are not; the measured rates and the residual races are in
docs/guarantees.md.  Choose the SQL store when duplicates are unacceptable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from dataclasses import replace
from typing import Any

from airflow_alerting import metrics, throttle
from airflow_alerting.state.base import DocumentStore, StateUnavailableError, _Counted

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

    # --- verification -----------------------------------------------------------------------

    def _pause(self, attempt: int = 0) -> None:
        # randomised and growing, so that workers that collided once are unlikely to collide again;
        # capped, so that four rounds stay well inside a callback's deadline
        if self.verify_delay > 0:
            pause = random.uniform(self.verify_delay, 2 * self.verify_delay) * 2**attempt
            time.sleep(min(pause, max(1.0, 2 * self.verify_delay)))

    def _check_writable(self, key: str) -> None:
        if _shadowed(key):
            raise self._shadow_error(key)

    def _shadow_error(self, key: str) -> StateUnavailableError:
        # An AIRFLOW_VAR_* variable or a secrets backend shadows the key and Airflow ignores our
        # writes to it: a frozen document could hold alerts back forever, so fail open (capped).
        log.warning(
            "alerting state Variable %s is shadowed by AIRFLOW_VAR_%s or a secrets backend; "
            "remove it there, alerts fail open until then",
            key,
            key.upper(),
        )
        metrics.incr("state_shadowed")
        return StateUnavailableError(f"Variable {key} is shadowed; alerting state cannot be stored there")

    @staticmethod
    def claim_key(fingerprint: str, channel: str) -> str:
        return f"alerting.claim.{fingerprint}.{channel}"[:250]

    def _channel_keys(self, fingerprint: str, channel: str) -> list[str]:
        return [*super()._channel_keys(fingerprint, channel), self.claim_key(fingerprint, channel)]

    def _claim_winner(self, fingerprint: str, channel: str, token: str, written: dict[str, Any]) -> str:
        # Senders race in a Variable of their own that only claimers write: the fingerprint
        # document can be rewritten from stale reads, which could resurrect an abandoned token
        # and leave nobody sending.  Last writer wins; the others stand down.
        claim_key = self.claim_key(fingerprint, channel)
        self._check_writable(claim_key)
        self._write(claim_key, {"token": token})
        self._pause()
        winner = (self._read(claim_key) or {}).get("token")
        if winner is None:
            raise StateUnavailableError(f"claim written to Variable {claim_key} did not persist")
        if winner != token:
            self._hand_over(fingerprint, channel, token, str(winner))
            return str(winner)
        self._keep_claim(fingerprint, channel, token, written)
        return token

    def _hand_over(self, fingerprint: str, channel: str, token: str, winner: str) -> None:
        """A loser whose claim the fingerprint document still shows passes it to the winner, so the
        winner's confirm or release settles it instead of it blocking the window until its lease ends."""
        key = self.fingerprint_key(fingerprint)
        doc = self._fingerprint_doc(fingerprint)
        raw = doc["channels"].get(channel)
        if isinstance(raw, dict) and raw.get("claim_token") == token:
            doc["channels"][channel] = _with_epoch({**raw, "claim_token": winner}, winner)
            self._write(key, doc)

    def _keep_claim(self, fingerprint: str, channel: str, token: str, written: dict[str, Any]) -> None:
        """The winner makes sure the fingerprint document holds its claim (a loser's write may have
        replaced it) and that the document takes writes at all (a frozen one is a shadow)."""
        key = self.fingerprint_key(fingerprint)
        current = self._read(key)
        raw = ((current or {}).get("channels") or {}).get(channel)
        if isinstance(raw, dict) and raw.get("claim_token") == token:
            return

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            updated: dict[str, Any] = dict(doc) if isinstance(doc, dict) else {"fingerprint": fingerprint}
            channels: dict[str, Any] = dict(updated.get("channels") or {})
            # keep the epochs of the claims we replace: occurrences were counted in them
            others = (channels.get(channel) or {}).get("epochs") or []
            merged: dict[str, Any] = {**written, "nonce": uuid.uuid4().hex[:12]}
            merged["epochs"] = list(dict.fromkeys([*merged.get("epochs", []), *others]))
            channels[channel] = merged
            updated["channels"] = channels
            return updated

        def landed(doc: dict[str, Any] | None) -> bool:
            return bool((((doc or {}).get("channels") or {}).get(channel) or {}).get("claim_token") == token)

        self._merge_verified(key, change, landed, current=current, read=False)

    # The claim winner settles the document whatever token a racing loser left in it: the
    # Variable claim, not the document, decided who sends.
    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        self._index_new_keys()

        def keep(state: throttle.ChannelState, counted: _Counted) -> tuple[throttle.ChannelState, _Counted]:
            counted = replace(counted, epochs=tuple(dict.fromkeys((*counted.epochs, token))))
            return throttle.confirm(replace(state, claim_token=token), token), counted.kept()

        self._update_channel(fingerprint, channel, keep)

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        self._index_new_keys()

        def give_back(
            state: throttle.ChannelState, counted: _Counted
        ) -> tuple[throttle.ChannelState, _Counted]:
            counted = replace(counted, epochs=tuple(dict.fromkeys((*counted.epochs, token))))
            return throttle.release(replace(state, claim_token=token), token), counted.rolled_back()

        self._update_channel(fingerprint, channel, give_back)


def read_variable(key: str) -> str | None:
    """Read a Variable as text from wherever this code runs (worker, DAG processor, scheduler, script).

    :raises StateUnavailableError: when no Variable API could answer
    """
    value = VariableStore(verify_delay=0)._call("get", key)
    return str(value) if value is not None else None


def _shadowed(key: str) -> bool:
    return f"AIRFLOW_VAR_{key.upper()}" in os.environ or f"AIRFLOW_VAR_{key}" in os.environ


def _with_epoch(raw: dict[str, Any], epoch: str) -> dict[str, Any]:
    """A stored channel state that also counts the occurrences held back in ``epoch``."""
    epochs: list[Any] = raw["epochs"] if isinstance(raw.get("epochs"), list) else []
    return {**raw, "epochs": list(dict.fromkeys([*epochs, epoch]))}


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
