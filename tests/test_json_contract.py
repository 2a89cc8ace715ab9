"""The --json contract against real hosts: in every outcome (success, host failure, lock held,
gate refused, bad config, bad command line, Ctrl-C) stdout holds exactly one JSON document that
docs/result.schema.json accepts, whose exit_code is the process's; human text goes to stderr."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace

import jsonschema
import pytest
import toml
from helpers import REPO, cli, cli_env, cli_popen, commit_change, wait_until

SCHEMA = json.loads((REPO / "docs" / "result.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
FAIL_SMOKE = 'test ! -f /tmp/fail-smoke || { echo "smoke broke" >&2; exit 3; }'


def document(proc: subprocess.CompletedProcess, task: str, result: str) -> dict:
    """The one document on stdout, valid against the schema, matching the process's exit code."""
    doc = json.loads(proc.stdout)  # the whole of stdout: one document, nothing else
    VALIDATOR.validate(doc)
    assert (doc["task"], doc["result"], doc["exit_code"]) == (task, result, proc.returncode), proc.stderr
    if result != "ok":
        assert proc.stderr.strip(), "the human error line goes to stderr"
    return doc


def test_schema_is_valid_and_strict():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    good = {"task": "status", "result": "ok", "exit_code": 0, "error": None, "stage": "s", "hosts": []}
    VALIDATOR.validate(good)
    for code in (130, 143, 129):  # Ctrl-C, SIGTERM, SIGHUP
        VALIDATOR.validate({**good, "result": "interrupted", "exit_code": code, "error": "interrupted (SIGTERM)"})
    for bad in (
        {**good, "result": "failed"},  # failed with exit 0 and no error
        {**good, "result": "interrupted", "exit_code": 1, "error": "x"},
        {**good, "hosts": [{"host": "a", "error": None, "git sha": "ab"}]},  # key with a space
        {**good, "hosts": [{"host": "a", "error": None, "complete_releases": "3"}]},  # number as text
        {
            **good,
            "artifacts": [
                {
                    "version": "v",
                    "git_sha": None,
                    "sha256": "abc123def456",
                    "size": 1,
                    "files": 1,
                    "built_at": None,
                    "built_by": None,
                    "dirty": False,
                }
            ],
        },
        {**good, "hosts": [{"host": "a", "error": None, "deployed_at": "2026-01-01 10:00"}]},
        {**good, "hosts": [{"host": "a", "error": None, "canary_steps": [{"percent": 0, "share": 0, "at": None}]}]},
    ):
        assert not VALIDATOR.is_valid(bad), bad


def two_stages(sb):
    """staging = host-1, production = host-2 (requires staging)."""
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"].pop("sandbox")["hosts"]
    doc["stages"]["staging"] = {"hosts": hosts[:1]}
    doc["stages"]["production"] = {"hosts": hosts[1:], "requires": "staging"}
    sb.config_path.write_text(toml.dumps(doc))


def test_every_outcome_is_one_valid_document(sandbox, app_repo, tmp_path):
    sb = sandbox(2, smoke={"command": FAIL_SMOKE}, env={"API_KEY": "plain-value"})
    two_stages(sb)

    # gate refused: production before staging
    doc = document(cli(sb, "deploy", "-s", "production", "--json"), "deploy", "refused")
    assert "must pass staging first" in doc["error"] and doc["exit_code"] == 4

    # success, with full digests, numbers as numbers
    proc = cli(sb, "deploy", "-s", "staging", "--json")
    doc = document(proc, "deploy", "ok")
    assert len(doc["sha256"]) == 64 and len(doc["git_sha"]) == 40 and doc["release"] == 1
    [host] = doc["hosts"]
    assert (host["host"], host["result"], host["release"], host["error"]) == ("host-1", "ok", 1, None)
    assert all(isinstance(v, float) for v in host["seconds"].values()) and "prepare" in host["seconds"]
    assert "prepare" in proc.stderr  # progress is human text: stderr

    # the read-only tasks
    doc = document(cli(sb, "status", "-s", "staging", "--json"), "status", "ok")
    assert doc["hosts"][0]["current"] == 1 and doc["hosts"][0]["lock"] is None
    assert doc["hosts"][0]["deployed_at"].endswith("Z")
    doc = document(cli(sb, "releases", "-s", "staging", "--json"), "releases", "ok")
    assert [r["release"] for r in doc["hosts"][0]["releases"]] == [1]
    assert doc["hosts"][0]["releases"][0]["current"] is True
    doc = document(cli(sb, "check", "-s", "staging", "--json"), "check", "ok")
    assert doc["hosts"][0]["ssh"] is True and doc["hosts"][0]["free_bytes"] > 0
    document(cli(sb, "verify", "-s", "staging", "--json"), "verify", "ok")
    doc = document(cli(sb, "audit", "-s", "staging", "--json"), "audit", "ok")
    assert [e["action"] for e in doc["entries"]] == ["deploy"]
    doc = document(cli(sb, "artifacts", "--json"), "artifacts", "ok")
    assert len(doc["artifacts"][0]["sha256"]) == 64 and isinstance(doc["artifacts"][0]["size"], int)
    doc = document(cli(sb, "hosts", "-s", "production", "--json"), "hosts", "ok")
    assert doc["hosts"][0]["host"] == "host-2" and isinstance(doc["hosts"][0]["port"], int)
    doc = document(cli(sb, "config.diff", "-s", "staging", "--json"), "config.diff", "ok")
    assert doc["hosts"][0]["changes"] == []
    doc = document(cli(sb, "status", "--all", "--json"), "status", "ok")
    assert [(r["stage"], r["host"]) for r in doc["hosts"]] == [("staging", "host-1"), ("production", "host-2")]

    # host failure: the smoke test fails on staging's host
    sb.exec(0, "touch /tmp/fail-smoke")
    commit_change(app_repo, "two.txt", "2\n")
    doc = document(cli(sb, "deploy", "-s", "staging", "--json"), "deploy", "failed")
    [host] = doc["hosts"]
    assert host["result"] == "failed" and host["step"] == "smoke" and "smoke broke" in host["error"]
    sb.exec(0, "rm /tmp/fail-smoke")
    document(cli(sb, "deploy", "-s", "staging", "--json"), "deploy", "ok")
    doc = document(cli(sb, "rollback", "-s", "staging", "--json"), "rollback", "ok")
    assert doc["hosts"][0]["release"] == 1

    # bad config, and a bad command line: still one document
    bad = sb.config_path.with_name("bad.toml")
    bad.write_text(sb.config_path.read_text().replace("deploy_to", "deploy_too", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "status", "--json", "-c", str(bad)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    doc = document(proc, "status", "bad_input")
    assert "deploy_too: unknown key (did you mean deploy_to?)" in doc["error"]
    doc = document(cli(sb, "deploy", "--json", "--batch", "x"), "deploy", "bad_input")
    assert doc["error"] == "--batch expects a whole number, got 'x'"
    doc = document(cli(sb, "status", "--json", "-s", "prod"), "status", "bad_input")
    assert "did you mean production?" in doc["error"]


def test_lock_held_and_interrupt_are_documents(sandbox, tmp_path):
    sb = sandbox(2)
    flag = tmp_path / "paused"
    holder = cli_popen(sb, "deploy", "--json", env={"DEPLOYER_TEST_PAUSE_BEFORE": f"switch:{flag}"})
    try:
        wait_until(lambda: flag.exists() or holder.poll() is not None, 120, "the first deploy to hold the lock")
        assert holder.poll() is None, holder.communicate()
        # lock held: the second run's document names the holder; status shows the lock as an object
        doc = document(cli(sb, "deploy", "--json"), "deploy", "locked")
        assert "held by" in doc["error"] and "deployer unlock" in doc["error"]
        lock = json.loads(cli(sb, "status", "--json").stdout)["hosts"][0]["lock"]
        assert lock["pid"] == holder.pid and lock["started"].endswith("Z")
        # Ctrl-C while paused before the switch: a clean abort, still one document
        holder.send_signal(signal.SIGINT)
        out, err = holder.communicate(timeout=60)
    finally:
        flag.unlink(missing_ok=True)
        if holder.poll() is None:
            holder.kill()
    doc = document(subprocess.CompletedProcess(holder.args, holder.returncode, out, err), "deploy", "interrupted")
    assert doc["exit_code"] == 130 and {h["host"] for h in doc["hosts"]} == {"host-1", "host-2"}
    assert all(h["result"] != "ok" for h in doc["hosts"])
    # SIGTERM (a CI runner cancelling the job) takes the same path: exit 143, one document
    blocker = cli_popen(sb, "deploy", "--json", env={"DEPLOYER_TEST_PAUSE_BEFORE": f"switch:{flag}"})
    try:
        wait_until(lambda: flag.exists() or blocker.poll() is not None, 120, "the deploy to pause before its switch")
        blocker.send_signal(signal.SIGTERM)
        out, err = blocker.communicate(timeout=60)
    finally:
        flag.unlink(missing_ok=True)
        if blocker.poll() is None:
            blocker.kill()
    doc = document(subprocess.CompletedProcess(blocker.args, blocker.returncode, out, err), "deploy", "interrupted")
    assert doc["exit_code"] == 143


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--json", "--stagee", "x"],
        ["deploy", "--json", "-j", "0"],
        ["status", "--json", "--config", "missing.toml"],
    ],
)
def test_usage_errors_with_json_are_documents(tmp_path, argv):
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    document(proc, argv[0], "bad_input")
    assert len(proc.stderr.splitlines()) == 1


def test_records_of_odd_host_states_stay_in_the_schema():
    """Another tool's release may record any revision and any time text; a lock file may be torn."""
    from deployer.config.settings import Host, SSHSettings
    from deployer.engine.fleet import HostRun
    from deployer.plan.host_state import Foreign, HostState, LockInfo, Release
    from deployer.report import document

    state = HostState(
        user="deploy",
        writable=True,
        deploy_to_exists=True,
        current_kind="link",
        current_target="releases/cap-1",
        free_kb=10,
        releases=(Release(3, True, meta={"git_sha": "abc", "deployed_at": "2026-01-02T03:04:05+01:00"}),),
        foreign=(Foreign("cap-1", revision="r1234", recorded="yesterday"),),
        lock=LockInfo(who="x", pid="not a pid", started="?"),
    )
    run = HostRun(host=Host(name="h", address="h", ssh=SSHSettings()), state=state)
    down = HostRun(host=Host(name="d", address="d", ssh=SSHSettings()), error="connection refused")
    for task, records in (
        ("status", document.status_records([run, down])),
        ("releases", document.releases_records([run, down])),
        ("check", document.check_records([run, down])),
    ):
        VALIDATOR.validate(document.document(task, 1, "unreachable: d", "s", records))
    [rec, _] = document.releases_records([run, down])
    assert rec["releases"][0]["deployed_at"] == "2026-01-02T02:04:05Z" and rec["releases"][0]["git_sha"] is None
    assert rec["releases"][1]["deployed_at"] is None and rec["releases"][1]["release"] == "cap-1"


def test_tables_show_what_the_records_say():
    """The text tables are derived from the JSON records: one shaping for both outputs."""
    from deployer.config.settings import Host, SSHSettings
    from deployer.engine.fleet import HostRun
    from deployer.plan.host_state import Foreign, HostState, LockInfo, Release
    from deployer.report import document, rows

    sha = "0123456789abcdef0123456789abcdef01234567"
    state = HostState(
        user="deploy",
        writable=True,
        deploy_to_exists=True,
        current_kind="link",
        current_target="releases/2",
        free_kb=2 * 1048576,
        strays=(".tmp-3",),
        ignored=("old",),
        releases=(
            Release(1, True, bad=True, meta={"version": "v1"}),
            Release(
                2,
                True,
                meta={
                    "version": "v2",
                    "git_sha": sha,
                    "deployed_by": "ann",
                    "deployed_at": "2026-01-02T03:04:05+01:00",
                },
            ),
        ),
        foreign=(Foreign("cap-1", revision=sha),),
        lock=LockInfo(who="bob", pid=42, stage="prod", started="2026-01-02T00:00:00Z"),
        setup_drift=("/etc/systemd/system/shop.service",),
    )
    run = HostRun(host=Host(name="h", address="h", ssh=SSHSettings()), state=state)
    down = HostRun(host=Host(name="d", address="d", ssh=SSHSettings()), error="connection refused")

    [up, gone] = rows.status_rows(document.status_records([run, down]))
    assert up["setup drift"] == "/etc/systemd/system/shop.service"
    untouched = HostRun(host=run.host, state=replace(state, setup_drift=()))
    assert "setup drift" not in rows.status_rows(document.status_records([untouched]))[0]  # no hand, no column
    assert {k: up[k] for k in ("current", "version", "git sha", "deployed at", "by", "releases", "foreign")} == {
        "current": 2,
        "version": "v2",
        "git sha": sha[:8],
        "deployed at": "2026-01-02T02:04:05Z",
        "by": "ann",
        "releases": 2,
        "foreign": 1,
    }
    assert up["lock"].startswith("bob pid 42 (stage prod, started 2026-01-02T00:00:00Z, ")
    assert gone == {"host": "d", "current": "?", "error": "connection refused"}

    table = rows.releases_rows(document.releases_records([run, down]))
    assert [(r["N"], r["state"], r.get("current")) for r in table] == [
        (1, "bad", ""),
        (2, "ok", "<- current"),
        ("cap-1", "foreign", ""),
        (".tmp-3", "leftover temp dir", None),
        ("old", "ignored: not a release number", None),
        ("?", "connection refused", None),
    ]
    assert table[2]["git sha"] == sha[:8]

    [up, gone] = rows.check_rows(document.check_records([run, down]))
    assert (up["deploy_to writable"], up["free disk"], up["current"], up["ignored"]) == ("yes", "2.0 GB", 2, "old")
    assert gone == {"host": "d", "ssh": "FAIL", "error": "connection refused"}

    from deployer.engine.records import Drift

    changed = [f"app/f{i}.py" for i in range(12)]
    drifted = HostRun(host=Host(name="a", address="a", ssh=SSHSettings()), result="DRIFT")
    drifted.drift = Drift(checked=40, modified=changed, added=["new.txt"])
    bare = HostRun(host=Host(name="b", address="b", ssh=SSHSettings()), result="no manifest")
    bare.drift = Drift(manifest=False)
    clean = HostRun(host=Host(name="c", address="c", ssh=SSHSettings()), result="ok", drift=Drift(checked=7))
    down.result = "failed"
    records = document.drift_records([drifted, bare, clean, down])
    VALIDATOR.validate(document.document("verify", 1, "drift", "s", records))
    assert rows.drift_rows(records) == [
        {
            "host": "a",
            "state": "DRIFT",
            "files checked": 40,
            "modified": ", ".join(changed[:10]),
            "removed": "",
            "added": "new.txt",
            "error": "",
        },
        {
            "host": "b",
            "state": "no manifest",
            "files checked": "",
            "modified": "",
            "removed": "",
            "added": "",
            "error": "",
        },
        {"host": "c", "state": "ok", "files checked": 7, "modified": "", "removed": "", "added": "", "error": ""},
        {
            "host": "d",
            "state": "FAIL",
            "files checked": "",
            "modified": "",
            "removed": "",
            "added": "",
            "error": "connection refused",
        },
    ]
