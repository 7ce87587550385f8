"""The cause catalogue of a storm: vocabulary, unrelated root causes and the outage."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

#: run ids are dated from here (the default :class:`~airflow_alerting.testing.FrozenClock` time)
_RUN_EPOCH = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


# --- vocabulary ------------------------------------------------------------------------------
#
# Names deliberately contain no digits: the normaliser replaces numbers, so a digit would be
# the only thing telling two causes apart and they would (rightly) merge.

_DOMAINS = (
    "sales", "finance", "marketing", "crm", "billing", "inventory", "hr", "support", "web", "mobile",
    "ads", "ledger", "risk", "fraud", "growth", "ops", "product", "search", "payments", "logistics",
)  # fmt: skip
_ENTITIES = (
    "orders", "customers", "invoices", "sessions", "events", "refunds", "shipments", "accounts",
    "subscriptions", "leads", "campaigns", "payouts", "tickets", "products", "users", "clicks",
    "impressions", "transactions", "balances", "contracts",
)  # fmt: skip
_TABLE_SUFFIXES = ("", "_daily", "_snapshot", "_staging", "_hist", "_agg")
_DAG_KINDS = ("etl", "sync", "export", "rollup", "ingest", "report", "backfill", "dq")
_VERBS = ("extract", "load", "transform", "validate", "publish", "dedupe", "enrich", "aggregate", "upsert")
_KEY_FIELDS = (
    "id", "user_id", "order_id", "customer_id", "account_id", "invoice_id", "session_id", "created_at",
    "updated_at", "amount", "currency", "country_code", "email", "status", "sku", "price", "quantity",
    "campaign_id", "payload", "metadata", "region", "discount_code", "tax_rate", "external_ref",
)  # fmt: skip
_MODULES = (
    "pandas_gbq", "great_expectations", "snowflake.connector", "pyarrow.parquet", "openpyxl",
    "google.cloud.bigquery", "psycopg", "boto3", "dbt.adapters.postgres", "simple_salesforce",
    "stripe", "hubspot", "xlrd", "fastavro", "deltalake", "polars", "sqlalchemy_redshift",
    "airflow.providers.amazon", "airflow.providers.google", "requests_oauthlib", "paramiko", "pysftp",
)  # fmt: skip
_CONN_SYSTEMS = (
    "snowflake", "redshift", "bigquery", "salesforce", "hubspot", "stripe", "sftp", "s3", "gcs",
    "mysql", "mssql", "oracle", "mongo", "kafka", "zendesk", "netsuite",
)  # fmt: skip
_CONN_ENVS = ("prod", "reporting", "analytics", "warehouse", "legacy", "replica")
_ATTRS = (
    "get", "strip", "items", "keys", "lower", "split", "json", "decode", "iterrows", "to_dict",
    "isoformat", "astype", "fetchall", "cursor", "read",
)  # fmt: skip
_TYPE_NAMES = ("int", "str", "NoneType", "float", "Decimal", "datetime.date", "list", "dict")
_TEAMS = ("data-platform", "analytics", "finance-eng", "growth", "payments", "crm-eng", "ml")

_HTTP = {
    400: "Client Error: Bad Request",
    401: "Client Error: Unauthorized",
    403: "Client Error: Forbidden",
    404: "Client Error: Not Found",
    409: "Client Error: Conflict",
    422: "Client Error: Unprocessable Entity",
    429: "Client Error: Too Many Requests",
    500: "Server Error: Internal Server Error",
    502: "Server Error: Bad Gateway",
    503: "Server Error: Service Unavailable",
    504: "Server Error: Gateway Timeout",
}
_ORA = {
    "ORA-00942": "table or view does not exist",
    "ORA-01017": "invalid username/password; logon denied",
    "ORA-12541": "TNS:no listener",
    "ORA-00054": "resource busy and acquire with NOWAIT specified or timeout expired",
    "ORA-28000": "the account is locked",
    "ORA-01031": "insufficient privileges",
    "ORA-12170": "TNS:Connect timeout occurred",
    "ORA-00904": '"DISCOUNT_CODE": invalid identifier',
}
_EXIT_CODES = (137, 1, 2, 126, 127, 139, 143)
_S3 = (
    ("AccessDenied", "GetObject", "Access Denied"),
    ("NoSuchKey", "GetObject", "The specified key does not exist."),
    ("NoSuchBucket", "ListObjectsV2", "The specified bucket does not exist"),
    ("SlowDown", "PutObject", "Please reduce your request rate."),
    ("ExpiredToken", "GetObject", "The provided token has expired."),
    ("InvalidAccessKeyId", "PutObject", "The AWS Access Key Id you provided does not exist in our records."),
    ("RequestTimeTooSkewed", "PutObject", "The difference between the request time and the current time "
     "is too large."),
    ("AccessDenied", "PutObject", "Access Denied"),
    ("InternalError", "CopyObject", "We encountered an internal error. Please try again."),
)  # fmt: skip

_HTTP_MRO = (
    "requests.exceptions.HTTPError",
    "requests.exceptions.RequestException",
    "OSError",
    "Exception",
    "BaseException",
)
_PG_MRO_TAIL = ("psycopg2.DatabaseError", "psycopg2.Error", "Exception", "BaseException")
_AIRFLOW_MRO = ("airflow.exceptions.AirflowException", "Exception", "BaseException")


def _tables() -> list[str]:
    return [f"{d}_{e}{s}" for s in _TABLE_SUFFIXES for d in _DOMAINS for e in _ENTITIES]


# --- causes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cause:
    """An unrelated root cause: what every failure of it raises, with per-failure variation."""

    exception_type: str
    exception_mro: tuple[str, ...]
    #: the message of one failure; the random source varies ids, dates and hosts, never the cause
    render: Callable[[random.Random], str]
    #: the cause in words, for :attr:`Storm.causes`
    description: str
    #: re-raised by every run until someone fixes it: a candidate for recurring in consecutive runs
    deterministic: bool = True


def _stamp(rng: random.Random) -> str:
    moment = _RUN_EPOCH - timedelta(seconds=rng.randrange(86_400 * 3))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _const(text: str) -> Callable[[random.Random], str]:
    return lambda rng: text


def _http_cause(code: int) -> _Cause:
    # the same API for every status: only the status tells a missing record from a broken service
    reason = _HTTP[code]

    def render(rng: random.Random) -> str:
        return (
            f"{code} {reason} for url: https://api.hubapi.com/crm/v3/objects/contacts/"
            f"{rng.randrange(10**9, 10**10)}?archived=false&after={rng.randrange(10**6)}"
        )

    return _Cause(
        "requests.exceptions.HTTPError",
        _HTTP_MRO,
        render,
        f"HTTPError: {code} {reason} from the CRM API",
        deterministic=code < 500,
    )


def _relation_cause(table: str) -> _Cause:
    def render(rng: random.Random) -> str:
        since = _stamp(rng)[:10]
        line = f"LINE 1: SELECT id, updated_at FROM analytics.{table} WHERE updated_at >= '{since}'"
        caret = " " * len("LINE 1: SELECT id, updated_at FROM ") + "^"
        return f'relation "analytics.{table}" does not exist\n{line}\n{caret}'

    return _Cause(
        "psycopg2.errors.UndefinedTable",
        ("psycopg2.errors.UndefinedTable", "psycopg2.ProgrammingError", *_PG_MRO_TAIL),
        render,
        f'UndefinedTable: relation "analytics.{table}" does not exist',
    )


def _ora_cause(code: str) -> _Cause:
    text = _ORA[code]
    help_url = f"https://docs.oracle.com/error-help/db/{code.lower()}/"
    return _Cause(
        "oracledb.exceptions.DatabaseError",
        ("oracledb.exceptions.DatabaseError", "oracledb.exceptions.Error", "Exception", "BaseException"),
        _const(f"{code}: {text}\nHelp: {help_url}"),
        f"DatabaseError: {code}: {text}",
        deterministic=code not in ("ORA-00054", "ORA-12170"),
    )


def _exit_code_cause(code: int) -> _Cause:
    # BashOperator's own wording: the exit code is the only difference between OOM-killed and a bug
    return _Cause(
        "airflow.exceptions.AirflowException",
        _AIRFLOW_MRO,
        _const(f"Bash command failed. The command returned a non-zero exit code {code}."),
        f"AirflowException: Bash command failed with exit code {code}",
    )


def _s3_cause(code: str, operation: str, text: str) -> _Cause:
    return _Cause(
        "botocore.exceptions.ClientError",
        ("botocore.exceptions.ClientError", "Exception", "BaseException"),
        _const(f"An error occurred ({code}) when calling the {operation} operation: {text}"),
        f"ClientError: S3 {code} on {operation}",
        deterministic=code not in ("SlowDown", "InternalError", "RequestTimeTooSkewed"),
    )


def _key_error_cause(key: str) -> _Cause:
    return _Cause(
        "KeyError",
        ("KeyError", "LookupError", "Exception", "BaseException"),
        _const(f"'{key}'"),
        f"KeyError: '{key}'",
    )


def _column_cause(column: str) -> _Cause:
    def render(rng: random.Random) -> str:
        table = rng.choice(_ENTITIES)
        return (
            f'column "{column}" does not exist\nLINE 1: SELECT id, {column} FROM {table} WHERE id > '
            f"{rng.randrange(10**6)}\n                   ^"
        )

    return _Cause(
        "psycopg2.errors.UndefinedColumn",
        ("psycopg2.errors.UndefinedColumn", "psycopg2.ProgrammingError", *_PG_MRO_TAIL),
        render,
        f'UndefinedColumn: column "{column}" does not exist',
    )


def _unique_cause(table: str) -> _Cause:
    def render(rng: random.Random) -> str:
        return (
            f'duplicate key value violates unique constraint "{table}_pkey"\n'
            f"DETAIL:  Key (id)=({rng.randrange(10**5, 10**8)}) already exists."
        )

    return _Cause(
        "psycopg2.errors.UniqueViolation",
        ("psycopg2.errors.UniqueViolation", "psycopg2.IntegrityError", *_PG_MRO_TAIL),
        render,
        f'UniqueViolation: duplicate key in "{table}_pkey"',
    )


def _privilege_cause(table: str) -> _Cause:
    return _Cause(
        "psycopg2.errors.InsufficientPrivilege",
        ("psycopg2.errors.InsufficientPrivilege", "psycopg2.ProgrammingError", *_PG_MRO_TAIL),
        _const(f"permission denied for table {table}"),
        f"InsufficientPrivilege: permission denied for table {table}",
    )


def _snowflake_cause(table: str) -> _Cause:
    name = f"WAREHOUSE.MART.{table.upper()}"

    def render(rng: random.Random) -> str:
        return (
            f"002003 (42S02): {_uuid(rng)}: SQL compilation error:\n"
            f"Object '{name}' does not exist or not authorized."
        )

    return _Cause(
        "snowflake.connector.errors.ProgrammingError",
        (
            "snowflake.connector.errors.ProgrammingError",
            "snowflake.connector.errors.DatabaseError",
            "snowflake.connector.errors.Error",
            "Exception",
            "BaseException",
        ),
        render,
        f"ProgrammingError: Snowflake object '{name}' does not exist",
    )


def _bigquery_cause(table: str) -> _Cause:
    dataset = table.split("_", 1)[0]

    def render(rng: random.Random) -> str:
        job = _hex(rng, 12)
        return (
            f"404 Not found: Table acme-analytics:{dataset}.{table} was not found in location EU; "
            f"reason: notFound, message: Not found: Table acme-analytics:{dataset}.{table}\n\n"
            f"Location: EU\nJob ID: job_{job}"
        )

    return _Cause(
        "google.api_core.exceptions.NotFound",
        (
            "google.api_core.exceptions.NotFound",
            "google.api_core.exceptions.ClientError",
            "google.api_core.exceptions.GoogleAPICallError",
            "Exception",
            "BaseException",
        ),
        render,
        f"NotFound: BigQuery table {dataset}.{table} was not found",
    )


def _module_cause(module: str) -> _Cause:
    return _Cause(
        "ModuleNotFoundError",
        ("ModuleNotFoundError", "ImportError", "Exception", "BaseException"),
        _const(f"No module named '{module}'"),
        f"ModuleNotFoundError: No module named '{module}'",
    )


def _conn_cause(conn: str) -> _Cause:
    return _Cause(
        "airflow.exceptions.AirflowNotFoundException",
        ("airflow.exceptions.AirflowNotFoundException", *_AIRFLOW_MRO),
        _const(f"The conn_id `{conn}` isn't defined"),
        f"AirflowNotFoundException: the conn_id `{conn}` isn't defined",
    )


def _dbt_cause(model: str, code: int) -> _Cause:
    command = f"['dbt', 'run', '--select', '{model}', '--target', 'prod']"
    return _Cause(
        "subprocess.CalledProcessError",
        ("subprocess.CalledProcessError", "subprocess.SubprocessError", "Exception", "BaseException"),
        _const(f"Command '{command}' returned non-zero exit status {code}."),
        f"CalledProcessError: dbt run --select {model} exited with {code}",
    )


def _unreachable_cause(vendor: str) -> _Cause:
    def render(rng: random.Random) -> str:
        return (
            f"HTTPSConnectionPool(host='api.{vendor}.com', port=443): Max retries exceeded with url: "
            f"/v1/export?cursor={_hex(rng, 16)} (Caused by NewConnectionError('<urllib3.connection."
            f"HTTPSConnection object at 0x7f{_hex(rng, 10)}>: Failed to establish a new connection: "
            f"[Errno -2] Name or service not known'))"
        )

    return _Cause(
        "requests.exceptions.ConnectionError",
        (
            "requests.exceptions.ConnectionError",
            "requests.exceptions.RequestException",
            "OSError",
            "Exception",
            "BaseException",
        ),
        render,
        f"ConnectionError: api.{vendor}.com unreachable (name or service not known)",
        deterministic=False,
    )


def _null_check_cause(table: str, column: str) -> _Cause:
    def render(rng: random.Random) -> str:
        nulls = rng.randrange(1, 5000)
        return f"Data quality check failed: {table}.{column} has {nulls} null values (expected 0)"

    return _Cause(
        "AssertionError",
        ("AssertionError", "Exception", "BaseException"),
        render,
        f"AssertionError: null check failed on {table}.{column}",
    )


def _attribute_cause(attr: str) -> _Cause:
    return _Cause(
        "AttributeError",
        ("AttributeError", "Exception", "BaseException"),
        _const(f"'NoneType' object has no attribute '{attr}'"),
        f"AttributeError: 'NoneType' object has no attribute '{attr}'",
    )


def _type_cause(left: str, right: str) -> _Cause:
    return _Cause(
        "TypeError",
        ("TypeError", "Exception", "BaseException"),
        _const(f"unsupported operand type(s) for +: '{left}' and '{right}'"),
        f"TypeError: unsupported operand type(s) for +: '{left}' and '{right}'",
    )


def _one_off_causes() -> list[_Cause]:
    """Causes that exist once: their messages differ only in numbers, which the normaliser drops."""

    def timeout(rng: random.Random) -> str:
        # Airflow's own wording; the pid differs on every worker
        return f"Timeout, PID: {rng.randrange(1000, 65000)}"

    def sensor(rng: random.Random) -> str:
        limit = rng.choice((1800, 3600, 7200))
        return (
            f"Sensor has timed out; run duration of {limit + rng.random() * 5:.6f} seconds exceeds "
            f"the specified timeout of {float(limit)}."
        )

    def disk(rng: random.Random) -> str:
        part = f"/tmp/airflowtmp{_hex(rng, 8)}/part-{rng.randrange(99999):05d}.parquet"
        return f"[Errno 28] No space left on device: '{part}'"

    def memory(rng: random.Random) -> str:
        rows = rng.randrange(10**7, 10**9)
        return (
            f"Unable to allocate {rows * 8 * 12 / 2**30:.1f} GiB for an array with shape ({rows}, 12) "
            f"and data type float64"
        )

    def decode(rng: random.Random) -> str:
        byte, position = rng.randrange(0x80, 0x100), rng.randrange(10**6)
        return f"'utf-8' codec can't decode byte 0x{byte:x} in position {position}: invalid start byte"

    def json_error(rng: random.Random) -> str:
        return "Expecting value: line 1 column 1 (char 0)"

    def snowflake_login(rng: random.Random) -> str:
        return (
            "250001 (08001): Failed to connect to DB: acme.eu-west-1.snowflakecomputing.com:443. "
            "Incorrect username or password was specified."
        )

    def pool(rng: random.Random) -> str:
        return (
            f"QueuePool limit of size {rng.choice((5, 10))} overflow {rng.choice((10, 20))} reached, "
            f"connection timed out, timeout {rng.choice((30.0, 60.0)):.2f} "
            f"(Background on this error at: https://sqlalche.me/e/20/3o7r)"
        )

    base = ("Exception", "BaseException")
    return [
        _Cause(
            "airflow.exceptions.AirflowTaskTimeout",
            ("airflow.exceptions.AirflowTaskTimeout", "airflow.exceptions.AirflowException", *base),
            timeout,
            "AirflowTaskTimeout: the task exceeded its execution_timeout",
            deterministic=False,
        ),
        _Cause(
            "airflow.exceptions.AirflowSensorTimeout",
            ("airflow.exceptions.AirflowSensorTimeout", "airflow.exceptions.AirflowException", *base),
            sensor,
            "AirflowSensorTimeout: a sensor gave up waiting",
            deterministic=False,
        ),
        _Cause(
            "OSError",
            ("OSError", *base),
            disk,
            "OSError: no space left on device (worker /tmp full)",
            deterministic=False,
        ),
        _Cause(
            "numpy.core._exceptions._ArrayMemoryError",
            ("numpy.core._exceptions._ArrayMemoryError", "MemoryError", *base),
            memory,
            "MemoryError: unable to allocate an array",
        ),
        _Cause(
            "UnicodeDecodeError",
            ("UnicodeDecodeError", "UnicodeError", "ValueError", *base),
            decode,
            "UnicodeDecodeError: 'utf-8' codec can't decode the feed",
        ),
        _Cause(
            "json.decoder.JSONDecodeError",
            ("json.decoder.JSONDecodeError", "ValueError", *base),
            json_error,
            "JSONDecodeError: the API returned an empty body",
        ),
        _Cause(
            "snowflake.connector.errors.DatabaseError",
            ("snowflake.connector.errors.DatabaseError", "snowflake.connector.errors.Error", *base),
            snowflake_login,
            "DatabaseError: Snowflake login failed (incorrect username or password)",
        ),
        _Cause(
            "sqlalchemy.exc.TimeoutError",
            ("sqlalchemy.exc.TimeoutError", "sqlalchemy.exc.SQLAlchemyError", *base),
            pool,
            "TimeoutError: SQLAlchemy connection pool exhausted",
            deterministic=False,
        ),
    ]


#: the near-miss pairs every storm has (when it has at least 12 unrelated causes), in order
def _pairs() -> list[tuple[str, _Cause]]:
    return [
        ("http:404", _http_cause(404)),
        ("http:500", _http_cause(500)),
        ("relation:orders", _relation_cause("orders")),
        ("relation:customers", _relation_cause("customers")),
        ("ora:ORA-00942", _ora_cause("ORA-00942")),
        ("ora:ORA-01017", _ora_cause("ORA-01017")),
        ("exit:137", _exit_code_cause(137)),
        ("exit:1", _exit_code_cause(1)),
        ("s3:AccessDenied:GetObject", _s3_cause(*_S3[0])),
        ("s3:NoSuchKey:GetObject", _s3_cause(*_S3[1])),
        ("key:user_id", _key_error_cause("user_id")),
        ("key:order_id", _key_error_cause("order_id")),
    ]


@functools.cache
def _families() -> tuple[tuple[tuple[str, _Cause], ...], ...]:
    """Every further cause, by family; a family is drawn from, then one of its unused causes.

    Cached: the causes are immutable and building the table-named ones is most of a small storm's cost.
    """
    tables = _tables()
    families: list[list[tuple[str, _Cause]]] = [
        [(f"http:{code}", _http_cause(code)) for code in _HTTP],
        [(f"ora:{code}", _ora_cause(code)) for code in _ORA],
        [(f"exit:{code}", _exit_code_cause(code)) for code in _EXIT_CODES],
        [(f"s3:{code}:{op}", _s3_cause(code, op, text)) for code, op, text in _S3],
        [(f"key:{key}", _key_error_cause(key)) for key in _KEY_FIELDS],
        [(f"relation:{t}", _relation_cause(t)) for t in tables],
        [(f"column:{c}", _column_cause(c)) for c in _KEY_FIELDS],
        [(f"unique:{t}", _unique_cause(t)) for t in tables],
        [(f"privilege:{t}", _privilege_cause(t)) for t in tables],
        [(f"snowflake:{t}", _snowflake_cause(t)) for t in tables],
        [(f"bigquery:{t}", _bigquery_cause(t)) for t in tables],
        [(f"module:{m}", _module_cause(m)) for m in _MODULES],
        [(f"conn:{s}_{e}", _conn_cause(f"{s}_{e}")) for s in _CONN_SYSTEMS for e in _CONN_ENVS],
        [(f"dbt:{t}:{code}", _dbt_cause(t, code)) for t in tables for code in (1, 2)],
        # hosts vary within one cause (the outage's do), so two unreachable vendors are one cause: once
        [("unreachable", _unreachable_cause("stripe"))],
        [(f"null:{t}.{c}", _null_check_cause(t, c)) for t in tables for c in _KEY_FIELDS[:8]],
        [(f"attr:{a}", _attribute_cause(a)) for a in _ATTRS],
        [(f"type:{a}+{b}", _type_cause(a, b)) for a in _TYPE_NAMES for b in _TYPE_NAMES if a != b],
        [(f"once:{i}", cause) for i, cause in enumerate(_one_off_causes())],
    ]
    return tuple(tuple(f) for f in families)


def _same_subject(key: str) -> str:
    """The part of a cause key that must not repeat: a dbt model fails with one exit code, not two."""
    return key.rsplit(":", 1)[0] if key.startswith("dbt:") else key


def _pick_causes(rng: random.Random, count: int) -> list[_Cause]:
    chosen: list[_Cause] = []
    used: set[str] = set()
    for key, cause in _pairs()[:count]:
        chosen.append(cause)
        used.add(_same_subject(key))
    families = [list(f) for f in _families()]
    while len(chosen) < count:
        open_families = [f for f in families if f]
        if not open_families:
            raise ValueError(f"cannot generate {count} distinct unrelated causes")
        family = rng.choice(open_families)
        # swap-remove a random cause: shuffling thousands of table-named causes is most of the cost
        index = rng.randrange(len(family))
        family[index], family[-1] = family[-1], family[index]
        key, cause = family.pop()
        if _same_subject(key) in used:
            continue
        used.add(_same_subject(key))
        chosen.append(cause)
    return chosen


# --- the outage ------------------------------------------------------------------------------

_OUTAGE_TYPE = "psycopg2.OperationalError"
_OUTAGE_MRO = ("psycopg2.OperationalError", *_PG_MRO_TAIL)
_OUTAGE_DESCRIPTION = (
    "psycopg2.OperationalError: could not connect to server: Connection refused "
    "(the primary PostgreSQL, pg-primary-3, is down)"
)


def _outage_message(rng: random.Random, host: int, subnet: int, port: int) -> str:
    # the primary's address depends on which VIP / DNS answer the worker got, the port on
    # whether the DAG goes through PgBouncer: variation the normaliser must see through
    ip = f"10.0.{subnet}.{rng.choice((17, 17, 17, 18, 21))}"
    return (
        "could not connect to server: Connection refused\n"
        f'\tIs the server running on host "pg-primary-{host}.internal" ({ip}) and accepting\n'
        f"\tTCP/IP connections on port {port}?"
    )
