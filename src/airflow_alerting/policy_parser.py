"""Parsing a policy from plain data (parsed YAML/JSON): :class:`_PolicyParser` and its YAML loader.

Used by :meth:`airflow_alerting.policy.AlertPolicy.from_dict` and
:meth:`~airflow_alerting.policy.AlertPolicy.from_yaml`, which import this module lazily
(it imports :mod:`airflow_alerting.policy` for the classes it builds).  Every error is a
:class:`~airflow_alerting.policy.PolicyError` naming the offending field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import time, timedelta
from types import MappingProxyType
from typing import Any

from airflow_alerting.classify import BusinessHours, Rule, SeverityClassifier
from airflow_alerting.fingerprint import GROUP_BY_FIELDS
from airflow_alerting.incidents.correlate import validate_correlate_by
from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.matching import AlertMatcher
from airflow_alerting.model import AlertKind, Severity
from airflow_alerting.policy import (
    _CHANNEL_OPTIONS,
    BUILTIN_CHANNELS,
    CHANNEL_TYPES,
    DEFAULT_WINDOWS,
    AlertPolicy,
    ChannelSpec,
    EscalationPolicy,
    PolicyError,
)
from airflow_alerting.routing import DEFAULT_MATRIX, Route, SeverityRouter

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
                "incidents",
                "silences",
                "digest",
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
        escalation_data = self._mapping(
            root.get("escalation", {}), f"{path}.escalation", {"after", "within", "ceiling"}
        )
        escalation = EscalationPolicy(
            after=self._int(escalation_data.get("after", 3), f"{path}.escalation.after", minimum=0),
            within=self._duration(escalation_data.get("within", 3600), f"{path}.escalation.within"),
            ceiling=self._severity(escalation_data.get("ceiling", "critical"), f"{path}.escalation.ceiling"),
        )
        silences = self._mapping(root.get("silences", {}), f"{path}.silences", {"critical_bypass"})
        digest = self._mapping(root.get("digest", {}), f"{path}.digest", {"channels"})
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
                incidents=self._incidents(root.get("incidents", {}), f"{path}.incidents"),
                silence_critical_bypass=self._bool(
                    silences.get("critical_bypass", False), f"{path}.silences.critical_bypass"
                ),
                digest_channels=tuple(
                    self._strings(digest.get("channels", ["slack"]), f"{path}.digest.channels")
                ),
            )
        except PolicyError as err:
            if err.path.startswith("policy.") and path != "policy":
                raise PolicyError(path + err.path[len("policy") :], err.problem) from err
            raise

    # --- sections -------------------------------------------------------------------------

    def _incidents(self, data: Any, path: str) -> IncidentRules:
        section = self._mapping(
            data,
            path,
            {"correlate_by", "window", "update_interval", "repeat_interval", "blast_radius", "retention"},
        )
        defaults = IncidentRules()
        raw_by = section.get("correlate_by", list(defaults.correlate_by))
        # "none" opts out: one incident per fingerprint (per dag/task/cause)
        correlate_by = (
            () if raw_by in ("none", None, []) else tuple(self._strings(raw_by, f"{path}.correlate_by"))
        )
        problem = validate_correlate_by(correlate_by)
        if problem:
            raise PolicyError(f"{path}.correlate_by", problem)
        radius = self._mapping(
            section.get("blast_radius", {}), f"{path}.blast_radius", {"dags", "tasks", "severity"}
        )

        def positive(name: str, default: timedelta) -> timedelta:
            value = self._duration(section.get(name, default.total_seconds()), f"{path}.{name}")
            if value <= timedelta(0):
                raise PolicyError(f"{path}.{name}", "must be positive")
            return value

        return IncidentRules(
            correlate_by=correlate_by,
            window=positive("window", defaults.window),
            update_interval=positive("update_interval", defaults.update_interval),
            repeat_interval=positive("repeat_interval", defaults.repeat_interval),
            blast_radius_dags=self._int(
                radius.get("dags", defaults.blast_radius_dags), f"{path}.blast_radius.dags", minimum=0
            ),
            blast_radius_tasks=self._int(
                radius.get("tasks", defaults.blast_radius_tasks), f"{path}.blast_radius.tasks", minimum=0
            ),
            blast_radius_severity=self._severity(
                radius.get("severity", defaults.blast_radius_severity.label), f"{path}.blast_radius.severity"
            ),
            retention=positive("retention", defaults.retention),
        )

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
                "critical_windows",
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
        from airflow_alerting.classify import CriticalWindow

        windows = []
        for i, raw in enumerate(self._list(section.get("critical_windows", []), f"{path}.critical_windows")):
            wpath = f"{path}.critical_windows[{i}]"
            item = self._mapping(
                raw,
                wpath,
                {"name", "timezone", "days_of_month", "weekdays", "start", "end", "raise_by", "match"},
            )
            name = item.get("name")
            if name is None:
                raise PolicyError(f"{wpath}.name", "required")
            if not isinstance(name, str) or not name.strip():
                raise PolicyError(f"{wpath}.name", f"must be a non-empty string, got {name!r}")
            month_days = []
            for j, d in enumerate(self._list(item.get("days_of_month", []), f"{wpath}.days_of_month")):
                day = self._int(d, f"{wpath}.days_of_month[{j}]", minimum=-31, maximum=31)
                if day == 0:
                    raise PolicyError(
                        f"{wpath}.days_of_month[{j}]", "must be 1..31, or -1 (the last day) .. -31, got 0"
                    )
                month_days.append(day)
            weekdays = tuple(
                self._int(d, f"{wpath}.weekdays[{j}]", minimum=1, maximum=7)
                for j, d in enumerate(self._list(item.get("weekdays", []), f"{wpath}.weekdays"))
            )
            # start == end is allowed: the whole 24 hours from start (the default: the whole day)
            start = self._time(item.get("start", "00:00"), f"{wpath}.start")
            end = self._time(item.get("end", "00:00"), f"{wpath}.end")
            raise_by = self._int(item.get("raise_by", 1), f"{wpath}.raise_by", minimum=1, maximum=3)
            match = self._matcher(item["match"], f"{wpath}.match") if item.get("match") is not None else None
            zone = str(item.get("timezone", "UTC"))
            try:
                windows.append(
                    CriticalWindow(
                        name=name.strip(),
                        timezone=zone,
                        days_of_month=tuple(month_days),
                        weekdays=weekdays,
                        start=start,
                        end=end,
                        raise_by=raise_by,
                        match=match,
                    )
                )
            except (KeyError, ValueError) as err:  # every other field is checked above
                raise PolicyError(f"{wpath}.timezone", f"unknown time zone {zone!r}") from err
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
            critical_windows=tuple(windows),
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
        # Every option is checked here: the channel factory hands them to the channel classes
        # as they are, so a wrong type would otherwise surface only when an alert is delivered,
        # as a crash that loses it, instead of as a parse-time error naming the field.
        what = {
            "channel": "a Slack channel such as #alerts",
            "conn_id": "an Airflow connection id",
            "webhook_conn_id": "an Airflow connection id",
            "from_email": "an e-mail address",
            "to": "an e-mail address",
        }

        def text(value: Any, opath: str, key: str) -> str:
            if not isinstance(value, str) or not value.strip():
                raise PolicyError(opath, f"must be a non-empty string ({what[key]}), got {value!r}")
            # CR/LF would let a value add mail headers; other control characters are typos
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise PolicyError(opath, f"must not contain control characters, got {value!r}")
            if key in ("to", "from_email") and "@" not in value:
                raise PolicyError(opath, f"is not an e-mail address: {value!r}")
            return value.strip()

        def recipients(value: Any, opath: str) -> tuple[str, ...]:
            if isinstance(value, str):
                # "a@x, b@y" as in [alerting] email_to; a trailing separator is harmless
                found = [text(part, opath, "to") for part in re.split(r"[,;]", value) if part.strip()]
            elif isinstance(value, list | tuple):
                found = [text(part, f"{opath}[{i}]", "to") for i, part in enumerate(value)]
            else:
                raise PolicyError(opath, f"must be an e-mail address or a list of them, got {value!r}")
            if not found:
                raise PolicyError(
                    opath, "must name at least one address (leave it out for [alerting] email_to)"
                )
            return tuple(dict.fromkeys(found))  # a repeated recipient would get every alert twice

        section = self._mapping(data, path, None)
        specs = {}
        for name, raw in section.items():
            cpath = f"{path}.{name}"
            item = self._mapping(raw, cpath, None)
            kind = item.get("type", name if name in CHANNEL_TYPES else None)
            if kind not in CHANNEL_TYPES:
                raise PolicyError(f"{cpath}.type", f"must be one of {', '.join(CHANNEL_TYPES)}, got {kind!r}")
            unknown = sorted(str(key) for key in set(item) - _CHANNEL_OPTIONS[kind])
            if unknown:
                expected = ", ".join(sorted(_CHANNEL_OPTIONS[kind]))
                raise PolicyError(
                    f"{cpath}.{unknown[0]}",
                    f"unknown option for a {kind} channel (expected one of: {expected})",
                )
            options: dict[str, Any] = {}
            for key, value in item.items():
                if key == "to":
                    options[key] = recipients(value, f"{cpath}.to")
                elif key != "type":
                    options[key] = text(value, f"{cpath}.{key}", key)
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
