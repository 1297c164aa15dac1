"""``channels/config.py``: one config model per kind, checked the same way for every kind,
listed by ``pushgate channel kinds`` and documented in docs/channel-config.md."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pushgate.channels.base import KIND_NAMES, ChannelConfigError, channel_class, known_kinds
from pushgate.channels.config import (
    ChannelConfig,
    check_config,
    parse_model,
    render_channels_doc,
)
from pushgate.core.channels import ChannelSpec, PriceUnit

REPO = Path(__file__).resolve().parents[2]

VALID = {
    "sandbox": {},
    "android": {},
    "whatsapp_cloud": {"phone_number_id": "123", "access_token": "t", "app_secret": "s",
                       "verify_token": "v"},
    "waha": {"base_url": "http://127.0.0.1:3000", "api_key": "k", "insecure_callbacks": True},
    "evolution": {"base_url": "http://127.0.0.1:8080", "api_key": "k", "instance": "i",
                  "insecure_callbacks": True},
    "smpp": {"host": "smsc.example.com", "system_id": "esme"},
    "twilio_sms": {"account_sid": "AC" + "0" * 32, "auth_token": "t",
                   "from_number": "+15005550006"},
    "twilio_voice": {"account_sid": "AC" + "0" * 32, "auth_token": "t",
                     "from_number": "+15005550006"},
}


def test_the_kind_names_are_the_registry() -> None:
    """Test modules may register kinds of their own; the shipped ones are those of pushgate."""
    shipped = [kind for kind in known_kinds()
               if channel_class(kind).__module__.startswith("pushgate.")]
    assert sorted(KIND_NAMES) == shipped == sorted(VALID)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_kind_has_its_own_model(kind: str) -> None:
    model = channel_class(kind).config_model
    assert issubclass(model, ChannelConfig) and model is not ChannelConfig
    check_config(kind, VALID[kind])


@pytest.mark.parametrize("kind", sorted(VALID))
def test_an_unknown_key_is_refused_when_given(kind: str) -> None:
    with pytest.raises(ChannelConfigError, match="unknown config key 'colour'"):
        check_config(kind, {**VALID[kind], "colour": "blue"})


@pytest.mark.parametrize("kind", sorted(VALID))
def test_an_unknown_key_in_a_stored_config_is_ignored_and_logged(
        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    stored = {**check_config(kind, VALID[kind]), "colour": "blue"}
    # Attached to the logger itself: other tests may stop pushgate's loggers propagating.
    logger = logging.getLogger("pushgate.channels.config")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="pushgate.channels.config"):
            spec = ChannelSpec(id=1, project_id=1, kind=kind, application=1, price_micro=0,
                               price_unit=PriceUnit.MESSAGE, config=stored)
            channel = channel_class(kind)(spec)
    finally:
        logger.removeHandler(caplog.handler)
    assert "colour" in caplog.text
    parsed = parse_model(channel.config_model, stored, kind=kind, stored=True)
    assert not hasattr(parsed, "colour")


def test_a_bad_value_names_its_key() -> None:
    with pytest.raises(ChannelConfigError, match="port"):
        check_config("smpp", {**VALID["smpp"], "port": "many"})
    with pytest.raises(ChannelConfigError, match="max_in_flight"):
        check_config("whatsapp_cloud", {**VALID["whatsapp_cloud"], "max_in_flight": 0})


def test_docs_channels_md_is_up_to_date() -> None:
    path = REPO / "docs" / "channel-config.md"
    assert path.exists(), "run `pushgate docs channels`"
    assert path.read_text() == render_channels_doc(), \
        "docs/channel-config.md is stale: run `pushgate docs channels`"


def test_channel_kinds_lists_every_kind_with_its_fields() -> None:
    result = subprocess.run([sys.executable, "-m", "pushgate.cli", "channel", "kinds", "--json"],
                            capture_output=True, text=True, check=True)
    kinds = {entry["kind"]: entry for entry in json.loads(result.stdout)}
    assert sorted(kinds) == sorted(KIND_NAMES)
    smpp = {f["name"]: f for f in kinds["smpp"]["fields"]}
    assert smpp["host"]["required"] and smpp["port"]["default"] == 2775
