"""``python -m airflow_alerting.state.sql``: create the tables ahead of time."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_alerting.state.base import StateUnavailableError
from airflow_alerting.state.sql.store import SqlStore


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_alerting.state.sql --conn-id ID``: create the tables ahead of time.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the process exit code
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_alerting.state.sql",
        description="Create the tables of the airflow-provider-alerting SQL state store if missing.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--conn-id", help="Airflow connection (postgres, mysql or sqlite) holding the tables")
    target.add_argument(
        "--url", help="SQLAlchemy URL instead of a connection (visible in the process list: avoid passwords)"
    )
    parser.add_argument("--table-prefix", default="alerting_", help="table name prefix (default: alerting_)")
    args = parser.parse_args(argv)
    try:
        store = SqlStore(args.conn_id, url=args.url, table_prefix=args.table_prefix)
        names = store.create_tables()
    except (StateUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"tables ready at {store.describe()}: {', '.join(names)}")
    return 0
