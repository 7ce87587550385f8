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

from airflow_alerting.incidents.model import Incident, IncidentState
from airflow_alerting.model import Notification, NotificationAction, Severity
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

# Incident messages (Notification.incident set).  The ids are part of the contract with the
# Slack interactivity handler that will answer the buttons: never rename them.
INCIDENT_HEADER_BLOCK_ID = "incident_header"
INCIDENT_EVENT_BLOCK_ID = "incident_event"
INCIDENT_SUMMARY_BLOCK_ID = "incident_summary"
INCIDENT_DAGS_BLOCK_ID = "incident_dags"
INCIDENT_TASKS_BLOCK_ID = "incident_tasks"
INCIDENT_WHY_BLOCK_ID = "incident_why"
INCIDENT_ERROR_BLOCK_ID = "incident_error"
INCIDENT_CONTEXT_BLOCK_ID = "incident_context"
INCIDENT_ACTIONS_BLOCK_ID = "incident_actions"
INCIDENT_REPLY_BLOCK_ID = "incident_reply"
#: "Acknowledge" button; its ``value`` is the incident id
ACK_ACTION_ID = "alerting_ack"
#: "Resolve" button; its ``value`` is the incident id
RESOLVE_ACTION_ID = "alerting_resolve"
#: Slack's limit on a button's ``value``
MAX_BUTTON_VALUE = 2000

# Unicode rather than :shortcodes: so the header can keep "emoji": false, which leaves any
# :shortcode: in untrusted text (the incident title) as the literal text it was.
_SEVERITY_EMOJI = {
    Severity.LOW: "\N{LARGE BLUE CIRCLE}",
    Severity.MEDIUM: "\N{LARGE YELLOW CIRCLE}",
    Severity.HIGH: "\N{LARGE ORANGE CIRCLE}",
    Severity.CRITICAL: "\N{LARGE RED CIRCLE}",
}
_RESOLVED_EMOJI = "\N{WHITE HEAVY CHECK MARK}"
#: actions whose message tells what just happened (an event line) besides the current state
_EVENT_ACTIONS = frozenset(NotificationAction) - {NotificationAction.ANNOUNCE, NotificationAction.UPDATE}

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


def _error_block(n: Notification, block_id: str = ERROR_BLOCK_ID, label: str = "") -> dict[str, Any] | None:
    error = t.error_text(n)
    if error is None:
        return None
    # A fence inside the message would end the code block early and let the rest be formatted.
    error = error.replace(_CODE_FENCE, "`\u200b`\u200b`")
    text = fit(error, MAX_TEXT, prefix=label + _CODE_FENCE, suffix=_CODE_FENCE)
    return {"type": "section", "block_id": block_id, "text": _mrkdwn(text)}


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


def _link_button(n: Notification) -> dict[str, Any] | None:
    url = t.link(n)
    if url is None or len(url) > MAX_URL:
        return None
    return {
        "type": "button",
        "action_id": VIEW_LOG_ACTION_ID,
        "text": _plain(t.link_label(n), MAX_BUTTON_TEXT),
        "url": url,
    }


def _actions_block(n: Notification) -> dict[str, Any] | None:
    button = _link_button(n)
    if button is None:
        return None
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": [button]}


def render_slack(n: Notification) -> SlackMessage:
    """Render a notification as a Slack message that stands on its own as a new post.

    Without an incident: header, details, error, context, "View log".  With one: the incident
    message (:func:`render_slack_incident`); for actions other than ``ANNOUNCE`` and ``UPDATE``
    it leads with what just happened (:func:`~airflow_alerting.render.text.incident_reply_text`),
    which is what a channel that cannot edit or thread (an incoming webhook) posts.

    :param n: the notification
    :return: the message; ``text`` is the escaped headline, used by Slack for notifications
    """
    if n.incident is not None:
        event = t.incident_reply_text(n) if n.action in _EVENT_ACTIONS else None
        return _incident_message(n, n.incident, event)
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


def render_slack_incident(n: Notification) -> SlackMessage:
    """The incident's announced message as it should read now.

    What ``ANNOUNCE`` posts and what every later action edits it to (``chat.update``): severity
    and state in the header, the counts, first/last seen, affected DAGs and a sample of tasks,
    why the severity, the latest error, "Acknowledge"/"Resolve" buttons while the incident is
    open, and the Airflow link.

    :param n: the notification; without an incident this is :func:`render_slack`
    :return: the message
    """
    if n.incident is None:
        return render_slack(n)
    return _incident_message(n, n.incident, None)


def render_slack_reply(n: Notification) -> SlackMessage:
    """The short reply ``ESCALATE``, ``RENOTIFY`` and ``RESOLVE`` post in the announced message's thread.

    :param n: the notification
    :return: one section with :func:`~airflow_alerting.render.text.incident_reply_text`, plus
        the incident id as context
    """
    reply = t.incident_reply_text(n)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "block_id": INCIDENT_REPLY_BLOCK_ID, "text": _mrkdwn(fit(reply, MAX_TEXT))}
    ]
    if n.incident is not None:
        context = _mrkdwn(fit(n.incident.id, MAX_TEXT, prefix="Incident "))
        blocks.append({"type": "context", "block_id": INCIDENT_CONTEXT_BLOCK_ID, "elements": [context]})
    return SlackMessage(text=fit(reply, MAX_TEXT), blocks=tuple(blocks))


def _section(block_id: str, label: str, raw: str | None) -> dict[str, Any] | None:
    # label is trusted markup; raw is sanitized but untrusted and gets escaped by fit
    if not raw:
        return None
    return {
        "type": "section",
        "block_id": block_id,
        "text": _mrkdwn(fit(raw, MAX_TEXT, prefix=f"*{label}*\n")),
    }


def _incident_header(incident: Incident) -> dict[str, Any]:
    resolved = incident.state is IncidentState.RESOLVED
    emoji = _RESOLVED_EMOJI if resolved else _SEVERITY_EMOJI.get(incident.severity, "")
    text = f"{emoji} {t.incident_label(incident)} \N{EM DASH} {t.incident_title(incident)}"
    return {"type": "header", "block_id": INCIDENT_HEADER_BLOCK_ID, "text": _plain(text, MAX_HEADER)}


def _incident_summary(incident: Incident) -> dict[str, Any]:
    pairs = [
        ("Severity", incident.severity.label),
        ("State", t.incident_state_text(incident)),
        ("First seen", t.incident_time(incident.opened_at)),
        ("Last seen", t.incident_time(incident.last_seen_at)),
    ]
    return {
        "type": "section",
        "block_id": INCIDENT_SUMMARY_BLOCK_ID,
        "text": _mrkdwn(fit(t.incident_counts(incident), MAX_TEXT, prefix="*", suffix="*")),
        "fields": [_mrkdwn(fit(value, MAX_FIELD, prefix=f"*{label}*\n")) for label, value in pairs],
    }


def _incident_buttons(incident: Incident) -> list[dict[str, Any]]:
    # The value is how the interactivity handler finds the incident: an id that does not fit is
    # better left without buttons than given a truncated, wrong one.
    if not incident.is_open or not incident.id or len(incident.id) > MAX_BUTTON_VALUE:
        return []
    buttons = []
    if incident.state is IncidentState.OPEN:
        buttons.append(
            {
                "type": "button",
                "action_id": ACK_ACTION_ID,
                "text": _plain("Acknowledge", MAX_BUTTON_TEXT),
                "value": incident.id,
                "style": "primary",
            }
        )
    buttons.append(
        {
            "type": "button",
            "action_id": RESOLVE_ACTION_ID,
            "text": _plain("Resolve", MAX_BUTTON_TEXT),
            "value": incident.id,
        }
    )
    return buttons


def _incident_message(n: Notification, incident: Incident, event: str | None) -> SlackMessage:
    lines = t.incident_task_lines(incident)
    named = min(len(incident.members), t.INCIDENT_TASKS_SHOWN)  # the rest is the "and N more" line
    tasks = "\n".join([*(f"\N{BULLET} {line}" for line in lines[:named]), *lines[named:]])
    context = [f"Incident {incident.id}", f"Fingerprint: {n.fingerprint}"]
    if incident.silenced > 0:
        context.append(f"{incident.silenced} silenced")
    elements = [*_incident_buttons(incident), _link_button(n)]
    buttons = [button for button in elements if button is not None]
    candidates = [
        _incident_header(incident),
        None
        if not event
        else {"type": "section", "block_id": INCIDENT_EVENT_BLOCK_ID, "text": _mrkdwn(fit(event, MAX_TEXT))},
        _incident_summary(incident),
        _section(INCIDENT_DAGS_BLOCK_ID, "Affected DAGs", t.incident_dags_text(incident)),
        _section(INCIDENT_TASKS_BLOCK_ID, "Tasks (most recent first)", tasks),
        _section(INCIDENT_WHY_BLOCK_ID, f"Why {incident.severity.label}", t.incident_reasons_text(incident)),
        _error_block(n, INCIDENT_ERROR_BLOCK_ID, "*Latest error*\n"),
        {
            "type": "context",
            "block_id": INCIDENT_CONTEXT_BLOCK_ID,
            "elements": [_mrkdwn(fit(part, MAX_TEXT)) for part in context][:MAX_CONTEXT_ELEMENTS],
        },
        None
        if not buttons
        else {"type": "actions", "block_id": INCIDENT_ACTIONS_BLOCK_ID, "elements": buttons},
    ]
    blocks = tuple(block for block in candidates if block is not None)[:MAX_BLOCKS]
    lead = event or t.incident_counts(incident)
    return SlackMessage(
        text=fit(f"{t.incident_headline(incident)} \N{EM DASH} {lead}", MAX_TEXT), blocks=blocks
    )
