"""The exact state store: tables in PostgreSQL, MySQL/MariaDB or SQLite, reached through a connection.

Who sends is decided by one atomic statement per attempt, evaluated by the database against
its own clock, so any number of workers, DAG processors and triggerers racing on the same
(fingerprint, channel) produce exactly one sender per throttle window:

* PostgreSQL and SQLite (>= 3.35): ``INSERT ... ON CONFLICT (fingerprint, channel) DO UPDATE
  SET <claim> WHERE <claimable> RETURNING ...`` -- only the winner gets a row back.
* MySQL/MariaDB: ``INSERT IGNORE`` of a neutral row, then ``UPDATE ... SET <claim> WHERE
  <claimable>``; the winner is the one whose update matched a row.

``<claimable>`` is :func:`airflow_alerting.throttle.decide`'s send rule written in SQL.  A
losing attempt counts itself as suppressed with a second conditional statement (``WHERE <held
back>``), so the counts reported by the next send are exact too; on PostgreSQL both are one
upsert whose assignments choose between the claim and the suppression, a single round trip.
Rolling a claim back (a failed delivery, or a crashed sender whose lease expired) merges two
bounded source lists, which the dialects express very differently; that rare path is a
compare-and-set on a ``version`` column using the pure rules of :mod:`~airflow_alerting.throttle`.

Incidents and silences (:mod:`.incidents`, :mod:`.silences`) apply the pure rules of
:mod:`airflow_alerting.incidents.lifecycle` under row locks taken in one order.  They use the
caller's clock, the manager's, which is the authority for incidents.

Round trips are what a call costs on a network database, so on PostgreSQL a call whose work is
one statement runs without ``BEGIN``/``COMMIT`` (each its own round trip with psycopg2), and
pooled connections are not pinged: a connection the server closed is noticed on checkout without
a round trip, and a call that still meets one is run again once on a new connection
(:meth:`~airflow_alerting.state.sql.core._SqlCore._run`).

Importing this package is cheap: SQLAlchemy and the drivers are imported on first use, because
DAG files import the package at parse time.  See ``docs/state-sql.md``.
"""

from airflow_alerting.state.sql.cli import main
from airflow_alerting.state.sql.connection import ConnectionLike, url_from_connection
from airflow_alerting.state.sql.schema import KEY_LENGTH
from airflow_alerting.state.sql.store import SqlStore

__all__ = ["KEY_LENGTH", "ConnectionLike", "SqlStore", "main", "url_from_connection"]
