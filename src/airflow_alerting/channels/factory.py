"""Builds channel instances from a policy's channel spec and the ``[alerting]`` configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_alerting.channels.base import Channel
    from airflow_alerting.config import AlertingSettings
    from airflow_alerting.policy import ChannelSpec


def build_channel(spec: ChannelSpec, settings: AlertingSettings) -> Channel:
    """Return the channel ``spec`` describes; options it leaves out come from ``settings``.

    :param spec: the channel's name, type and policy options
    :param settings: the ``[alerting]`` configuration
    """
    options: dict[str, Any] = dict(spec.options)
    if spec.type == "slack":
        from airflow_alerting.channels.slack import SlackChannel

        return SlackChannel(
            spec.name,
            slack_conn_id=options.get("conn_id", settings.slack_conn_id),
            webhook_conn_id=options.get("webhook_conn_id", settings.slack_webhook_conn_id),
            channel=options.get("channel", settings.slack_channel),
            timeout=settings.delivery_timeout_seconds,
            allowed_http_hosts=settings.allowed_http_hosts,
        )
    if spec.type == "email":
        from airflow_alerting.channels.email import EmailChannel

        return EmailChannel(
            spec.name,
            smtp_conn_id=options.get("conn_id", settings.smtp_conn_id),
            to=tuple(options.get("to", settings.email_to)),
            from_email=options.get("from_email", settings.email_from or None),
            timeout=settings.delivery_timeout_seconds,
        )
    if spec.type == "pagerduty":
        from airflow_alerting.channels.pagerduty import PagerDutyChannel

        return PagerDutyChannel(
            spec.name,
            pagerduty_conn_id=options.get("conn_id", settings.pagerduty_conn_id),
            timeout=settings.delivery_timeout_seconds,
            allowed_http_hosts=settings.allowed_http_hosts,
        )
    raise ValueError(f"channel {spec.name!r}: unknown type {spec.type!r}")
