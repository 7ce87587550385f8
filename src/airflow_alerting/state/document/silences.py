"""The document stores' silences, in one document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_alerting.incidents.silences import Silence


from airflow_alerting.state.document.retention import DocumentRetention


class DocumentSilences(DocumentRetention):
    """Silences, in one document."""

    SILENCES_KEY = "alerting.silences"

    def _stored_silences(self) -> list[Silence]:
        from airflow_alerting.incidents.silences import Silence, SilenceError

        doc = self._read(self.SILENCES_KEY) or {}
        found = []
        for raw in doc.get("silences", []) if isinstance(doc.get("silences"), list) else []:
            try:
                found.append(Silence.from_json(raw))
            except SilenceError:
                continue  # a damaged entry must not hide the others
        return found

    def _save_silences(self, silences: Sequence[Silence]) -> None:
        self._write(self.SILENCES_KEY, {"silences": [s.to_json() for s in silences]})

    def add_silence(self, silence: Silence) -> None:
        with self._atomic():
            kept = [s for s in self._stored_silences() if s.id != silence.id]
            self._save_silences([*kept, silence])

    def silences(self) -> list[Silence]:
        return sorted(self._stored_silences(), key=lambda s: (s.starts_at, s.id))

    def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        with self._atomic():
            silences = self._stored_silences()
            for index, silence in enumerate(silences):
                if silence.id == silence_id and silence.ends_at > now:
                    # a silence that has not started yet ends before it starts: drop it
                    if silence.starts_at >= now:
                        del silences[index]
                    else:
                        silences[index] = replace(silence, ends_at=now)
                    self._save_silences(silences)
                    return True
            return False
