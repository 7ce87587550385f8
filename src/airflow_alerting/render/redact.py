"""Keep credentials out of alert messages.

Exception messages are written by arbitrary code and routinely contain connection URIs,
tokens and ``password=...`` fragments.  Airflow's own masker (``airflow.sdk.log.redact``)
only replaces values it was told about (fetched connections, ``mask_secret``), so an
unregistered ``postgresql://user:pass@host`` passes through it untouched.  Every renderer
therefore runs untrusted text through :func:`sanitize`: Airflow's masker first, then the
pattern-based :func:`scrub` below.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

REPLACEMENT = "***"

# Every repetition below is bounded and every pattern is anchored to the start of a token, so
# scrubbing stays linear even for megabyte-sized, adversarial exception messages.

# scheme://user:password@host -- the password may itself contain '@', so match greedily up to
# the last '@' before the path; over-redacting a URL is acceptable, leaking a password is not.
_URL_CREDENTIALS = re.compile(
    r"(?P<prefix>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/?#@]{0,256}:)[^\s/?#]{0,256}(?=@)"
)
# Slack bot/user/app/refresh tokens (xoxb-, xoxp-, xoxa-, xoxr-, xoxe-, xoxs-, xapp-).
_SLACK_TOKEN = re.compile(r"\b(?P<prefix>(?:xox[abeprs]|xapp)-)[A-Za-z0-9-]+")
# An incoming-webhook URL is a bearer credential in its own right.
# Proxies and test servers serve the same /services/T.../B.../<secret> path under other hosts.
_SLACK_WEBHOOK = re.compile(
    r"(?P<prefix>hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/"
    r"|/services/[A-Z0-9]{1,20}/[A-Z0-9]{1,20}/)[^\s\"'<>]+"
)
_BEARER = re.compile(r"(?P<prefix>\b(?:Bearer|Basic|Token)\s{1,10})[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")

_SECRET_NAME = re.compile(
    r"password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|routing[_-]?key|integration[_-]?key|credential",
    re.IGNORECASE,
)
_VALUE = r"(?P<value>\"[^\"]{0,512}\"|'[^']{0,512}'|[^\s&,;)}\]]{1,512})"
# key=value (query strings, DSNs, command lines) ...
_KEY_EQUALS = re.compile(
    rf"(?P<prefix>(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]{{1,64}})\s{{0,10}}=\s{{0,10}}){_VALUE}"
)
# ... and quoted keys followed by ':' (JSON and Python dict reprs).  Unquoted "token: x" is left
# alone because prose such as "invalid token: expected ..." would otherwise lose its meaning.
_QUOTED_KEY_COLON = re.compile(
    rf"(?P<prefix>([\"'])(?P<key>[A-Za-z0-9_.-]{{1,64}})\2\s{{0,10}}:\s{{0,10}}){_VALUE}"
)

_PATTERNS: tuple[re.Pattern[str], ...] = (
    _URL_CREDENTIALS,
    _SLACK_WEBHOOK,
    _SLACK_TOKEN,
    _BEARER,
)
_KEY_VALUE_PATTERNS: tuple[re.Pattern[str], ...] = (_KEY_EQUALS, _QUOTED_KEY_COLON)


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group("prefix") + REPLACEMENT


def _mask_secret_value(match: re.Match[str]) -> str:
    if _SECRET_NAME.search(match.group("key")):
        return match.group("prefix") + REPLACEMENT
    return match.group(0)


def scrub(text: str) -> str:
    """Replace credential-looking fragments of ``text`` with ``***``.

    Covers ``scheme://user:password@host`` URIs, Slack tokens and webhook URLs, bearer
    tokens, AWS access key ids and ``password=...`` / ``"token": "..."`` pairs.  Keys and URL
    structure are kept so the message stays useful for debugging.

    :param text: untrusted text, typically an exception message
    :return: the text with secrets replaced
    """
    for pattern in _PATTERNS:
        text = pattern.sub(_keep_prefix, text)
    for pattern in _KEY_VALUE_PATTERNS:
        text = pattern.sub(_mask_secret_value, text)
    return _AWS_ACCESS_KEY.sub(REPLACEMENT, text)


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
