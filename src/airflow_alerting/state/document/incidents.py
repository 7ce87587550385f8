"""The document stores' incidents: joins that converge under racing workers, lifecycle, expiry."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_alerting import metrics
from airflow_alerting.incidents.model import (
    Announcement,
    Incident,
    IncidentJoin,
    IncidentMember,
    IncidentState,
    Occurrence,
)

if TYPE_CHECKING:
    from airflow_alerting.incidents.lifecycle import IncidentRules


from airflow_alerting.state.base import (
    VERIFY_ROUNDS,
    StateUnavailableError,
)
from airflow_alerting.state.document.helpers import _list, _mapping
from airflow_alerting.state.document.silences import DocumentSilences

log = logging.getLogger(__name__)


class DocumentIncidents(DocumentSilences):
    """Incidents: one document each, a pointer per correlation key, a listing and per-DAG indexes."""

    # --- incidents ------------------------------------------------------------------------
    #
    # One document per incident holding its full member map, a pointer per correlation key to
    # its current incident, an index per DAG of the open incidents with members in it (what a
    # success has to look at), and one index of every incident for listing and expiry.

    INCIDENT_INDEX_KEY = "alerting.incidents"

    @staticmethod
    def _hashed(prefix: str, value: str) -> str:
        return f"{prefix}.{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"

    @staticmethod
    def _incident_doc_key(incident_id: str) -> str:
        return f"alerting.inc.{incident_id}"

    def _load_incident(self, incident_id: str) -> tuple[Incident, dict[str, IncidentMember]] | None:
        return _incident_from_document(self._read(self._incident_doc_key(incident_id)))

    def _save_incident(self, incident: Incident, members: dict[str, IncidentMember]) -> None:
        self._write(self._incident_doc_key(incident.id), _incident_document(incident, members))

    def _incident_index(self) -> dict[str, Any]:
        raw = (self._read(self.INCIDENT_INDEX_KEY) or {}).get("incidents")
        return dict(raw) if isinstance(raw, dict) else {}

    def _index_incident(self, incident: Incident) -> None:
        entries = self._incident_index()
        entries[incident.id] = {
            "state": incident.state.value,
            "last_seen_at": incident.last_seen_at.isoformat(),
        }
        self._write(self.INCIDENT_INDEX_KEY, {"incidents": entries})

    def _dag_index(self, dag_id: str) -> dict[str, list[str]]:
        doc = self._read(self._hashed("alerting.dagidx", dag_id)) or {}
        raw = doc.get("incidents")
        return {str(k): list(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _save_dag_index(self, dag_id: str, index: dict[str, list[str]]) -> None:
        key = self._hashed("alerting.dagidx", dag_id)
        if index:
            self._write(key, {"dag_id": dag_id, "incidents": index})
        else:
            self._delete(key)

    def join_incident(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        if self._verifies:
            return self._join_verified(occurrence, rules)
        from airflow_alerting.incidents import lifecycle

        # writes are atomic here (memory): one plain read-modify-write
        with self._atomic():
            pointer_key = self._hashed("alerting.corr", occurrence.key)
            pointer = self._read(pointer_key) or {}
            loaded = self._load_incident(str(pointer["id"])) if pointer.get("id") else None
            current, members = loaded if loaded is not None else (None, {})
            previous_id = str(pointer["id"]) if pointer.get("id") else None
            joined, members = lifecycle.join(current, members, occurrence, rules, previous_id=previous_id)
            self._save_incident(joined.incident, members)
            if joined.opened:
                self._write(pointer_key, {"id": joined.incident.id, "key": occurrence.key})
                self._index_incident(joined.incident)
            if joined.new_member:
                index = self._dag_index(occurrence.dag_id)
                keys = index.setdefault(joined.incident.id, [])
                if occurrence.member_key not in keys:
                    keys.append(occurrence.member_key)
                    self._save_dag_index(occurrence.dag_id, index)
            return joined

    # Where writes are not atomic (Variables), racing workers must still converge on one incident
    # per correlation key, with every failure counted:
    #
    # - an opener points the key at its new incident *before* storing it, naming the id it follows
    #   ("prev"), and verifies the pointer; a worker that finds the pointer but not yet the incident
    #   opens the same one (ids are deterministic: ``new_incident_id``), and a worker whose pointer
    #   was replaced by another opener's starts over and joins that incident;
    # - the join is verified in the incident document: re-read, and re-applied to what was read
    #   back until this failure's member is there; read back once more after the deliveries
    #   (:meth:`_recheck_joins`), when a concurrent write slower than the pause has landed;
    # - the listing and the DAG's index (what a success looks at) are written after the deliveries,
    #   by :meth:`_index_new_keys`, verified too.

    def _join_verified(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        pointer_key = self._hashed("alerting.corr", occurrence.key)
        for attempt in range(VERIFY_ROUNDS):
            pointer = self._read(pointer_key) or {}
            pointed = str(pointer["id"]) if pointer.get("id") else None
            stored = self._read(self._incident_doc_key(pointed)) if pointed else None
            current = _incident_from_document(stored)
            previous_id = pointed
            if current is None and pointed and "prev" in pointer:
                # its opener pointed the key at it and has not stored it yet: open the same one
                previous_id = str(pointer.get("prev") or "") or None
            target = pointed
            opening = _opening(current, occurrence, rules, previous_id)
            if opening is not None and opening[0] != pointed:
                target, previous_id = opening
                if not self._point_at(pointer_key, occurrence.key, target, previous_id, pointed):
                    # another opener's incident was pointed at after ours: join that one instead
                    metrics.incr("incident_pointer_lost")
                    self._pause(attempt)
                    continue
            assert target is not None  # a key pointing nowhere always opens
            try:
                # the document read above is current unless the join moves to a new incident
                joined, created = self._store_join(
                    occurrence, rules, target, previous_id, stored=stored if target == pointed else None
                )
            except _IncidentMovedError:
                self._pause(attempt)
                continue
            if created:
                # whoever created the document lists it, even if its join was re-applied later
                self._unlisted[joined.incident.id] = joined.incident
            self._unchecked.append((occurrence, rules, joined.incident.id, previous_id))
            if joined.new_member:
                self._unlisted_members.add((occurrence.dag_id, joined.incident.id, occurrence.member_key))
            return joined
        metrics.incr("state_contended")
        raise StateUnavailableError(f"join_incident: the incident of {pointer_key} kept moving")

    def _point_at(
        self, pointer_key: str, key: str, incident_id: str, prev: str | None, pointed: str | None
    ) -> bool:
        """Point ``key`` at ``incident_id`` (verified); ``False`` when another opener's pointer won.

        :param pointed: what the pointer held when it was read, before this write
        """
        nonce = uuid.uuid4().hex[:12]

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            return {"id": incident_id, "key": key, "prev": prev, "v": nonce}

        def landed(doc: dict[str, Any] | None) -> bool:
            # ours, or moved on by another opener: anything but what was there before our write
            return (doc or {}).get("id") not in (pointed, None)

        seen = self._merge_verified(pointer_key, change, landed, read=False)
        return (seen or {}).get("id") == incident_id

    def _store_join(
        self,
        occurrence: Occurrence,
        rules: IncidentRules,
        incident_id: str,
        previous_id: str | None,
        *,
        stored: dict[str, Any] | None = None,
    ) -> tuple[IncidentJoin, bool]:
        """Apply the join to the document of ``incident_id`` until this failure's member reads back.

        :param stored: the document as just read (``None``: read it)
        :return: the join as last applied, and whether any of its writes created the incident (a
            re-applied join no longer opens it, but its first write may have been the one)

        :raises _IncidentMovedError: the incident no longer takes this failure (resolved meanwhile)
        """
        from airflow_alerting.incidents import lifecycle

        outcome: list[tuple[IncidentJoin, int]] = []

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            parsed = _incident_from_document(doc)
            current, members = parsed if parsed is not None else (None, {})
            joined, members = lifecycle.join(current, members, occurrence, rules, previous_id=previous_id)
            if joined.incident.id != incident_id:
                raise _IncidentMovedError(incident_id)
            outcome.append((joined, members[occurrence.member_key].failures))
            return _incident_document(joined.incident, members)

        def landed(doc: dict[str, Any] | None) -> bool:
            parsed = _incident_from_document(doc)
            found = parsed[1].get(occurrence.member_key) if parsed is not None else None
            return found is not None and bool(outcome) and found.failures >= outcome[-1][1]

        key = self._incident_doc_key(incident_id)
        self._merge_verified(key, change, landed, current=stored, read=stored is None)
        return outcome[-1][0], any(j.opened for j, _ in outcome)

    def _index_new_keys(self) -> None:
        """Also read this store's joins back and list the incidents it opened (after the deliveries)."""
        self._list_new_incidents()
        super()._index_new_keys()

    def _recheck_joins(self) -> None:
        """Read this store's joins back once more, after the deliveries, and apply again any that a
        slow concurrent read-modify-write removed after it was verified."""
        while self._unchecked:
            occurrence, rules, incident_id, previous_id = self._unchecked.pop()
            parsed = _incident_from_document(self._read(self._incident_doc_key(incident_id)))
            if parsed is None or occurrence.member_key in parsed[1]:
                continue  # there, or gone with its incident (pruned): nothing to repair
            log.info(
                "alerting incident %s lost failure %s to a concurrent write; adding it again",
                incident_id,
                occurrence.member_key,
            )
            with contextlib.suppress(_IncidentMovedError):
                self._store_join(occurrence, rules, incident_id, previous_id)

    def _list_new_incidents(self) -> None:
        """Add the incidents this store opened to the listing and their members to the DAG indexes.

        Verified: an incident missing from the listing is never pruned, a member missing from its
        DAG's index never recovers.  What is still missing after every round (a storm's writers all
        rewriting one DAG's index) is kept, and the next alert of this process adds it again.
        """
        self._recheck_joins()
        if self._unlisted:
            pending, self._unlisted = dict(self._unlisted), {}
            entries = {
                i: {"state": n.state.value, "last_seen_at": n.last_seen_at.isoformat()}
                for i, n in pending.items()
            }

            def listed(doc: dict[str, Any] | None) -> bool:
                return entries.keys() <= _mapping(doc, "incidents").keys()

            def add(doc: dict[str, Any] | None) -> dict[str, Any]:
                current = _mapping(doc, "incidents")
                for incident_id, entry in entries.items():
                    # a transition stored meanwhile is newer than the entry this join made
                    current.setdefault(incident_id, {**entry, "v": uuid.uuid4().hex[:12]})
                return {"incidents": current}

            try:
                seen = self._merge_verified(self.INCIDENT_INDEX_KEY, add, listed)
            except StateUnavailableError:
                self._unlisted.update(pending)
                raise
            if not listed(seen):
                self._unlisted.update(pending)
        by_dag: dict[str, set[tuple[str, str]]] = {}
        while self._unlisted_members:
            dag_id, incident_id, member = self._unlisted_members.pop()
            by_dag.setdefault(dag_id, set()).add((incident_id, member))
        for dag_id, wanted in by_dag.items():

            def indexed(doc: dict[str, Any] | None, wanted: set[tuple[str, str]] = wanted) -> bool:
                index = _mapping(doc, "incidents")
                return all(member in _list(index, incident_id) for incident_id, member in wanted)

            def add_members(
                doc: dict[str, Any] | None, wanted: set[tuple[str, str]] = wanted, dag_id: str = dag_id
            ) -> dict[str, Any]:
                index = _mapping(doc, "incidents")
                for incident_id, member in sorted(wanted):
                    keys = _list(index, incident_id)
                    index[incident_id] = keys if member in keys else [*keys, member]
                return {"dag_id": dag_id, "incidents": index, "v": uuid.uuid4().hex[:12]}

            try:
                seen = self._merge_verified(self._hashed("alerting.dagidx", dag_id), add_members, indexed)
            except StateUnavailableError:
                self._unlisted_members.update((dag_id, i, m) for i, m in wanted)
                raise
            if not indexed(seen):
                self._unlisted_members.update((dag_id, i, m) for i, m in wanted)

    def incident(self, incident_id: str) -> Incident | None:
        loaded = self._load_incident(incident_id)
        return loaded[0] if loaded is not None else None

    def incidents(self, *, states: Sequence[IncidentState] = (), limit: int = 100) -> list[Incident]:
        entries = self._incident_index()
        found = [i for i in (self.incident(incident_id) for incident_id in entries) if i is not None]
        if states:
            found = [i for i in found if i.state in states]
        found.sort(key=lambda i: (i.last_seen_at, i.id), reverse=True)
        return found[:limit]

    def record_announcement(self, incident_id: str, announcement: Announcement) -> None:
        with self._atomic():
            loaded = self._load_incident(incident_id)
            if loaded is None:
                return
            incident, members = loaded
            announcements = {**incident.announcements, announcement.channel: announcement}
            self._save_incident(replace(incident, announcements=announcements), members)

    def recover_members(
        self, dag_id: str, task_id: str | None, map_index: int, *, now: datetime
    ) -> list[Incident]:
        from airflow_alerting.incidents import lifecycle
        from airflow_alerting.incidents.model import member_key

        wanted = member_key(dag_id, task_id, map_index) if task_id is not None else None
        resolved: list[Incident] = []
        with self._atomic():
            index = self._dag_index(dag_id)
            changed_index = False
            for incident_id, keys in list(index.items()):
                if wanted is not None and wanted not in keys:
                    continue
                loaded = self._load_incident(incident_id)
                if loaded is None or not loaded[0].is_open:
                    del index[incident_id]
                    changed_index = True
                    continue
                incident, members = loaded
                updated, members, done = lifecycle.recover(
                    incident, members, dag_id=dag_id, task_id=task_id, map_index=map_index, at=now
                )
                if updated is incident:
                    continue
                self._save_incident(updated, members)
                still_failing = [k for k in keys if k in members and members[k].failing]
                if still_failing:
                    index[incident_id] = still_failing
                else:
                    del index[incident_id]
                changed_index = True
                if done:
                    self._index_incident(updated)
                    resolved.append(updated)
            if changed_index:
                self._save_dag_index(dag_id, index)
        return resolved

    def _transition(self, incident_id: str, change: Any) -> Incident | None:
        with self._atomic():
            loaded = self._load_incident(incident_id)
            if loaded is None:
                return None
            incident, members = loaded
            updated: Incident | None = change(incident)
            if updated is None:
                return None
            self._save_incident(updated, members)
            self._index_incident(updated)
            return updated

    def acknowledge_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        from airflow_alerting.incidents import lifecycle

        return self._transition(incident_id, lambda i: lifecycle.acknowledge(i, by=by, at=now))

    def resolve_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        from airflow_alerting.incidents import lifecycle

        return self._transition(incident_id, lambda i: lifecycle.resolve(i, by=by, at=now))

    def mark_digested(self, incident_ids: Sequence[str], *, now: datetime) -> None:
        with self._atomic():
            for incident_id in incident_ids:
                loaded = self._load_incident(incident_id)
                if loaded is not None:
                    self._save_incident(replace(loaded[0], digested_at=now), loaded[1])

    def prune_incidents(self, *, now: datetime, rules: IncidentRules) -> int:
        from airflow_alerting.incidents import lifecycle

        with self._atomic():
            entries = self._incident_index()
            pruned = 0
            for incident_id in list(entries):
                loaded = self._load_incident(incident_id)
                if loaded is not None and not lifecycle.is_stale(loaded[0], now, rules):
                    continue
                del entries[incident_id]
                pruned += 1
                if loaded is None:
                    continue
                incident, members = loaded
                self._delete(self._incident_doc_key(incident_id))
                pointer_key = self._hashed("alerting.corr", incident.key)
                if (self._read(pointer_key) or {}).get("id") == incident_id:
                    self._delete(pointer_key)
                for dag_id in {m.dag_id for m in members.values()}:
                    index = self._dag_index(dag_id)
                    if index.pop(incident_id, None) is not None:
                        self._save_dag_index(dag_id, index)
            if pruned:
                self._write(self.INCIDENT_INDEX_KEY, {"incidents": entries})
            silences = self._stored_silences()
            kept = [s for s in silences if now - s.ends_at <= rules.retention]
            if len(kept) != len(silences):
                self._save_silences(kept)
            return pruned


class _IncidentMovedError(Exception):
    """The incident a join was about to be stored in no longer takes it (resolved meanwhile)."""


def _opening(
    current: tuple[Incident, dict[str, IncidentMember]] | None,
    occurrence: Occurrence,
    rules: IncidentRules,
    previous_id: str | None,
) -> tuple[str, str | None] | None:
    """``(id, id it follows)`` of the incident ``occurrence`` opens; ``None`` when it joins ``current``."""
    from airflow_alerting.incidents import lifecycle
    from airflow_alerting.incidents.model import new_incident_id

    incident = current[0] if current is not None else None
    if not lifecycle.starts_new(incident, occurrence, rules):
        return None
    prev = incident.id if incident is not None else previous_id
    return new_incident_id(occurrence.key, occurrence.at, prev), prev


def _incident_from_document(doc: dict[str, Any] | None) -> tuple[Incident, dict[str, IncidentMember]] | None:
    if not doc or not isinstance(doc.get("incident"), dict):
        return None
    members = {
        str(k): IncidentMember.from_json(v)
        for k, v in (doc.get("members") or {}).items()
        if isinstance(v, dict)
    }
    return Incident.from_json(doc["incident"]), members


def _incident_document(incident: Incident, members: dict[str, IncidentMember]) -> dict[str, Any]:
    return {"incident": incident.to_json(), "members": {k: m.to_json() for k, m in members.items()}}
