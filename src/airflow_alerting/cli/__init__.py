"""The ``airflow alerting`` commands (also the ``airflow-alerting`` console script).

Each command module declares a :class:`~airflow_alerting.cli.spec.Command` or
:class:`~airflow_alerting.cli.spec.Group`; :mod:`airflow_alerting.cli.registry` lists them,
:mod:`airflow_alerting.cli.airflow_cli` hands them to Airflow's CLI and
:mod:`airflow_alerting.cli.console` to argparse. Nothing heavy is imported here: Airflow
imports the declarations on every ``airflow`` invocation.
"""
