"""Root-cause signatures: which failures are one incident across DAGs and tasks.

A signature is the exception type plus the normalised first meaningful line of the message,
e.g. ``psycopg2.OperationalError: could not connect to server: Connection refused. Is the
server running on host <host> (<ip>) and accepting TCP/IP connections on port <port>?``.
Failures with the same signature are correlated into one incident, and the signature is the
incident's title, so the normaliser has two jobs that pull against each other:

* erase what varies between occurrences of one cause: hosts, IPs, ports, pids, ids, uuids,
  hex ids, durations, timestamps, dated partitions, temporary paths, URL query strings,
  e-mail addresses;
* keep what tells causes apart: the words, quoted names (tables, columns), HTTP status codes
  and error codes (``ORA-00942``, ``SQLSTATE 40001``, ``[Errno 28]``, ``exit code 137``,
  ``(1146, ...)``, ``E11000``).

Messages are untrusted and can be huge, so the input is bounded before any regex runs (at
most 64 KiB is scanned for lines, at most 2,000 characters of the chosen text are normalised)
and every pattern is linear: bounded repetitions, no nested quantifiers over overlapping
classes.  The text is tokenised in one left-to-right pass of a single alternation; each token
is classified in Python with bounded look-back/look-ahead at its neighbours, which is where
the "is this number an error code?" decisions are made.
"""

from __future__ import annotations

import http
import itertools
import re

from airflow_alerting._memo import memo_by_digest

__all__ = ["SIGNATURE_LIMIT", "cause_signature", "normalise_cause"]

#: the most characters a signature (and a normalised cause) has; it is an incident title
SIGNATURE_LIMIT = 300
#: the most characters of a message searched for its meaningful line
_SCAN_LIMIT = 64 * 1024
#: the most characters of the chosen line(s) that are normalised
_LINE_LIMIT = 2000
#: the most characters of an exception type name that are kept
_TYPE_LIMIT = 200
_TRACEBACK_HEADER = "Traceback (most recent call last):"

# --- patterns --------------------------------------------------------------------------------
# Every pattern below runs on at most _LINE_LIMIT characters and is linear in its input: each
# alternative either fails after a bounded number of steps at a given start, or consumes what
# it scanned.  All are ASCII-only: non-ASCII text passes through unchanged.

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]{0,6}"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]{0,6},?\s"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})(?![A-Za-z0-9]))?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?" + _ZONE
# hostnames are only recognised with one of these suffixes, so that dotted code names
# (``psycopg2.errors``, ``java.lang.Foo``, ``db.orders``) are not mistaken for hosts
_HOST_SUFFIXES = (
    "com|net|org|io|ai|app|dev|cloud|co|uk|de|eu|us|internal|local|localdomain|lan|corp|"
    "intra|intranet|svc|cluster|example|test|invalid"
)
_HEX = "[0-9A-Fa-f]"
_HEX_GROUPS = rf"{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}}"
_TEMP_ROOTS = r"/private/tmp|/private/var/folders|/var/folders|/var/tmp|/dev/shm|/tmp"
_PATH_SEGMENT = r"[^\s'\"<>/()\[\],;]{0,255}"
_WIN_PATH_SEGMENT = r"[^\s'\"<>\\/()\[\],;]{0,255}"

_TOKEN = re.compile(
    "|".join(
        [
            # scheme://[user[:password]@]host[:port][/path][?query][#fragment]
            # the body never contains "://", so a URL's path holds no URL (no recursion below)
            r"(?P<url>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://(?:[^\s'\"<>:]|:(?!//)){1,2000})",
            r"(?P<email>(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8})",
            rf"(?P<uuid>(?<![0-9A-Za-z-]){_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![0-9A-Za-z]))",
            # 2026-11-27, 2026_11_27, 2026/11/27 [T10:00:00.123+00:00]; the backreference keeps the
            # separators consistent, so version-like 2026.1-3 is not a date
            r"(?P<date>(?<![A-Za-z0-9.])(?:19|20)\d\d(?P<dsep>[-_/.])(?:0?[1-9]|1[0-2])(?P=dsep)"
            r"(?:0?[1-9]|[12]\d|3[01])(?P<date_time>[T ]" + _CLOCK + r")?(?![0-9]))",
            # 20261127, 20261127T100000Z (partitions such as events_20261127)
            r"(?P<compact_date>(?<![A-Za-z0-9])(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
            r"(?P<compact_time>T?\d{6}(?:\.\d{1,9})?Z?)?(?![0-9]))",
            # 2026-11, 2026_11 (monthly partitions)
            r"(?P<month>(?<![A-Za-z0-9.])(?:19|20)\d\d[-_/](?:0[1-9]|1[0-2])(?![0-9]|[-_/.]\d))",
            # Thu, 27 Nov 2026 10:00:00 GMT / Nov 27, 2026 / Thursday November 27 2026
            rf"(?P<text_date>\b(?:{_WEEKDAY})?(?:\d{{1,2}}[\s-]{_MONTH}[\s-]|{_MONTH}\s\d{{1,2}},?\s)"
            r"(?:19|20)\d\d(?P<text_time>\s" + _CLOCK + r")?\b)",
            r"(?P<clock>(?<![\w.:])\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?" + _ZONE + r"(?![\w:]|\.\d))",
            r"(?P<ipv4>(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d))",
            rf"(?P<ipv6>(?<![\w:])(?:(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}|(?:{_HEX_GROUPS})?::(?:{_HEX_GROUPS})?)"
            r"(?![\w:]))",
            rf"(?P<tmp>(?<![\w.~/-])(?:{_TEMP_ROOTS})(?![\w.-])(?:/{_PATH_SEGMENT}){{0,64}})",
            r"(?P<wintmp>\b[A-Za-z]:\\(?:Users\\[^\s\\'\"]{1,64}\\AppData\\Local\\Temp|Windows\\Temp|Temp|tmp)"
            rf"(?![\w.-])(?:\\{_WIN_PATH_SEGMENT}){{0,64}})",
            # names that contain digits but are not variable: encodings, protocol versions
            r"(?P<keep>(?<![A-Za-z0-9])(?:(?:utf|ucs)-?(?:8|16|32)(?:-?[bl]e)?|iso-?8859-\d{1,2}|"
            r"windows-\d{3,4}|cp\d{3,4}|latin-?\d|HTTP/\d(?:\.\d)?)(?![A-Za-z0-9]))",
            # host "db-3.internal", hostname=db-3, host='x'
            r"(?P<hostkw>(?<![A-Za-z])(?P<hkw>host ?name|host)(?P<hsep>\s?[=:]\s?|\s)"
            r"(?:\"[^\"\s]{1,253}\"|'[^'\s]{1,253}'|(?P<hbare>[A-Za-z0-9][A-Za-z0-9.-]{0,252})))",
            # server at "x", server on 'x': quoted only, "the server running" is prose
            r"(?P<serverkw>(?<![A-Za-z])(?P<skw>server at|server on|server)(?P<ssep>\s?[=:]\s?|\s)"
            r"(?:\"[^\"\s]{1,253}\"|'[^'\s]{1,253}'))",
            rf"(?P<hostname>(?<![A-Za-z0-9_.-])[A-Za-z0-9][A-Za-z0-9-]{{0,62}}(?:\.[A-Za-z0-9-]{{1,63}}){{0,8}}"
            rf"\.(?:{_HOST_SUFFIXES})(?![A-Za-z0-9_-]|\.[A-Za-z0-9]))",
            # numbers, optionally signed, decimal and with a duration unit
            r"(?P<number>(?<![\w.])[-+]?\d{1,30}(?:\.\d{1,30})?"
            r"(?P<unit>ns|us|ms|sec|secs|s|min|mins|m|hr|hrs|h|d|"
            r" (?:nanoseconds?|microseconds?|milliseconds?|ms|seconds?|secs?|minutes?|mins?|hours?|hrs?"
            r"|days?))?"
            r"(?![\w]|\.\d))",
            r"(?P<word>[A-Za-z0-9]{1,4000})",
        ]
    ),
    re.ASCII | re.IGNORECASE,
)
# IGNORECASE is wanted for host keywords, units and hex; month and weekday names are matched
# case-insensitively too, which is harmless.

# Context that makes a number an error or status code (kept verbatim); matched against the
# text just before the number, so "$" anchors it to the number.
_CODE_BEFORE = re.compile(
    r"(?<![A-Za-z])(?:https?(?:/\d(?:\.\d)?)?(?: ?error)?|status(?:[ _]?code)?"
    r"|(?:error|err|exit|return|response|reason|sql)[ _]?(?:code|status|no)"
    r"|code|errno|error|exit|exitcode|returncode|rc|signal|sig|sqlstate|sqlcode)"
    r"(?: ?[:=#] ?| )?[\[(]?$",
    re.ASCII | re.IGNORECASE,
)
# an SQLSTATE in parentheses after a vendor code: "1146 (42S02)", "250001 (08001)"
_SQLSTATE_AFTER_CODE = re.compile(r"\d{3,6} \($", re.ASCII)
_PORT_BEFORE = re.compile(r"(?<![A-Za-z])ports? ?[:=]? ?$", re.ASCII | re.IGNORECASE)
# a code followed by its SQLSTATE: "1146 (42S02): ...", "002003 (42S02): ..."
_SQLSTATE_AFTER = re.compile(r" ?\([0-9A-Z]{5}\)", re.ASCII)
_HTTP_PHRASES = sorted({status.phrase for status in http.HTTPStatus}, key=len, reverse=True)
# "404 Client Error", "429 Too Many Requests", "404, message='Not Found'", "(404) when calling"
_HTTP_AFTER = re.compile(
    r"(?: (?:Client Error|Server Error|" + "|".join(re.escape(p) for p in _HTTP_PHRASES) + r")\b"
    r"|, message=|\) when calling)",
    re.ASCII,  # case-sensitive: "200 OK" is a status, "200 ok rows" is a count
)
_DURATION_WORD = re.compile(r"(?:\d{1,30}(?:ns|us|ms|s|m|h|d)){1,8}", re.ASCII | re.IGNORECASE)
_NUMBER_SUFFIX = re.compile(r"(\d{1,30})([A-Za-z]{1,4})", re.ASCII)
_LOWER_THEN_ID = re.compile(r"([a-z]{1,64})(\d{5,})", re.ASCII)
_CODE_PREFIX = re.compile(r"[A-Z][A-Z0-9]{1,5}", re.ASCII)
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}", re.ASCII)
# the header line of the exception at the end of a traceback: "pkg.mod.SomeError: message".
# At least one lowercase letter, so that psycopg2's "DETAIL:" / "HINT:" lines do not count.
_EXCEPTION_HEADER = re.compile(r"(?=[A-Z_]{0,255}[a-z])[A-Za-z_][A-Za-z0-9_.]{0,255}(?::|$)", re.ASCII)
# continuation lines that are stack frames or markers, not more of the message
_FRAME_PREFIXES = ("at ", "File ", "...", "Caused by", "~", "^")

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# --- public API ------------------------------------------------------------------------------


def cause_signature(exception_type: str | None, message: str) -> str:
    """Human-readable root-cause signature of a failure, without DAG or task ids.

    The exception type, then the normalised first meaningful line of ``message`` (see
    :func:`normalise_cause`), e.g. ``OperationalError: could not connect to server:
    Connection refused. Is the server running on host <host> (<ip>) and accepting TCP/IP
    connections on port <port>?``.  Failures with equal signatures are one incident, and the
    signature is that incident's title.

    The type is kept as given (only a ``builtins.`` prefix is dropped): it is *not* shortened to
    its class name, because equal short names in different modules are usually different
    causes (``requests.exceptions.ConnectionError`` vs the builtin ``ConnectionError``,
    ``psycopg2.OperationalError`` vs ``sqlalchemy.exc.OperationalError``), and a re-export
    cannot be recognised from a name alone.  A message that repeats the type as its prefix
    (``"OperationalError: ..."``, as in a traceback's last line) does not repeat it in the
    signature.

    :param exception_type: the exception's (qualified) class name, or ``None`` when unknown
    :param message: the exception message or the whole traceback text; untrusted, any size
    :return: at most :data:`SIGNATURE_LIMIT` characters; empty only when both are empty
    """
    # failures of one cause often repeat their message (retries, mapped instances): normalising
    # is a pure function of its inputs, so a short message is normalised once
    return _signature_cached(exception_type, message)


def _signature(exception_type: str | None, message: str) -> str:
    kind = _normalise_type(exception_type)
    text = _meaningful_text(message)
    if kind:
        text = _strip_type_prefix(text, kind)
    cause = _normalise_bounded(text)
    signature = f"{kind}: {cause}" if kind and cause else kind or cause
    return _truncate(signature)


_signature_cached = memo_by_digest(_signature)


def normalise_cause(message: str) -> str:
    """Normalise the first meaningful line of ``message`` into the message part of a signature.

    The line is the first non-empty one with its indented continuation lines (libpq and others
    wrap one message over several lines), plus the next line when it ends with ``":"``
    (``SQL compilation error:`` / ``Object 'X' does not exist``).  For a Python traceback it is
    the exception line at its end instead.  Variable parts become placeholders (``<n>``,
    ``<host>``, ``<ip>``, ``<port>``, ``<uuid>``, ``<hex>``, ``<id>``, ``<date>``,
    ``<timestamp>``, ``<time>``, ``<duration>``, ``<email>``, ``<tmpfile>``, ``<query>``);
    words, quoted names, HTTP status codes and error codes are kept.

    Idempotent: normalising a result again returns it unchanged.

    :param message: the exception message or traceback text; untrusted, any size
    :return: one line of at most :data:`SIGNATURE_LIMIT` characters
    """
    return _normalise_bounded(_meaningful_text(message))


# --- choosing the text -----------------------------------------------------------------------


def _normalise_type(exception_type: str | None) -> str:
    kind = " ".join((exception_type or "")[:_TYPE_LIMIT].split())
    # repr(type) leaks in from some callers: "<class 'ValueError'>"
    if kind.startswith("<class '") and kind.endswith("'>"):
        kind = kind[len("<class '") : -len("'>")]
    return kind.removeprefix("builtins.")


def _meaningful_text(message: str) -> str:
    """The line(s) of ``message`` that say what went wrong, at most ``_LINE_LIMIT`` characters."""
    head = message[:_SCAN_LIMIT]
    if head.lstrip().startswith(_TRACEBACK_HEADER):
        tail = message[-_SCAN_LIMIT:]
        lines = tail.splitlines()
        if len(message) > _SCAN_LIMIT and lines:
            lines = lines[1:]  # the first line of the tail may be cut
        start = _last_exception_header(lines)
        if start is None:
            start = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), None)
    else:
        lines = head.splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        return ""
    return _paragraph(lines, start)


def _last_exception_header(lines: list[str]) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line and not line[0].isspace() and _EXCEPTION_HEADER.match(line[: _TYPE_LIMIT + 64]):
            return i
    return None


def _paragraph(lines: list[str], start: int) -> str:
    """``lines[start]`` joined with the lines that continue it."""
    text = lines[start].strip()[:_LINE_LIMIT]
    i = start + 1
    while i < len(lines) and len(text) < _LINE_LIMIT:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            break
        if line[0].isspace():
            if stripped.startswith(_FRAME_PREFIXES):
                break
        elif not text.endswith(":") or stripped.startswith(_TRACEBACK_HEADER):
            break
        text = _join(text, stripped[:_LINE_LIMIT])
        if not line[0].isspace():
            break  # the line after "...error:" only; what follows it is detail
        i += 1
    return text[:_LINE_LIMIT]


def _join(text: str, more: str) -> str:
    # libpq: "Connection refused" / "Is the server running..." reads as two sentences, while
    # "...and accepting" / "TCP/IP connections..." is one sentence wrapped
    new_sentence = more[:1].isupper() and more[1:2].islower()
    if new_sentence and text[-1:] not in ".:;,!?":
        return f"{text}. {more}"
    return f"{text} {more}"


def _strip_type_prefix(text: str, kind: str) -> str:
    """Drop ``"pkg.SomeError: "`` from ``text`` when it names the same class as ``kind``."""
    head, _, rest = text.partition(":")
    named = head.strip()
    short = kind.rsplit(".", 1)[-1]
    if named and " " not in named and (named in (kind, short) or named.endswith("." + short)):
        return rest.strip()
    return text


# --- normalising -----------------------------------------------------------------------------


def _normalise_bounded(text: str) -> str:
    result = _normalise_once(text[:_LINE_LIMIT])
    # Truncation can cut a code from the context that kept it ("404 Client Error" -> "404
    # Client"), so one more pass could change the result; iterate to the fixed point (in
    # practice one extra pass, on at most SIGNATURE_LIMIT characters) to stay idempotent.
    for _ in range(4):
        again = _normalise_once(result)
        if again == result:
            break
        result = again
    return result


def _normalise_once(text: str) -> str:
    collapsed = " ".join(text.split())
    return _truncate(_TOKEN.sub(_replace, collapsed))


def _truncate(text: str) -> str:
    if len(text) <= SIGNATURE_LIMIT:
        return text
    cut = text[:SIGNATURE_LIMIT]
    if not text[SIGNATURE_LIMIT].isspace():
        # do not leave half a token behind ("<time" or "exit code 13")
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip()


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group()
    if kind == "word":
        return _classify_word(match.string, match.start(), match.end(), text)
    if kind == "number":
        return _classify_number(match.string, match.start(), match.end(), text, bool(match.group("unit")))
    if kind == "url":
        return _normalise_url(text)
    if kind == "hostkw":
        return _normalise_host_keyword(match)
    if kind == "serverkw":
        return f"{match.group('skw')}{match.group('ssep')}<host>"
    if kind == "hostname":
        return "<host>" if _has_digit(text) else text
    if kind == "ipv6":
        # "a :: b" or C++/Rust "::" are not addresses
        return "<ip>" if _has_digit(text) else text
    if kind == "date":
        return "<timestamp>" if match.group("date_time") else "<date>"
    if kind == "compact_date":
        return "<timestamp>" if match.group("compact_time") else "<date>"
    if kind == "text_date":
        return "<timestamp>" if match.group("text_time") else "<date>"
    if kind == "keep":
        return text
    return _PLACEHOLDERS[kind or ""]


_PLACEHOLDERS = {
    "email": "<email>",
    "uuid": "<uuid>",
    "month": "<date>",
    "clock": "<time>",
    "ipv4": "<ip>",
    "tmp": "<tmpfile>",
    "wintmp": "<tmpfile>",
}


def _has_digit(text: str) -> bool:
    return any(c in _DIGITS for c in text)


def _classify_number(string: str, start: int, end: int, text: str, has_unit: bool) -> str:
    """A standalone number: kept when it is a code, else a placeholder."""
    if _is_code(string, start, end, text):
        return text
    if has_unit:
        return "<duration>"
    if text.isdigit() and len(text) <= 5 and _is_port(string, start):
        return "<port>"
    return "<n>"


def _is_code(string: str, start: int, end: int, text: str) -> bool:
    before = string[max(0, start - 32) : start]
    # the searches are anchored at the end of ``before``, where a keyword ends at most nine
    # characters ("HTTP/1.1 : [") before the number; checking that first skips most searches cheaply
    last = before[-1:]
    if (
        (last.isalpha() or last in " :=#[(")
        and any(c.isalpha() for c in before[-10:])
        and _CODE_BEFORE.search(before)
    ):
        return True
    if start >= 1 and string[start - 1] == "-":
        # ORA-00942, TNS-12541, DPI-1047: an upper-case code prefix
        word_start = start - 1
        while word_start > 0 and start - word_start <= 8 and string[word_start - 1].isalnum():
            word_start -= 1
        whole_word = word_start == 0 or not string[word_start - 1].isalnum()
        if whole_word and _CODE_PREFIX.fullmatch(string[word_start : start - 1]):
            return True
    if start >= 1 and (string[start - 1] == "_" or string[end : end + 1] == "_"):
        # part of an identifier (address_line_2, orders_v_12): a short number names a thing,
        # a long or zero-padded one (tmp_0042, run_1732700000) is an instance
        return len(text) <= 3 and not (len(text) > 1 and text.startswith("0"))
    if last == "(" and _SQLSTATE_AFTER_CODE.search(before):
        return True
    digits = text.lstrip("+-")
    if not digits.isdigit():
        return False
    after = string[end : end + 40]
    if len(digits) <= 6 and _SQLSTATE_AFTER.match(after):
        return True
    http_status = len(digits) == 3 and "100" <= digits <= "599"
    if http_status and _HTTP_AFTER.match(after):
        return True
    # a code that starts the message: "(1146, 'Table ...')", "2003: ...", "403 Access Denied: ..."
    if start == 0 or (start == 1 and string[0] == "("):
        if after[:1] in (",", ":"):
            return True
        if http_status and after[:1] == " " and after[1:2].isupper():
            return True
    return False


def _is_port(string: str, start: int) -> bool:
    before = string[max(0, start - 16) : start]
    if (
        before[-1:] in (" ", ":", "=", "t", "s", "T", "S")
        and "port" in before.lower()
        and _PORT_BEFORE.search(before)
    ):
        return True
    if start < 2 or string[start - 1] != ":":
        return False
    if string[start - 2] in ">]":
        return True  # <ip>:5432, [fe80::1]:5432
    token_start = start - 1
    while token_start > 0 and start - token_start <= 256 and string[token_start - 1] in _HOST_CHARS:
        token_start -= 1
    host = string[token_start : start - 1]
    if host.lower() == "localhost" or _IPV4.fullmatch(host):
        return True
    has_letter = any(c in _LETTERS for c in host)
    return ("." in host and has_letter) or (has_letter and "-" in host and _has_digit(host))


def _classify_word(string: str, start: int, end: int, word: str) -> str:
    """A run of ASCII letters and digits."""
    if word.isalpha():
        return word
    if word.isdigit():
        return _classify_number(string, start, end, word, has_unit=False)
    lowered = word.lower()
    if lowered.startswith("0x") and len(word) > 2 and all(c in "0123456789abcdef" for c in lowered[2:]):
        return "<hex>"
    digits = sum(c in _DIGITS for c in word)
    letters = len(word) - digits
    if len(word) >= 8 and all(c in "0123456789abcdef" for c in lowered):
        return "<hex>"
    in_identifier = string[start - 1 : start] == "_" or string[end : end + 1] == "_"
    if not in_identifier:  # conv_2d, layer_3x are names
        if _DURATION_WORD.fullmatch(word):
            return "<duration>"
        suffixed = _NUMBER_SUFFIX.fullmatch(word)
        if suffixed:
            return "<n>" + suffixed.group(2)  # 2Gi, 512MB, 100k
    lower_id = _LOWER_THEN_ID.fullmatch(word)
    if lower_id:
        return lower_id.group(1) + "<n>"  # job88121; but E11000 (upper case) is a code
    transitions = sum((a in _DIGITS) != (b in _DIGITS) for a, b in itertools.pairwise(word))
    if len(word) >= 10 and digits >= 2 and letters >= 2 and transitions >= 4:
        return "<id>"  # base64 / random request ids
    # random suffixes of generated names: load-orders-x2k4z, etl-7d9f8b6c5-k2j3h
    if (
        5 <= len(word) <= 16
        and start >= 2
        and string[start - 1] == "-"
        and string[start - 2].isalnum()
        and word.islower()
        and transitions >= 2
    ):
        return "<id>"
    return word


def _normalise_url(url: str) -> str:
    # keep sentence punctuation out of the URL: "see https://x/y)." -> "https://x/y" + ")."
    body = url.rstrip(".,;:!?)]}'\"")
    trailer = url[len(body) :]
    scheme, _, rest = body.partition("://")
    authority_end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, remainder = rest[:authority_end], rest[authority_end:]
    # credentials are dropped: they vary, and they must not appear in an incident title
    host_port = authority.rpartition("@")[2]
    path, query_sep, query = remainder.partition("?")
    path = path.partition("#")[0]
    out = [scheme, "://", _normalise_authority(host_port), _TOKEN.sub(_replace, path)]
    if query_sep:
        out.append("?<query>" if query.partition("#")[0] else "?")
    return "".join(out) + trailer


def _normalise_authority(host_port: str) -> str:
    if host_port.startswith("["):
        address, bracket, after = host_port[1:].partition("]")
        if not bracket:
            return "<host>" if _has_digit(host_port) else host_port
        host = "[<ip>]" if _has_digit(address) else f"[{address}]"
        if after.startswith(":") and after[1:].isdigit():
            return f"{host}:<port>"
        return host + after
    address, colon, port = host_port.rpartition(":")
    if not colon or not (port.isdigit() or not port):
        return _normalise_host(host_port)
    return f"{_normalise_host(address)}:{'<port>' if port else ''}"


def _normalise_host(host: str) -> str:
    if _IPV4.fullmatch(host):
        return "<ip>"
    # a name without digits (api.example.com) names a dependency; one with digits an instance
    return "<host>" if _has_digit(host) else host


def _normalise_host_keyword(match: re.Match[str]) -> str:
    keyword, separator, bare = match.group("hkw", "hsep", "hbare")
    if bare is None:  # quoted: whatever is quoted after "host" is a host
        return f"{keyword}{separator}<host>"
    if _IPV4.fullmatch(bare):
        return f"{keyword}{separator}<ip>"
    if "." in bare or _has_digit(bare):
        return f"{keyword}{separator}<host>"
    return match.group()  # "host: Connection refused": prose, and has no digits to erase
