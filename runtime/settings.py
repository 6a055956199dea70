"""Every setting utterstream reads, from the environment, in one place.

One Struct per concern (runtime/sections.py), each field with a default that
runs on a developer machine and a description. Nothing here is cached at
import: callers build `Settings.from_env()` once at start-up (or
`Settings(...)` directly in tests) and pass it down; nothing else in api/,
cql/, dataflows/, llm/ or runtime/ reads the environment.

A field's variable is UTTERSTREAM_<SECTION>_<FIELD> (`env_name`), except for a
few names kept from the wider ecosystem (`_ALIASES`). `from_env` checks each
value against the field's type and bounds, and a bad one stops start-up with
an error naming the variable. The README's table of settings is generated
from these definitions (`python -m runtime.settings`), and a test keeps it so.
"""

from __future__ import annotations

import os
import re
import sys
import typing
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from runtime.sections import (
    ApiSettings,
    CassandraSettings,
    DataflowSettings,
    FeedSettings,
    LiveSettings,
    LlmSettings,
    LogSettings,
    MetricsSettings,
    RedisSettings,
    UiSettings,
)


class Settings(msgspec.Struct, frozen=True):
    cassandra: CassandraSettings = CassandraSettings()
    redis: RedisSettings = RedisSettings()
    feed: FeedSettings = FeedSettings()
    api: ApiSettings = ApiSettings()
    live: LiveSettings = LiveSettings()
    llm: LlmSettings = LlmSettings()
    dataflow: DataflowSettings = DataflowSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    ui: UiSettings = UiSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        sections = {name: _section(typ, name, env) for name, typ in _SECTIONS.items()}
        sections["cassandra"] = _cluster_defaults(sections["cassandra"], env)
        return cls(**sections)


class SettingsError(ValueError):
    """A variable whose value does not fit its setting; names both."""


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    name: typing.get_type_hints(Settings)[name] for name in Settings.__struct_fields__
}

# Names kept from the wider ecosystem instead of our UTTERSTREAM_ prefix.
_ALIASES = {
    ("cassandra", "hosts"): "CASSANDRA_HOSTS",
    ("cassandra", "port"): "CASSANDRA_PORT",
    ("redis", "url"): "REDIS_URL",
    ("llm", "base_url"): "OPENAI_BASE_URL",
    ("llm", "api_key"): "OPENAI_API_KEY",
    ("llm", "model"): "OPENAI_MODEL",
    ("api", "port"): "API_PORT",
    ("metrics", "multiproc_dir"): "PROMETHEUS_MULTIPROC_DIR",
}


def _cluster_defaults(cassandra: CassandraSettings, env: Mapping[str, str]) -> CassandraSettings:
    """A local cluster (`cassandra.nodes` > 1) is reached at its nodes'
    addresses and replicated 3 times, unless the variables say otherwise."""
    if cassandra.nodes == 1:
        return cassandra
    derived: dict[str, object] = {}
    if env_name("cassandra", "hosts") not in env:
        derived["hosts"] = tuple(f"127.0.0.{i}" for i in range(1, cassandra.nodes + 1))
    if env_name("cassandra", "replication") not in env:
        rf = min(cassandra.nodes, 3)
        derived["replication"] = f"NetworkTopologyStrategy:{cassandra.local_dc}={rf}"
    return msgspec.structs.replace(cassandra, **derived)


def env_name(section: str, field: str) -> str:
    return _ALIASES.get((section, field), f"UTTERSTREAM_{section}_{field}".upper())


_AT = re.compile(r" - at `\$\.(?P<field>\w+)[^`]*`$")


def _section(typ: type[msgspec.Struct], section: str, env: Mapping[str, str]) -> msgspec.Struct:
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(typ):
        value = env.get(env_name(section, field.name))
        if value is None:
            continue
        raw[field.name] = (
            tuple(v.strip() for v in value.split(",") if v.strip())
            if typing.get_origin(_bare(field.type)) is tuple
            else value
        )
    try:
        # strict=False converts "8" to 8 and "0.5" to 0.5.
        return msgspec.convert(raw, typ, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT.search(message)
        if at is None:
            raise SettingsError(f"{section} settings: {message}") from None
        field = at["field"]
        name = env_name(section, field)
        kind = _bare(typing.get_type_hints(typ, include_extras=True)[field])
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else ()
        allowed = f" (one of: {', '.join(choices)})" if choices else ""
        raise SettingsError(
            f"{name}={env[name]!r} is not a valid setting: {_AT.sub('', message)}{allowed}"
        ) from None


def _bare(annotation: object) -> object:
    """The type without its Annotated metadata: tuple[str, ...], Literal[...]."""
    if typing.get_origin(annotation) is Annotated:
        return typing.get_args(annotation)[0]
    return annotation


# ---- the README's table


def markdown_table() -> str:
    """Every setting as a Markdown table: variable, default, what it does."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for section, typ in _SECTIONS.items():
        info = msgspec.inspect.type_info(typ)
        for field in info.fields:
            text = field.type.extra_json_schema["description"]
            default = _shown(field.default)
            lines.append(f"| `{env_name(section, field.name)}` | {default} | {text} |")
    return "\n".join(lines) + "\n"


def _shown(default: object) -> str:
    if default is None or default == "":
        return "unset"
    if isinstance(default, tuple):
        default = ",".join(default)
    return f"`{default}`"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
