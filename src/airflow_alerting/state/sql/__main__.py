"""``python -m airflow_alerting.state.sql --conn-id ID``: create the tables ahead of time."""

from airflow_alerting.state.sql.cli import main

raise SystemExit(main())
