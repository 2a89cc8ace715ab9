"""Provenance against real hosts: promotion gate, ledger + audit, drift verification, status --all."""

from __future__ import annotations

import json
import signal
import socket
import time

import toml
from helpers import cli, cli_popen, commit_change, current, release_dirs

from deployer.report import ledger


def two_stages(sandbox, app_repo, **extra):
    """4 hosts: staging = host-1, host-2; production = host-3, host-4 (requires staging)."""
    sb = sandbox(4, **extra)
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"].pop("sandbox")["hosts"]
    doc["stages"]["staging"] = {"hosts": hosts[:2]}
    doc["stages"]["production"] = {"hosts": hosts[2:], "requires": "staging"}
    sb.config_path.write_text(toml.dumps(doc))
    return sb


def audit(sb, stage):
    proc = cli(sb, "audit", "--stage", stage, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["entries"]


def test_promotion_gate(sandbox, app_repo):
    commit_change(app_repo, "ok.txt", "fine\n")
    sb = two_stages(sandbox, app_repo, verify={"command": "test -f ok.txt"})
    assert cli(sb, "build").returncode == 0
    d = json.loads(cli(sb, "artifacts", "--json").stdout)["artifacts"][0]

    # production before staging: refused, nothing uploaded
    proc = cli(sb, "deploy", "--stage", "production", "--version", d["version"])
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "must pass staging first" in proc.stderr
    for h in (2, 3):
        assert release_dirs(sb, h) == []
        assert sb.exec(h, "ls /srv/app/.deployer/cache")[0] != 0

    # staging deploys and verifies D → production allowed
    assert cli(sb, "deploy", "--stage", "staging", "--version", d["version"]).returncode == 0
    proc = cli(sb, "deploy", "--stage", "production", "--version", d["sha256"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed staging" in proc.stdout
    assert current(sb, 2) == "releases/1"

    # D2 fails verify on staging → refused for production
    (app_repo / "ok.txt").unlink()
    commit_change(app_repo, "other.txt", "d2\n")
    assert cli(sb, "deploy", "--stage", "staging").returncode == 1
    d2 = json.loads(cli(sb, "artifacts", "--json").stdout)["artifacts"][0]
    assert d2["version"] != d["version"]
    proc = cli(sb, "deploy", "--stage", "production", "--version", d2["version"])
    assert proc.returncode == 4 and "no successful, verified deploy" in proc.stderr

    # --force needs a reason; with one it passes (verify disabled for production) and audit shows it
    assert cli(sb, "deploy", "--stage", "production", "--version", d2["version"], "--force").returncode == 2
    doc = toml.loads(sb.config_path.read_text())
    doc["stages"]["production"]["verify"] = {"command": "true"}
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(
        sb,
        "deploy",
        "--stage",
        "production",
        "--version",
        d2["version"],
        "--force",
        "--reason",
        "hotfix INC-42 approved by ops lead",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = audit(sb, "production")
    forced = [e for e in entries if e.get("forced")]
    assert {e["host"] for e in forced} == {"host-3", "host-4"}
    assert all(e["reason"] == "hotfix INC-42 approved by ops lead" for e in forced)
    table = cli(sb, "audit", "--stage", "production").stdout
    assert "FORCED: hotfix INC-42 approved by ops lead" in table

    # staging's audit: one ok deploy of D, one rolled-back attempt of D2, on both hosts
    staging = audit(sb, "staging")
    assert [(e["result"], e["artifact_sha256"]) for e in staging if e["host"] == "host-1"] == [
        ("ok", d["sha256"]),
        ("rolled back", d2["sha256"]),
    ]
    assert all(e["who"] and e["time"].endswith("Z") for e in staging)
    assert cli(sb, "audit", "--stage", "staging", "--host", "host-2", "--since", "2000-01-01").returncode == 0
    assert cli(sb, "audit", "--stage", "staging", "--since", "yesterday").returncode == 2

    # one table of what runs where, stages in declared order
    proc = cli(sb, "status", "--all", "--json")
    rows = json.loads(proc.stdout)["hosts"]
    assert [(r["stage"], r["host"]) for r in rows] == [
        ("staging", "host-1"),
        ("staging", "host-2"),
        ("production", "host-3"),
        ("production", "host-4"),
    ]
    assert {r["version"] for r in rows if r["stage"] == "staging"} == {d["version"]}
    assert {r["version"] for r in rows if r["stage"] == "production"} == {d2["version"]}
    assert all(r["agree"] is True for r in rows)


def status_all(sb) -> tuple[str, list[dict]]:
    """status --all as text and as --json rows."""
    text = cli(sb, "status", "--all")
    assert text.returncode == 0, text.stdout + text.stderr
    proc = cli(sb, "status", "--all", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return text.stdout, json.loads(proc.stdout)["hosts"]


def differs(text: str) -> set[str]:
    """Hosts whose row of the text table says DIFFERS."""
    return {
        word for line in text.splitlines() if "DIFFERS" in line for word in line.split() if word.startswith("host-")
    }


def test_status_all_marks_a_stage_whose_hosts_disagree(sandbox, app_repo):
    sb = two_stages(sandbox, app_repo)
    for stage in ("staging", "production"):
        proc = cli(sb, "deploy", "--stage", stage)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    text, rows = status_all(sb)
    assert differs(text) == set() and all(r["agree"] is True for r in rows)

    # a new version on one staging host: staging differs, production still agrees
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    proc = cli(sb, "deploy", "--stage", "staging", "-H", "host-1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text, rows = status_all(sb)
    assert differs(text) == {"host-1", "host-2"}, text
    by_host = {r["host"]: r for r in rows}
    assert by_host["host-1"]["version"] != by_host["host-2"]["version"]
    assert [by_host[h]["agree"] for h in ("host-1", "host-2", "host-3", "host-4")] == [False, False, True, True]

    # the rest of staging catches up: agreement again
    proc = cli(sb, "deploy", "--stage", "staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text, rows = status_all(sb)
    assert differs(text) == set() and all(r["agree"] is True for r in rows), text


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_promotion_gate_needs_every_staging_host_and_refuses_when_one_cannot_be_read(sandbox, app_repo):
    """The gate asks every host of the required stage: D on host-1 alone is not enough, and a
    staging host that cannot be reached is a refusal (naming it), never a pass; --force
    --reason is the only way past it."""
    sb = two_stages(sandbox, app_repo)
    assert cli(sb, "build").returncode == 0
    d = json.loads(cli(sb, "artifacts", "--json").stdout)["artifacts"][0]

    def nothing_on_production():
        for h in (2, 3):
            assert release_dirs(sb, h) == []
            assert sb.exec(h, "ls /srv/app/.deployer/cache")[0] != 0

    # staging deployed on host-1 only: production refused, host-2 named, host-1 not
    proc = cli(sb, "deploy", "--stage", "staging", "--hosts", "host-1", "--version", d["version"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert current(sb, 0) == "releases/1" and release_dirs(sb, 1) == []
    proc = cli(sb, "deploy", "--stage", "production", "--version", d["version"])
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "staging/host-2: no successful, verified deploy" in proc.stderr and "staging/host-1" not in proc.stderr
    assert "(+" not in proc.stderr  # the one missing host, nothing else
    nothing_on_production()

    # D on both staging hosts, then host-2 unreachable (its port refuses): still refused, naming it
    assert cli(sb, "deploy", "--stage", "staging", "--hosts", "host-2", "--version", d["version"]).returncode == 0
    doc = toml.loads(sb.config_path.read_text())
    doc["stages"]["staging"]["hosts"][1]["port"] = free_port()
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "deploy", "--stage", "production", "--version", d["version"])
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "staging/host-2: cannot read its ledger" in proc.stderr and "staging/host-1" not in proc.stderr
    assert "Traceback" not in proc.stderr
    nothing_on_production()

    # --force without a reason is a usage error; with one it deploys and the ledger says so
    assert cli(sb, "deploy", "--stage", "production", "--version", d["version"], "--force").returncode == 2
    nothing_on_production()
    reason = "staging host-2 down, D verified there before"
    proc = cli(sb, "deploy", "--stage", "production", "--version", d["version"], "--force", "--reason", reason)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate: FORCED past staging (staging/host-2: cannot read its ledger" in proc.stdout
    assert current(sb, 2) == current(sb, 3) == "releases/1"
    forced = [e for e in audit(sb, "production") if e.get("forced")]
    assert sorted((e["host"], e["reason"], e["artifact_sha256"]) for e in forced) == [
        ("host-3", reason, d["sha256"]),
        ("host-4", reason, d["sha256"]),
    ]


def test_drift_verification_names_host_and_file(sandbox, app_repo):
    sb = sandbox(3, app={"shared_dirs": ["log"]})
    assert cli(sb, "deploy").returncode == 0
    proc = cli(sb, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sb.exec(
        1,
        "echo hacked >> /srv/app/current/app.py; touch /srv/app/current/backdoor.sh; "
        "echo fine > /srv/app/shared/log/app.log",
    )
    proc = cli(sb, "verify", "--json")
    assert proc.returncode == 1
    rows = {r["host"]: r for r in json.loads(proc.stdout)["hosts"]}
    assert rows["host-1"]["result"] == "ok" and rows["host-3"]["result"] == "ok"
    assert rows["host-2"]["result"] == "drift"
    assert rows["host-2"]["modified"] == ["app.py"] and rows["host-2"]["added"] == ["backdoor.sh"]
    assert "host-2" in proc.stderr
    proc = cli(sb, "status", "--all", "--drift")
    assert "DRIFT" in proc.stdout


def test_ledger_survives_sigkill_mid_run(sandbox, app_repo, tmp_path):
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "big.bin", "x" * 5_000_000)
    proc = cli_popen(sb, "deploy")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            sb.exec(0, "ls -A /srv/app/.deployer/cache /srv/app/releases")[1].count(".") > 3
            or ".part-" in sb.exec(0, "ls -A /srv/app/.deployer/cache")[1]
            or ".tmp-" in sb.exec(0, "ls -A /srv/app/releases")[1]
        ):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for h in sb.hosts:
        code, text = sb.exec(h, "cat /srv/app/.deployer/ledger.jsonl")
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and all(json.loads(line)["action"] for line in lines)
        assert len(ledger.parse(text)) == len(lines)
    # the stale lock is reported, cleared, and the next deploy records itself too
    proc = cli(sb, "deploy")
    assert proc.returncode in (0, 3)
    if proc.returncode == 3:
        assert cli(sb, "unlock", "--yes").returncode == 0
        assert cli(sb, "deploy").returncode == 0
    entries = json.loads(cli(sb, "audit", "--json").stdout)["entries"]
    assert [e["action"] for e in entries if e["host"] == "host-1"][-1] == "deploy"
    assert entries[-1]["result"] == "ok"
