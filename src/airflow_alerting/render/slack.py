"""Slack Block Kit rendering.

Every untrusted string is escaped (``&``, ``<``, ``>``) before it reaches Slack: that is
what turns ``<!channel>`` or ``<@U123>`` in an exception message into harmless text.  The
message never asks Slack to ``parse`` or ``link_names``.

Blocks carry stable ``block_id`` / ``action_id`` values so later features (acknowledge /
silence buttons, threaded follow-ups, ``chat.update`` on resolve) can find and extend them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_alerting.model import Notification
from airflow_alerting.render import text as t

#: Slack's documented limits (https://api.slack.com/reference/block-kit)
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_URL = 3000

HEADER_BLOCK_ID = "alert_header"
DETAILS_BLOCK_ID = "alert_details"
ERROR_BLOCK_ID = "alert_error"
CONTEXT_BLOCK_ID = "alert_context"
ACTIONS_BLOCK_ID = "alert_actions"
VIEW_LOG_ACTION_ID = "airflow_alerting_view_log"

_CODE_FENCE = "```"
_MAX_ESCAPE_GROWTH = len("&amp;")


@dataclass(frozen=True)
class SlackMessage:
    """A rendered Slack message.

    :param text: top-level text: the notification/fallback text (escaped headline)
    :param blocks: Block Kit blocks, within Slack's size limits
    """

    text: str
    blocks: tuple[dict[str, Any], ...]


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control sequences in message text.

    :param text: untrusted text
    :return: text in which ``<!channel>``, ``<@U123>`` and links are inert
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(raw: str, limit: int, *, prefix: str = "", suffix: str = "") -> str:
    """Escape ``raw`` and cut it so that ``prefix + escaped + suffix`` is at most ``limit`` characters.

    Cutting happens before escaping so an entity such as ``&amp;`` is never split.

    :param raw: untrusted text
    :param limit: maximum length of the result
    :param prefix: trusted markup placed before the text (not escaped)
    :param suffix: trusted markup placed after the text (not escaped)
    :return: the escaped, truncated text wrapped in ``prefix`` and ``suffix``
    """
    budget = max(0, limit - len(prefix) - len(suffix))
    cut = budget
    while True:
        candidate = escape(t.truncate(raw, cut))
        excess = len(candidate) - budget
        if excess <= 0:
            return prefix + candidate + suffix
        # Each raw character escapes to at most five ("&amp;"), so dropping excess / 5 of them
        # is the least that can help; it converges in a few rounds without over-cutting.
        cut -= max(1, -(-excess // _MAX_ESCAPE_GROWTH))


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": fit(text, limit) or " ", "emoji": False}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _details_block(n: Notification) -> dict[str, Any]:
    pairs = [("Severity", n.severity.label), *t.details(n)][:MAX_FIELDS]
    fields = [_mrkdwn(fit(value, MAX_FIELD, prefix=f"*{label}*\n")) for label, value in pairs]
    return {"type": "section", "block_id": DETAILS_BLOCK_ID, "fields": fields}


def _error_block(n: Notification) -> dict[str, Any] | None:
    error = t.error_text(n)
    if error is None:
        return None
    # A fence inside the message would end the code block early and let the rest be formatted.
    error = error.replace(_CODE_FENCE, "`\u200b`\u200b`")
    text = fit(error, MAX_TEXT, prefix=_CODE_FENCE, suffix=_CODE_FENCE)
    return {"type": "section", "block_id": ERROR_BLOCK_ID, "text": _mrkdwn(text)}


def _context_block(n: Notification) -> dict[str, Any]:
    parts = [
        t.recovery_text(n),
        None if n.resolved else f"Severity: {t.severity_text(n)}",
        t.escalation_text(n),
        t.suppressed_text(n),
        f"Fingerprint: {n.fingerprint}",
    ]
    elements = [_mrkdwn(fit(part, MAX_TEXT)) for part in parts if part][:MAX_CONTEXT_ELEMENTS]
    return {"type": "context", "block_id": CONTEXT_BLOCK_ID, "elements": elements}


def _actions_block(n: Notification) -> dict[str, Any] | None:
    url = t.link(n)
    if url is None or len(url) > MAX_URL:
        return None
    button = {
        "type": "button",
        "action_id": VIEW_LOG_ACTION_ID,
        "text": _plain(t.link_label(n), MAX_BUTTON_TEXT),
        "url": url,
    }
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": [button]}


def render_slack(n: Notification) -> SlackMessage:
    """Render a notification as a Slack message (header, details, error, context, "View log").

    :param n: the notification
    :return: the message; ``text`` is the escaped headline, used by Slack for notifications
    """
    headline = t.headline(n)
    header = {"type": "header", "block_id": HEADER_BLOCK_ID, "text": _plain(headline, MAX_HEADER)}
    candidates = [
        header,
        _details_block(n),
        None if n.resolved else _error_block(n),
        _context_block(n),
        _actions_block(n),
    ]
    blocks = tuple(block for block in candidates if block is not None)[:MAX_BLOCKS]
    return SlackMessage(text=fit(headline, MAX_TEXT), blocks=blocks)
