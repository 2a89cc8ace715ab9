"""The schema is the one declaration of every key; hosts.example.toml and the settings follow it.

Convention in hosts.example.toml: a commented-out `# key = value` line under a table shows that key
at its default; a live line shows an example value (never the default: that would be commented out).
"""

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deployer.config import load, schema, settings
from deployer.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "hosts.example.toml"
COMMENTED = re.compile(r"^#\s?([a-z_]+)\s*=\s*(.+)$")
HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
ALL_TABLES = {**schema.TABLES, "env.KEY": schema.SECRET}


def table_of(header: str) -> str:
    """A [header] of the example as a schema.TABLES name."""
    parts = header.split(".")
    if parts[0] == "hooks":
        return "hooks.POINT"
    if parts[0] == "stages":
        return "stages.NAME"
    return header


def live_keys(doc: dict) -> list[tuple[str, str, object]]:
    """(schema table, key, value) of every key the example sets."""
    out = []

    def add(table: str, body: dict) -> None:
        out.extend((table, k, v) for k, v in body.items())

    def pipeline(body: dict) -> None:
        for name in ("migrate", "smoke", "verify", "restart", "notify"):
            if name in body:
                add(name, body[name])
        for entries in body.get("hooks", {}).values():
            for entry in entries if isinstance(entries, list) else [entries]:
                add("hooks.POINT", entry)

    def env(body: dict) -> None:
        for value in body.values():
            if isinstance(value, dict):
                add("env.KEY", value)

    for name in ("app", "build", "ssh", "store", "canary", "analysis"):
        add(name, doc.get(name, {}))
    for entry in doc.get("analysis", {}).get("metrics", []):
        add("analysis.metrics", entry)
    pipeline(doc)
    env(doc.get("env", {}))
    for stage in doc["stages"].values():
        add("stages.NAME", stage)
        for name in ("app", "ssh"):
            add(name, stage.get(name, {}))
        pipeline(stage)
        env(stage.get("env", {}))
        for role_env in stage.get("role_env", {}).values():
            env(role_env)
        for entry in stage.get("hosts", []):
            if isinstance(entry, dict):
                add("stages.NAME.hosts", entry)
                env(entry.get("env", {}))
    return out


def commented_keys(text: str) -> list[tuple[str, str, object, int]]:
    """(schema table, key, value, line) of every commented-out `# key = value` line."""
    out, table = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        if header := HEADER.match(line):
            table = table_of(header.group(1))
        elif found := COMMENTED.match(line):
            key, value = found.groups()
            out.append((table, key, tomllib.loads(f"v = {value}")["v"], number))
    return out


def test_example_parses():
    cfg = load.parse(EXAMPLE.read_text(), EXAMPLE)
    assert list(cfg.stages) == ["staging", "canary", "production"]
    prod = cfg.stage("production")
    assert prod.pipeline.verify.retries == 5 and prod.pipeline.migrate.role == "migrate"
    assert [h.point for h in prod.pipeline.hooks] == ["after_prepare", "before_switch", "after_verify"]


def test_example_commented_lines_are_the_schema_defaults():
    commented = commented_keys(EXAMPLE.read_text())
    assert len(commented) > 20
    for table, key, value, line in commented:
        assert table in ALL_TABLES and key in ALL_TABLES[table], f"line {line}: {table}.{key} is not a key"
        entry = ALL_TABLES[table][key]
        assert entry.default is not None, f"line {line}: {table}.{key} has no default to show commented out"
        assert value == entry.default, f"line {line}: {table}.{key} = {value!r}, default {entry.default!r}"


def test_example_live_lines_are_known_and_not_defaults():
    for table, key, value in live_keys(tomllib.loads(EXAMPLE.read_text())):
        assert key in ALL_TABLES[table], f"{table}.{key}"
        assert value != ALL_TABLES[table][key].default, f"{table}.{key} = {value!r} is the default: comment it out"


def test_example_shows_every_key():
    text = EXAMPLE.read_text()
    shown = {(t, k) for t, k, _ in live_keys(tomllib.loads(text))} | {(t, k) for t, k, _, _ in commented_keys(text)}
    missing = [f"{t}.{k}" for t, keys in ALL_TABLES.items() for k in keys if (t, k) not in shown]
    assert missing == []


@pytest.mark.parametrize(
    "cls, table, renamed",
    [
        (settings.AppSettings, schema.APP, {}),
        (settings.BuildSettings, schema.BUILD, {}),
        (settings.SSHSettings, schema.SSH, {}),
        (settings.Hook, schema.HOOK, {}),
        (settings.MigrateSettings, schema.MIGRATE, {}),
        (settings.VerifySettings, schema.VERIFY, {"run_from": "from"}),
        (settings.RestartSettings, schema.RESTART, {}),
        (settings.NotifySettings, schema.NOTIFY, {}),
        (settings.StoreSettings, schema.STORE, {}),
        (settings.CanarySettings, schema.CANARY, {}),
    ],
)
def test_settings_defaults_are_the_schema_defaults(cls, table, renamed):
    for f in dataclasses.fields(cls):
        key = renamed.get(f.name, f.name)
        if key in table and f.default is not dataclasses.MISSING:
            shown = str(f.default) if isinstance(f.default, Path) else f.default
            assert shown == schema.default(table, key) or table[key].default is None, key


@pytest.mark.parametrize(
    "where, key, bad",
    [
        ("ssh", "port", 0),
        ("ssh", "persist", schema.MAX_PERSIST + 1),
        ("ssh", "keepalive", 0),
        ("app", "lock_ttl", True),
        ("verify", "from", "moon"),
        ("verify", "status", 42),
        ("verify", "interval", -1),
        ("notify", "timeout", 0),
        ("ssh", "host_key_policy", "never"),
    ],
)
def test_ranges_and_choices_come_from_the_schema(tmp_path, where, key, bad):
    value = f'"{bad}"' if isinstance(bad, str) else str(bad).lower()
    table = "" if where == "app" else f"[{where}]\n"
    text = f'[app]\ndeploy_to = "/srv/a"\n{table}{key} = {value}\n[stages.s]\nhosts = ["h"]\n'
    with pytest.raises(ConfigError) as err:
        load.parse(text, tmp_path / "hosts.toml")
    expected = dict(schema.TABLES)[where][key].expected
    line = 3 if where == "app" else 4
    assert str(err.value) == f"{tmp_path / 'hosts.toml'}:{line}: {where}.{key}: expected {expected}, got {bad!r}"


def test_config_keys_rows_cover_every_key():
    rows = schema.rows()
    assert len(rows) == sum(len(t) for t in schema.TABLES.values())
    by_key = {r["key"]: r for r in rows}
    assert by_key["app.keep_releases"] == {
        "key": "app.keep_releases",
        "type": "integer",
        "default": "5",
        "doc": schema.APP["keep_releases"].doc,
    }
    assert by_key["app.deploy_to"]["default"] == "(required)" and by_key["ssh.port"]["default"] == "-"
    assert by_key["notify.events"]["default"] == '["started", "succeeded", "failed", "rolled back"]'


def test_config_keys_command_prints_every_key_without_a_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != load.ENV_VAR}
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "config.keys"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines()[2:]}
    assert listed == {r["key"] for r in schema.rows()}


@pytest.mark.parametrize(
    "text, problem",
    [
        ('[app]\nname = "a"\n[stages.s]\nhosts = ["h"]\n', "1: app.deploy_to: missing (expected an absolute path)"),
        (
            '[app]\ndeploy_to = "/a"\n[stages.s]\nhosts = [{ name = "x" }]\n',
            "4: stages.s.hosts[0].host: missing (expected a host name or address)",
        ),
        (
            '[app]\ndeploy_to = "/a"\n[env]\nK = { roles = ["web"] }\n[stages.s]\nhosts = ["h"]\n',
            "4: env.K.secret: missing (expected env:NAME, file:PATH or cmd:COMMAND)",
        ),
        (
            '[app]\ndeploy_to = "/a"\n[migrate]\nrole = "db"\n[stages.s]\nhosts = ["h"]\n',
            "3: migrate.command: missing (expected a shell command)",
        ),
    ],
)
def test_required_keys_come_from_the_schema(text, problem):
    with pytest.raises(ConfigError) as err:
        load.parse(text, Path("hosts.toml"))
    assert str(err.value) == f"hosts.toml:{problem}"


def test_a_stage_override_needs_no_required_key():
    text = '[app]\ndeploy_to = "/a"\n[stages.s]\nhosts = ["h"]\napp = { keep_releases = 2 }\n'
    assert load.parse(text, Path("hosts.toml")).stage("s").app.keep_releases == 2
