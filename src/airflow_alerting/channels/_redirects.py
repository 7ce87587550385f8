"""Keep slack_sdk's clients from following HTTP redirects.

slack_sdk (3.x) sends every request through ``urllib.request.urlopen``, whose default opener
follows 301/302/303 -- turning the POST into a GET to wherever ``Location`` points, *with the
``Authorization`` header*, and to the same path (the incoming-webhook secret) on another host,
over plain http if the redirect says so.  The final answer of that other host is then reported
as the delivery's outcome.  Neither the hooks nor the clients take an opener, so each client
built by the Slack hooks gets its transport method replaced (on that instance only) by one
that opens the request through an opener whose redirect handler refuses every redirect:
urllib then raises ``HTTPError`` with the 3xx status, which slack_sdk turns into a response
with that status, which the channel reports as a failed, non-retryable delivery.

The methods replaced are private to slack_sdk; if a release renames them,
:func:`refuse_redirects` refuses to hand out the client instead of silently following redirects
again.
"""

from __future__ import annotations

import types
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from airflow_alerting.channels._results import EndpointRefused

if TYPE_CHECKING:
    from http.client import HTTPResponse
    from ssl import SSLContext

    from slack_sdk import WebClient
    from slack_sdk.webhook import WebhookClient, WebhookResponse

#: the transport method of each client class, as of slack_sdk 3.x
_WEB_CLIENT_METHOD = "_perform_urllib_http_request_internal"
_WEBHOOK_CLIENT_METHOD = "_perform_http_request_internal"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Treat every redirect as the final answer.

    Returning ``None`` from the ``http_error_3xx`` handlers passes the response on to
    ``HTTPDefaultErrorHandler``, which raises ``HTTPError`` carrying the 3xx status and the
    ``Location`` header; the redirected request is never built.
    """

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> None:
        return None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(ssl: SSLContext | None, proxy: str | None) -> urllib.request.OpenerDirector:
    """The opener slack_sdk would build, minus redirect following.

    A handler instance that subclasses a default handler replaces it in ``build_opener``, so
    :class:`_RefuseRedirects` takes the place of ``HTTPRedirectHandler``; everything else
    (environment proxies, the client's TLS context) stays as slack_sdk has it.
    """
    handlers: list[urllib.request.BaseHandler] = [
        _RefuseRedirects(),
        urllib.request.HTTPSHandler(context=ssl),
    ]
    if proxy is not None:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    return urllib.request.build_opener(*handlers)


def _open(client: Any, url: str, req: urllib.request.Request) -> HTTPResponse:
    from slack_sdk.errors import SlackRequestError

    # Same guards as slack_sdk: urllib would also open file:// and ftp:// URLs.
    if not url.lower().startswith("http"):
        raise SlackRequestError("Invalid URL detected")
    proxy = client.proxy
    if proxy is not None and not isinstance(proxy, str):
        raise SlackRequestError("Invalid proxy detected: it must be a str value")
    response: HTTPResponse = _opener(client.ssl, proxy).open(req, timeout=client.timeout)
    return response


def _web_request(self: WebClient, url: str, req: urllib.request.Request) -> dict[str, Any]:
    """``WebClient._perform_urllib_http_request_internal`` without redirects (same return shape)."""
    with _open(self, url, req) as response:
        raw: bytes = response.read()
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": raw}
        charset = response.headers.get_content_charset() or "utf-8"
        return {"status": response.status, "headers": response.headers, "body": raw.decode(charset)}


def _webhook_request(self: WebhookClient, url: str, req: urllib.request.Request) -> WebhookResponse:
    """``WebhookClient._perform_http_request_internal`` without redirects (same return type)."""
    from slack_sdk.webhook import WebhookResponse

    with _open(self, url, req) as response:
        charset = response.headers.get_content_charset() or "utf-8"
        body = response.read().decode(charset)
        # slack_sdk passes the message object too (its annotation says dict); lookups stay case-insensitive
        headers = cast("dict[str, Any]", response.headers)
        return WebhookResponse(url=url, status_code=response.status, body=body, headers=headers)


def refuse_redirects(client: WebClient | WebhookClient) -> None:
    """Make ``client`` treat any redirect as a failed request instead of following it.

    :param client: a client built by ``SlackHook`` or ``SlackWebhookHook`` (changed in place)
    :raises EndpointRefused: when this slack_sdk version has no transport method to replace: the
        credential is not sent rather than sent through a client that follows redirects
    """
    from slack_sdk import WebClient
    from slack_sdk.webhook import WebhookClient

    replacement: Callable[..., Any]
    if isinstance(client, WebClient):
        name, replacement = _WEB_CLIENT_METHOD, _web_request
    elif isinstance(client, WebhookClient):
        name, replacement = _WEBHOOK_CLIENT_METHOD, _webhook_request
    else:
        raise EndpointRefused(f"cannot keep a {type(client).__name__} from following redirects")
    if not callable(getattr(type(client), name, None)):
        raise EndpointRefused(
            f"this slack_sdk version has no {type(client).__name__}.{name}, so redirects cannot be "
            "refused; not sending the credential"
        )
    setattr(client, name, types.MethodType(replacement, client))
