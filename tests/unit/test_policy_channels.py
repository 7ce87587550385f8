"""Policy channel options are validated when the policy is parsed, naming the field.

The channel factory passes these options to the channel classes unchecked, so anything the
parser lets through must build a working channel; anything else must be a
:class:`~airflow_alerting.policy.PolicyError` at parse time, never a crash at alert time.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting.channels.email import EmailChannel
from airflow_alerting.channels.factory import build_channel
from airflow_alerting.channels.pagerduty import PagerDutyChannel
from airflow_alerting.channels.slack import SlackChannel
from airflow_alerting.config import AlertingSettings
from airflow_alerting.policy import AlertPolicy, PolicyError

#: channel type -> its options (besides ``type``); mirrors channels/factory.py
OPTIONS = {
    "slack": ("channel", "conn_id", "webhook_conn_id"),
    "email": ("to", "from_email", "conn_id"),
    "pagerduty": ("conn_id",),
}
CLASSES = {"slack": SlackChannel, "email": EmailChannel, "pagerduty": PagerDutyChannel}


def _policy(kind: str, **options: Any) -> AlertPolicy:
    return AlertPolicy.from_dict({"channels": {"ops_channel": {"type": kind, **options}}})


@pytest.mark.parametrize(
    ("kind", "options", "path", "fragment"),
    [
        ("email", {"from_email": 42}, "policy.channels.ops_channel.from_email", "must be a non-empty string"),
        (
            "email",
            {"from_email": "airflow"},
            "policy.channels.ops_channel.from_email",
            "not an e-mail address",
        ),
        ("email", {"from_email": ["a@example.com"]}, "policy.channels.ops_channel.from_email", "non-empty"),
        ("email", {"to": ["oncall"]}, "policy.channels.ops_channel.to[0]", "not an e-mail address"),
        ("email", {"to": ["a@example.com", 7]}, "policy.channels.ops_channel.to[1]", "non-empty string"),
        ("email", {"to": ["a@example.com", ""]}, "policy.channels.ops_channel.to[1]", "non-empty string"),
        ("email", {"to": "a@example.com, oncall"}, "policy.channels.ops_channel.to", "not an e-mail address"),
        ("email", {"to": []}, "policy.channels.ops_channel.to", "at least one address"),
        ("email", {"to": " , "}, "policy.channels.ops_channel.to", "at least one address"),
        ("email", {"to": {"a": "b@c"}}, "policy.channels.ops_channel.to", "a list of them"),
        ("email", {"to": 5}, "policy.channels.ops_channel.to", "a list of them"),
        (
            "email",
            {"to": ["a@example.com\r\nBcc: all@example.com"]},
            "policy.channels.ops_channel.to[0]",
            "control characters",
        ),
        ("email", {"conn_id": ""}, "policy.channels.ops_channel.conn_id", "non-empty string"),
        ("slack", {"channel": 5}, "policy.channels.ops_channel.channel", "a Slack channel"),
        ("slack", {"channel": "  "}, "policy.channels.ops_channel.channel", "non-empty string"),
        ("slack", {"channel": None}, "policy.channels.ops_channel.channel", "non-empty string"),
        ("slack", {"conn_id": True}, "policy.channels.ops_channel.conn_id", "connection id"),
        ("slack", {"webhook_conn_id": "hook\n"}, "policy.channels.ops_channel.webhook_conn_id", "control"),
        ("pagerduty", {"conn_id": ""}, "policy.channels.ops_channel.conn_id", "non-empty string"),
        ("pagerduty", {"conn_id": 3.5}, "policy.channels.ops_channel.conn_id", "non-empty string"),
        ("pagerduty", {"channel": "#x"}, "policy.channels.ops_channel.channel", "unknown option"),
        ("slack", {"to": ["a@example.com"]}, "policy.channels.ops_channel.to", "unknown option"),
        ("email", {"from": "a@example.com"}, "policy.channels.ops_channel.from", "expected one of"),
    ],
)
def test_a_bad_channel_option_names_the_field(
    kind: str, options: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        _policy(kind, **options)

    assert caught.value.path == path
    assert fragment in caught.value.problem


def test_unknown_options_of_mixed_key_types_are_still_named() -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict({"channels": {"ops": {"type": "slack", 5: "x", "chanel": "#x"}}})
    assert caught.value.path == "policy.channels.ops.5"


def test_valid_options_are_normalised() -> None:
    policy = _policy(
        "email",
        to="a@example.com; b@example.com,a@example.com,",
        from_email=" Airflow <af@example.com> ",
        conn_id=" smtp_ops ",
    )
    assert dict(policy.channel_spec("ops_channel").options) == {
        "to": ("a@example.com", "b@example.com"),
        "from_email": "Airflow <af@example.com>",
        "conn_id": "smtp_ops",
    }


# --- generated ------------------------------------------------------------------------------------

_CONTROL = st.sampled_from([chr(c) for c in (*range(32), 127)])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=5)
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).flatmap(
        lambda t: _CONTROL.map(lambda c: t + c + "x")
    ),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=8), st.text(max_size=8)),
    st.lists(st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=8), st.text(max_size=8)), max_size=3),
)


def _option_sets(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(OPTIONS[kind]), _VALUES, max_size=len(OPTIONS[kind]))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(OPTIONS)))
def test_any_options_either_build_a_channel_or_fail_at_parse_time_naming_the_field(
    data: st.DataObject, kind: str
) -> None:
    options = data.draw(_option_sets(kind))
    try:
        policy = _policy(kind, **options)
    except PolicyError as err:
        assert any(err.path.startswith(f"policy.channels.ops_channel.{key}") for key in options), err
        return

    # accepted: every value is clean text the channel classes can use as is
    spec = policy.channel_spec("ops_channel")
    for key, value in spec.options.items():
        values = value if key == "to" else (value,)
        assert values
        for text in values:
            assert isinstance(text, str) and text == text.strip() and text
            assert all(ord(ch) >= 32 and ord(ch) != 127 for ch in text)
            if key in ("to", "from_email"):
                assert "@" in text
    channel = build_channel(spec, AlertingSettings.defaults())
    assert isinstance(channel, CLASSES[kind])
