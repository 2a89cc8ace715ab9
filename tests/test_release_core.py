"""Release core against real sshd hosts: deploy, rollback, cleanup, lock, abort, Ctrl-C."""

from __future__ import annotations

import json
import os

from helpers import (
    cli,
    closed_pipe,
    commit_change,
    current,
    release_dirs,
    status,
    tree,
)


def test_deploy_twice_rollback_then_refuse(sandbox, app_repo):
    sb = sandbox(3)
    first = cli(sb, "deploy")
    assert first.returncode == 0, first.stderr + first.stdout
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    second = cli(sb, "deploy")
    assert second.returncode == 0, second.stderr + second.stdout
    for h in sb.hosts:
        assert release_dirs(sb, h) == ["1", "2"]
        assert current(sb, h) == "releases/2"
        code, out = sb.exec(h, "cat /srv/app/current/app.py; cat /srv/app/current/REVISION")
        assert "VERSION = 2" in out
    rows = status(sb)
    assert {r["current"] for r in rows} == {2} and len({r["version"] for r in rows}) == 1

    back = cli(sb, "rollback")
    assert back.returncode == 0, back.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)

    before = [tree(sb, h) for h in sb.hosts]
    again = cli(sb, "rollback")
    assert again.returncode == 1
    assert "no earlier complete release" in again.stdout + again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert [tree(sb, h) for h in sb.hosts] == before
    assert all(r["lock"] is None for r in status(sb))


def test_deploy_whose_output_reader_left_still_completes(sandbox, app_repo):
    """stdout a pipe nobody reads (`| head` that exited, a log shipper that died): the deploy
    neither stops halfway nor tracebacks; it finishes, releases its lock, keeps its exit code."""
    sb = sandbox(2)
    w = closed_pipe()
    try:
        proc = cli(sb, "deploy", stdout=w)
    finally:
        os.close(w)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert [(r["current"], r["lock"]) for r in status(sb)] == [(1, None), (1, None)]


def test_one_host_finishes_in_its_switch_command_and_a_failed_cleanup_stays_a_cleanup_failure(sandbox, app_repo):
    """One host and nothing between switch and finish: 3 commands, the finish riding with the
    switch (lock released, ledger written, old releases pruned). A cleanup that fails there leaves
    the new release live and is reported as the cleanup failing, lock released. With a health
    check configured, the finish waits for it: 4 commands."""
    sb = sandbox(1, app={"keep_releases": 2})
    host = sb.hosts[0]
    for i in range(3):
        commit_change(app_repo, "n.txt", str(i))
        before = sb.command_count(host)
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sb.command_count(host) - before == 3
    assert "cleaned up 1" in proc.stdout
    assert release_dirs(sb, host) == ["2", "3"] and current(sb, host) == "releases/3"
    assert status(sb)[0]["lock"] is None
    audit = cli(sb, "audit", "--json")
    entries = json.loads(audit.stdout)["entries"]
    assert [e["release"] for e in entries if e["action"] == "deploy" and e["result"] == "ok"] == [1, 2, 3]

    # release 2 is pruned by the next deploy; a root-owned file in it makes that rm fail
    sb.exec(
        host,
        "mkdir /srv/app/releases/2/stuck && touch /srv/app/releases/2/stuck/f && chmod 555 /srv/app/releases/2/stuck",
    )
    commit_change(app_repo, "n.txt", "3")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "release 4 is live everywhere, but finish: cleanup failed on host-1" in proc.stderr
    assert "Traceback" not in proc.stderr and "ROLLING BACK" not in proc.stdout
    assert current(sb, host) == "releases/4" and status(sb)[0]["lock"] is None

    sb2 = sandbox(1, verify={"command": "test -f REVISION"})
    assert cli(sb2, "deploy").returncode == 0
    before = sb2.command_count(sb2.hosts[0])
    proc = cli(sb2, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sb2.command_count(sb2.hosts[0]) - before == 5  # lock, prepare, switch, verify, finish


def test_redeploy_with_hardlink_releases_links_unchanged_files(sandbox, app_repo):
    """hardlink_releases: a redeploy shares the earlier release's inodes, in the same 4 commands; a
    host whose release was edited by hand extracts the cached artifact again instead."""
    sb = sandbox(2, app={"hardlink_releases": True})
    assert cli(sb, "deploy").returncode == 0
    counts = [sb.command_count(h) for h in sb.hosts]
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr
    assert [sb.command_count(h) - c for h, c in zip(sb.hosts, counts, strict=True)] == [4, 4]
    assert proc.stdout.count("release 2 linked from release 1") == 2
    inode = "stat -c %i /srv/app/releases/{}/app.py"
    for h in sb.hosts:
        assert sb.exec(h, inode.format(1))[1] == sb.exec(h, inode.format(2))[1]
    assert cli(sb, "verify").returncode == 0

    edited, untouched = sb.hosts
    original = sb.exec(edited, "cat /srv/app/current/app.py")[1]
    sb.exec(edited, "echo 'HOTFIX = 1' >> /srv/app/current/app.py")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr
    assert f"{edited.name}" in proc.stdout and proc.stdout.count("release 3 extracted") == 1
    assert proc.stdout.count("release 3 linked from release 2") == 1
    assert sb.exec(edited, "cat /srv/app/releases/3/app.py")[1] == original
    assert sb.exec(edited, inode.format(3))[1] != sb.exec(edited, inode.format(2))[1]
    assert sb.exec(untouched, inode.format(3))[1] == sb.exec(untouched, inode.format(1))[1]
    assert cli(sb, "verify").returncode == 0


def test_keep_releases_after_six_deploys(sandbox, app_repo):
    sb = sandbox(3, app={"keep_releases": 3})
    for i in range(6):
        commit_change(app_repo, "n.txt", str(i))
        proc = cli(sb, "deploy", "--full")  # every release with its artifact cached (a delta caches none)
        assert proc.returncode == 0, proc.stderr
    for h in sb.hosts:
        assert release_dirs(sb, h) == ["4", "5", "6"]
        assert current(sb, h) == "releases/6"
        # cache keeps only the artifacts the kept releases use
        code, out = sb.exec(h, "ls /srv/app/.deployer/cache | wc -l")
        assert int(out) == 3


def test_failing_host_in_prepare_switches_nobody(sandbox, app_repo):
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "v2\n")
    # host-3 cannot write its releases dir: prepare fails there after the others extracted
    sb.exec(2, "chown root:root /srv/app/releases && chmod 755 /srv/app/releases")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "host-3" in proc.stderr and "failed to prepare" in proc.stderr
    assert "Permission denied" in proc.stdout
    for h in sb.hosts:
        assert current(sb, h) == "releases/1"
        assert release_dirs(sb, h) == ["1"]
        code, out = sb.exec(h, "ls -A /srv/app/.deployer; ls -A /srv/app/.deployer/cache | grep -c part || true")
        assert "lock" not in out.split()


def test_deploy_to_not_writable_fails_before_any_change(sandbox):
    sb = sandbox(3)
    sb.exec(1, "mkdir -p /srv/app && chown root:root /srv/app && chmod 755 /srv/app")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "host-2" in proc.stdout and "not writable" in proc.stdout
    for h in (0, 2):
        assert release_dirs(sb, h) == [] and current(sb, h) == ""
        code, out = sb.exec(h, "ls -A /srv/app/.deployer")
        assert "lock" not in out.split()


def test_stale_lock_reported_and_unlock(sandbox):
    sb = sandbox(2)
    sb.exec(
        0,
        "mkdir -p /srv/app/.deployer/lock && "
        'echo \'{"who": "ops@laptop", "pid": 4242, "stage": "sandbox", '
        '"started": "2026-01-01T00:00:00Z"}\' > /srv/app/.deployer/lock/info && chown -R deploy /srv',
    )
    proc = cli(sb, "deploy")
    assert proc.returncode == 3
    assert "ops@laptop pid 4242" in proc.stderr and "deployer unlock --stage sandbox --yes" in proc.stderr
    assert release_dirs(sb, 1) == []
    assert cli(sb, "unlock").returncode == 2
    proc = cli(sb, "unlock", "--yes")
    assert proc.returncode == 0 and "ops@laptop" in proc.stdout
    assert cli(sb, "deploy").returncode == 0


def test_current_real_directory_is_refused(sandbox):
    sb = sandbox(2)
    sb.exec(1, "mkdir -p /srv/app/current && touch /srv/app/current/keep && chown -R deploy /srv")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "real directory" in proc.stdout
    code, out = sb.exec(1, "ls -A /srv/app/current")
    assert out.split() == ["keep"]
    assert release_dirs(sb, 0) == [] and current(sb, 0) == ""


# Readers never see `current` missing: test_faults.py swaps it 1,000 times under a reader.


def test_check_green_and_changed_host_key(sandbox):
    from deployer.sandbox import hosts as sandbox_mod

    sb = sandbox(3)
    proc = cli(sb, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok ") >= 3
    known_before = sb.known_hosts_path.read_text()
    sandbox_mod.regenerate_host_key(sb.hosts[1])
    proc = cli(sb, "check")
    assert proc.returncode == 1
    assert "host-2" in proc.stderr and "host key CHANGED" in proc.stderr and "SHA256:" in proc.stderr
    assert sb.known_hosts_path.read_text() == known_before
