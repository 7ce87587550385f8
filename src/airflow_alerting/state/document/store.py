"""The document store: every layer of :mod:`airflow_alerting.state.document` in one class."""

from __future__ import annotations

from airflow_alerting.state.document.incidents import DocumentIncidents


class DocumentStore(DocumentIncidents):
    """A store built on "read a JSON document / write a JSON document" primitives.

    Subclasses implement :meth:`_read` and :meth:`_write`; this class implements the
    claim semantics with :mod:`airflow_alerting.throttle`.  Writes are last-writer-wins,
    so two workers racing on the same fingerprint can both decide to send; the Variables
    store narrows that race with a claim token it re-reads (see its docstring).  What many
    workers write is kept apart (per-claimer counters, one document per outbox item, history
    shards) and each such change is re-read and rewritten until it sticks (``_merge_verified``).

    Its layers, each a module of this package, each subclassing the one before: ``core``
    (primitives, verified writes, the index of documents), ``claims``, ``history``, ``outbox``,
    ``retention``, ``silences``, ``incidents``.
    """
