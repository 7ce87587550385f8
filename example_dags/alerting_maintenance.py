"""The alerting housekeeping DAG: redelivers alerts that could not be delivered when they fired."""

from __future__ import annotations

from airflow_alerting.maintenance import create_maintenance_dag

dag = create_maintenance_dag()
