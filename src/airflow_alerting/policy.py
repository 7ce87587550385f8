"""The routing policy: classification rules, routing matrix, windows, escalation, channels.

A policy can be built in Python, loaded from YAML or JSON (a file, or an Airflow Variable
so operators can change it without redeploying DAGs).  Loading validates everything and
raises :class:`PolicyError` naming the offending field (``policy.throttle.windows.high``),
so a bad policy given to a notifier fails at DAG parse time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from airflow_alerting.classify import BusinessHours, Rule, SeverityClassifier
from airflow_alerting.fingerprint import GROUP_BY_FIELDS
from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import AlertKind, Severity
from airflow_alerting.routing import DEFAULT_MATRIX, Route, SeverityRouter

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

    def window_for(self, severity: Severity) -> timedelta:
        return self.windows[severity]

    def channel_spec(self, name: str) -> ChannelSpec:
        return self.channels.get(name) or ChannelSpec(name=name, type=name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "policy") -> AlertPolicy:
        """Build a policy from plain data (parsed YAML/JSON); raise :class:`PolicyError` naming the field."""
        return _PolicyParser().parse(data, path)

    @classmethod
    def from_yaml(cls, source: str | Path) -> AlertPolicy:
        """Load a policy from a YAML (or JSON) file path, or from YAML text containing a newline."""
        import yaml

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


_DURATION = re.compile(r"^\s*(-)?\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_MAX_DURATION_SECONDS = 10 * 365 * 86400
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _policy_yaml_loader() -> Any:
    """A SafeLoader without YAML 1.1's base-60 integers, so ``end: 18:00`` stays a time, not 1080."""
    import yaml

    class PolicyLoader(yaml.SafeLoader):
        """SafeLoader with its own resolver table, so the global SafeLoader is left untouched."""

    int_tag = "tag:yaml.org,2002:int"
    PolicyLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != int_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    PolicyLoader.add_implicit_resolver(
        int_tag,
        re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
        list("-+0123456789"),
    )
    return PolicyLoader


class _PolicyParser:
    """Validating conversion from plain data; every error names its path."""

    def __init__(self) -> None:
        self._known_channels: set[str] = set(BUILTIN_CHANNELS)

    def parse(self, data: Any, path: str) -> AlertPolicy:
        root = self._mapping(
            data,
            path,
            {
                "classification",
                "routing",
                "throttle",
                "escalation",
                "channels",
                "resolve_on_success",
                "lease",
                "fallback_channel",
                "summary_after",
            },
        )
        channels = self._channels(root.get("channels", {}), f"{path}.channels")
        self._known_channels = set(channels) | set(BUILTIN_CHANNELS)
        throttle = self._mapping(root.get("throttle", {}), f"{path}.throttle", {"windows", "group_by"})
        windows = dict(DEFAULT_WINDOWS)
        for key, value in self._mapping(
            throttle.get("windows", {}), f"{path}.throttle.windows", {s.label for s in Severity}
        ).items():
            windows[Severity.parse(key)] = self._duration(value, f"{path}.throttle.windows.{key}")
        group_by = tuple(
            self._strings(throttle.get("group_by", list(GROUP_BY_FIELDS)), f"{path}.throttle.group_by")
        )
        escalation_data = self._mapping(root.get("escalation", {}), f"{path}.escalation", {"after", "within"})
        escalation = EscalationPolicy(
            after=self._int(escalation_data.get("after", 3), f"{path}.escalation.after", minimum=0),
            within=self._duration(escalation_data.get("within", 3600), f"{path}.escalation.within"),
        )
        try:
            return AlertPolicy(
                classifier=self._classifier(root.get("classification", {}), f"{path}.classification"),
                router=self._router(root.get("routing", {}), f"{path}.routing"),
                windows=MappingProxyType(windows),
                escalation=escalation,
                group_by=group_by,
                channels=MappingProxyType(channels),
                resolve_on_success=self._bool(
                    root.get("resolve_on_success", True), f"{path}.resolve_on_success"
                ),
                lease=self._duration(root.get("lease", 120), f"{path}.lease"),
                fallback_channel=self._optional_string(
                    root.get("fallback_channel"), f"{path}.fallback_channel"
                ),
                summary_after=self._duration(root.get("summary_after", 120), f"{path}.summary_after"),
            )
        except PolicyError as err:
            if err.path.startswith("policy.") and path != "policy":
                raise PolicyError(path + err.path[len("policy") :], err.problem) from err
            raise

    # --- sections -------------------------------------------------------------------------

    def _classifier(self, data: Any, path: str) -> SeverityClassifier:
        section = self._mapping(
            data,
            path,
            {
                "default_severity",
                "include_default_rules",
                "retry",
                "impact_param",
                "downstream_threshold",
                "business_hours",
                "rules",
            },
        )
        retry_raw = section.get("retry", "low")
        silent = isinstance(retry_raw, str) and retry_raw.strip().lower() == "silent"
        retry = None if silent else self._severity(retry_raw, f"{path}.retry", allow="silent")
        hours = None
        lower_by = 0
        if section.get("business_hours") is not None:
            hours_data = self._mapping(
                section["business_hours"],
                f"{path}.business_hours",
                {"timezone", "days", "start", "end", "off_hours_lower_by"},
            )
            hpath = f"{path}.business_hours"
            days = tuple(
                self._int(d, f"{hpath}.days[{i}]", minimum=1, maximum=7)
                for i, d in enumerate(self._list(hours_data.get("days", [1, 2, 3, 4, 5]), f"{hpath}.days"))
            )
            start = self._time(hours_data.get("start", "09:00"), f"{hpath}.start")
            end = self._time(hours_data.get("end", "18:00"), f"{hpath}.end")
            if start == end:
                raise PolicyError(
                    f"{hpath}.end", "must differ from start (an end before start wraps midnight)"
                )
            zone = str(hours_data.get("timezone", "UTC"))
            try:
                hours = BusinessHours(timezone=zone, days=days, start=start, end=end)
            except (KeyError, ValueError) as err:  # ZoneInfoNotFoundError is a KeyError
                raise PolicyError(f"{hpath}.timezone", f"unknown time zone {zone!r}") from err
            lower_by = self._int(
                hours_data.get("off_hours_lower_by", 1),
                f"{path}.business_hours.off_hours_lower_by",
                minimum=0,
                maximum=3,
            )
        rules = tuple(
            self._rule(item, f"{path}.rules[{i}]")
            for i, item in enumerate(self._list(section.get("rules", []), f"{path}.rules"))
        )
        return SeverityClassifier(
            rules=rules,
            include_default_rules=self._bool(
                section.get("include_default_rules", True), f"{path}.include_default_rules"
            ),
            default_severity=self._severity(
                section.get("default_severity", "medium"), f"{path}.default_severity"
            ),
            retry_severity=retry,
            impact_param=str(section.get("impact_param", "business_impact")),
            downstream_threshold=self._int(
                section.get("downstream_threshold", 10), f"{path}.downstream_threshold", minimum=0
            ),
            business_hours=hours,
            off_hours_lower_by=lower_by,
        )

    def _rule(self, data: Any, path: str) -> Rule:
        item = self._mapping(data, path, {"name", "severity", "raise_by", "description", "match"})
        if "name" not in item:
            raise PolicyError(f"{path}.name", "required")
        severity = self._severity(item["severity"], f"{path}.severity") if "severity" in item else None
        raise_by = self._int(item.get("raise_by", 0), f"{path}.raise_by", minimum=-3, maximum=3)
        if severity is None and raise_by == 0:
            raise PolicyError(path, "a rule needs 'severity' or a non-zero 'raise_by'")
        if severity is not None and raise_by:
            raise PolicyError(path, "give either 'severity' or 'raise_by', not both")
        return Rule(
            name=str(item["name"]),
            match=self._matcher(item.get("match", {}), f"{path}.match"),
            severity=severity,
            raise_by=raise_by,
            description=str(item.get("description", "")),
        )

    def _router(self, data: Any, path: str) -> SeverityRouter:
        section = self._mapping(data, path, {"matrix", "routes"})
        matrix = dict(DEFAULT_MATRIX)
        matrix.update(self._matrix(section.get("matrix", {}), f"{path}.matrix"))
        routes = []
        for i, raw in enumerate(self._list(section.get("routes", []), f"{path}.routes")):
            rpath = f"{path}.routes[{i}]"
            item = self._mapping(raw, rpath, {"name", "match", "matrix"})
            if "name" not in item:
                raise PolicyError(f"{rpath}.name", "required")
            route_matrix = self._matrix(item.get("matrix", {}), f"{rpath}.matrix")
            if not route_matrix:
                raise PolicyError(f"{rpath}.matrix", "required: severity -> list of channels")
            routes.append(
                Route(
                    name=str(item["name"]),
                    match=self._matcher(item.get("match", {}), f"{rpath}.match"),
                    matrix=MappingProxyType(route_matrix),
                )
            )
        return SeverityRouter(matrix=MappingProxyType(matrix), routes=tuple(routes))

    def _matrix(self, data: Any, path: str) -> dict[Severity, tuple[str, ...]]:
        section = self._mapping(data, path, {s.label for s in Severity})
        matrix = {}
        for key, value in section.items():
            names = self._strings(value, f"{path}.{key}")
            for i, name in enumerate(names):
                if name not in self._known_channels:
                    raise PolicyError(
                        f"{path}.{key}[{i}]", f"undeclared channel {name!r} (declare it under channels)"
                    )
            matrix[Severity.parse(key)] = tuple(names)
        return matrix

    def _matcher(self, data: Any, path: str) -> AlertMatcher:
        lists = ("dag_ids", "task_ids", "tags", "owners", "exception_types", "message_patterns", "kinds")
        section = self._mapping(data, path, {*lists, "no_exception"})
        values: dict[str, Any] = {
            k: tuple(self._strings(section[k], f"{path}.{k}")) for k in lists if k in section
        }
        for i, pattern in enumerate(values.get("message_patterns", ())):
            try:
                re.compile(pattern)
            except re.error as err:
                raise PolicyError(
                    f"{path}.message_patterns[{i}]", f"invalid regular expression: {err}"
                ) from err
        valid_kinds = {k.value for k in AlertKind}
        for i, kind in enumerate(values.get("kinds", ())):
            if kind not in valid_kinds:
                raise PolicyError(
                    f"{path}.kinds[{i}]",
                    f"unknown kind {kind!r}; expected one of: {', '.join(sorted(valid_kinds))}",
                )
        if "no_exception" in section:
            values["no_exception"] = self._bool(section["no_exception"], f"{path}.no_exception")
        return AlertMatcher(**values)

    def _channels(self, data: Any, path: str) -> dict[str, ChannelSpec]:
        section = self._mapping(data, path, None)
        specs = {}
        for name, raw in section.items():
            cpath = f"{path}.{name}"
            item = self._mapping(raw, cpath, None)
            kind = item.get("type", name if name in CHANNEL_TYPES else None)
            if kind not in CHANNEL_TYPES:
                raise PolicyError(f"{cpath}.type", f"must be one of {', '.join(CHANNEL_TYPES)}, got {kind!r}")
            unknown = set(item) - _CHANNEL_OPTIONS[kind]
            if unknown:
                raise PolicyError(f"{cpath}.{sorted(unknown)[0]}", f"unknown option for a {kind} channel")
            options = {k: v for k, v in item.items() if k != "type"}
            if "to" in options:
                options["to"] = tuple(self._strings(options["to"], f"{cpath}.to"))
            specs[str(name)] = ChannelSpec(name=str(name), type=str(kind), options=MappingProxyType(options))
        return specs

    # --- scalars --------------------------------------------------------------------------

    @staticmethod
    def _mapping(data: Any, path: str, allowed: set[str] | None) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise PolicyError(path, f"must be a mapping, got {type(data).__name__}")
        if allowed is not None:
            for key in data:
                if key not in allowed:
                    raise PolicyError(
                        f"{path}.{key}", f"unknown field (expected one of: {', '.join(sorted(allowed))})"
                    )
        return data

    @staticmethod
    def _list(data: Any, path: str) -> list[Any]:
        if not isinstance(data, list | tuple):
            raise PolicyError(path, f"must be a list, got {type(data).__name__}")
        return list(data)

    def _strings(self, data: Any, path: str) -> list[str]:
        if isinstance(data, str):
            data = [data]
        items = self._list(data, path)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise PolicyError(f"{path}[{i}]", "must be a non-empty string")
        return items

    @staticmethod
    def _optional_string(data: Any, path: str) -> str | None:
        if data is None:
            return None
        if not isinstance(data, str) or not data.strip():
            raise PolicyError(path, f"must be one channel name, got {data!r}")
        return data.strip()

    @staticmethod
    def _severity(data: Any, path: str, allow: str | None = None) -> Severity:
        try:
            return Severity.parse(data)
        except (ValueError, TypeError) as err:
            extra = f" or {allow}" if allow else ""
            raise PolicyError(path, f"{err}{extra}") from err

    @staticmethod
    def _bool(data: Any, path: str) -> bool:
        if not isinstance(data, bool):
            raise PolicyError(path, f"must be true or false, got {data!r}")
        return data

    @staticmethod
    def _int(data: Any, path: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise PolicyError(path, f"must be an integer, got {data!r}")
        if minimum is not None and data < minimum:
            raise PolicyError(path, f"must be >= {minimum}, got {data}")
        if maximum is not None and data > maximum:
            raise PolicyError(path, f"must be <= {maximum}, got {data}")
        return data

    @staticmethod
    def _duration(data: Any, path: str) -> timedelta:
        if isinstance(data, bool):
            raise PolicyError(path, f"must be a duration (seconds or '5m'), got {data!r}")
        if isinstance(data, int | float):
            seconds = float(data)
        elif isinstance(data, str) and (m := _DURATION.match(data)):
            seconds = float(m.group(2)) * _UNITS[m.group(3)] * (-1 if m.group(1) else 1)
        else:
            raise PolicyError(path, f"must be a duration (seconds or e.g. '90s', '5m', '1h'), got {data!r}")
        if seconds < 0:
            raise PolicyError(path, f"must not be negative, got {data!r}")
        if not math.isfinite(seconds) or seconds > _MAX_DURATION_SECONDS:
            raise PolicyError(path, f"must be a finite duration of at most 10 years, got {data!r}")
        return timedelta(seconds=seconds)

    @staticmethod
    def _time(data: Any, path: str) -> time:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", str(data))
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise PolicyError(path, f"must be a time like '09:00', got {data!r}")
        return time(int(match.group(1)), int(match.group(2)))
