"""Delta releases on real hosts (sshd containers): the result equals a full deploy, an edited
base never spreads (that host falls back to the full artifact), --full, the first deploy, an
interrupted delta, and the bytes and commands of a one-file change."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import cli, cli_popen, commit_change, current, release_dirs, wait_until

from benchmarks.netproxy import NetProxy

LISTING = (
    "cd /srv/app/releases/{n} && find . -path ./.deployer -prune -o -printf '%y %m %P %l\\n' | "
    "LC_ALL=C sort; sha256sum $(find . -path ./.deployer -prune -o -type f -print | LC_ALL=C sort); "
    "cat .deployer/manifest.sha256 | sha256sum"
)


def listing(sb, h, n) -> str:
    code, out = sb.exec(h, LISTING.format(n=n))
    assert code == 0, out
    return out


def bigger_app(repo: Path) -> None:
    """A few hundred files, so a one-file delta is visibly smaller than the artifact."""
    import os

    from conftest import git

    for i in range(300):
        p = repo / "pkg" / f"m{i // 50}" / f"f{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(3000))
    (repo / "pkg/tool.sh").write_text("#!/bin/sh\n")
    (repo / "pkg/tool.sh").chmod(0o755)
    (repo / "pkg/latest").symlink_to("tool.sh")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bigger")


def test_delta_equals_a_full_deploy_and_full_and_first(sandbox, app_repo):
    """First deploy: full. One-file change: a delta on both hosts, the same tree as --full gives."""
    sb = sandbox(2)
    bigger_app(app_repo)
    first = cli(sb, "deploy")
    assert first.returncode == 0, first.stderr + first.stdout
    assert first.stdout.count("full artifact uploaded") == 2 and "against release" not in first.stdout

    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    second = cli(sb, "deploy")
    assert second.returncode == 0, second.stderr + second.stdout
    assert second.stdout.count("against release 1") == 2, second.stdout
    assert "tree verified" in second.stdout and "uploaded" not in second.stdout
    for h in sb.hosts:  # the host never had the artifact: nothing cached for release 2
        assert sb.exec(h, "ls /srv/app/.deployer/cache | wc -l")[1].strip() == "1"

    full = cli(sb, "deploy", "--full")
    assert full.returncode == 0, full.stderr + full.stdout
    assert full.stdout.count("full artifact uploaded") == 2 and "against release" not in full.stdout
    for h in sb.hosts:
        assert current(sb, h) == "releases/3"
        assert listing(sb, h, 2) == listing(sb, h, 3)
        code, out = sb.exec(h, "cat /srv/app/releases/2/pkg/m1/f60.py; stat -c %h /srv/app/releases/2/pkg/m0/f0.py")
        assert out.startswith("changed\n") and out.strip().endswith("1"), out  # a copy: one link
    drift = cli(sb, "verify")
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_edited_base_never_spreads_and_falls_back(sandbox, app_repo):
    """A hand edit (in place) and a mode change in the live release: the new release has neither;
    the edited host gets the full artifact (one more command), the other a delta."""
    sb = sandbox(2)
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    edited = sb.hosts[0]
    code, out = sb.exec(
        edited,
        "printf X | dd of=/srv/app/releases/1/pkg/m0/f1.py conv=notrunc 2>&1 && "
        "chmod 600 /srv/app/releases/1/pkg/m0/f2.py",
    )
    assert code == 0, out
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    counts = [sb.command_count(h) for h in sb.hosts]
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "delta not usable" in proc.stdout and proc.stdout.count("full artifact uploaded") == 1, proc.stdout
    assert [sb.command_count(h) - c for h, c in zip(sb.hosts, counts, strict=True)] == [5, 4]
    for h in sb.hosts:
        code, out = sb.exec(
            h, "cd /srv/app/current && sha256sum -c --quiet .deployer/manifest.sha256 && stat -c %a pkg/m0/f2.py"
        )
        assert code == 0 and out.strip() == "644", out
    code, out = sb.exec(edited, "head -c 1 /srv/app/releases/1/pkg/m0/f1.py")
    assert out == "X"  # the old release keeps its edit; it reached nothing else


def many_changes(repo: Path) -> None:
    """A third of the files rewritten: a delta of a few hundred KB, long enough to be cut mid-way."""
    import os

    from conftest import git

    for i in range(0, 300, 3):
        (repo / "pkg" / f"m{i // 50}" / f"f{i}.py").write_bytes(os.urandom(3000))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many")


@pytest.mark.parametrize("fault", ["sigint", "sigterm", "cut"])
def test_interrupted_delta_leaves_no_partial_release(sandbox, app_repo, tmp_path, fault):
    """The delta's link is held once 60 KB of the prepare command went; then Ctrl-C, a SIGTERM (a
    cancelled CI job), or the link is cut (it flows again for the abort). Each way: no release 2,
    no temp dir, no partial upload."""
    from test_faults import leftovers, via_proxy

    sb = sandbox(1)
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    many_changes(app_repo)
    proxy = NetProxy(("127.0.0.1", sb.hosts[0].port)).start()
    try:
        via_proxy(sb, 0, proxy)
        flag = tmp_path / "paused"
        p = cli_popen(sb, "deploy", env={"DEPLOYER_TEST_PAUSE_BEFORE": f"prepare:{flag}"})
        wait_until(flag.exists, 60, "the deploy to reach prepare")
        proxy.hold_at = proxy.bytes_up + 60_000
        flag.unlink()
        wait_until(lambda: proxy.stalled or p.poll() is not None, 60, "the delta to be held")
        time.sleep(0.3)
        if fault in ("sigint", "sigterm"):
            p.send_signal(signal.SIGINT if fault == "sigint" else signal.SIGTERM)
            time.sleep(0.2)
            proxy.hold_at = None
            proxy.resume()
        else:
            proxy.hold_at = None
            proxy.cut()  # the host's end goes; the deployer's abort reconnects
            proxy.resume()
        out, err = p.communicate(timeout=90)
    finally:
        proxy.stop()
    assert p.returncode == {"sigint": 130, "sigterm": 143, "cut": 1}[fault], out + err
    h = sb.hosts[0]
    wait_until(lambda: leftovers(sb, h) == [], 30, f"the host's own cleanup: {leftovers(sb, h)} {out} {err}")
    assert release_dirs(sb, h) == ["1"] and current(sb, h) == "releases/1"


def test_one_file_change_bytes_and_commands(sandbox, app_repo):
    """Trimmed benchmark: counts, not times. A one-file change to 2 hosts: 4 commands per host and
    at most 100 KB sent to each (measured by a proxy on the link), against the artifact's size."""
    sb = sandbox(1)
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    from test_faults import via_proxy

    proxy = NetProxy(("127.0.0.1", sb.hosts[0].port)).start()
    try:
        via_proxy(sb, 0, proxy)
        before = sb.command_count(sb.hosts[0])
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "against release 1" in proc.stdout
        assert sb.command_count(sb.hosts[0]) - before <= 4
        assert 0 < proxy.bytes_up <= 100 * 1024, proxy.bytes_up
        full = proxy.bytes_up
        proc = cli(sb, "deploy", "--full")
        assert proc.returncode == 0
        assert proxy.bytes_up - full > 5 * full  # the artifact is far larger than the delta
    finally:
        proxy.stop()


@pytest.mark.parametrize("builder", ["python3", "shell"])
def test_a_full_disk_while_the_host_builds_a_delta_leaves_nothing(sandbox, app_repo, tmp_path, builder):
    """The disk fills after the free-space check, while the host copies the base's files into the
    new release (the python pass, or the shell steps on a host without python3): one line saying
    so, exit 1, no release 2, no temp dir; with room again the next deploy is a delta."""
    from test_faults import Pause, files, leftovers

    sb = sandbox(1, docker_kwargs={"tmpfs": {"/srv": "size=4m,uid=1000,gid=1000"}})
    if builder == "shell":
        code, out = sb.exec(0, "for p in /usr/bin/python3*; do mv $p $p.hidden; done")
        assert code == 0, out
        assert sb.exec(0, "command -v python3")[0] != 0  # prepare_delta.sh takes the shell steps
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    pause = Pause(tmp_path, "prepare")
    p = cli_popen(sb, "deploy", env=pause.env)
    try:
        pause.wait(p)
        code, out = sb.exec(
            0,
            "avail=$(df -Pk /srv | awk 'NR==2{print $4}'); head -c $(( (avail - 150) * 1024 )) /dev/zero > /srv/filler",
        )
        assert code == 0, out
        before = files(sb, 0)
        pause.release()
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 1, out + err
    assert "no space left" in (out + err).lower() and "Traceback" not in out + err, out + err
    h = sb.hosts[0]
    assert release_dirs(sb, h) == ["1"] and current(sb, h) == "releases/1"
    assert leftovers(sb, h) == [] and files(sb, 0) == before
    sb.exec(0, "rm -f /srv/filler")
    again = cli(sb, "deploy")
    assert again.returncode == 0 and "against release 1" in again.stdout, again.stdout + again.stderr
    assert current(sb, h) == "releases/2"


@pytest.mark.parametrize("builder", ["python3", "shell"])
def test_a_fifo_in_the_delta_base_is_refused_before_any_copy_and_the_full_artifact_sent(sandbox, app_repo, builder):
    """A fifo planted in the live release where the delta takes a file from it (as a renamed copy
    too): without python3, `cp -P` would wait on it for ever. The host refuses it before copying,
    naming the path as no regular file, and gets the full artifact: the deploy completes."""
    import shutil

    sb = sandbox(1)
    if builder == "shell":
        assert sb.exec(0, "for p in /usr/bin/python3*; do mv $p $p.hidden; done")[0] == 0
        assert sb.exec(0, "command -v python3")[0] != 0  # prepare_delta.sh takes the shell steps
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    shutil.copy(app_repo / "pkg/m0/f7.py", app_repo / "pkg/f7-again.py")  # a pair: same content, new path
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    base = "/srv/app/releases/1/pkg/m0/f7.py"
    assert sb.exec(0, f"rm {base} && mkfifo -m 644 {base} && chown deploy: {base}")[0] == 0

    proc = cli(sb, "deploy", timeout=120)  # before: blocked for ever in cp -P
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert "release 1: pkg/m0/f7.py is not a regular file" in said and "holds links" not in said, said
    assert "sending the full artifact" in said and current(sb, sb.hosts[0]) == "releases/2"
    assert sb.exec(0, "cmp /srv/app/releases/2/pkg/f7-again.py /srv/app/releases/2/pkg/m0/f7.py")[0] == 0
