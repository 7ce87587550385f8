"""Turning transport outcomes into :class:`~airflow_alerting.model.DeliveryResult` values.

Shared by every channel so "what is worth retrying" is decided in one place:

* HTTP 408, 425, 429 and 5xx are retryable, other 4xx are not (the request itself is wrong);
* refused connections, resets, timeouts and other socket errors are retryable;
* configuration problems (invalid URLs, certificate verification failures, missing
  connections) are not, since repeating them cannot help.

Details are built from status codes, error codes and exception *type names* -- never from
``str(exception)``, which for HTTP libraries can contain the request URL (for a Slack
webhook, the URL is the secret) -- and are passed through :func:`hide` as a last line of
defence.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from urllib.error import HTTPError, URLError

from airflow_alerting.model import DeliveryResult

_RETRYABLE_STATUS = frozenset({408, 425, 429})
_SECONDS = re.compile(r"[+-]?\d+(?:\.\d*)?|[+-]?\.\d+")
_DETAIL_LIMIT = 300
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.:\- ]{1,80}")
#: secrets shorter than this are not searched for; they would match innocent text
_MIN_SECRET = 4
# Matched by name: airflow.sdk.exceptions and airflow.exceptions both define it, and importing
# either here would pull Airflow into every failure path.
_NOT_FOUND = "AirflowNotFoundException"


class EndpointRefused(ValueError):
    """A connection points a credential at an endpoint we will not send it to."""


#: every character of an endpoint URL: printable ASCII without space.  Whitespace and control
#: characters are where URL parsers disagree most (urllib.parse silently drops tabs and
#: newlines, others keep or reject them), so such a URL is refused rather than interpreted.
_URL_CHARACTERS = re.compile(r"[!-~]{1,2048}")
#: the authority part of an endpoint URL: a DNS name or IPv4 address, or a bracketed IPv6
#: address, and an optional port.  No user info, no percent-encoding, no IPv6 zone id: the
#: parts that HTTP clients read differently from urllib.parse (``a\@b``, ``a%2F@b``, ...).
_AUTHORITY = re.compile(
    r"(?:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,252}))|\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\])(?::[0-9]{1,5})?"
)


def require_secure_endpoint(url: str, allowed_http_hosts: Iterable[str], credential: str) -> str:
    """Check the exact URL a credential is about to be sent to, and return it unchanged.

    The URL is parsed once, by :func:`urllib.parse.urlsplit`, and accepted only when no other
    parser can read a different host out of it: printable ASCII only, no backslash, no
    fragment, a plain ``host[:port]`` authority (no user info, percent-encoding or zone id) and
    an exact ``urlsplit``/``urlunsplit`` round trip.  Then only https is accepted, except plain
    http to ``allowed_http_hosts`` (local test servers).  Callers must hand the returned string,
    and nothing rebuilt from it, to the HTTP client.

    :param url: the endpoint a credential is about to be sent to
    :param allowed_http_hosts: host names that may be reached over plain http
    :param credential: what would be exposed, for the message ("the routing key")
    :return: ``url``, validated
    :raises EndpointRefused: with a message that names the scheme and host, never the URL's path
        or user info (either may be the credential)
    """
    import ipaddress
    from urllib.parse import urlsplit, urlunsplit

    if not _URL_CHARACTERS.fullmatch(url):
        raise EndpointRefused("the endpoint URL contains whitespace, control or non-ASCII characters")
    if "\\" in url:
        raise EndpointRefused("the endpoint URL contains a backslash")
    if "#" in url:
        raise EndpointRefused("the endpoint URL has a fragment")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as exc:
        raise EndpointRefused("the endpoint is not a valid URL") from exc
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if not hostname or authority is None:
        raise EndpointRefused(
            "the endpoint URL needs a plain host[:port] (no user info, percent-encoding or IPv6 zone id)"
        )
    if urlunsplit(parts) != url:
        # e.g. an upper-case scheme or an empty query: another parser may normalise differently
        raise EndpointRefused("the endpoint URL is not in canonical form")
    ipv6 = authority.group("ipv6")
    try:
        if ipv6 is not None:
            ipaddress.IPv6Address(ipv6)
    except ValueError as exc:
        raise EndpointRefused("the endpoint URL has an invalid IPv6 address") from exc
    scheme = parts.scheme
    allowed = set(allowed_http_hosts)
    if scheme != "https" and not (scheme == "http" and hostname in allowed):
        raise EndpointRefused(
            f"refusing to send {credential} to {scheme}://{hostname}: "
            f"use https (plain http only for {', '.join(sorted(allowed)) or 'no host'})"
        )
    return url


def hide(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace every occurrence of each secret in ``text`` with ``***``.

    :param text: a detail message
    :param secrets: values that must never appear (tokens, passwords, webhook URLs, routing keys)
    :return: the text without those values
    """
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def result(
    channel: str,
    *,
    ok: bool,
    detail: str,
    retryable: bool = False,
    external_id: str | None = None,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
) -> DeliveryResult:
    """Build a :class:`DeliveryResult` whose ``detail`` is short and free of ``secrets``.

    :param channel: the channel's name
    :param ok: whether the service accepted the message
    :param detail: human-readable explanation
    :param retryable: whether a later attempt may succeed (ignored when ``ok``)
    :param external_id: id the service gave the message
    :param retry_after: seconds the service asked us to wait before retrying
    :param secrets: values to strip from ``detail``
    :return: the result
    """
    clean = hide(detail, secrets)
    if len(clean) > _DETAIL_LIMIT:
        clean = clean[: _DETAIL_LIMIT - 1] + "…"
    return DeliveryResult(
        channel=channel,
        ok=ok,
        retryable=retryable and not ok,
        detail=clean,
        external_id=external_id,
        retry_after=retry_after if not ok else None,
    )


def status_is_retryable(status: int) -> bool:
    """Whether an HTTP error status is worth retrying (408, 425, 429 and 5xx).

    :param status: the HTTP status code
    :return: ``True`` for transient failures
    """
    return status in _RETRYABLE_STATUS or 500 <= status <= 599


def safe_code(value: object) -> str | None:
    """An error code from a response body, if it looks like one (``"channel_not_found"``).

    Free text from a server is not echoed, because it may repeat what we sent.

    :param value: candidate code
    :return: the code, or ``None`` when it is not a short identifier
    """
    if isinstance(value, str) and _SAFE_CODE.fullmatch(value.strip()):
        return value.strip()
    return None


def header(headers: Mapping[str, object] | None, name: str) -> str | None:
    """Case-insensitive header lookup that tolerates list-valued headers.

    :param headers: response headers
    :param name: header name
    :return: the first value, or ``None``
    """
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            return None if value is None else str(value)
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delta-seconds or HTTP-date) into seconds from now.

    :param value: the header value
    :param now: current POSIX time, for tests
    :return: seconds to wait (>= 0), or ``None`` when absent or unparseable
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return max(0.0, float(text))
    # otherwise Retry-After is an HTTP date
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def http_failure(
    channel: str,
    status: int,
    *,
    action: str,
    code: str | None = None,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
    location: str | None = None,
) -> DeliveryResult:
    """A failed result for an HTTP error status.

    A redirect (3xx) is a failure too: no channel follows one, since that would carry the
    credential to a host that was never validated, and a redirect is not going to go away by
    itself, so it is not retried.

    :param channel: the channel's name
    :param status: HTTP status code
    :param action: what was attempted, e.g. ``"slack chat.postMessage"``
    :param code: service error code from the body, if any (see :func:`safe_code`)
    :param retry_after: parsed ``Retry-After``
    :param secrets: values to strip from the detail
    :param location: the ``Location`` header, for a redirect
    :return: the result, retryable per :func:`status_is_retryable`
    """
    if 300 <= status <= 399:
        detail = (
            f"{action}: HTTP {status}: endpoint answered with a redirect to {redirect_origin(location)}; "
            "redirects are not followed"
        )
        return result(channel, ok=False, retryable=False, detail=detail, secrets=secrets)
    detail = f"{action}: HTTP {status}" + (f" {code}" if code else "")
    if retry_after is not None:
        detail += f" (retry after {retry_after:g}s)"
    return result(
        channel,
        ok=False,
        retryable=status_is_retryable(status),
        detail=detail,
        retry_after=retry_after,
        secrets=secrets,
    )


_ORIGIN_PART = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,300}")


def redirect_origin(location: str | None) -> str:
    """``scheme://host[:port]`` of a redirect target, for a detail: never its path or query.

    :param location: the ``Location`` header as received (untrusted)
    :return: the origin, or a description when the header is missing, relative or malformed
    """
    from urllib.parse import urlsplit

    if not location or not location.strip():
        return "an unnamed location"
    try:
        parts = urlsplit(location.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "an unparseable location"
    if not parts.scheme and not host:
        return "a path on the same host"
    origin = f"[{host}]" if ":" in host else host
    if port is not None:
        origin += f":{port}"
    if not (_SAFE_CODE.fullmatch(parts.scheme) and _ORIGIN_PART.fullmatch(origin)):
        return "an unparseable location"
    return f"{parts.scheme}://{origin}"


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """The exception, what it wraps (``URLError.reason``) and its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def transport_error(exc: BaseException) -> tuple[bool, str] | None:
    """Classify a network-level exception.

    Looks through wrappers (``URLError``, exceptions re-raised by hooks) for the underlying
    socket error.  Value errors (invalid URL, certificate verification failure) are
    configuration problems; other ``OSError``\\s and HTTP protocol errors are transient.

    :param exc: the exception raised while talking to the service
    :return: ``(retryable, description)``, or ``None`` when it is not a transport error
    """
    causes = list(_causes(exc))
    if any(isinstance(c, TimeoutError) for c in causes) and not any(isinstance(c, HTTPError) for c in causes):
        # smtplib and http.client wrap a socket timeout in their own OSError subclasses
        return True, "timed out"
    for cause in causes:
        if isinstance(cause, HTTPError):
            return status_is_retryable(cause.code), f"HTTP {cause.code}"
        if isinstance(cause, URLError):
            if isinstance(cause.reason, BaseException):
                continue  # a wrapper; classify the socket error it carries (queued by _causes)
            # urllib's own complaints ("unknown url type", "no host given") are about the URL.
            return False, f"{type(cause).__name__} (invalid URL)"
        if isinstance(cause, ValueError) and isinstance(cause, OSError):
            # ssl.SSLCertVerificationError, requests' InvalidURL/MissingSchema, ...
            return False, f"{type(cause).__name__} (configuration problem)"
        if isinstance(cause, TimeoutError):
            return True, "timed out"
        if isinstance(cause, (OSError, http.client.HTTPException)):
            return True, describe(cause)
    return None


def describe(exc: BaseException) -> str:
    """A short description of an exception that cannot leak URLs or payloads.

    :param exc: the exception
    :return: the type name, plus ``strerror`` for OS-level errors (``"ConnectionRefusedError
        (Connection refused)"``)
    """
    name = type(exc).__name__
    strerror = getattr(exc, "strerror", None) if isinstance(exc, OSError) else None
    return f"{name} ({strerror})" if isinstance(strerror, str) and strerror else name


def exception_failure(
    channel: str,
    exc: BaseException,
    *,
    action: str,
    secrets: Iterable[str | None] = (),
) -> DeliveryResult:
    """A failed result for an exception raised while delivering.

    A missing Airflow connection is reported as such; transport errors are classified by
    :func:`transport_error`; anything else is a bug or a configuration problem and is not
    retried.

    :param channel: the channel's name
    :param exc: the exception
    :param action: what was attempted
    :param secrets: values to strip from the detail
    :return: the result
    """
    if any(type(cause).__name__ == _NOT_FOUND for cause in _causes(exc)):
        # Hooks re-raise a missing connection as a generic AirflowException; the cause tells.
        return result(channel, ok=False, retryable=False, detail=f"{action}: connection not found")
    classified = transport_error(exc)
    if classified is not None:
        retryable, description = classified
        return result(
            channel, ok=False, retryable=retryable, detail=f"{action}: {description}", secrets=secrets
        )
    return result(channel, ok=False, retryable=False, detail=f"{action}: {describe(exc)}", secrets=secrets)
