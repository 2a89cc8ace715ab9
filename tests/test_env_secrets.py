"""Per-stage env, secrets, host discovery and run_as against real hosts."""

from __future__ import annotations

import json
import sys
import threading
import time

import toml

from helpers import cli, current, release_dirs

SECRET = "s3cr3t-Value-7f9a"


def staged(sandbox, **extra):
    """host-1 (web, migrate), host-2 (web) = staging; host-3 (web), host-4 (worker) = production."""
    sb = sandbox(4, **extra)
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"].pop("sandbox")["hosts"]
    hosts[3]["roles"] = ["worker"]
    doc["env"] = {"LOG_LEVEL": "info", "API_KEY": {"secret": "env:TEST_API_KEY", "roles": ["web"]}}
    doc["stages"]["staging"] = {"hosts": hosts[:2], "env": {"DATABASE_URL": "postgres://staging-db/app"}}
    doc["stages"]["production"] = {"hosts": hosts[2:], "env": {"DATABASE_URL": "postgres://prod-db/app"},
                                   "role_env": {"worker": {"QUEUE": "jobs high"}}}
    sb.config_path.write_text(toml.dumps(doc))
    return sb


def env_of(sb, host) -> tuple[str, str]:
    code, text = sb.exec(host, "cat /srv/app/current/.env")
    code, mode = sb.exec(host, "stat -L -c %a /srv/app/current/.env")
    return text, mode.strip()


def test_stage_env_differs_secret_only_on_role_hosts_and_never_leaks(sandbox, monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", SECRET)
    sb = staged(sandbox, hooks={"after_prepare": [{"command": "sleep 1"}]})
    seen_in_ps: list[str] = []
    stop = threading.Event()

    def sample_ps():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            for h in sb.hosts:
                _, out = sb.exec(h, "ps -eo args")
                if SECRET in out:
                    seen_in_ps.append(out)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample_ps, daemon=True)
    sampler.start()
    outputs = []
    for stage in ("staging", "production"):
        dry = cli(sb, "deploy", "--stage", stage, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        proc = cli(sb, "deploy", "--stage", stage)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs += [dry.stdout, dry.stderr, proc.stdout, proc.stderr]
    stop.set()
    sampler.join(10)

    staging, mode = env_of(sb, 0)
    assert mode == "600"
    assert "DATABASE_URL=postgres://staging-db/app" in staging and f"API_KEY={SECRET}" in staging
    assert "LOG_LEVEL=info" in staging
    prod_web, _ = env_of(sb, 2)
    assert "DATABASE_URL=postgres://prod-db/app" in prod_web and f"API_KEY={SECRET}" in prod_web
    worker, _ = env_of(sb, 3)
    assert "API_KEY" not in worker and 'QUEUE="jobs high"' in worker
    # the same artifact everywhere
    assert len({sb.exec(h, "cat /srv/app/current/REVISION")[1] for h in sb.hosts}) == 1

    assert not seen_in_ps, "secret visible in the host's process list"
    assert all(SECRET not in text for text in outputs)
    for h in sb.hosts:
        _, ledger_text = sb.exec(h, "cat /srv/app/.deployer/ledger.jsonl")
        assert ledger_text and SECRET not in ledger_text
    audit = cli(sb, "audit", "--stage", "production")
    assert SECRET not in audit.stdout


def test_missing_secret_fails_before_any_host_is_touched(sandbox, monkeypatch):
    monkeypatch.delenv("TEST_API_KEY", raising=False)
    sb = staged(sandbox)
    proc = cli(sb, "deploy", "--stage", "staging")
    assert proc.returncode == 2
    assert "secret API_KEY: environment variable TEST_API_KEY is not set" in proc.stderr
    for h in sb.hosts:
        assert sb.exec(h, "ls /srv/app")[0] != 0


def test_config_push_and_diff(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_API_KEY", SECRET)
    sb = staged(sandbox)
    assert cli(sb, "deploy", "--stage", "staging").returncode == 0
    doc = toml.loads(sb.config_path.read_text())
    doc["stages"]["staging"]["env"]["DATABASE_URL"] = "postgres://staging-db-2/app"
    doc["stages"]["staging"]["env"]["FEATURE_X"] = "on"
    sb.config_path.write_text(toml.dumps(doc))
    monkeypatch.setenv("TEST_API_KEY", SECRET + "-rotated")
    proc = cli(sb, "config.diff", "--stage", "staging", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    changes = {(r["host"], r["key"]): r for r in rows}
    assert changes[("host-1", "DATABASE_URL")]["would write"] == "postgres://staging-db-2/app"
    assert changes[("host-1", "FEATURE_X")]["change"] == "added"
    assert changes[("host-1", "API_KEY")]["on host"] == "(secret)"
    assert SECRET not in proc.stdout
    before = release_dirs(sb, 0)
    proc = cli(sb, "config.push", "--stage", "staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert release_dirs(sb, 0) == before
    text, mode = env_of(sb, 0)
    assert "postgres://staging-db-2/app" in text and f"API_KEY={SECRET}-rotated" in text and mode == "600"
    entries = json.loads(cli(sb, "audit", "--stage", "staging", "--json").stdout)
    pushed = [e for e in entries if e["action"] == "config"]
    assert len(pushed) == 2 and all(len(e["env_sha256"]) == 64 for e in pushed)
    assert SECRET not in json.dumps(entries)
    assert cli(sb, "config.diff", "--stage", "staging").stdout.strip().endswith("no differences")


def test_hosts_command_inventory(sandbox, tmp_path):
    sb = sandbox(2)
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"]["sandbox"].pop("hosts")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"hosts": hosts}))
    doc["stages"]["sandbox"]["hosts_command"] = f"{sys.executable} -c \"import sys; print(open('{inventory}').read())\""
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "hosts", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [h["name"] for h in json.loads(proc.stdout)] == ["host-1", "host-2"]
    assert cli(sb, "deploy").returncode == 0
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    inventory.write_text(json.dumps([{"host": "bad host"}]))
    proc = cli(sb, "hosts")
    assert proc.returncode == 2 and "stages.sandbox.hosts[0].host" in proc.stderr


def test_run_as_and_sudo_needing_a_password_fails_fast(sandbox):
    sb = sandbox(2, app={"run_as": "app"}, smoke={"command": "id -un > /tmp/smoke-user"})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sb.exec(0, "cat /tmp/smoke-user")[1].strip() == "app"
    doc = toml.loads(sb.config_path.read_text())
    doc["app"]["run_as"] = "root"        # deploy may not sudo to root: sudo would want a password
    sb.config_path.write_text(toml.dumps(doc))
    started = time.monotonic()
    proc = cli(sb, "deploy", timeout=60)
    assert time.monotonic() - started < 10
    assert proc.returncode == 1 and "a password is required" in proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
