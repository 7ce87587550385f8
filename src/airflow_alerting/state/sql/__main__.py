"""``python -m airflow_alerting.state.sql --conn-id ID``: create the tables ahead of time.

An alias of ``airflow alerting state init`` (same flags, output and exit codes).
"""

import sys

from airflow_alerting.cli.console import main

raise SystemExit(main(["state", "init", *sys.argv[1:]], prog="python -m airflow_alerting.state.sql"))
