"""runtime.settings: every setting read from the environment in one place,
each variable parsed into its section, bad values refused naming the
variable, and the README's table listing every setting as defined."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

import runtime.settings
from runtime import sections
from runtime.settings import Settings, SettingsError, env_name, markdown_table

ROOT = Path(__file__).resolve().parents[2]
# The project's packages (the wheel's), not tests/ or bench/: those may read
# variables of their own, such as UTTERSTREAM_TEST_KEYSPACE.
_WHEEL = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]
PACKAGES = _WHEEL["build"]["targets"]["wheel"]["packages"]


def test_no_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "UTTERSTREAM_TEST_KEYSPACE": "x"}) == Settings()


def test_runtime_settings_re_exports_every_section() -> None:
    structs = {
        name: value
        for name, value in vars(sections).items()
        if isinstance(value, type)
        and issubclass(value, sections.Section)
        and value is not sections.Section
    }
    assert {type(getattr(Settings(), name)) for name in Settings.__struct_fields__} == set(
        structs.values()
    )
    assert {name: getattr(runtime.settings, name, None) for name in structs} == structs


# A value for every variable...
ENV = {
    "CASSANDRA_HOSTS": "10.0.0.5, 10.0.0.6,",
    "CASSANDRA_PORT": "9043",
    "UTTERSTREAM_CASSANDRA_NODES": "3",
    "UTTERSTREAM_CASSANDRA_KEYSPACE": "ks",
    "UTTERSTREAM_CASSANDRA_LOCAL_DC": "dc1",
    "UTTERSTREAM_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:dc1=3",
    "UTTERSTREAM_CASSANDRA_REQUEST_TIMEOUT_S": "2.5",
    "UTTERSTREAM_CASSANDRA_CONNECT_TIMEOUT_S": "1",
    "UTTERSTREAM_CASSANDRA_MAX_IN_FLIGHT": "64",
    "REDIS_URL": "redis://cache:6380/2",
    "UTTERSTREAM_REDIS_SOCKET_TIMEOUT_S": "0.25",
    "UTTERSTREAM_REDIS_FLOW_TIMEOUT_S": "3",
    "UTTERSTREAM_FEED_SHARDS": "16",
    "UTTERSTREAM_FEED_BUCKET_S": "30",
    "UTTERSTREAM_FEED_TTL_DAYS": "3",
    "UTTERSTREAM_FEED_READER_LAG_S": "0",
    "UTTERSTREAM_API_HOST": "0.0.0.0",
    "API_PORT": "8080",
    "UTTERSTREAM_API_WORKERS": "4",
    "UTTERSTREAM_API_MAX_BODY_BYTES": "1024",
    "UTTERSTREAM_API_MAX_BATCH_ITEMS": "50",
    "UTTERSTREAM_API_IN_FLIGHT_TIMEOUT_S": "2",
    "UTTERSTREAM_API_IDEMPOTENCY_TTL_S": "86400",
    "UTTERSTREAM_API_RETRY_AFTER_S": "3",
    "UTTERSTREAM_API_REDIS_FAILURE_POLICY": "closed",
    "UTTERSTREAM_API_RATE_LEASE_S": "0",
    "UTTERSTREAM_API_WRITE_BATCHES_IN_FLIGHT": "0",
    "UTTERSTREAM_API_DEFAULT_RATE": "5.5",
    "UTTERSTREAM_API_DEFAULT_BURST": "10",
    "UTTERSTREAM_LIVE_MAX_CONNECTIONS": "5",
    "UTTERSTREAM_LIVE_RETENTION_S": "1800",
    "UTTERSTREAM_LIVE_HEARTBEAT_S": "5",
    "UTTERSTREAM_LIVE_LEASE_S": "30",
    "UTTERSTREAM_LIVE_RENEW_S": "10",
    "UTTERSTREAM_LIVE_QUEUE_SIZE": "100",
    "UTTERSTREAM_LIVE_SEND_TIMEOUT_S": "4",
    "UTTERSTREAM_LIVE_WS_MAX_IN_FLIGHT": "50",
    "UTTERSTREAM_LIVE_TICKET_TTL_S": "30",
    "UTTERSTREAM_LIVE_PUBLISH_WITHIN_S": "2",
    "OPENAI_BASE_URL": "http://127.0.0.1:8911/v1",
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_MODEL": "small",
    "UTTERSTREAM_LLM_TIMEOUT_S": "3",
    "UTTERSTREAM_LLM_MAX_ATTEMPTS": "2",
    "UTTERSTREAM_LLM_RATE_PER_S": "0.5",
    "UTTERSTREAM_LLM_MAX_CONCURRENCY": "1",
    "UTTERSTREAM_LLM_LIMITER_PREFIX": "rl-test:",
    "UTTERSTREAM_DATAFLOW_WORKERS": "3",
    "UTTERSTREAM_DATAFLOW_RECOVERY_DIR": "/recovery",
    "UTTERSTREAM_DATAFLOW_POLL_INTERVAL_S": "0.1",
    "UTTERSTREAM_DATAFLOW_SWEEP_INTERVAL_S": "1",
    "UTTERSTREAM_DATAFLOW_FLUSH_INTERVAL_S": "0.5",
    "UTTERSTREAM_DATAFLOW_CURRENT_FLUSH_S": "0.05",
    "UTTERSTREAM_DATAFLOW_BATCH_MAX_ITEMS": "50",
    "UTTERSTREAM_DATAFLOW_HELD_PARTITIONS": "10",
    "UTTERSTREAM_DATAFLOW_LATE_AFTER_S": "30",
    "UTTERSTREAM_DATAFLOW_FEED_OVERLAP_S": "6",
    "UTTERSTREAM_DATAFLOW_START_AT": "2026-01-31T09:30:00+05:30",
    "UTTERSTREAM_DATAFLOW_STOP_AT": "2026-02-01T00:00:00Z",
    "UTTERSTREAM_DATAFLOW_INSIGHT_SHARDS": "4",
    "UTTERSTREAM_DATAFLOW_INSIGHT_BATCH_SIZE": "16",
    "UTTERSTREAM_DATAFLOW_INSIGHT_BATCH_WAIT_S": "0.2",
    "UTTERSTREAM_DATAFLOW_FEED_BATCH_SIZE": "100",
    "UTTERSTREAM_LOG_LEVEL": "DEBUG",
    "UTTERSTREAM_LOG_FORMAT": "console",
    "PROMETHEUS_MULTIPROC_DIR": "/metrics",
    "UTTERSTREAM_UI_SESSION_TTL_S": "600",
}
# ...and what each section reads from them, field by field.
READ: dict[str, dict[str, object]] = {
    "cassandra": {
        "hosts": ("10.0.0.5", "10.0.0.6"),
        "port": 9043,
        "nodes": 3,
        "keyspace": "ks",
        "local_dc": "dc1",
        "replication": "NetworkTopologyStrategy:dc1=3",
        "request_timeout_s": 2.5,
        "connect_timeout_s": 1.0,
        "max_in_flight": 64,
    },
    "redis": {"url": "redis://cache:6380/2", "socket_timeout_s": 0.25, "flow_timeout_s": 3.0},
    "feed": {"shards": 16, "bucket_s": 30, "ttl_days": 3, "reader_lag_s": 0.0},
    "api": {
        "host": "0.0.0.0",
        "port": 8080,
        "workers": 4,
        "max_body_bytes": 1024,
        "max_batch_items": 50,
        "in_flight_timeout_s": 2.0,
        "idempotency_ttl_s": 86400,
        "retry_after_s": 3,
        "redis_failure_policy": "closed",
        "rate_lease_s": 0.0,
        "write_batches_in_flight": 0,
        "default_rate": 5.5,
        "default_burst": 10,
    },
    "live": {
        "max_connections": 5,
        "retention_s": 1800,
        "heartbeat_s": 5.0,
        "lease_s": 30.0,
        "renew_s": 10.0,
        "queue_size": 100,
        "send_timeout_s": 4.0,
        "ws_max_in_flight": 50,
        "ticket_ttl_s": 30,
        "publish_within_s": 2.0,
    },
    "llm": {
        "base_url": "http://127.0.0.1:8911/v1",
        "api_key": "sk-test",
        "model": "small",
        "timeout_s": 3.0,
        "max_attempts": 2,
        "rate_per_s": 0.5,
        "max_concurrency": 1,
        "limiter_prefix": "rl-test:",
    },
    "dataflow": {
        "workers": 3,
        "recovery_dir": "/recovery",
        "poll_interval_s": 0.1,
        "sweep_interval_s": 1.0,
        "current_flush_s": 0.05,
        "flush_interval_s": 0.5,
        "batch_max_items": 50,
        "held_partitions": 10,
        "late_after_s": 30.0,
        "feed_overlap_s": 6.0,
        "start_at": datetime(2026, 1, 31, 4, 0, tzinfo=UTC),
        "stop_at": datetime(2026, 2, 1, tzinfo=UTC),
        "insight_shards": 4,
        "insight_batch_size": 16,
        "insight_batch_wait_s": 0.2,
        "feed_batch_size": 100,
    },
    "log": {"level": "DEBUG", "format": "console"},
    "metrics": {"multiproc_dir": "/metrics"},
    "ui": {"session_ttl_s": 600},
}


def test_every_variable_is_read_into_its_setting() -> None:
    assert sorted(ENV) == sorted(env_name(section, field.name) for section, field in _fields())
    s = Settings.from_env(ENV)
    assert {section: msgspec.structs.asdict(getattr(s, section)) for section in READ} == READ


def test_a_local_cluster_is_reached_at_its_nodes_and_replicated_three_times() -> None:
    three = Settings.from_env({"UTTERSTREAM_CASSANDRA_NODES": "3"}).cassandra
    assert three.hosts == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert three.replication == "NetworkTopologyStrategy:datacenter1=3"
    five = Settings.from_env({"UTTERSTREAM_CASSANDRA_NODES": "5", "CASSANDRA_HOSTS": "10.0.0.5"})
    assert five.cassandra.hosts == ("10.0.0.5",)
    assert five.cassandra.replication == "NetworkTopologyStrategy:datacenter1=3"
    assert Settings.from_env({}).cassandra == Settings().cassandra


@pytest.mark.parametrize("section", Settings.__struct_fields__)
def test_a_section_is_read_from_its_own_variables(section: str) -> None:
    default = getattr(Settings(), section)
    s = Settings.from_env(
        {env_name(section, f): ENV[env_name(section, f)] for f in default.__struct_fields__}
    )
    assert msgspec.structs.asdict(getattr(s, section)) == READ[section]
    # Every other section keeps its defaults.
    assert s == msgspec.structs.replace(Settings(), **{section: getattr(s, section)})


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("API_PORT", "eighty", "Expected `int`"),
        ("API_PORT", "70000", "<= 65535"),
        ("CASSANDRA_PORT", "0", ">= 1"),
        ("CASSANDRA_HOSTS", " , ", "length >= 1"),
        ("UTTERSTREAM_API_WORKERS", "0", ">= 1"),
        ("UTTERSTREAM_API_MAX_BATCH_ITEMS", "1.5", "Expected `int`"),
        ("UTTERSTREAM_API_IDEMPOTENCY_TTL_S", "3600", ">= 86400"),
        ("UTTERSTREAM_API_REDIS_FAILURE_POLICY", "maybe", "one of: open, closed"),
        ("UTTERSTREAM_API_RATE_LEASE_S", "-0.1", ">= 0"),
        ("UTTERSTREAM_API_WRITE_BATCHES_IN_FLIGHT", "-1", ">= 0"),
        ("UTTERSTREAM_FEED_SHARDS", "-1", ">= 1"),
        ("UTTERSTREAM_REDIS_SOCKET_TIMEOUT_S", "0", "> 0"),
        ("UTTERSTREAM_LLM_RATE_PER_S", "fast", "Expected `float`"),
        ("UTTERSTREAM_DATAFLOW_START_AT", "yesterday", "datetime"),
        ("UTTERSTREAM_DATAFLOW_STOP_AT", "2026-01-01T00:00:00", "timezone"),
        ("UTTERSTREAM_LOG_LEVEL", "chatty", "one of: DEBUG, INFO"),
        ("UTTERSTREAM_LOG_FORMAT", "xml", "one of: json, console"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    message = str(refused.value)
    assert message.startswith(f"{variable}={value!r} is not a valid setting: "), message
    assert says in message, message
    assert "$." not in message


def test_every_field_has_one_variable_and_a_description() -> None:
    names = [
        env_name(section, field.name)
        for section, field in _fields()
        if field.type.extra_json_schema.get("description")
    ]
    assert len(names) == len(_fields())
    assert len(set(names)) == len(names)


def test_readme_lists_every_setting_as_defined() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- settings table: generated by `python -m runtime.settings` -->\n(.*?)"
        r"<!-- end of settings table -->",
        readme,
        re.DOTALL,
    )
    assert found, "README.md has no generated settings table"
    assert found[1] == markdown_table(), (
        "README.md's settings table is out of date: paste the output of "
        "`uv run python -m runtime.settings` between its markers"
    )
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", found[1], re.MULTILINE)
    assert listed == [env_name(section, field.name) for section, field in _fields()]


def test_the_table_is_printed_by_the_module() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "runtime.settings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == markdown_table()


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if readers.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == ["runtime/settings.py"]


def _fields() -> list[tuple[str, msgspec.inspect.Field]]:
    return [
        (section, field)
        for section in Settings.__struct_fields__
        for field in msgspec.inspect.type_info(type(getattr(Settings(), section))).fields
    ]
