"""The URL a credential is sent to is the URL that was validated: no parser differentials.

``require_secure_endpoint`` parses with :func:`urllib.parse.urlsplit`; ``requests`` (PagerDuty)
parses with urllib3 and slack_sdk with ``urllib.request``/``http.client``.  For every host string
-- the known tricks and generated ones -- either the endpoint is refused, or each client connects
to exactly the host that was approved.
"""

from __future__ import annotations

import http.client
import urllib.request
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from airflow_alerting.channels._results import EndpointRefused, require_secure_endpoint
from airflow_alerting.channels.pagerduty import events_url

ALLOWED = ("127.0.0.1", "localhost", "::1")

#: host strings that parsers read differently (each once let a credential reach another host,
#: or could): backslashes, user info, fragments, percent-encoding, control characters, zone ids
DIFFERENTIALS = [
    "http://127.0.0.1\\@evil.example:80/",
    "http://evil.example\\@127.0.0.1/",
    "http://evil.example\\@127.0.0.1:80/",
    "http://127.0.0.1:80#@evil.example/",
    "http://evil.example#@127.0.0.1/",
    "http://evil.example?@127.0.0.1/",
    "http://evil.example%2F@127.0.0.1",
    "http://evil.example%2f@127.0.0.1:8080/",
    "http://evil.example:80@127.0.0.1/",
    "http://user:pass@127.0.0.1/",
    "http://evil.example@127.0.0.1/",
    "http://evil.example\t@127.0.0.1/",
    "http://evil.example\n@127.0.0.1/",
    "http://127.0.0.1\t.evil.example/",
    "http://127.0.0.1\r\n.evil.example/",
    "http://127.0.0.1 .evil.example/",
    "http://[::1%25eth0]:80/",
    "http://[::1%eth0]/",
    "http://[::1]@evil.example/",
    "HTTP://127.0.0.1:9/",
    "hTtP://127.0.0.1/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:/",
    "http://127.0.0.1%00.evil.example/",
    "http://127.0.0.1\x00.evil.example/",
    "http://127。0。0。1/",
    "http:\\\\evil.example",
    "http:/\\evil.example/",
    "http:evil.example",
    "//evil.example/",
    "https://evil.example\\@events.pagerduty.com/",
]


def _connect_host(url: str) -> str:
    """The host ``http.client`` connects to for ``url`` when opened by ``urllib.request`` (slack_sdk)."""
    request = urllib.request.Request(url)
    connection = http.client.HTTPConnection(request.host)  # parses only; does not connect
    return connection.host


def _urllib3_host(url: str) -> str | None:
    """The host ``requests`` connects to for ``url`` (it prepares URLs with urllib3's parser)."""
    import requests
    from urllib3.util import parse_url

    prepared = requests.Request("POST", url).prepare()
    assert prepared.url is not None
    host = parse_url(prepared.url).host
    return None if host is None else host.strip("[]")


def _assert_same_host_everywhere(url: str, hostname: str) -> None:
    # urllib3 lower-cases host names; http.client keeps them as given
    assert (_urllib3_host(url) or "").lower() == hostname, url
    assert _connect_host(url).lower() == hostname, url


def _approved(url: str) -> str | None:
    """``url`` when the validator lets it through, else ``None``."""
    try:
        require_secure_endpoint(url, ALLOWED, "the credential")
    except EndpointRefused:
        return None
    return url


@pytest.mark.parametrize("host", DIFFERENTIALS)
def test_pagerduty_host_differentials_are_refused(host: str) -> None:
    with pytest.raises(EndpointRefused):
        events_url(host, allowed_http_hosts=ALLOWED)


@pytest.mark.parametrize("url", DIFFERENTIALS)
def test_slack_url_differentials_are_refused(url: str) -> None:
    with pytest.raises(EndpointRefused):
        require_secure_endpoint(url, ALLOWED, "the webhook URL")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
        "https://slack.com/api/",
        "http://127.0.0.1:8080/api/",
        "http://localhost:1/services/T0/B0/secret",
        "http://[::1]:8080/api/",
        "https://events.eu.pagerduty.com/v2/enqueue",
        "https://Events.PagerDuty.com/v2/enqueue",
        "https://proxy.example/pd/v2/enqueue?region=eu",
    ],
)
def test_ordinary_endpoints_are_accepted_unchanged(url: str) -> None:
    assert require_secure_endpoint(url, ALLOWED, "the credential") == url
    _assert_same_host_everywhere(url, urlsplit(url).hostname or "")


def test_refusals_never_echo_user_info_or_path() -> None:
    for url in ("http://user:S3cretPw@127.0.0.1/x", "http://127.0.0.1/services/T/B/S3cretPw\t"):
        with pytest.raises(EndpointRefused) as refused:
            require_secure_endpoint(url, ALLOWED, "the webhook URL")
        assert "S3cretPw" not in str(refused.value)


# -- generated host strings -------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "127.0.0.1",
        "localhost",
        "evil.example",
        "events.pagerduty.com",
        "[::1]",
        "::1",
        "@",
        ":",
        ":80",
        "/",
        "\\",
        "#",
        "?",
        "%",
        "%2F",
        "%40",
        "%25",
        "[",
        "]",
        ".",
        " ",
        "\t",
        "\n",
        "\r",
        "\x00",
        "\x7f",
        "。",
        "http://",
        "https://",
        "HTTP://",
        "http:",
        "//",
        "user:pw@",
        "eth0",
    ]
)
#: plain host names and ports, so that a good share of the generated strings is accepted
_PLAIN = st.sampled_from(["127.0.0.1", "localhost", "[::1]", "events.pagerduty.com", ":8080", ".", "-"])
_HOSTS = st.lists(st.one_of(_PLAIN, _PLAIN, _PIECES, st.text(max_size=3)), min_size=1, max_size=6).map(
    "".join
)
_SCHEMES = st.sampled_from(
    ["http://", "https://", "https://", "https://", "HTTP://", "http:", "http:/", "//", ""]
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=_HOSTS, schema=st.sampled_from(["http", "https"]), port=st.sampled_from([None, 8080]))
@example(host="evil.example\\@127.0.0.1", schema="http", port=None)
@example(host="http://evil.example\\@127.0.0.1", schema="http", port=None)
@example(host="evil.example%2F@127.0.0.1", schema="http", port=8080)
def test_pagerduty_requests_the_host_that_was_approved(host: str, schema: str, port: int | None) -> None:
    try:
        url = events_url(host, schema=schema, port=port, allowed_http_hosts=ALLOWED)
    except EndpointRefused:
        event("refused")
        return
    event("accepted")
    hostname = urlsplit(url).hostname or ""
    assert urlsplit(url).scheme == "https" or hostname in ALLOWED
    assert _approved(url) == url  # what is posted passes the validator as it is
    _assert_same_host_everywhere(url, hostname)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=_SCHEMES,
    authority=_HOSTS,
    path=st.sampled_from(["", "/", "/api/", "/services/T0/B0/s3cret", "/a@b/", "?x=1", "/#"]),
)
@example(scheme="http://", authority="evil.example\\@127.0.0.1", path="/services/T0/B0/s3cret")
@example(scheme="http://", authority="127.0.0.1\\@evil.example", path="/api/")
def test_slack_requests_the_host_that_was_approved(scheme: str, authority: str, path: str) -> None:
    url = scheme + authority + path
    if _approved(url) is None:
        event("refused")
        return
    event("accepted")
    hostname = urlsplit(url).hostname or ""
    assert urlsplit(url).scheme == "https" or hostname in ALLOWED
    _assert_same_host_everywhere(url, hostname)  # webhook: this URL is requested as it is
    # Web API: slack_sdk requests urljoin(base_url, method)
    _assert_same_host_everywhere(urljoin(url, "chat.postMessage"), hostname)


# -- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://localhost:8081/services/T/B/s3cret", "http://localhost:8081"),
        ("https://user:pw@evil.example/path?token=s3cret", "https://evil.example"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("/elsewhere/s3cret", "a path on the same host"),
        (None, "an unnamed location"),
        ("", "an unnamed location"),
        ("http://evil.example:99999/", "an unparseable location"),
        ("javascript:alert(1)", "an unparseable location"),
    ],
)
def test_redirect_details_name_the_origin_only(location: str | None, shown: str) -> None:
    from airflow_alerting.channels._results import http_failure

    result = http_failure("slack", 302, action="slack webhook", location=location)
    assert (result.ok, result.retryable) == (False, False)
    assert result.detail == (
        f"slack webhook: HTTP 302: endpoint answered with a redirect to {shown}; redirects are not followed"
    )
    assert "s3cret" not in result.detail


def test_slack_clients_refuse_to_work_without_the_redirect_hook() -> None:
    """If slack_sdk renames its transport method, no credential goes through a redirect-following client."""
    from slack_sdk import WebClient
    from slack_sdk.webhook import WebhookClient

    from airflow_alerting.channels._redirects import refuse_redirects

    class RenamedWebClient(WebClient):
        _perform_urllib_http_request_internal = None  # type: ignore[assignment]

    class RenamedWebhookClient(WebhookClient):
        _perform_http_request_internal = None  # type: ignore[assignment]

    for client in (RenamedWebClient(token="xoxb-test"), RenamedWebhookClient(url="https://hooks.example/x")):
        with pytest.raises(EndpointRefused, match="redirects cannot be refused"):
            refuse_redirects(client)
    # the installed slack_sdk has both methods: the guard is in place, not skipped
    refuse_redirects(WebClient(token="xoxb-test"))
    refuse_redirects(WebhookClient(url="https://hooks.example/x"))
