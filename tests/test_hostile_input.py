"""Hostile and broken input against real sshd hosts: shell syntax in config values, escape
sequences in metadata, odd known_hosts files, a cleanup that fails after a live switch, hooks
that run before the release exists."""

from __future__ import annotations

import json

import paramiko
import toml
from helpers import cli, commit_change, current, git, release_dirs, tar_member, write_tar_gz


def edit_config(sb, **tables) -> None:
    """Deep-merge tables into the sandbox's hosts.toml."""
    doc = toml.loads(sb.config_path.read_text())
    for name, values in tables.items():
        doc.setdefault(name, {}).update(values)
    sb.config_path.write_text(toml.dumps(doc))


def test_shell_syntax_in_deploy_to_never_runs_on_the_host(sandbox):
    """deploy_to may hold any characters but newlines: it is a path, quoted everywhere. A deploy
    lands in the literal directory; one that cannot create it says so, and nothing in it ran."""
    weird = '/srv/app $(touch /tmp/pwned-1) `touch /tmp/pwned-2` "q;touch /tmp/pwned-3'
    sb = sandbox(1, app={"deploy_to": weird})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert current(sb, 0, weird) == "releases/1" and release_dirs(sb, 0, weird) == ["1"]
    status = cli(sb, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["hosts"][0]["current"] == 1

    edit_config(sb, app={"deploy_to": '/proc/x$(touch /tmp/pwned-4)"`touch /tmp/pwned-5`'})
    refused = cli(sb, "deploy")
    assert refused.returncode == 1
    assert (
        'cannot create /proc/x$(touch /tmp/pwned-4)"`touch /tmp/pwned-5`/.deployer: deploy_to is not '
        "writable by deploy" in refused.stdout + refused.stderr
    )
    assert sb.exec(0, "ls /tmp/pwned-* 2>/dev/null | wc -l") == (0, "0\n")


def test_a_health_check_body_with_an_odd_number_of_quotes_passes(sandbox):
    """verify's url and body reach the host's shell quoted: a body with one `"` is looked for as
    it is, and the deploy passes (before, the script broke, every deploy failed verify and was
    rolled back)."""
    sb = sandbox(1)
    code, out = sb.exec(
        0,
        'mkdir -p /srv/www && printf \'status: "ok" and "ready\n\' > /srv/www/health && '
        "cd /srv/www && (setsid python3 -m http.server 8081 --bind 127.0.0.1 "
        ">/dev/null 2>&1 &) && for i in $(seq 200); do "  # up within 20 s on a busy machine
        "curl -sf http://127.0.0.1:8081/health && break; sleep 0.1; done",
    )
    assert code == 0 and "ready" in out, out
    edit_config(sb, verify={"url": "http://127.0.0.1:8081/health", "body": 'and "ready', "retries": 5, "interval": 0.5})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "HTTP 200 after" in proc.stdout and current(sb, 0) == "releases/1"

    edit_config(
        sb, verify={"url": "http://127.0.0.1:8081/health?$(touch /tmp/pwned)", "body": 'not "there', "retries": 1}
    )
    failed = cli(sb, "deploy")
    assert failed.returncode == 1 and current(sb, 0) == "releases/1"
    assert "health check failed: http://127.0.0.1:8081/health?$(touch /tmp/pwned) answered HTTP " in failed.stdout
    assert " without 'not \"there' (expected 200) after 1 attempt(s)" in failed.stdout
    assert sb.exec(0, "ls /tmp/pwned 2>/dev/null | wc -l") == (0, "0\n")


def test_a_remote_before_prepare_hook_runs_in_deploy_to(sandbox):
    """Before prepare the new release does not exist yet: remote hooks run in deploy_to (made by
    the lock step on a first deploy), with DEPLOY_RELEASE_PATH naming the release to come."""
    sb = sandbox(
        1,
        hooks={
            "before_prepare": [
                {
                    "command": 'pwd > /tmp/before-prepare; echo "$DEPLOY_RELEASE_PATH" >> /tmp/before-prepare; '
                    '[ ! -e "$DEPLOY_RELEASE_PATH" ] && echo absent >> /tmp/before-prepare'
                }
            ]
        },
    )
    for number in (1, 2):
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert sb.exec(0, "cat /tmp/before-prepare") == (0, f"/srv/app\n/srv/app/releases/{number}\nabsent\n")


def test_a_file_name_with_a_newline_is_refused_by_the_build_and_in_a_foreign_artifact(sandbox, app_repo, tmp_path):
    """A manifest, a listing and a host's shell read one name per line: `we\\nird.txt` deployed,
    then `verify` reported drift on a clean release. The build refuses it (exit 2, the name
    escaped, nothing sent), and so does the member check of an artifact built elsewhere."""
    sb = sandbox(1)
    assert cli(sb, "deploy").returncode == 0
    (app_repo / "we\nird.txt").write_text("odd\n")
    commit_change(app_repo, "n.txt", "2")
    before = sb.command_count(0)
    for args in (("build",), ("deploy",)):
        proc = cli(sb, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "we\\nird.txt" in lines[0] and "control character" in lines[0], proc.stderr
    assert sb.command_count(0) == before and release_dirs(sb, sb.hosts[0]) == ["1"]
    git(app_repo, "rm", "-q", "we\nird.txt")
    commit_change(app_repo, "n.txt", "3")
    assert cli(sb, "deploy").returncode == 0 and cli(sb, "verify").returncode == 0

    foreign = write_tar_gz(
        tmp_path / "foreign.tar.gz", [tar_member("REVISION", b"f\n"), tar_member("we\nird.txt", b"odd\n")]
    )
    before = sb.command_count(0)
    proc = cli(sb, "deploy", "--artifact", str(foreign))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "we\\nird.txt" in lines[0] and "control character" in lines[0], proc.stderr
    assert sb.command_count(0) == before and current(sb, sb.hosts[0]) == "releases/2"


def test_escape_sequences_in_a_version_never_reach_the_terminal(sandbox, app_repo, tmp_path):
    """A version (from an artifact's .json) with a clear-screen sequence, a bidi override and a
    newline is stored in release.json as it is and shown escaped by deploy, status and releases,
    on anyone's terminal later."""
    sb = sandbox(1)
    built = cli(sb, "build")
    assert built.returncode == 0, built.stderr
    meta_path = next((sb.config_path.parent / "artifacts").glob("*.json"))
    meta = json.loads(meta_path.read_text())
    version = "1.0\x1b[2J\x1b]0;owned\x07\u202e\nFAKE LINE"
    meta["version"] = version
    meta_path.write_text(json.dumps(meta))
    tarball = meta_path.with_name(meta_path.name[: -len(".json")] + ".tar.gz")
    outputs = [cli(sb, "deploy", "--artifact", str(tarball))]
    assert outputs[0].returncode == 0, outputs[0].stderr
    code, stored = sb.exec(0, "cat /srv/app/releases/1/.deployer/release.json")
    assert json.loads(stored)["version"] == version
    outputs += [cli(sb, "status"), cli(sb, "releases"), cli(sb, "status", "--all")]
    for proc in outputs:
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout + proc.stderr
        assert not any(c in text for c in "\x1b\x07\u202e"), text
        assert "1.0\\x1b[2J\\x1b]0;owned\\x07\\u202e\\nFAKE LINE" in text
        assert not any(line.startswith("FAKE") for line in text.splitlines())
    assert json.loads(cli(sb, "status", "--json").stdout)["hosts"][0]["version"] == version


def test_accept_new_keeps_known_hosts_one_entry_a_line(sandbox):
    """accept-new appending to a known_hosts whose last line has no newline: both new hosts are
    recorded on lines of their own, the file parses, and the next run connects strictly."""
    sb = sandbox(2, ssh={"host_key_policy": "accept-new"})
    other = sb.known_hosts_path.read_text().splitlines()[0].replace("[127.0.0.1]", "[192.0.2.1]")
    sb.known_hosts_path.write_text(other)  # no final newline
    proc = cli(sb, "check")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = sb.known_hosts_path.read_text().splitlines()
    assert len(lines) == 3 and lines[0] == other and all(len(line.split()) == 3 for line in lines)
    assert {line.split()[0] for line in lines[1:]} == {f"[127.0.0.1]:{h.port}" for h in sb.hosts}
    keys = paramiko.HostKeys(str(sb.known_hosts_path))
    assert all(keys.lookup(f"[127.0.0.1]:{h.port}") for h in sb.hosts)
    edit_config(sb, ssh={"host_key_policy": "strict"})
    assert cli(sb, "check").returncode == 0


def test_a_corrupt_known_hosts_is_bad_input_in_one_line(sandbox):
    """Two entries glued together (as the old accept-new left them): exit 2, one line naming the
    file and the line, before any host is contacted; no paramiko traceback or InvalidHostKey."""
    sb = sandbox(1)
    line = sb.known_hosts_path.read_text().strip()
    sb.known_hosts_path.write_text(line + line.replace("[127.0.0.1]", "[192.0.2.1]") + "\n")
    before = sb.command_count(0)
    for args in (("deploy",), ("status",), ("rollback",)):
        proc = cli(sb, *args)
        assert proc.returncode == 2, proc.stderr + proc.stdout
        assert proc.stderr.splitlines() == [
            f"error: known_hosts {sb.known_hosts_path} line 1 is corrupt (not one "
            "host, key type and key: two entries run together?); fix or remove "
            "that line"
        ]
    assert sb.command_count(0) == before


def test_a_cleanup_failing_after_the_switch_leaves_the_deploy_recorded_ok(sandbox):
    """The release is live and passed its checks when its cleanup fails: the ledger has the
    deploy `ok` with its release (so the promotion gate counts it) and a separate cleanup
    `failed` line; the lock is released and the run exits 1 naming the cleanup."""
    sb = sandbox(
        2,
        app={"keep_releases": 1},
        stages={"prod": {"requires": "sandbox", "hosts": [{"host": "127.0.0.1", "port": 9, "name": "prod-1"}]}},
    )
    for _ in range(2):
        assert cli(sb, "deploy", "--stage", "sandbox").returncode == 0
    # release 1 is doomed by the next deploy; on host-1 a root-owned dir in it cannot be removed
    assert (
        sb.exec(
            0,
            "mkdir /srv/app/releases/1/stuck && touch /srv/app/releases/1/stuck/f && "
            "chown -R root:root /srv/app/releases/1/stuck",
        )[0]
        == 0
    )
    proc = cli(sb, "deploy", "--stage", "sandbox")
    assert proc.returncode == 1
    assert "release 3 is live everywhere, but finish: cleanup failed on host-1" in proc.stderr
    assert [current(sb, h) for h in sb.hosts] == ["releases/3", "releases/3"]
    code, text = sb.exec(0, "cat /srv/app/.deployer/ledger.jsonl")
    last = [json.loads(line) for line in text.splitlines()][-2:]
    assert [(e["action"], e["result"], e["release"]) for e in last] == [("deploy", "ok", 3), ("cleanup", "failed", 3)]
    assert "could not remove 1" in last[1]["error"]
    assert sb.exec(0, "test -d /srv/app/.deployer/lock")[0] == 1
    gate = cli(sb, "deploy", "--stage", "prod", "--dry-run")
    assert "gate:" in gate.stdout and "passed sandbox" in gate.stdout, gate.stdout + gate.stderr

    # the same failure on its own (what is left of release 1 marked as ours again: else it is foreign)
    assert (
        sb.exec(
            0,
            "cd /srv/app/releases/1 && mkdir -p .deployer && touch .deployer/complete && "
            "chown -R deploy:deploy .deployer",
        )[0]
        == 0
    )
    cleanup = cli(sb, "cleanup", "--stage", "sandbox")
    assert cleanup.returncode == 1 and "cannot remove" in cleanup.stdout + cleanup.stderr
    code, text = sb.exec(0, "cat /srv/app/.deployer/ledger.jsonl")
    entry = json.loads(text.splitlines()[-1])
    assert (entry["action"], entry["result"], entry["release"]) == ("cleanup", "failed", 3)
    assert sb.exec(0, "test -d /srv/app/.deployer/lock")[0] == 1
