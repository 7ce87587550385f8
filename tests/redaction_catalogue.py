"""Fake credentials in the shapes tracebacks and logs carry them, for the redaction tests.

Shared by ``tests/unit/render/test_redact_catalogue.py`` (what :func:`scrub` keeps and removes)
and ``tests/integration/faults/test_faults_secrets.py`` (nothing of them reaches Slack, email or
PagerDuty).  ``docs/security.md`` documents the same catalogue.

Every value is fake.  Token prefixes are joined at run time (``"gh" + "p_"``) so that secret
scanners do not flag this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One shape: ``text`` contains ``secret``; after scrubbing, ``context`` must still be there."""

    shape: str
    text: str
    secret: str
    context: str

    @property
    def fragments(self) -> list[str]:
        """Pieces of the secret long enough that finding one means part of it leaked."""
        return [piece for piece in re.findall(r"[A-Za-z0-9]{8,}", self.secret)]


def _p(*parts: str) -> str:
    return "".join(parts)


# -- fake values -----------------------------------------------------------------------------------

AWS_KEY_ID = _p("AK", "IA", "QX7EXAMPLE2FAKE9")
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEKEY42x"
GITHUB = _p("gh", "p_", "R4nd0mFakeGitHubToken0123456789abcdef")
GITHUB_APP = _p("gh", "s_", "Inst4llationFakeToken0123456789abcdef")
GITHUB_PAT = _p("github", "_pat_", "11ABCDEFG0FakeFineGrained_0123456789abcdefghijklmnop")
GITLAB = _p("gl", "pat-", "FakeGitLabTok3n-0123456789")
SLACK_BOT = _p("xo", "xb-", "123456789012-2345678901234-FakeSlackBotTok3n")
SLACK_WEBHOOK_SECRET = "FakeWebhookSecr3tPathXYZ"
STRIPE_SECRET = _p("sk", "_live_", "51FakeStripeSecretKey0123456789")
STRIPE_RESTRICTED = _p("rk", "_live_", "51FakeStripeRestricted0123456789")
GOOGLE_API = _p("AI", "za", "SyFakeGoogleApiKey0123456789abcdefg")
GOOGLE_OAUTH = _p("ya", "29.", "a0FakeGoogleOAuthAccessToken0123456789")
OPENAI = _p("sk", "-proj-", "FakeOpenAiStyleKey0123456789abcdefXYZ")
NPM = _p("np", "m_", "FakeNpmToken0123456789abcdefghijklmn")
PYPI = _p("py", "pi-", "AgEIcHlwaS5vcmcFakePyPiToken0123456789abcdefghijklmnopqrst")
SENDGRID = _p("S", "G.", "FakeSendGridId0123456", ".", "FakeSendGridSecret0123456789abcdefghijklmnopq")
TWILIO = _p("S", "K", "0123456789abcdef0123456789abcdef")
HUGGING_FACE = _p("h", "f_", "FakeHuggingFaceTok3nabcdefghijklmnop")
JWT = _p(
    "ey",
    "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    ".",
    "ey",
    "JzdWIiOiJmYWtlLXVzZXIiLCJleHAiOjE3MDAwMDAwMDB9",
    ".",
    "FakeJwtSignature0123456789abcdefghijklmno",
)
PEM_BODY = (
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCFakePemBody0123456789abcdefghij\n"
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpGYWtlUGVtMg=="
)
ROUTING_KEY = "R0UT1NGKEYFAKE00000000000000AB12"

SAMPLES: tuple[Sample, ...] = (
    # connection URLs
    Sample(
        "URL password",
        "could not connect to postgresql://airflow:Pl4inPassw0rdX@db.internal:5432/warehouse",
        "Pl4inPassw0rdX",
        "@db.internal:5432/warehouse",
    ),
    Sample(
        "URL password with /",
        "engine mysql+pymysql://etl:ab/cd3F9xSlash@mysql.internal/sales failed",
        "ab/cd3F9xSlash",
        "@mysql.internal/sales failed",
    ),
    Sample(
        "URL password with #",
        "redis://default:r3d#isPw42Hash@cache:6379/0 refused",
        "r3d#isPw42Hash",
        "@cache:6379/0 refused",
    ),
    Sample(
        "URL password with ?",
        "amqp://guest:gu?est99PwQuery@rabbit:5672/vhost unreachable",
        "gu?est99PwQuery",
        "@rabbit:5672/vhost unreachable",
    ),
    Sample(
        "URL password with @ and :",
        "mongodb+srv://svc:p@ss:w0rd!XAtColon@cluster0.example.net/db timed out",
        "p@ss:w0rd!XAtColon",
        "@cluster0.example.net/db timed out",
    ),
    Sample(
        "URL password, percent-encoded",
        "postgresql://u:p%40ss%2Fw0rdPercent@h/db",
        "p%40ss%2Fw0rdPercent",
        "@h/db",
    ),
    Sample(
        "URL user info token",
        f"git clone https://x-access-token:{GITHUB_APP}@github.com/org/repo.git failed",
        GITHUB_APP,
        "@github.com/org/repo.git failed",
    ),
    # command lines
    Sample(
        "--password x",
        "pg_dump --username etl --password S3cretCliPw! --host db.internal",
        "S3cretCliPw!",
        "--host db.internal",
    ),
    Sample(
        "--password=x",
        "airflow users create --password=AdminPw12345 --role Admin",
        "AdminPw12345",
        "--role Admin",
    ),
    Sample(
        "--token x",
        "vault login --token hvs.CAESIJFakeVaultToken01234 -method=token",
        "hvs.CAESIJFakeVaultToken01234",
        "-method=token",
    ),
    Sample(
        "--api-key x",
        "agent --api-key 0123456789abcdef0123456789abcdef --site datadoghq.eu",
        "0123456789abcdef0123456789abcdef",
        "--site datadoghq.eu",
    ),
    Sample(
        "mysql -pX",
        "mysql -u root -pMyR00tPwGlued -h db.internal -e 'select 1'",
        "MyR00tPwGlued",
        "-h db.internal",
    ),
    Sample(
        "command list (CalledProcessError)",
        "Command '['mysqldump', '--password', 'DumpPw9876XY', 'sales']' returned non-zero exit status 2.",
        "DumpPw9876XY",
        "returned non-zero exit status 2.",
    ),
    Sample("sshpass -p x", "sshpass -p SshPw4567Fake ssh deploy@host", "SshPw4567Fake", "ssh deploy@host"),
    Sample(
        "curl -u user:password",
        "curl -u admin:CurlPw777Fake https://api.example.com/items",
        "CurlPw777Fake",
        "https://api.example.com/items",
    ),
    Sample("redis-cli -a x", "redis-cli -h cache -a RedisPw2024Fake ping", "RedisPw2024Fake", "ping"),
    # key=value
    Sample(
        "keyword argument",
        "connect(host='db', password='KwArgPw42Fake', port=5432)",
        "KwArgPw42Fake",
        "port=5432)",
    ),
    Sample(
        "PGPASSWORD=", "PGPASSWORD=PgEnvPw88Fake psql -h db.internal", "PgEnvPw88Fake", "psql -h db.internal"
    ),
    Sample(
        "export AWS_SECRET_ACCESS_KEY=",
        f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET} && aws s3 ls",
        AWS_SECRET,
        "&& aws s3 ls",
    ),
    Sample(
        "libpq DSN",
        "host=db user=etl password=DsnPw1234Fake dbname=sales",
        "DsnPw1234Fake",
        "dbname=sales",
    ),
    Sample(
        "JDBC properties",
        "jdbc:sqlserver://db:1433;user=sa;password=JdbcPw!234Fake;encrypt=true",
        "JdbcPw!234Fake",
        "encrypt=true",
    ),
    Sample(
        "query string",
        "GET https://api.example.com/export?api_key=QsKey12345678Fake&page=2 failed",
        "QsKey12345678Fake",
        "page=2 failed",
    ),
    Sample(
        "Java system property",
        "java -Djavax.net.ssl.keyStorePassword=KsPw12345Fake -jar app.jar",
        "KsPw12345Fake",
        "-jar app.jar",
    ),
    Sample(
        "JAAS config",
        'PlainLoginModule required username="svc" password="JaasPw321Fake";',
        "JaasPw321Fake",
        'username="svc"',
    ),
    # JSON, dicts, YAML, INI
    Sample("JSON", '{"user": "etl", "password": "JsonPw2024Fake"}', "JsonPw2024Fake", '"user": "etl"'),
    Sample(
        "dict repr",
        "{'client_secret': 'DictSecret99Fake', 'client_id': 'abc'}",
        "DictSecret99Fake",
        "'client_id': 'abc'",
    ),
    Sample(
        "escaped JSON",
        'payload "{\\"token\\": \\"EscTok12345Fake\\", \\"page\\": 2}"',
        "EscTok12345Fake",
        '\\"page\\": 2',
    ),
    Sample(
        "YAML",
        "db:\n  host: db.internal\n  password: yaml pass phrase 9Fake\n  port: 5432",
        "yaml pass phrase 9Fake",
        "  port: 5432",
    ),
    Sample(
        "INI",
        f"[default]\naws_access_key_id = {AWS_KEY_ID}\n"
        "aws_secret_access_key = IniSecretKey/0123456789abcdefFake\n"
        "region = eu-west-1",
        "IniSecretKey/0123456789abcdefFake",
        "region = eu-west-1",
    ),
    Sample(
        "secret = x line",
        "[app]\nsecret = ini secret words 7Fake\ndebug = true",
        "ini secret words 7Fake",
        "debug = true",
    ),
    # HTTP headers
    Sample(
        "Authorization: Bearer",
        "Authorization: Bearer opaqueToken12345abcFake\nAccept: application/json",
        "opaqueToken12345abcFake",
        "Accept: application/json",
    ),
    Sample(
        "Authorization: Basic",
        "Authorization: Basic ZXRsOkJhc2ljUHc5OUZha2U=\nHost: api.example.com",
        "ZXRsOkJhc2ljUHc5OUZha2U=",
        "Host: api.example.com",
    ),
    Sample(
        "X-Api-Key header",
        "X-Api-Key: hdrKey0123456789Fake\nUser-Agent: airflow",
        "hdrKey0123456789Fake",
        "User-Agent: airflow",
    ),
    Sample(
        "Cookie header",
        "Cookie: session=CookieSess123Fake; csrftoken=CsrfTok456Fake\nHost: app",
        "CookieSess123Fake; csrftoken=CsrfTok456Fake",
        "Host: app",
    ),
    Sample(
        "headers dict",
        "{'Authorization': 'token DictHdrTok123Fake', 'Accept': 'application/json'}",
        "DictHdrTok123Fake",
        "'Accept': 'application/json'",
    ),
    Sample(
        "AWS SigV4 Authorization",
        f"Authorization: AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20240501/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024\n"
        "x-amz-date: 20240501T000000Z",
        "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
        "x-amz-date: 20240501T000000Z",
    ),
    # cloud keys and signatures
    Sample(
        "AWS access key id", f"InvalidAccessKeyId: {AWS_KEY_ID} does not exist", AWS_KEY_ID, "does not exist"
    ),
    Sample(
        "AWS session token",
        "aws_session_token=IQoJb3JpZ2luX2VjFakeSessionToken0123456789 expired",
        "IQoJb3JpZ2luX2VjFakeSessionToken0123456789",
        "expired",
    ),
    Sample(
        "S3 presigned URL",
        "https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_KEY_ID}%2F20240501%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9&X-Amz-Expires=3600",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "X-Amz-Expires=3600",
    ),
    Sample(
        "GCS signed URL",
        "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Signature=5e1f00d1fakegoogsignature0123456789abcdef&X-Goog-Expires=900",
        "5e1f00d1fakegoogsignature0123456789abcdef",
        "X-Goog-Expires=900",
    ),
    Sample(
        "Azure SAS sig=",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig=AzSasSig%2Bab12cdFake%3D&se=2024-05-01",
        "AzSasSig%2Bab12cdFake%3D",
        "se=2024-05-01",
    ),
    Sample(
        "Azure AccountKey=",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AzAccKey+base64/FakeKey0123==;"
        "EndpointSuffix=core.windows.net",
        "AzAccKey+base64/FakeKey0123==",
        "EndpointSuffix=core.windows.net",
    ),
    # JWT, PEM
    Sample("JWT", f"token rejected: {JWT} (expired)", JWT, "(expired)"),
    Sample(
        "PEM private key",
        f"ssh key:\n-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\nloaded",
        PEM_BODY,
        "-----END RSA PRIVATE KEY-----\nloaded",
    ),
    Sample(
        "PEM in service-account JSON",
        '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n'
        + PEM_BODY.replace("\n", "\\n")
        + '\\n-----END PRIVATE KEY-----\\n", "client_email": "sa@p.iam.gserviceaccount.com"}',
        PEM_BODY.split("\n")[0],
        '"client_email": "sa@p.iam.gserviceaccount.com"',
    ),
    Sample(
        "OpenSSH private key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAFakeOpenSsh0123456789\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAAFakeOpenSsh0123456789",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ),
    # well-known token prefixes
    Sample("GitHub ghp_", f"git push rejected for {GITHUB}: bad credentials", GITHUB, ": bad credentials"),
    Sample("GitHub github_pat_", f"token {GITHUB_PAT} lacks scope", GITHUB_PAT, "lacks scope"),
    Sample("GitLab glpat-", f"401 with {GITLAB} from gitlab", GITLAB, "from gitlab"),
    Sample("Slack xoxb-", f"invalid_auth for {SLACK_BOT} in #alerts", SLACK_BOT, "in #alerts"),
    Sample(
        "Slack webhook URL",
        f"POST https://hooks.slack.com/services/T0FAKE/B0FAKE/{SLACK_WEBHOOK_SECRET} failed: 404",
        SLACK_WEBHOOK_SECRET,
        "failed: 404",
    ),
    Sample(
        "Stripe sk_live_",
        f"stripe.error.AuthenticationError: {STRIPE_SECRET} revoked",
        STRIPE_SECRET,
        "revoked",
    ),
    Sample("Stripe rk_live_", f"key {STRIPE_RESTRICTED} is restricted", STRIPE_RESTRICTED, "is restricted"),
    Sample(
        "Google AIza", f"API key not valid: {GOOGLE_API}. Please pass a valid key", GOOGLE_API, "Please pass"
    ),
    Sample("Google ya29.", f"OAuth token {GOOGLE_OAUTH} expired", GOOGLE_OAUTH, "expired"),
    Sample(
        "OpenAI-style sk-", f"Incorrect API key provided: {OPENAI}.", OPENAI, "Incorrect API key provided"
    ),
    Sample("npm npm_", f"npm ERR! 401 token {NPM} unauthorized", NPM, "unauthorized"),
    Sample("PyPI pypi-", f"upload failed with {PYPI}", PYPI, "upload failed with"),
    Sample("SendGrid SG.", f"sendgrid 403 for {SENDGRID}", SENDGRID, "sendgrid 403 for"),
    Sample("Twilio SK", f"twilio api key {TWILIO} disabled", TWILIO, "disabled"),
    Sample("Hugging Face hf_", f"hub login with {HUGGING_FACE} failed", HUGGING_FACE, "failed"),
    Sample(
        "PagerDuty routing key, labelled",
        f'{{"routing_key": "{ROUTING_KEY}", "event_action": "trigger"}}',
        ROUTING_KEY,
        '"event_action": "trigger"',
    ),
    Sample(
        "PagerDuty routing key, in prose",
        f"events API refused routing key {ROUTING_KEY} (invalid)",
        ROUTING_KEY,
        "(invalid)",
    ),
    Sample(
        "SMTP AUTH PLAIN",
        "SMTPAuthenticationError: 535 b'AUTH PLAIN AGFsZXJ0cwBTbXRwRmFrZVB3MTIz rejected'",
        "AGFsZXJ0cwBTbXRwRmFrZVB3MTIz",
        "rejected'",
    ),
    # prose
    Sample(
        "password in prose",
        "login failed: wrong password Hunter2024Fake for etl",
        "Hunter2024Fake",
        "for etl",
    ),
)

#: text that looks a little like a credential but is not one: it must come through unchanged
HARMLESS: tuple[str, ...] = (
    "invalid token: expected int, got str",
    "password reset email sent to bob@example.com",
    "the key is missing",
    "KeyError: 'api_key'",
    "passwords are hard",
    "x=1 y=2",
    "https://example.com/path?page=2",
    "mail bob@example.com bounced",
    "token expired at 12:00",
    "Basic authentication failed for user bob",
    "max_tokens=4096 exceeded",
    "tokenizer=bert-base-uncased",
    "secret_name=prod-db not found",
    "password_file=/etc/app/pass.txt missing",
    "token_type=bearer",
    "api_key_id=4f2a not found",
    "git commit 3f786850e387550fdab836ed7e6dc881de23001b",
    'FATAL: password authentication failed for user "airflow"',
    'connection to server at "db" (10.0.0.1), port 5432 failed',
    "docker run -p 8080:80 nginx",
    "ssh -p 2222 deploy@host",
    "docker run -u 1000:1000 image",
    "mysql -p sales",
    "docker login --password-stdin -u ci registry.example.com",
    "missing required field: password",
    "Authorization failed: user lacks role",
    "The 'secret' parameter is required",
    "Set the PASSWORD environment variable",
    "api key is invalid",
    "request id 9f8e7d6c-1234-5678-9abc-def012345678 failed",
    "AWS region us-east-1 not found",
    "slack error: invalid_auth",
    "Task exited with return code 1",
    "ValueError: invalid literal for int() with base 10: 'abc'",
    "the bearer of bad news",
    "HTTP 401 Unauthorized for url: https://api.example.com/v1/items",
    "pip install --index-url https://pypi.org/simple pkg",
    "s3://bucket/key=value/part-0000.parquet",
    "user=bob dbname=sales host=db.internal",
    "Tokens used: 1234",
    "AccessDenied: secretsmanager:GetSecretValue on "
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
    "skipping sk-learn install",
    "see https://github.com/apache/airflow/issues/1234",
    "Broken DAG: [/opt/airflow/dags/etl.py] Traceback (most recent call last):",
)
