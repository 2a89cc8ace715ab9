"""hosts.toml validation: good shapes parse, bad ones give exit 2 and one clear line."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deployer.config import load as config
from deployer.errors import ConfigError

GOOD = textwrap.dedent("""
    [app]
    name = "shop"
    deploy_to = "/srv/shop"
    keep_releases = 3
    shared_dirs = ["log", "tmp/pids"]
    shared_files = [".env"]
    [build]
    source = "."
    [ssh]
    user = "deploy"
    key = "keys/id"
    connect_timeout = 5
    [stages.staging]
    hosts = ["stage-1.example.com", "ops@stage-2.example.com:2200"]
    [stages.production]
    app = { keep_releases = 10 }
    ssh = { user = "prod" }
    hosts = [ { host = "web-1.example.com", roles = ["web"] },
              { host = "db-1.example.com", port = 2222, roles = ["migrate"], name = "db" } ]
""")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_good_config_parses_with_overrides(tmp_path):
    cfg = config.parse(GOOD, tmp_path / "hosts.toml")
    assert cfg.app.deploy_to == "/srv/shop"
    assert cfg.app.shared_dirs == ("log", "tmp/pids")
    staging = cfg.stage("staging")
    assert [h.name for h in staging.hosts] == ["stage-1.example.com", "stage-2.example.com:2200"]
    assert staging.hosts[1].user == "ops" and staging.hosts[1].port == 2200
    assert staging.hosts[0].user == "deploy" and staging.hosts[0].port == 22
    assert staging.hosts[0].ssh.key == str((tmp_path / "keys/id").resolve())
    prod = cfg.stage("production")
    assert prod.app.keep_releases == 10 and cfg.app.keep_releases == 3
    assert cfg.app.lock_ttl == 120  # a lock unrenewed for 2 minutes is stale
    assert prod.hosts[0].user == "prod"
    assert prod.hosts[1].name == "db" and prod.hosts[1].port == 2222 and prod.hosts[1].roles == ("migrate",)
    assert [h.name for h in prod.select(roles=["web"])] == ["web-1.example.com"]
    assert [h.name for h in prod.select(names=["db"])] == ["db"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (("keep_releases = 3", "keep_releases = 3\ncolour = 1"), "app.colour: unknown key"),
        (("keep_releases = 3", 'keep_releases = "five"'), "app.keep_releases: expected an integer"),
        (("keep_releases = 3", "keep_releases = 0"), "app.keep_releases: expected an integer >= 1"),
        (
            ("keep_releases = 3", 'keep_releases = 3\nhardlink_releases = "yes"'),
            "app.hardlink_releases: expected true or false",
        ),
        (
            ("keep_releases = 3", "keep_releases = 3\nlock_ttl = 0"),
            "app.lock_ttl: expected a whole number of seconds >= 1",
        ),
        (
            ("keep_releases = 3", "keep_releases = 3\nlock_ttl = -5"),
            "app.lock_ttl: expected a whole number of seconds >= 1",
        ),
        (("keep_releases = 3", "keep_releases = 3\nlock_ttl = 1.5"), "app.lock_ttl: expected a whole number"),
        (("keep_releases = 3", "keep_releases = 3\nlock_ttl = true"), "app.lock_ttl: expected a whole number"),
        (('deploy_to = "/srv/shop"\n', ""), "app.deploy_to: missing"),
        (('deploy_to = "/srv/shop"', 'deploy_to = "srv/shop"'), "app.deploy_to: expected an absolute"),
        (('deploy_to = "/srv/shop"', 'deploy_to = "/srv/../etc"'), "app.deploy_to: expected an absolute"),
        (('deploy_to = "/srv/shop"', 'deploy_to = "/srv/sh\\u0000op"'), "app.deploy_to: contains a NUL byte"),
        (('deploy_to = "/srv/shop"', 'deploy_to = "/srv/sh\\nop"'), "app.deploy_to: must not contain newlines"),
        (("connect_timeout = 5", 'connect_timeout = "5"'), "ssh.connect_timeout: expected seconds"),
        (('user = "deploy"', 'host_key_policy = "yes"'), "ssh.host_key_policy: expected one of strict, accept-new"),
        (('shared_files = [".env"]', 'shared_files = ["../etc/passwd"]'), "app.shared_files"),
        (('shared_files = [".env"]', 'shared_files = [".deployer/x"]'), "reserved"),
        (("port = 2222", "port = 70000"), "port"),
        (
            ('shared_files = [".env"]', 'shared_files = ["log/app.log"]'),
            "app.shared_files: 'log/app.log' overlaps shared_dirs 'log'",
        ),
        (
            ('shared_dirs = ["log", "tmp/pids"]', 'shared_dirs = ["tmp", "tmp/pids"]'),
            "app.shared_dirs: 'tmp/pids' overlaps shared_dirs 'tmp'",
        ),
        (('shared_files = [".env"]', 'shared_files = ["log"]'), "app.shared_files: 'log' overlaps shared_dirs 'log'"),
        (('shared_files = [".env"]', 'env_file = "log/.env"'), "app.env_file: 'log/.env' overlaps shared_dirs 'log'"),
        (
            ('shared_files = [".env"]', 'shared_files = [".env/x"]'),
            "app.env_file: '.env' overlaps shared_files '.env/x'",
        ),
        (
            ("app = { keep_releases = 10 }", 'app = { shared_files = ["tmp/pids/x"] }'),
            "stages.production.app.shared_files: 'tmp/pids/x' overlaps shared_dirs 'tmp/pids'",
        ),
        (("[build]", "[bild]"), "bild: unknown table"),
        (('hosts = ["stage-1.example.com", "ops@stage-2.example.com:2200"]', "hosts = []"), "stages.staging.hosts"),
        (('"stage-1.example.com"', '"stage-1.example.com:abc"'), "bad port"),
        (("[app]", "[app"), "invalid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        config.parse(GOOD.replace(old, new, 1), tmp_path / "hosts.toml")
    message = str(info.value)
    assert expected in message
    assert "hosts.toml" in message and "\n" not in message


def test_unknown_stage_names_the_known_ones(tmp_path):
    cfg = config.parse(GOOD, tmp_path / "hosts.toml")
    with pytest.raises(ConfigError, match="no stage 'prod' .did you mean production.. .stages: staging, production"):
        cfg.stage("prod")


def test_config_path_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts.toml").write_text(GOOD)
    (tmp_path / "other.toml").write_text(GOOD)
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    assert config.find_config_path() == Path("hosts.toml")
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "other.toml"))
    assert config.find_config_path() == tmp_path / "other.toml"
    assert config.find_config_path("hosts.toml") == Path("hosts.toml")
    with pytest.raises(ConfigError, match="not found"):
        config.find_config_path("missing.toml")


def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop(config.ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace('deploy_to = "/srv/shop"\n', ""), "deploy_to: missing"),
        (GOOD.replace('deploy_to = "/srv/shop"', 'deploy_to = "relative"'), "deploy_to: expected an absolute"),
        (GOOD.replace("keep_releases = 3", "keep_releases = 3\nbogus = true"), "app.bogus: unknown key"),
        (GOOD.replace("connect_timeout = 5", 'connect_timeout = "soon"'), "ssh.connect_timeout"),
        (GOOD.replace('shared_files = [".env"]', 'shared_files = ["log/app.log"]'), "'log/app.log' overlaps"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path, text, expected):
    write(tmp_path, text)
    proc = _cli(tmp_path, "status", "--stage", "staging")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "hosts.toml" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_unknown_stage_and_missing_file_exit_2(tmp_path):
    proc = _cli(tmp_path, "status", "--stage", "nope")
    assert proc.returncode == 2 and "not found" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    write(tmp_path, GOOD)
    proc = _cli(tmp_path, "status", "--stage", "nope")
    assert proc.returncode == 2 and "no stage 'nope'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_pipeline_tables_validate(tmp_path):
    base = GOOD + '\n[verify]\nurl = "ftp://x"\n'
    with pytest.raises(ConfigError, match="verify.url: expected an http"):
        config.parse(base, tmp_path / "hosts.toml")
    with pytest.raises(ConfigError, match="unknown hook point"):
        config.parse(GOOD + '\n[[hooks.after_lunch]]\ncommand = "x"\n', tmp_path / "hosts.toml")
    with pytest.raises(ConfigError, match="exactly one of command, local, python"):
        config.parse(GOOD + '\n[[hooks.after_prepare]]\ncommand = "x"\nlocal = "y"\n', tmp_path / "hosts.toml")
    with pytest.raises(ConfigError, match="unknown event"):
        config.parse(GOOD + '\n[notify]\nevents = ["lunch"]\n', tmp_path / "hosts.toml")


def test_recipe_defaults_under_user_keys(tmp_path, monkeypatch):
    import sys
    import types

    fake = types.ModuleType("deployer.recipes.fake_for_test")
    fake.DEFAULTS = {
        "app": {"shared_dirs": ["venv-cache"], "keep_releases": 9},
        "restart": {"command": "kill -HUP 1"},
        "hooks": {"after_prepare": [{"command": "recipe-step"}]},
    }
    monkeypatch.setitem(sys.modules, "deployer.recipes.fake_for_test", fake)
    import pkgutil

    real = pkgutil.iter_modules
    monkeypatch.setattr(
        pkgutil, "iter_modules", lambda path=None: [*real(path), types.SimpleNamespace(name="fake_for_test")]
    )
    text = (
        GOOD.replace('name = "shop"', 'name = "shop"\nrecipe = "fake_for_test"')
        + '\n[[hooks.after_prepare]]\ncommand = "user-step"\n'
    )
    cfg = config.parse(text, tmp_path / "hosts.toml")
    assert cfg.app.keep_releases == 3 and cfg.app.shared_dirs == ("log", "tmp/pids")
    assert cfg.pipeline.restart.command == "kill -HUP 1"
    assert [h.command for h in cfg.pipeline.hooks] == ["recipe-step", "user-step"]
    with pytest.raises(ConfigError, match="unknown recipe 'nope' .recipes: .*generic"):
        config.parse(GOOD.replace('name = "shop"', 'name = "shop"\nrecipe = "nope"'), tmp_path / "hosts.toml")


def _hosts(entries: str) -> tuple:
    text = f'[app]\ndeploy_to = "/srv/a"\n[stages.s]\nhosts = {entries}\n'
    return config.parse(text, Path("hosts.toml")).stage("s").hosts


def test_ipv6_host_strings():
    a, b, c, d, e = _hosts(
        '["[::1]:2200", "deploy@[2001:db8::1]:22", "::1", "[fe80::2]", { host = "[::2]", port = 2201 }]'
    )
    assert (a.address, a.port, a.user, a.name) == ("::1", 2200, None, "[::1]:2200")
    assert (b.address, b.port, b.user, b.name) == ("2001:db8::1", 22, "deploy", "2001:db8::1")
    assert (c.address, c.port, c.name) == ("::1", 22, "::1")  # bare: the whole string is the address
    assert (d.address, d.port) == ("fe80::2", 22)
    assert (e.address, e.port, e.name) == ("::2", 2201, "[::2]:2201")


@pytest.mark.parametrize("entry", ["[::1]:x", "[::1", "[::1]2200", "[]:22", "host:", "u@h:22x"])
def test_bad_host_strings_are_one_line_each(entry):
    with pytest.raises(ConfigError) as err:
        _hosts(f'["{entry}"]')
    assert len(str(err.value).splitlines()) == 1 and "stages.s.hosts[0]" in str(err.value)


def test_every_problem_reported_at_once_with_suggestions_and_lines():
    text = textwrap.dedent("""\
        [app]
        deploy_to = "/srv/a"
        keep_relases = 2
        [sssh]
        user = "x"
        [verify]
        retries = "three"
        [stages.s]
        hosts = ["a"]
        ssh = { prot = 22 }
        [stages.t]
        hosts = [ { host = "b", rolez = ["web"] } ]
        """)
    with pytest.raises(ConfigError) as err:
        config.parse(text, Path("h.toml"))
    assert str(err.value).splitlines() == [
        "h.toml:4: sssh: unknown table (did you mean ssh?)",
        "h.toml:3: app.keep_relases: unknown key (did you mean keep_releases?)",
        "h.toml:7: verify.retries: expected an integer >= 1, got 'three'",
        "h.toml:10: stages.s.ssh.prot: unknown key (did you mean port?)",
        "h.toml:12: stages.t.hosts[0].rolez: unknown key (did you mean roles?)",
    ]


def test_locate_finds_keys_tables_and_inline_tables():
    text = '[app]\nname = "x"\n\n[stages."prod"]\nhosts = [\n  { host = "a" },\n  { host = "b", prot = 1 },\n]\n'
    assert config.locate(text, "app.name") == 2
    assert config.locate(text, "app.missing") == 1  # the table it belongs in
    assert config.locate(text, "stages.prod.hosts[1].prot") == 7
    assert config.locate(text, "stages.prod") == 4
    assert config.locate(text, "nowhere") is None
