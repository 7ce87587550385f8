"""Root-cause signatures: which failures are one incident across DAGs and tasks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_alerting.incidents.signature import SIGNATURE_LIMIT, cause_signature, normalise_cause

PSYCOPG2_REFUSED = (
    "could not connect to server: Connection refused\n"
    '\tIs the server running on host "{host}" ({ip}) and accepting\n'
    "\tTCP/IP connections on port {port}?\n"
)

# (id, exception type, one message, another message): occurrences of one cause
MUST_MERGE = [
    (
        "psycopg2_refused_host_ip_port",
        "psycopg2.OperationalError",
        PSYCOPG2_REFUSED.format(host="db-3.internal", ip="10.0.0.3", port=5432),
        PSYCOPG2_REFUSED.format(host="db-7.internal", ip="10.0.0.17", port=6432),
    ),
    (
        "psycopg3_refused_at_host",
        "psycopg.OperationalError",
        'connection to server at "db-3.internal" (10.0.0.3), port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?",
        'connection to server at "pg-primary-2.prod.internal" (10.1.4.2), port 6432 failed: '
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    ),
    (
        "psycopg2_timeout_ipv6",
        "psycopg2.OperationalError",
        'connection to server at "db.internal" (2001:db8::3), port 5432 failed: timeout expired',
        'connection to server at "db.internal" (fe80::1ff:fe23:4567:890a), port 6432 failed: timeout expired',
    ),
    (
        "psycopg2_pid_in_brackets",
        "psycopg2.OperationalError",
        "FATAL:  terminating connection because of crash of another server process [12345]",
        "FATAL:  terminating connection because of crash of another server process [77]",
    ),
    (
        "psycopg2_url_with_credentials",
        "sqlalchemy.exc.OperationalError",
        "could not connect to postgresql://etl:s3cret@db-1.internal:5432/warehouse",
        "could not connect to postgresql://etl:hunter2@db-2.internal:6432/warehouse",
    ),
    (
        "mysql_access_denied_client_ip",
        "pymysql.err.OperationalError",
        "(1045, \"Access denied for user 'etl'@'10.0.0.3' (using password: YES)\")",
        "(1045, \"Access denied for user 'etl'@'10.0.4.250' (using password: YES)\")",
    ),
    (
        "mysql_cannot_connect_host",
        "pymysql.err.OperationalError",
        "(2003, \"Can't connect to MySQL server on 'db-3.internal' ([Errno 111] Connection refused)\")",
        "(2003, \"Can't connect to MySQL server on 'mysql-12.internal' ([Errno 111] Connection refused)\")",
    ),
    (
        "mysql_dated_table",
        "mysql.connector.errors.ProgrammingError",
        "1146 (42S02): Table 'shop.orders_2026_11_27' doesn't exist",
        "1146 (42S02): Table 'shop.orders_2026_11_28' doesn't exist",
    ),
    (
        "oracle_connection_id",
        "oracledb.exceptions.OperationalError",
        "DPY-6005: cannot connect to database (CONNECTION_ID=nWtW2zPqR8m6T9y3vJkHfA==).\n"
        "[Errno 111] Connection refused",
        "DPY-6005: cannot connect to database (CONNECTION_ID=Q1w2E3r4T5y6U7i8O9p0aA==).\n"
        "[Errno 111] Connection refused",
    ),
    (
        "oracle_temp_segment_size",
        "cx_Oracle.DatabaseError",
        "ORA-01652: unable to extend temp segment by 128 in tablespace TEMP",
        "ORA-01652: unable to extend temp segment by 1024 in tablespace TEMP",
    ),
    (
        "requests_read_timeout",
        "requests.exceptions.ReadTimeout",
        "HTTPSConnectionPool(host='api-3.example.com', port=443): Read timed out. (read timeout=30)",
        "HTTPSConnectionPool(host='api-7.example.com', port=8443): Read timed out. (read timeout=60)",
    ),
    (
        "requests_http_error_query_string",
        "requests.exceptions.HTTPError",
        "500 Server Error: Internal Server Error for url: https://api.example.com/v1/orders?page=3&since=2026-11-27",
        "500 Server Error: Internal Server Error for url: https://api.example.com/v1/orders?page=9",
    ),
    (
        "requests_http_error_id_in_path",
        "requests.exceptions.HTTPError",
        "404 Client Error: Not Found for url: https://api.example.com/v1/orders/12345",
        "404 Client Error: Not Found for url: https://api.example.com/v1/orders/77",
    ),
    (
        "requests_connection_refused",
        "requests.exceptions.ConnectionError",
        "HTTPConnectionPool(host='10.0.0.3', port=8080): Max retries exceeded with url: /health "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f3a2b1c4d50>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))",
        "HTTPConnectionPool(host='10.0.0.4', port=8081): Max retries exceeded with url: /health "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f99c0ffee00>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))",
    ),
    (
        "boto_throttling_retries_and_stream",
        "botocore.exceptions.ClientError",
        "An error occurred (ThrottlingException) when calling the PutRecord operation (reached max "
        "retries: 4): Rate exceeded for stream events-20261127 under account 123456789012.",
        "An error occurred (ThrottlingException) when calling the PutRecord operation (reached max "
        "retries: 9): Rate exceeded for stream events-20261128 under account 123456789012.",
    ),
    (
        "boto_regional_endpoint",
        "botocore.exceptions.EndpointConnectionError",
        'Could not connect to the endpoint URL: "https://s3.us-east-1.amazonaws.com/landing/orders.csv"',
        'Could not connect to the endpoint URL: "https://s3.eu-west-1.amazonaws.com/landing/orders.csv"',
    ),
    (
        "spark_stage_failure",
        "pyspark.errors.exceptions.captured.SparkException",
        "Job aborted due to stage failure: Task 3 in stage 12.0 failed 4 times, most recent failure: "
        "Lost task 3.3 in stage 12.0 (TID 1234) (10.0.0.3 executor 5): java.lang.OutOfMemoryError: "
        "Java heap space\n\tat org.apache.spark.executor.Executor.run(Executor.scala:123)",
        "Job aborted due to stage failure: Task 17 in stage 4.0 failed 4 times, most recent failure: "
        "Lost task 17.3 in stage 4.0 (TID 98) (10.0.7.21 executor 2): java.lang.OutOfMemoryError: "
        "Java heap space\n\tat org.apache.spark.executor.Executor.run(Executor.scala:99)",
    ),
    (
        "spark_executor_lost",
        "pyspark.errors.exceptions.captured.SparkException",
        "ExecutorLostFailure (executor 12 exited caused by one of the running tasks) Reason: Container "
        "killed by YARN for exceeding memory limits. 10.4 GB of 10 GB physical memory used.",
        "ExecutorLostFailure (executor 3 exited caused by one of the running tasks) Reason: Container "
        "killed by YARN for exceeding memory limits. 12.1 GB of 12 GB physical memory used.",
    ),
    (
        "snowflake_statement_timeout",
        "snowflake.connector.errors.ProgrammingError",
        "000630 (57014): Statement reached its statement or warehouse timeout of 3600 second(s) and was "
        "canceled.",
        "000630 (57014): Statement reached its statement or warehouse timeout of 7200 second(s) and was "
        "canceled.",
    ),
    (
        "snowflake_account_host",
        "snowflake.connector.errors.DatabaseError",
        "250001 (08001): Failed to connect to DB: xy12345.eu-central-1.snowflakecomputing.com:443. "
        "Incorrect username or password was specified.",
        "250001 (08001): Failed to connect to DB: ab67890.us-east-1.snowflakecomputing.com:443. "
        "Incorrect username or password was specified.",
    ),
    (
        "bigquery_dated_dataset",
        "google.api_core.exceptions.NotFound",
        "404 Not found: Dataset my-project:staging_20261127 was not found in location US",
        "404 Not found: Dataset my-project:staging_20261128 was not found in location US",
    ),
    (
        "k8s_oomkilled_pod_names",
        "airflow.providers.cncf.kubernetes.utils.pod_manager.PodLaunchFailedException",
        "Pod load-orders-x2k4z returned a failure: container base terminated with exit code 137 "
        "(OOMKilled), memory limit 2Gi",
        "Pod load-orders-k9m3p returned a failure: container base terminated with exit code 137 "
        "(OOMKilled), memory limit 4Gi",
    ),
    (
        "k8s_quota_replicaset_pod",
        "kubernetes.client.exceptions.ApiException",
        'pods "etl-7d9f8b6c5-x2k4z" is forbidden: exceeded quota: compute-resources, requested: '
        "limits.memory=4Gi, used: limits.memory=30Gi, limited: limits.memory=32Gi",
        'pods "etl-5c4b3a2f1-q8w7e" is forbidden: exceeded quota: compute-resources, requested: '
        "limits.memory=2Gi, used: limits.memory=31Gi, limited: limits.memory=32Gi",
    ),
    (
        "oserror_temp_file",
        "OSError",
        "[Errno 28] No space left on device: '/tmp/tmpab12cd/part-0001.parquet'",
        "[Errno 28] No space left on device: '/tmp/airflowtmpzz99qq/part-0042.parquet'",
    ),
    (
        "timeout_after_seconds",
        "TimeoutError",
        "the operation timed out after 30.2s",
        "the operation timed out after 95.7s",
    ),
    (
        "timeout_of_duration_words",
        "TimeoutError",
        "query exceeded timeout of 30 seconds",
        "query exceeded timeout of 5 minutes",
    ),
    (
        "took_milliseconds",
        "RuntimeError",
        "healthcheck took 1500ms on host-7",
        "healthcheck took 20ms on host-12",
    ),
    (
        "airflow_task_timeout_pid",
        "airflow.exceptions.AirflowTaskTimeout",
        "Timeout, PID: 1234",
        "Timeout, PID: 99812",
    ),
    (
        "ids_uuids_hex",
        "ValueError",
        "batch 123e4567-e89b-12d3-a456-426614174000 (id=12345, row 17, job 88121) rejected at commit "
        "a3f9c2e1b7d4",
        "batch 9F1C2D3E-AAAA-4BBB-8CCC-0123456789AB (id=9, row 3, job 5) rejected at commit 9e107d9d372bb682",
    ),
    (
        "timestamps",
        "RuntimeError",
        "data stale since 2026-11-27T10:00:00Z (checked 2026-11-27 10:05:01.123+01:00, Thu, 27 Nov 2026 "
        "10:05:01 GMT)",
        "data stale since 2025-01-03T23:59:59.5+02:00 (checked 2025-01-04 00:01:00, Sat, 4 Jan 2025 "
        "00:01:00 GMT)",
    ),
    (
        "dated_partitions",
        "FileNotFoundError",
        "partition dt=2026-11-27/hour=10 of events_20261127 is empty",
        "partition dt=2026-11-28/hour=11 of events_20261128 is empty",
    ),
    (
        "email_addresses",
        "smtplib.SMTPRecipientsRefused",
        "Recipient address rejected: alice@example.com",
        "Recipient address rejected: bob.smith+etl@corp.example.org",
    ),
    (
        "ip_and_port",
        "ConnectionRefusedError",
        "connect to 10.0.0.3:5432 refused",
        "connect to 192.168.1.7:6432 refused",
    ),
    (
        "wrapping_and_whitespace",
        "RuntimeError",
        "upstream   returned\tnothing   ",
        "  upstream returned nothing",
    ),
]


# (id, type, message, other type, other message): different causes
MUST_NOT_MERGE = [
    (
        "http_404_vs_500",
        "requests.exceptions.HTTPError",
        "404 Client Error: Not Found for url: https://api.example.com/v1/orders",
        "requests.exceptions.HTTPError",
        "500 Server Error: Internal Server Error for url: https://api.example.com/v1/orders",
    ),
    ("http_429_vs_500", "HTTPError", "429 Too Many Requests", "HTTPError", "500 Internal Server Error"),
    ("http_keyword", "RuntimeError", "upstream said HTTP 404", "RuntimeError", "upstream said HTTP 500"),
    (
        "status_code",
        "RuntimeError",
        "Received status code 503 from upstream",
        "RuntimeError",
        "Received status code 502 from upstream",
    ),
    (
        "client_error_colon",
        "RuntimeError",
        "request failed: Client Error: 404",
        "RuntimeError",
        "request failed: Client Error: 403",
    ),
    (
        "http_protocol_version",
        "RuntimeError",
        "upstream answered HTTP/1.1 503 after retries",
        "RuntimeError",
        "upstream answered HTTP/1.1 504 after retries",
    ),
    (
        "boto_status_in_parentheses",
        "botocore.exceptions.ClientError",
        "An error occurred (404) when calling the HeadObject operation: Not Found",
        "botocore.exceptions.ClientError",
        "An error occurred (403) when calling the HeadObject operation: Not Found",
    ),
    (
        "bigquery_leading_status",
        "google.api_core.exceptions.GoogleAPICallError",
        "403 Access Denied: Table my-project:analytics.orders",
        "google.api_core.exceptions.GoogleAPICallError",
        "401 Access Denied: Table my-project:analytics.orders",
    ),
    (
        "psycopg2_relation",
        "psycopg2.errors.UndefinedTable",
        'relation "orders" does not exist\nLINE 1: SELECT * FROM orders',
        "psycopg2.errors.UndefinedTable",
        'relation "customers" does not exist\nLINE 1: SELECT * FROM customers',
    ),
    (
        "psycopg2_column_with_digit",
        "psycopg2.errors.UndefinedColumn",
        'column "address_line_2" does not exist',
        "psycopg2.errors.UndefinedColumn",
        'column "address_line_1" does not exist',
    ),
    (
        "mysql_table",
        "pymysql.err.ProgrammingError",
        "(1146, \"Table 'shop.orders' doesn't exist\")",
        "pymysql.err.ProgrammingError",
        "(1146, \"Table 'shop.customers' doesn't exist\")",
    ),
    (
        "mysql_error_code_in_tuple",
        "pymysql.err.OperationalError",
        "(1205, 'Lock wait timeout exceeded; try restarting transaction')",
        "pymysql.err.OperationalError",
        "(1213, 'Lock wait timeout exceeded; try restarting transaction')",
    ),
    (
        "mysql_sqlstate_in_parentheses",
        "mysql.connector.errors.DatabaseError",
        "1205 (40001): Lock wait timeout exceeded",
        "mysql.connector.errors.DatabaseError",
        "1205 (HY000): Lock wait timeout exceeded",
    ),
    (
        "mysql_error_keyword",
        "RuntimeError",
        "error 1045: access denied",
        "RuntimeError",
        "error 1044: access denied",
    ),
    (
        "oracle_codes",
        "cx_Oracle.DatabaseError",
        "ORA-00942: table or view does not exist",
        "cx_Oracle.DatabaseError",
        "ORA-00943: table or view does not exist",
    ),
    (
        "oracle_codes_different_text",
        "cx_Oracle.DatabaseError",
        "ORA-00942: table or view does not exist",
        "cx_Oracle.DatabaseError",
        "ORA-01017: invalid username/password; logon denied",
    ),
    (
        "sqlstate",
        "RuntimeError",
        "could not execute statement (SQLSTATE 40001)",
        "RuntimeError",
        "could not execute statement (SQLSTATE 23505)",
    ),
    (
        "sqlstate_pdo_style",
        "RuntimeError",
        "SQLSTATE[40001]: serialization failure",
        "RuntimeError",
        "SQLSTATE[40P01]: serialization failure",
    ),
    (
        "errno_brackets",
        "OSError",
        "[Errno 111] Connection refused",
        "OSError",
        "[Errno 113] Connection refused",
    ),
    ("errno_keyword", "OSError", "socket error errno=111", "OSError", "socket error errno=113"),
    (
        "errno_28_vs_13",
        "OSError",
        "[Errno 28] No space left on device: '/data/out/orders.csv'",
        "OSError",
        "[Errno 13] Permission denied: '/data/out/orders.csv'",
    ),
    (
        "mongo_error_code",
        "pymongo.errors.DuplicateKeyError",
        "E11000 duplicate key error collection: shop.orders",
        "pymongo.errors.DuplicateKeyError",
        "E11001 duplicate key error collection: shop.orders",
    ),
    (
        "k8s_exit_code",
        "PodLaunchFailedException",
        "Pod load-orders-x2k4z: container base terminated with exit code 137",
        "PodLaunchFailedException",
        "Pod load-orders-x2k4z: container base terminated with exit code 1",
    ),
    (
        "k8s_oomkilled_vs_evicted",
        "PodLaunchFailedException",
        "Pod load-orders-x2k4z failed: OOMKilled",
        "PodLaunchFailedException",
        "Pod load-orders-x2k4z failed: Evicted",
    ),
    (
        "subprocess_exit_status",
        "subprocess.CalledProcessError",
        "Command '['dbt', 'run']' returned non-zero exit status 2.",
        "subprocess.CalledProcessError",
        "Command '['dbt', 'run']' returned non-zero exit status 1.",
    ),
    ("signal", "RuntimeError", "task received signal 9", "RuntimeError", "task received signal 15"),
    (
        "snowflake_detail_line",
        "snowflake.connector.errors.ProgrammingError",
        "002003 (42S02): SQL compilation error:\nObject 'DB.S.ORDERS' does not exist or not authorized.",
        "snowflake.connector.errors.ProgrammingError",
        "002003 (42S02): SQL compilation error:\nObject 'DB.S.CUSTOMERS' does not exist or not authorized.",
    ),
    (
        "bigquery_tables",
        "google.api_core.exceptions.NotFound",
        "404 Not found: Table my-project:analytics.orders was not found in location US",
        "google.api_core.exceptions.NotFound",
        "404 Not found: Table my-project:analytics.customers was not found in location US",
    ),
    (
        "spark_tables",
        "pyspark.errors.exceptions.captured.AnalysisException",
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `db`.`orders` cannot be found.",
        "pyspark.errors.exceptions.captured.AnalysisException",
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `db`.`customers` cannot be found.",
    ),
    (
        "codecs",
        "UnicodeDecodeError",
        "'utf-8' codec can't decode byte 0xff in position 3: invalid start byte",
        "UnicodeDecodeError",
        "'utf-16' codec can't decode byte 0xff in position 3: invalid start byte",
    ),
    (
        "non_temp_files",
        "FileNotFoundError",
        "[Errno 2] No such file or directory: '/data/in/orders.csv'",
        "FileNotFoundError",
        "[Errno 2] No such file or directory: '/data/in/customers.csv'",
    ),
    ("exception_types", "ValueError", "boom", "TypeError", "boom"),
    (
        "same_short_name_other_module",
        "requests.exceptions.ConnectionError",
        "connection aborted",
        "ConnectionError",
        "connection aborted",
    ),
    ("words", "ConnectionError", "connection refused", "ConnectionError", "connection reset by peer"),
    ("missing_type", "RuntimeError", "boom", None, "boom"),
]


def test_tables_are_big_enough() -> None:
    assert len(MUST_MERGE) >= 25
    assert len(MUST_NOT_MERGE) >= 25


@pytest.mark.parametrize(
    ("exception_type", "first", "second"), [pytest.param(t, a, b, id=i) for i, t, a, b in MUST_MERGE]
)
def test_occurrences_of_one_cause_have_one_signature(exception_type: str, first: str, second: str) -> None:
    assert cause_signature(exception_type, first) == cause_signature(exception_type, second)


@pytest.mark.parametrize(
    ("first_type", "first", "second_type", "second"),
    [pytest.param(ta, a, tb, b, id=i) for i, ta, a, tb, b in MUST_NOT_MERGE],
)
def test_different_causes_have_different_signatures(
    first_type: str | None, first: str, second_type: str | None, second: str
) -> None:
    assert cause_signature(first_type, first) != cause_signature(second_type, second)


# --- readable output -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception_type", "message", "expected"),
    [
        pytest.param(
            "OperationalError",
            PSYCOPG2_REFUSED.format(host="db-3.internal", ip="10.0.0.3", port=5432),
            "OperationalError: could not connect to server: Connection refused. Is the server running on "
            "host <host> (<ip>) and accepting TCP/IP connections on port <port>?",
            id="psycopg2_wrapped_lines",
        ),
        pytest.param(
            "requests.exceptions.HTTPError",
            "404 Client Error: Not Found for url: https://etl:pw@api.example.com/v1/orders/12345?page=3#x",
            "requests.exceptions.HTTPError: 404 Client Error: Not Found for url: "
            "https://api.example.com/v1/orders/<n>?<query>",
            id="url_without_credentials_or_query",
        ),
        pytest.param(
            "cx_Oracle.DatabaseError",
            "ORA-01652: unable to extend temp segment by 128 in tablespace TEMP",
            "cx_Oracle.DatabaseError: ORA-01652: unable to extend temp segment by <n> in tablespace TEMP",
            id="oracle",
        ),
        pytest.param(
            "OSError",
            "[Errno 28] No space left on device: '/tmp/tmpab12cd/part-0001.parquet'",
            "OSError: [Errno 28] No space left on device: '<tmpfile>'",
            id="temp_file",
        ),
        pytest.param(
            None,
            "timed out after 30.2s on host-7 (pid 1234) at 2026-11-27T10:00:00Z, id=9f1c2d3e-aaaa-4bbb-8ccc-"
            "0123456789ab",
            "timed out after <duration> on host-<n> (pid <n>) at <timestamp>, id=<uuid>",
            id="placeholders",
        ),
        pytest.param(
            "snowflake.connector.errors.ProgrammingError",
            "002003 (42S02): SQL compilation error:\nObject 'DB.S.ORDERS' does not exist or not authorized.",
            "snowflake.connector.errors.ProgrammingError: 002003 (42S02): SQL compilation error: Object "
            "'DB.S.ORDERS' does not exist or not authorized.",
            id="line_ending_in_colon_takes_the_next",
        ),
    ],
)
def test_signature_reads_well(exception_type: str | None, message: str, expected: str) -> None:
    assert cause_signature(exception_type, message) == expected


def test_first_non_empty_line() -> None:
    assert normalise_cause("\n\n   \n  boom: 3 rows\nsecond line") == "boom: <n> rows"


def test_detail_lines_are_not_part_of_the_cause() -> None:
    message = 'duplicate key value violates unique constraint "orders_pkey"\nDETAIL:  Key (id)=(1) exists.'

    assert normalise_cause(message) == 'duplicate key value violates unique constraint "orders_pkey"'


def test_stack_frames_are_not_continuation_lines() -> None:
    message = "java.lang.OutOfMemoryError: Java heap space\n\tat org.apache.spark.Foo.run(Foo.scala:12)"

    assert normalise_cause(message) == "java.lang.OutOfMemoryError: Java heap space"


def test_credentials_never_reach_the_title() -> None:
    signature = cause_signature(None, "cannot open postgresql://etl:s3cret@db-1.internal:5432/dwh")

    assert "s3cret" not in signature
    assert signature == "cannot open postgresql://<host>:<port>/dwh"


# --- tracebacks ------------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/opt/airflow/dags/load.py", line 12, in load
    cursor.execute(sql)
  File "/usr/lib/python3.12/site-packages/psycopg2/extras.py", line 146, in execute
    return super().execute(query, vars)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
psycopg2.OperationalError: could not connect to server: Connection refused
\tIs the server running on host "db-3.internal" (10.0.0.3) and accepting
\tTCP/IP connections on port 5432?
"""


def test_traceback_uses_the_exception_line_at_the_end() -> None:
    assert normalise_cause(TRACEBACK) == (
        "psycopg2.OperationalError: could not connect to server: Connection refused. Is the server "
        "running on host <host> (<ip>) and accepting TCP/IP connections on port <port>?"
    )


def test_traceback_and_plain_message_are_one_cause() -> None:
    plain = PSYCOPG2_REFUSED.format(host="db-9.internal", ip="10.0.0.9", port=5432)

    assert cause_signature("psycopg2.OperationalError", TRACEBACK) == cause_signature(
        "psycopg2.OperationalError", plain
    )
    # without a type the traceback's own exception line names it
    assert cause_signature(None, TRACEBACK) == cause_signature("psycopg2.OperationalError", plain)


def test_chained_traceback_uses_the_last_exception() -> None:
    message = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'id'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "a.py", line 3, in <module>\n'
        "ValueError: bad row 17\n"
    )

    assert cause_signature("ValueError", message) == "ValueError: bad row <n>"


def test_traceback_skips_trailing_detail_lines() -> None:
    message = (
        'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n'
        "psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint "
        '"orders_pkey"\nDETAIL:  Key (id)=(12345) already exists.\n'
    )

    assert cause_signature("psycopg2.errors.UniqueViolation", message) == (
        'psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint "orders_pkey"'
    )


def test_traceback_without_an_exception_line_uses_the_last_line() -> None:
    message = 'Traceback (most recent call last):\n  File "a.py", line 1\n    x = = 1\n'

    assert normalise_cause(message) == "x = = <n>"


def test_long_traceback_is_read_from_its_end() -> None:
    frames = '  File "a.py", line 1, in f\n    f()\n' * 5000  # well over the 64 KiB scan bound
    message = "Traceback (most recent call last):\n" + frames + "RecursionError: maximum recursion depth"

    assert normalise_cause(message) == "RecursionError: maximum recursion depth"


# --- exception type naming -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception_type", "expected"),
    [
        pytest.param("builtins.ValueError", "ValueError: boom", id="builtins_prefix_dropped"),
        pytest.param("ValueError", "ValueError: boom", id="short"),
        pytest.param("psycopg2.OperationalError", "psycopg2.OperationalError: boom", id="qualified_kept"),
        pytest.param("<class 'ValueError'>", "ValueError: boom", id="class_repr"),
        pytest.param(None, "boom", id="none"),
        pytest.param("", "boom", id="empty"),
    ],
)
def test_type_naming(exception_type: str | None, expected: str) -> None:
    assert cause_signature(exception_type, "boom") == expected


@pytest.mark.parametrize(
    "message",
    [
        "OperationalError: could not connect",
        "psycopg2.OperationalError: could not connect",
        "could not connect",
    ],
)
def test_message_repeating_the_type_does_not_repeat_it(message: str) -> None:
    assert cause_signature("psycopg2.OperationalError", message) == (
        "psycopg2.OperationalError: could not connect"
    )


def test_type_alone_and_empty() -> None:
    assert cause_signature("KeyError", "") == "KeyError"
    assert cause_signature("KeyError", "KeyError") == "KeyError"
    assert cause_signature(None, "  \n ") == ""
    assert cause_signature(None, "") == ""


# --- bounds ----------------------------------------------------------------------------------


def test_output_is_bounded_and_cut_between_tokens() -> None:
    message = "failed: " + " ".join(f"step{i} 2026-11-27T10:00:0{i % 10}Z" for i in range(200))

    result = normalise_cause(message)

    assert len(result) <= SIGNATURE_LIMIT
    assert result.endswith("<timestamp>") or result.split(" ")[-1].startswith("step")
    assert len(cause_signature("some.module.VeryLongExceptionName", message)) <= SIGNATURE_LIMIT


def test_only_the_start_of_a_long_line_counts() -> None:
    head = "validation failed: " + "x" * 3000

    assert cause_signature("E", head + " tail one") == cause_signature("E", head + " tail two")


def test_line_is_searched_for_in_a_bounded_prefix() -> None:
    # a message that is nothing but 64 KiB of blank lines has no cause we look for
    assert normalise_cause("\n" * 70_000 + "boom") == ""


# --- properties ------------------------------------------------------------------------------

# fragments of real messages, so that generated text hits the interesting paths
_FRAGMENTS = st.sampled_from(
    [
        "host ",
        "port ",
        "HTTP ",
        "exit code ",
        "ORA-",
        "SQLSTATE ",
        "[Errno ",
        "::",
        "2026-11-27",
        "T10:00:00Z",
        "10.0.0.3",
        "fe80::1",
        "https://",
        "a.b.com",
        "db-3.internal",
        "@example.com",
        "/tmp/",
        "0x",
        "utf-8",
        " (42S02)",
        " Client Error",
        "server at ",
        "Traceback (most recent call last):\n",
        "\n\t",
        "Error: ",
        "_2026_11_27",
        "ms",
        " seconds",
        "'",
        '"',
        "<n>",
        "<host>",
    ]
)
_MESSAGE_TEXT = st.lists(
    st.one_of(_FRAGMENTS, st.text(alphabet="0123456789abcdefxyzABZ -_.:/@<>[](),=?#%+\n", max_size=6)),
    max_size=60,
).map("".join)
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=600)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_MESSAGE_TEXT, _ANY_TEXT))
@example("404 Client Error " + "a " * 150)  # truncation cuts a code from its context
@example("\udcff")
def test_normalise_is_idempotent(message: str) -> None:
    once = normalise_cause(message)

    assert normalise_cause(once) == once


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), _ANY_TEXT), st.one_of(_MESSAGE_TEXT, _ANY_TEXT))
@example(None, "\udcff")
@example("\udcff", "Traceback (most recent call last):\n\udcff")
def test_never_raises_and_stays_bounded(exception_type: str | None, message: str) -> None:
    cause = normalise_cause(message)
    signature = cause_signature(exception_type, message)

    assert len(cause) <= SIGNATURE_LIMIT
    assert len(signature) <= SIGNATURE_LIMIT
    assert "\n" not in signature
