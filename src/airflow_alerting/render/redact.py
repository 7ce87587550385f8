"""Keep credentials out of alert messages.

Exception messages are written by arbitrary code and routinely contain connection URIs,
tokens and ``password=...`` fragments.  Airflow's own masker (``airflow.sdk.log.redact``)
only replaces values it was told about (fetched connections, ``mask_secret``), so an
unregistered ``postgresql://user:pass@host`` passes through it untouched.  Every renderer
therefore runs untrusted text through :func:`sanitize`: Airflow's masker first, then the
pattern-based :func:`scrub` below.

:func:`scrub` works from a catalogue of the shapes credentials take in tracebacks and logs
(documented, with an example of each, in ``docs/security.md``):

* structures that are secret wherever they appear: PEM private-key blocks, the password of a
  ``scheme://user:password@host`` URL (which may itself contain ``/ # ? @ :``), Slack and
  Discord webhook URLs, JWTs, and tokens with a well-known prefix (GitHub, GitLab, Slack,
  Stripe, Google, OpenAI-style ``sk-``, npm, PyPI, SendGrid, Twilio, Hugging Face, AWS access
  key ids, ...);
* values *labelled* as secret: HTTP headers (``Authorization:``, ``Cookie:``, ``X-Api-Key:``),
  auth schemes (``Bearer ...``), ``key=value`` pairs (query strings, DSNs, environment
  variables, SAS and SigV4 signatures, Azure ``AccountKey=``), JSON and dict entries, YAML and
  INI lines, command-line flags (``--password x``, ``mysql -pX``, ``curl -u user:pass``) and
  prose such as ``wrong password hunter22``.

A label is secret when one of the words of its name is (``DB_PASSWORD``, ``apiKey``,
``X-Amz-Signature``, ``AccountKey``) unless its last word says it names something else
(``password_file``, ``token_type``, ``api_key_id``); unlabelled random-looking strings (an AWS
secret access key on its own, a 40-character hex id) are left alone, since they cannot be told
from commit hashes and request ids.  Labels and structure are kept so the message stays useful.

Every pattern is linear: repetitions are bounded, no quantifier is nested in another, and
each variable-length part starts behind a look-behind that excludes its own characters, so a
long run can only be entered at its start.  Labelled values are found in two steps (the label,
then its value), so text after a label that is *not* secret is scanned again rather than
skipped -- ``url=https://h/?token=x`` still loses ``x``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from airflow_alerting._memo import memo_by_digest

REPLACEMENT = "***"

# --- how labels are judged ----------------------------------------------------------------------

#: splits a label into words: ``AWS_SECRET_ACCESS_KEY``, ``apiKey``, ``X-Amz-Signature``
_WORD = re.compile(r"[A-Z]{1,64}(?![a-z])|[A-Z]?[a-z]{1,64}|[0-9]{1,64}")
#: words that make a label secret on their own
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "storepass",
        "keypass",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "apikey",
        "signature",
        "sig",
        "cookie",
        "cookies",
        "authorization",
    }
)
#: word endings that make a label secret (``PGPASSWORD``, ``csrftoken``, ``jwtsecret``)
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey")
#: ``<qualifier> key`` is secret (``api_key``, ``AccountKey``, ``routing-key``); a bare ``key`` is not
_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "access",
        "private",
        "account",
        "routing",
        "integration",
        "signing",
        "encryption",
        "master",
        "secret",
        "client",
        "license",
        "subscription",
        "app",
        "shared",
        "storage",
        "service",
        "webhook",
        "consumer",
        "sas",
        "admin",
        "deploy",
    }
)
#: a last word that makes the label name something other than the secret itself
_NOT_SECRET_LAST = frozenset(
    {
        "file",
        "files",
        "path",
        "dir",
        "name",
        "names",
        "type",
        "id",
        "ids",
        "url",
        "uri",
        "endpoint",
        "length",
        "len",
        "size",
        "count",
        "expiry",
        "expires",
        "expiration",
        "ttl",
        "timeout",
        "format",
        "header",
        "field",
        "env",
        "var",
        "prompt",
        "reset",
        "required",
        "policy",
        "hint",
        "rotation",
        "version",
        "stdin",
        "arn",
        "ref",
        "source",
        "provider",
        "backend",
        "mode",
        "enabled",
        "label",
        "kind",
        "location",
        "scope",
        "scopes",
        "method",
        "algorithm",
        "encoding",
    }
)


def is_secret_label(label: str) -> bool:
    """Whether a key, variable, flag or header name labels a secret value.

    :param label: e.g. ``"DB_PASSWORD"``, ``"--api-key"``, ``"X-Amz-Signature"``
    :return: ``True`` for ``password``, ``pgpassword``, ``apiKey``, ``AccountKey``, ``sig`` ...;
        ``False`` for ``max_tokens``, ``token_type``, ``password_file``, ``api_key_id``, ``key``
    """
    words = [w.lower() for w in _WORD.findall(label)]
    if not words or words[-1] in _NOT_SECRET_LAST:
        return False
    for i, word in enumerate(words):
        if word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            return True
        if word in ("key", "keys") and i and words[i - 1] in _KEY_QUALIFIERS:
            return True
    # REDISCLI_AUTH, basic_auth, proxy_auth; a bare "auth" (auth=basic) is a mode, not a secret
    return words[-1] == "auth" and len(words) > 1


def _credential_like(value: str) -> bool:
    """Whether an unstructured value looks like a credential rather than a word of prose.

    Used where the label alone is weak (``token xyz``, ``password: xyz`` mid-sentence): at least
    8 characters with a digit, one of ``_+/=``, or a capital letter after the first.
    """
    if len(value) < 8 or REPLACEMENT in value:  # "ya29.***": a prefix another pattern kept
        return False
    return (
        any(c.isdigit() for c in value)
        or any(c in "_+/=" for c in value)
        or any(c.isupper() for c in value[1:])
    )


def _not_prose(value: str) -> bool:
    """False for a header value such as ``denied for user bob`` (lower-case words only), or one
    that starts where another pattern already masked something (``x-access-token:***@host``)."""
    if value.startswith(REPLACEMENT):
        return False
    words = value.split()
    return not (len(words) >= 2 and all(w.isalpha() and w.islower() for w in words))


# --- structures that are secret wherever they appear ---------------------------------------------

_PEM_PRIVATE_KEY = re.compile(
    r"(?P<begin>-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
    # the body: anything up to the next "--" (escaped "\n" included), so the scan stops at the
    # END line -- or at the next BEGIN when a truncated key has none
    r"(?:[^-]|-(?!-)){0,100000}"
    r"(?P<end>-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?"
)

# scheme://user:password@host -- the password may itself contain '/', '#', '?', '@' and ':', so
# match greedily up to the last '@' of the URL; over-redacting a URL (one whose path has an
# '@' after a port) is acceptable, leaking a password is not.
_URL_CREDENTIALS = re.compile(
    r"(?P<keep>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/?#@\"'<>]{0,256}:)"
    r"[^\s\"<>]{1,256}(?=@)"
)
# Incoming-webhook URLs are bearer credentials in their own right.  Proxies and test servers
# serve the same /services/T.../B.../<secret> path under other hosts.
_WEBHOOK_URL = re.compile(
    r"(?P<keep>hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/"
    r"|/services/[A-Z0-9]{1,20}/[A-Z0-9]{1,20}/"
    r"|discord(?:app)?\.com/api/webhooks/[0-9]{1,30}/)[^\s\"'<>]{1,1024}"
)
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{6,4096}\.eyJ[A-Za-z0-9_\-]{2,8192}\.[A-Za-z0-9_\-]{0,4096}"
)

#: (service, pattern): a group ``keep`` is kept (the prefix tells the reader which service)
_PREFIXED_TOKENS: tuple[tuple[str, str], ...] = (
    ("GitHub", r"(?<![A-Za-z0-9_])(?P<keep>gh[pousr]_)[A-Za-z0-9]{30,255}"),
    ("GitHub fine-grained", r"(?<![A-Za-z0-9_])(?P<keep>github_pat_)[A-Za-z0-9_]{30,255}"),
    (
        "GitLab",
        r"(?<![A-Za-z0-9_\-])(?P<keep>gl(?:pat|dt|rt|ptt|cbt|imt|soat|ft|oas)-)[A-Za-z0-9_\-]{20,255}",
    ),
    ("Slack", r"(?<![A-Za-z0-9\-])(?P<keep>(?:xox[abeoprs]|xapp)-)[A-Za-z0-9\-]{1,512}"),
    ("Stripe", r"(?<![A-Za-z0-9_])(?P<keep>(?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{10,255}"),
    ("Stripe webhook", r"(?<![A-Za-z0-9_])(?P<keep>whsec_)[A-Za-z0-9+/=]{20,255}"),
    ("Google API key", r"(?<![A-Za-z0-9_\-])(?P<keep>AIza)[A-Za-z0-9_\-]{33,40}(?![A-Za-z0-9_\-])"),
    ("Google OAuth token", r"(?<![A-Za-z0-9_.\-])(?P<keep>ya29\.)[A-Za-z0-9_\-]{20,2048}"),
    ("Google OAuth client secret", r"(?<![A-Za-z0-9_\-])(?P<keep>GOCSPX-)[A-Za-z0-9_\-]{20,64}"),
    ("OpenAI-style", r"(?<![A-Za-z0-9_\-])(?P<keep>sk-)[A-Za-z0-9_\-]{20,255}"),
    ("npm", r"(?<![A-Za-z0-9_])(?P<keep>npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    ("PyPI", r"(?<![A-Za-z0-9_\-])(?P<keep>pypi-)[A-Za-z0-9_\-]{50,512}"),
    ("SendGrid", r"(?<![A-Za-z0-9_.\-])(?P<keep>SG\.)[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}"),
    ("Twilio API key", r"(?<![A-Za-z0-9])(?P<keep>SK)[0-9a-f]{32}(?![A-Za-z0-9])"),
    ("Hugging Face", r"(?<![A-Za-z0-9_])(?P<keep>hf_)[A-Za-z0-9]{30,64}(?![A-Za-z0-9])"),
    ("Shopify", r"(?<![A-Za-z0-9_])(?P<keep>shp(?:at|ss|ca|pa)_)[a-fA-F0-9]{32}(?![A-Za-z0-9])"),
    ("Databricks", r"(?<![A-Za-z0-9_])(?P<keep>dapi)[a-f0-9]{32}(?![A-Za-z0-9])"),
    ("DigitalOcean", r"(?<![A-Za-z0-9_])(?P<keep>do[opr]_v1_)[a-f0-9]{64}(?![A-Za-z0-9])"),
    (
        "AWS access key id",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}"
        r"(?![A-Za-z0-9])",
    ),
    # smtplib and mail servers echo the SASL exchange: base64 of "\0user\0password"
    (
        "SMTP AUTH",
        r"(?<![A-Za-z0-9_])(?P<keep>(?i:AUTH)[ \t]{1,5}(?i:PLAIN|LOGIN|XOAUTH2|CRAM-MD5)[ \t]{1,5})"
        r"[A-Za-z0-9+/=]{4,4096}",
    ),
)

#: every unconditional pattern, in the order they are applied
_STRUCTURES: tuple[re.Pattern[str], ...] = (
    _PEM_PRIVATE_KEY,
    _URL_CREDENTIALS,
    _WEBHOOK_URL,
    _JWT,
    *(re.compile(pattern) for _, pattern in _PREFIXED_TOKENS),
)


def _mask_structure(match: re.Match[str]) -> str:
    groups = match.re.groupindex
    if "begin" in groups:  # a PEM block: keep its armour, so the reader sees what it was
        return f"{match.group('begin')}{REPLACEMENT}{match.group('end') or ''}"
    keep = match.group("keep") if "keep" in groups else ""
    return f"{keep or ''}{REPLACEMENT}"


# --- values behind a label ----------------------------------------------------------------------

#: a double-quoted string with backslash escapes, a single-quoted string, or a bare word
_VALUE = (
    r"\"(?:[^\"\\\r\n]|\\.){0,512}\"|'(?:[^'\\\r\n]|\\.){0,512}'"
    r"|[^\s&,;)}\]]{1,512}"
)
_WORD_VALUE = r"[^\s,;'\"()<>\[\]{}]{8,256}"
#: kept in front of a masked header value: the reader still sees how it authenticated
_AUTH_SCHEMES = (
    r"(?i:Bearer|Basic|Token|Bot|Digest|Negotiate|NTLM|SSWS|OAuth|ApiKey|AWS4-HMAC-SHA256|GoogleLogin)"
)
_SECRET_HEADERS = (
    r"proxy-authorization|authorization|x-api-key|api-key|x-auth-token|x-access-token"
    r"|x-amz-security-token|x-goog-api-key|private-token|x-vault-token|x-csrf-token|set-cookie|cookie"
    r"|ocp-apim-subscription-key"
)
# how far back on its line a command-line flag looks for the command that gives it its meaning
_COMMAND_CONTEXT = 200


@dataclass(frozen=True)
class _Labelled:
    """A secret value found behind a label: ``label`` matches up to where the value starts.

    :param label: pattern for the label (and separator); group ``key`` is the label's name
    :param value: pattern matched right after the label; group ``keep``, if any, is kept
    :param is_secret: decides from the label match whether the value is secret
    :param value_ok: decides from the value whether it is a credential (for weak labels)
    """

    label: re.Pattern[str]
    value: re.Pattern[str]
    is_secret: Callable[[re.Match[str]], bool]
    value_ok: Callable[[str], bool] | None = None


def _by_key(match: re.Match[str]) -> bool:
    return is_secret_label(match.group("key"))


def _always(match: re.Match[str]) -> bool:
    return True


def _after_command(*commands: str) -> Callable[[re.Match[str]], bool]:
    """A flag whose meaning depends on the command (``-p`` is mysql's password, docker's port)."""
    command = re.compile(
        r"(?<![A-Za-z0-9_\-])(?:" + "|".join(map(re.escape, commands)) + r")(?![A-Za-z0-9_\-])"
    )

    def check(match: re.Match[str]) -> bool:
        text, start = match.string, match.start()
        line_start = text.rfind("\n", max(0, start - _COMMAND_CONTEXT), start) + 1
        return command.search(text, max(line_start, start - _COMMAND_CONTEXT), start) is not None

    return check


_LIST_SEPARATOR = r"['\"],[ \t]{0,5}['\"]"  # between items of a command list: '-p', 'x'

_LABELLED: tuple[_Labelled, ...] = (
    # Authorization: Bearer x / Cookie: a=b; c=d / X-Api-Key: x -- the rest of the header line
    _Labelled(
        re.compile(rf"(?<![A-Za-z0-9_.:/@\-])(?P<key>(?i:{_SECRET_HEADERS}))[ \t]{{0,10}}:[ \t]{{0,10}}"),
        re.compile(rf"(?P<keep>{_AUTH_SCHEMES}[ \t]{{1,10}})?[^\r\n\\']{{1,2048}}"),
        _always,
        _not_prose,
    ),
    # Bearer x / Basic x / token x anywhere, when x looks like a credential
    _Labelled(
        re.compile(r"(?<![A-Za-z0-9_\-])(?P<key>(?i:Bearer|Basic|Token|Bot|SSWS))[ \t]{1,10}"),
        re.compile(r"[A-Za-z0-9._~+/=\-:]{8,4096}"),
        _always,
        _credential_like,
    ),
    # YAML and INI: "password: x" / "secret = x" on a line of its own: the rest of the line.
    # "NAME=x cmd" (no space before "=") is a shell line, left to the key=value rule below.
    _Labelled(
        re.compile(
            r"(?m)^[ \t]{0,40}(?:- )?(?P<key>[A-Za-z0-9_.\-]{1,64})(?:[ \t]{0,10}:|[ \t]{1,10}=)[ \t]{0,10}"
        ),
        re.compile(rf"(?P<keep>{_AUTH_SCHEMES}[ \t]{{1,10}})?[^\r\n]{{1,1024}}"),
        _by_key,
    ),
    # key=value: query strings, DSNs, environment variables, --flag=value, SAS and SigV4 URLs
    _Labelled(
        re.compile(r"(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z0-9_.\-]{1,64})[ \t]{0,10}=[ \t]{0,10}"),
        re.compile(_VALUE),
        _by_key,
    ),
    # "key": value and 'key': value (JSON, Python dict reprs; also JSON escaped inside a string)
    _Labelled(
        re.compile(r"(?P<quote>\\?[\"'])(?P<key>[A-Za-z0-9_.\- ]{1,64})(?P=quote)[ \t]{0,10}[:=][ \t]{0,10}"),
        re.compile(_VALUE),
        _by_key,
    ),
    # key: value inside a line, when the value looks like a credential ("invalid token: expected
    # int" is prose and stays; so do ARNs, arn:aws:secretsmanager:...:secret:name)
    _Labelled(
        re.compile(r"(?<![A-Za-z0-9_.:/\-])(?P<key>[A-Za-z0-9_.\-]{1,64})[ \t]{0,10}:[ \t]{0,10}"),
        re.compile(rf"(?!{_AUTH_SCHEMES}[ \t]){_WORD_VALUE}"),  # "Authorization: Bearer ***" stays
        _by_key,
        _credential_like,
    ),
    # --password x, -storepass x
    _Labelled(
        re.compile(r"(?<![\w\-])--?(?P<key>[A-Za-z][A-Za-z0-9_\-]{0,40})[ \t]{1,10}"),
        re.compile(r"\"(?:[^\"\\\r\n]|\\.){0,512}\"|'[^'\r\n]{0,512}'|[^\s\"'\-][^\s\"']{0,511}"),
        _by_key,
    ),
    # the same in a command list, as CalledProcessError shows it: ['cli', '--password', 'x']
    _Labelled(
        re.compile(rf"(?<=['\"])--?(?P<key>[A-Za-z][A-Za-z0-9_\-]{{0,40}}){_LIST_SEPARATOR}"),
        re.compile(r"[^'\"\r\n]{1,512}"),
        _by_key,
    ),
    # mysql -pSECRET (glued: "-p x" prompts, and x is the database)
    _Labelled(
        re.compile(r"(?<![^\s'\"])-p(?=[^\s'\"])"),
        re.compile(r"[^\s'\"]{1,256}"),
        _after_command("mysql", "mysqldump", "mariadb", "mysqladmin", "mysqlimport", "mysqlshow"),
    ),
    # sshpass -p x, redis-cli -a x
    _Labelled(
        re.compile(rf"(?<![^\s'\"])-p(?:[ \t]{{1,5}}|{_LIST_SEPARATOR})(?=[^\s'\"\-])"),
        re.compile(r"[^\s'\"]{1,256}"),
        _after_command("sshpass"),
    ),
    _Labelled(
        re.compile(rf"(?<![^\s'\"])-a(?:[ \t]{{1,5}}|{_LIST_SEPARATOR})(?=[^\s'\"\-])"),
        re.compile(r"[^\s'\"]{1,256}"),
        _after_command("redis-cli"),
    ),
    # curl -u user:password (docker's -u is uid:gid)
    _Labelled(
        re.compile(rf"(?<![^\s'\"])(?:-u|--user)(?:[ \t]{{1,5}}|=|{_LIST_SEPARATOR})(?=[^\s'\":]{{1,128}}:)"),
        re.compile(r"(?P<keep>[^\s'\":]{1,128}:)[^\s'\"]{1,256}"),
        _after_command("curl"),
    ),
    # prose: "wrong password hunter22", "routing key R0UTE...", when the value looks like one
    _Labelled(
        re.compile(
            r"(?<![A-Za-z0-9_])(?P<key>(?i:password|passwd|passphrase|token|secret"
            r"|(?:api|access|secret|routing|integration|private|account)[ _\-]key"
            r"|client[ _\-]secret))[ \t]{1,5}"
        ),
        re.compile(_WORD_VALUE),
        _always,
        _credential_like,
    ),
)


def _mask_labelled(rule: _Labelled, text: str) -> str:
    """Mask every value ``rule`` finds in ``text``.

    A label whose value is not secret is stepped over, not its value: the value is scanned
    again for labels of its own.
    """
    out: list[str] = []
    pos = 0
    for_search = 0
    while True:
        label = rule.label.search(text, for_search)
        if label is None:
            break
        end = label.end()
        value = rule.value.match(text, end) if rule.is_secret(label) else None
        if (
            value is not None
            and not text.startswith(REPLACEMENT, value.end())  # a kept prefix: "token ghp_***"
            and (rule.value_ok is None or rule.value_ok(value.group()))
        ):
            keep = value.group("keep") if "keep" in rule.value.groupindex else None
            out.append(text[pos:end])
            out.append(f"{keep or ''}{REPLACEMENT}")
            pos = for_search = value.end()
        else:
            for_search = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def scrub(text: str) -> str:
    """Replace credential-looking fragments of ``text`` with ``***``.

    Applies the catalogue described in the module docstring (and ``docs/security.md``): secret
    structures first, then values behind secret labels.  Labels, URL structure and token
    prefixes are kept so the message stays useful for debugging.

    :param text: untrusted text, typically an exception message
    :return: the text with secrets replaced
    """
    # an alert's message is scrubbed for its incident key and again for its outbox copy, and
    # failures of one cause often repeat it: the catalogue's regexes run once per text
    return _scrub_cached(text)


def _scrub(text: str) -> str:
    for pattern in _STRUCTURES:
        text = pattern.sub(_mask_structure, text)
    for rule in _LABELLED:
        text = _mask_labelled(rule, text)
    return text


# a pure function of the text (fixed patterns, no outside state), so remembering it is exact;
# keyed by digest so the unredacted texts are not kept
_scrub_cached = memo_by_digest(_scrub)


@functools.cache
def _airflow_redactor() -> Callable[[str], object] | None:
    # Imported lazily: importing airflow.sdk initialises Airflow's configuration, which renderers
    # must not pay for (or fail on) when used outside a configured Airflow process.
    try:
        # The documented public path; the name is re-exported without __all__, hence the ignore.
        from airflow.sdk.log import redact  # type: ignore[attr-defined]
    except Exception:
        return None
    return redact


def airflow_redact(text: str) -> str:
    """Mask values Airflow knows to be secret (connection passwords, ``mask_secret`` values).

    Falls back to returning ``text`` unchanged when Airflow's masker is unavailable.

    :param text: untrusted text
    :return: the text with registered secrets masked
    """
    redactor = _airflow_redactor()
    if redactor is None:
        return text
    try:
        redacted = redactor(text)
    except Exception:
        return text
    return redacted if isinstance(redacted, str) else text


def sanitize(value: object) -> str:
    """Turn an untrusted value into text that is safe to show: Airflow's masker plus :func:`scrub`.

    :param value: anything; ``None`` becomes ``""``
    :return: the cleaned text
    """
    if value is None:
        return ""
    return scrub(airflow_redact(value if isinstance(value, str) else str(value)))
