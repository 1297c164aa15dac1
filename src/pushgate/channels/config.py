"""One config model per channel kind, and the one way every connector checks its config.

Each connector names its model (``Channel.config_model``, a ``ChannelConfig`` msgspec Struct):
its fields are the keys ``channel add --config`` takes, with their types and defaults, and the
source of ``pushgate channel kinds`` and of docs/channel-config.md (``pushgate docs channels``). A
model's ``normalise`` holds the kind's own rules (ranges, formats, values derived from other
keys), written to name the key at fault; ``parse_model`` runs them in one order for every kind:

1. unknown keys — refused when a config is given (``channel add``, a callback-secret rotation),
   because a misspelt key must not pass silently; ignored with a log line when a stored config
   is loaded, so a channel stored by an older version (or edited by hand) keeps working rather
   than failing to start;
2. the model's ``normalise`` (its messages, as ``ChannelConfigError``);
3. ``msgspec.convert`` into the model (types, and any ``__post_init__`` checks).

The gateway's own keys (``GATEWAY_CONFIG_KEYS``: caps, warm-up, country allow-list) are split
off before a connector sees its config and are not part of these models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgspec

from pushgate.channels.base import ChannelConfigError

log = logging.getLogger("pushgate.channels.config")

ConfigT = TypeVar("ConfigT", bound="ChannelConfig")


class ChannelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of the per-kind config models."""

    # Accept "2" for 2.0 and the like when converting (only kinds that always did).
    lax: ClassVar[bool] = False

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The kind's own rules over the raw keys, returning them normalised."""
        return config


def parse_model(model: type[ConfigT], config: dict[str, Any], *, kind: str,
                stored: bool = False) -> ConfigT:
    """``config`` checked against ``model`` (see the module docstring for the order);
    ``stored`` tolerates unknown keys (ignored, logged) instead of refusing them."""
    known = model.__struct_fields__
    unknown = sorted(set(config) - set(known))
    if unknown:
        if not stored:
            raise ChannelConfigError(f"unknown config key {unknown[0]!r} for {kind}")
        log.warning("channel config of kind %s: ignoring unknown keys %s", kind,
                    ", ".join(unknown))
        config = {key: value for key, value in config.items() if key in known}
    normalised = model.normalise(dict(config))
    try:
        return msgspec.convert(normalised, model, strict=not model.lax)
    except msgspec.ValidationError as exc:
        raise ChannelConfigError(str(exc)) from None


def stored_form(parsed: ChannelConfig, given: dict[str, Any]) -> dict[str, Any]:
    """What ``channel add`` stores: every field with its default filled in, except optional
    fields left unset (None and not given), which stay absent."""
    return {key: value for key, value in msgspec.structs.asdict(parsed).items()
            if value is not None or key in given}


def check_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """A new config for a channel of ``kind`` (the connector's keys only), checked and
    normalised as it will be stored; ``ChannelConfigError`` (a ``ValueError``) names the key."""
    from pushgate.channels.base import channel_class

    return channel_class(kind).validate_config(config)


@dataclass(frozen=True, slots=True)
class FieldDoc:
    name: str
    type: str
    required: bool
    default: Any


def model_fields(model: type[ChannelConfig]) -> list[FieldDoc]:
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    out = []
    for field in info.fields:
        default = None if field.default is msgspec.NODEFAULT else field.default
        out.append(FieldDoc(field.name, _type_label(field.type), field.required, default))
    return out


def _type_label(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.UnionType):
        return " or ".join(_type_label(t) for t in info.types)
    names = {msgspec.inspect.StrType: "str", msgspec.inspect.IntType: "int",
             msgspec.inspect.FloatType: "float", msgspec.inspect.BoolType: "bool",
             msgspec.inspect.NoneType: "None"}
    return names.get(type(info), type(info).__name__.removesuffix("Type").lower())


def kinds_description() -> list[dict[str, Any]]:
    """Every shipped channel kind with its config fields (``pushgate channel kinds --json``);
    kinds a test registers are left out."""
    from pushgate.channels.base import KIND_NAMES, channel_class

    out = []
    for kind in sorted(KIND_NAMES):
        cls = channel_class(kind)
        out.append({"kind": kind, "summary": _summary(cls),
                    "fields": [{"name": f.name, "type": f.type, "required": f.required,
                                "default": f.default} for f in model_fields(cls.config_model)]})
    return out


def _summary(cls: type[Any]) -> str:
    """The first sentence of the connector's module (its package for a split connector)."""
    import sys

    module = ".".join(cls.__module__.split(".")[:3])
    doc = " ".join((sys.modules[module].__doc__ or "").split())
    return doc.split(". ")[0].rstrip(".") + "." if doc else ""


def render_channels_doc() -> str:
    """docs/channel-config.md: generated from the models (``pushgate docs channels``)."""
    lines = ["# Channel kinds and their config",
             "",
             "Generated from the config models in `src/pushgate/channels/` by "
             "`pushgate docs channels`; do not edit by hand (`--check` fails when it differs).",
             "",
             "`pushgate channel add --type KIND --config '{...}'` takes the keys below. Unknown "
             "keys are refused when a config is given; in a config already stored they are "
             "ignored with a log line, so the channel still starts. The gateway's own keys "
             "(`hourly_cap`, `daily_cap`, `warmup_first_day`, `warmup_growth`, "
             "`warmup_started_at`, `allowed_country_codes`, `check_price`: what one number "
             "check of Picky's number filter costs, in credits, default 0) are accepted for "
             "every kind.",
             ""]
    for entry in kinds_description():
        lines += [f"## `{entry['kind']}`", ""]
        if entry["summary"]:
            lines += [entry["summary"], ""]
        lines += ["| key | type | required | default |", "|---|---|---|---|"]
        for field in entry["fields"]:
            default = "" if field["required"] or field["default"] is None \
                else f"`{field['default']!r}`"
            lines.append(f"| `{field['name']}` | {field['type']} | "
                         f"{'yes' if field['required'] else 'no'} | {default} |")
        lines.append("")
    return "\n".join(lines)
