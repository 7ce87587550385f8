"""The routing policy: classification rules, routing matrix, windows, escalation, channels.

A policy can be built in Python, loaded from YAML or JSON (a file, or an Airflow Variable
so operators can change it without redeploying DAGs).  Loading validates everything and
raises :class:`PolicyError` naming the offending field (``policy.throttle.windows.high``),
so a bad policy given to a notifier fails at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from airflow_alerting.classify import SeverityClassifier
from airflow_alerting.fingerprint import GROUP_BY_FIELDS
from airflow_alerting.incidents.correlate import validate_correlate_by
from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.model import Severity
from airflow_alerting.routing import SeverityRouter

#: Default throttle windows (docs/routing.md): critical always goes out.
DEFAULT_WINDOWS: Mapping[Severity, timedelta] = MappingProxyType(
    {
        Severity.CRITICAL: timedelta(0),
        Severity.HIGH: timedelta(minutes=5),
        Severity.MEDIUM: timedelta(minutes=15),
        Severity.LOW: timedelta(hours=1),
    }
)

CHANNEL_TYPES = ("slack", "email", "pagerduty")
#: channels that exist without being declared; their options come from the ``[alerting]`` config
BUILTIN_CHANNELS = CHANNEL_TYPES

#: options each channel type accepts in a policy's ``channels`` section
_CHANNEL_OPTIONS: Mapping[str, frozenset[str]] = {
    "slack": frozenset({"type", "channel", "conn_id", "webhook_conn_id"}),
    "email": frozenset({"type", "to", "from_email", "conn_id"}),
    "pagerduty": frozenset({"type", "conn_id"}),
}


class PolicyError(ValueError):
    """A policy that does not validate; the message names the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class EscalationPolicy:
    """Raise a fingerprint one severity level when it recurs ``after`` times ``within`` a period.

    :param after: occurrences that trigger escalation (0 disables)
    :param within: the period they must fall in
    """

    after: int = 3
    within: timedelta = timedelta(hours=1)
    #: escalation never raises above this severity
    ceiling: Severity = Severity.CRITICAL

    @property
    def enabled(self) -> bool:
        return self.after > 0


@dataclass(frozen=True)
class ChannelSpec:
    """A named channel instance: its type and options (e.g. another Slack channel for a team)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class AlertPolicy:
    """Everything that decides what happens to an alert.

    :param classifier: severity classification
    :param router: severity (and team routes) -> channel names
    :param windows: throttle window per severity; zero sends every occurrence
    :param escalation: recurrence escalation
    :param group_by: the alert fields fingerprints are built from
    :param channels: declared channel instances beyond the built-in ``slack``, ``email``, ``pagerduty``
    :param resolve_on_success: send "resolved" notifications when a failed task later succeeds
    :param lease: how long a claimed send blocks others before it is considered crashed
    :param fallback_channel: channel that receives a critical alert when one of its channels fails
        (e.g. ``email`` when Slack is down); ``None`` disables
    :param summary_after: after a burst of held-back occurrences, send a follow-up summary of them
        once this long has passed since the first (the burst has settled); zero disables
    :param incidents: correlation, update, repeat and blast-radius rules
    :param silence_critical_bypass: critical failures are told even when a silence matches them
    :param digest_channels: where the maintenance DAG sends the digest of low-severity and silenced
        incidents; empty disables the digest
    """

    classifier: SeverityClassifier = field(default_factory=SeverityClassifier)
    router: SeverityRouter = field(default_factory=SeverityRouter)
    windows: Mapping[Severity, timedelta] = field(default_factory=lambda: DEFAULT_WINDOWS)
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    group_by: tuple[str, ...] = GROUP_BY_FIELDS
    channels: Mapping[str, ChannelSpec] = field(default_factory=lambda: MappingProxyType({}))
    resolve_on_success: bool = True
    lease: timedelta = timedelta(minutes=2)
    fallback_channel: str | None = None
    summary_after: timedelta = timedelta(minutes=2)
    incidents: IncidentRules = field(default_factory=IncidentRules)
    silence_critical_bypass: bool = False
    digest_channels: tuple[str, ...] = ("slack",)

    def __post_init__(self) -> None:
        for severity in Severity:
            window = self.windows.get(severity)
            if window is None:
                raise PolicyError(f"policy.throttle.windows.{severity.label}", "missing")
            if window < timedelta(0):
                raise PolicyError(f"policy.throttle.windows.{severity.label}", "must not be negative")
        declared = set(self.channels) | set(BUILTIN_CHANNELS)
        if self.fallback_channel is not None and self.fallback_channel not in declared:
            raise PolicyError("policy.fallback_channel", f"undeclared channel {self.fallback_channel!r}")
        unknown = self.router.channel_names() - declared
        if unknown:
            raise PolicyError(
                "policy.routing", f"routes to undeclared channel(s): {', '.join(sorted(unknown))}"
            )
        bad_fields = sorted(set(self.group_by) - set(GROUP_BY_FIELDS))
        if bad_fields or not self.group_by:
            got = f"; unknown: {', '.join(bad_fields)}" if bad_fields else ""
            raise PolicyError(
                "policy.throttle.group_by", f"must be a non-empty subset of {', '.join(GROUP_BY_FIELDS)}{got}"
            )
        if self.escalation.after < 0:
            raise PolicyError("policy.escalation.after", "must not be negative")
        if self.lease <= timedelta(0):
            raise PolicyError("policy.lease", "must be positive")
        problem = validate_correlate_by(self.incidents.correlate_by)
        if problem:
            raise PolicyError("policy.incidents.correlate_by", problem)
        for name in ("window", "update_interval", "repeat_interval", "retention"):
            if getattr(self.incidents, name) <= timedelta(0):
                raise PolicyError(f"policy.incidents.{name}", "must be positive")
        undeclared = sorted(set(self.digest_channels) - declared)
        if undeclared:
            raise PolicyError("policy.digest.channels", f"undeclared channel(s): {', '.join(undeclared)}")

    def window_for(self, severity: Severity) -> timedelta:
        return self.windows[severity]

    def channel_spec(self, name: str) -> ChannelSpec:
        return self.channels.get(name) or ChannelSpec(name=name, type=name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "policy") -> AlertPolicy:
        """Build a policy from plain data (parsed YAML/JSON); raise :class:`PolicyError` naming the field."""
        from airflow_alerting.policy_parser import _PolicyParser

        return _PolicyParser().parse(data, path)

    @classmethod
    def from_yaml(cls, source: str | Path) -> AlertPolicy:
        """Load a policy from a YAML (or JSON) file path, or from YAML text containing a newline."""
        import yaml

        from airflow_alerting.policy_parser import _policy_yaml_loader

        text = str(source)
        label = "policy"
        if isinstance(source, Path) or "\n" not in text:
            path = Path(source)
            label = f"policy({path.name})"
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as err:
                raise PolicyError(label, f"cannot read policy file: {err.strerror}") from err
        try:
            data = yaml.load(text, Loader=_policy_yaml_loader())  # a SafeLoader subclass: plain data only
        except yaml.YAMLError as err:
            raise PolicyError(label, f"invalid YAML: {err}") from err
        return cls.from_dict(data if data is not None else {}, path=label)
