"""The sandbox hosts behave like the real servers the deployer targets."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import toml
from helpers import TEST_LABEL, git, host_conn

from deployer.sandbox import deploy_files, instance
from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox import image as image_mod
from deployer.ssh.types import TransportError


def run(sb, index: int, *commands: str) -> list[tuple[int, str, str]]:
    """Each command over one connection (the pinned known_hosts file: unknown or changed host
    keys are refused): (exit code, stdout, stderr) per command."""
    conn = host_conn(sb, index)
    try:
        return [(r.exit_code, r.stdout, r.stderr) for r in map(conn.run, commands)]
    finally:
        conn.close()


# --- without containers ------------------------------------------------------


def test_image_tag_hashes_the_definition():
    tag = image_mod.image_tag()
    name, digest = tag.split(":")
    assert name == "deployer-sandbox" and len(digest) == 12 and int(digest, 16) >= 0
    more = dataclasses.replace(image_mod.BASE, packages=(*image_mod.BASE.packages, "git"))
    assert image_mod.image_tag(more) != tag


def test_config_writing_without_the_extra_names_it(tmp_path, monkeypatch):
    """toml comes with the `sandbox` extra only: without it, one line saying what to install."""
    monkeypatch.setitem(sys.modules, "toml", None)  # `import toml` now raises ImportError
    host = sandbox_mod.SandboxHost(name="host-1", host="127.0.0.1", port=2222, container_id="x")
    with pytest.raises(sandbox_mod.SandboxError, match=r"pip install 'deployer\[sandbox\]'"):
        deploy_files.write_config(
            tmp_path / "hosts.toml", [host], tmp_path / "key", tmp_path / "known_hosts", source=str(tmp_path)
        )
    assert not (tmp_path / "hosts.toml").exists()


def test_client_key_is_created_once(tmp_path):
    key = sandbox_mod.ensure_client_key(tmp_path / "keys")
    pub = key.with_suffix(".pub").read_text()
    assert key.name == "id_ed25519" and pub.startswith("ssh-ed25519 ")
    assert key.stat().st_mode & 0o777 == 0o600
    assert sandbox_mod.ensure_client_key(tmp_path / "keys") == key
    assert key.with_suffix(".pub").read_text() == pub


def test_write_config_layout_and_deep_merge(tmp_path):
    hosts = [sandbox_mod.SandboxHost(f"host-{i}", "127.0.0.1", 40000 + i, f"id{i}") for i in (1, 2, 3)]
    path = deploy_files.write_config(
        tmp_path / "hosts.toml",
        hosts,
        tmp_path / "k",
        tmp_path / "kh",
        source="/src",
        extra={"app": {"keep_releases": 2}, "hooks": {"x": 1}},
    )
    doc = toml.loads(path.read_text())
    assert doc["app"] == {
        "name": "sample",
        "deploy_to": "/srv/app",
        "keep_releases": 2,
        "shared_dirs": ["log"],
        "shared_files": [],
    }
    assert doc["build"] == {"source": "/src"}
    assert doc["ssh"] == {
        "user": "deploy",
        "key": str(tmp_path / "k"),
        "known_hosts": str(tmp_path / "kh"),
        "host_key_policy": "strict",
        "connect_timeout": 10,
    }
    assert doc["hooks"] == {"x": 1}
    assert doc["stages"]["sandbox"]["hosts"] == [
        {"host": "127.0.0.1", "port": 40001, "name": "host-1", "roles": ["web", "migrate"]},
        {"host": "127.0.0.1", "port": 40002, "name": "host-2", "roles": ["web"]},
        {"host": "127.0.0.1", "port": 40003, "name": "host-3", "roles": ["web"]},
    ]


def test_app_repo_is_committed_deterministically(app_repo):
    assert git(app_repo, "status", "--porcelain") == ""
    assert set(git(app_repo, "ls-files").split()) == {".gitignore", "README", "app.py", "bin/run"}
    assert (app_repo / "log").is_dir()
    assert git(app_repo, "ls-files", "-s", "bin/run").startswith("100755")
    # fixed content, identity and dates
    assert git(app_repo, "rev-parse", "HEAD") == "a5ef8dea8224327531ec3398b3f60d9064e31c39"


# --- real containers ---------------------------------------------------------


def test_hosts_accept_pinned_ssh_and_have_the_tools(sandbox):
    sb = sandbox(3)
    assert [h.name for h in sb.hosts] == ["host-1", "host-2", "host-3"]
    assert len({h.port for h in sb.hosts}) == 3
    for i in range(3):
        who, tools, sudo = run(
            sb,
            i,
            "id -un",
            "mkdir -p /srv/app && touch /srv/app/x && command -v tar sha256sum python3",
            "sudo -n -u app id -un",
        )
        assert who == (0, "deploy\n", "")
        assert tools[0] == 0 and tools[1].split() == ["/usr/bin/tar", "/usr/bin/sha256sum", "/usr/bin/python3"]
        assert sudo == (0, "app\n", "")
    # Every container has its own host key, and the pinned lines are what sshd serves.
    lines = sb.known_hosts_path.read_text().splitlines()
    assert len({line.split()[2] for line in lines}) == 3
    for h, line in zip(sb.hosts, lines, strict=True):
        assert line.startswith(f"[127.0.0.1]:{h.port} ssh-ed25519 AAAA")
        assert line.endswith(" " + sandbox_mod.served_host_key(h))
    assert sb.exec(0, "stat -c %U /srv") == (0, "deploy\n")


def test_sshd_log_counts_exec_commands(sandbox):
    sb = sandbox(1)
    before = sb.command_count(0)
    assert [code for code, _, _ in run(sb, 0, "true", "true", "true")] == [0, 0, 0]
    assert sb.command_count(0) == before + 3


def test_changed_host_key_is_refused(sandbox):
    sb = sandbox(1)
    old_line = sb.known_hosts_path.read_text().strip()
    new_line = sandbox_mod.regenerate_host_key(sb.hosts[0])
    assert new_line != old_line
    with pytest.raises(TransportError, match="host key CHANGED"):
        run(sb, 0, "true")
    # Pinning the new key works again.
    sandbox_mod.write_known_hosts(sb.known_hosts_path, sb.hosts)
    assert run(sb, 0, "true")[0][0] == 0


# A sudo that wants a password fails fast: test_faults.py (test_sudo_password_prompt_fails_fast_without_tty).


def test_start_hosts_passes_docker_kwargs_and_up_down(sandbox_image, tmp_path):
    label = TEST_LABEL + "-updown"
    extra = []
    try:
        hosts = instance.up(2, tmp_path / ".sandbox", tmp_path / "hosts.sandbox.toml", str(tmp_path), label=label)
        assert [h.name for h in hosts] == ["host-1", "host-2"]
        doc = toml.loads((tmp_path / "hosts.sandbox.toml").read_text())
        assert [h["port"] for h in doc["stages"]["sandbox"]["hosts"]] == [h.port for h in hosts]
        assert (tmp_path / ".sandbox" / "known_hosts").read_text().count("ssh-ed25519") == 2
        (tmpfs_host,) = sandbox_mod.start_hosts(
            1,
            (tmp_path / ".sandbox" / "id_ed25519.pub").read_text(),
            label=label,
            prefix="tiny",
            tmpfs={"/srv": "size=1m,uid=1000,gid=1000"},
        )
        extra.append(tmpfs_host)
        assert tmpfs_host.name == "tiny-1"
        code, out = sandbox_mod.exec_root(tmpfs_host, "df -k /srv | tail -1; stat -c %U /srv")
        assert code == 0 and out.split()[0] == "tmpfs" and out.split()[-1] == "deploy"
        removed = instance.down(tmp_path / ".sandbox", label=label)
        assert removed == 2 and sandbox_mod.container(tmpfs_host).status == "running"  # not up()'s
    finally:
        instance.down(tmp_path / ".sandbox", label=label)
        sandbox_mod.stop_hosts(extra)


def test_down_removes_only_the_hosts_its_own_up_started(sandbox_image, tmp_path):
    """Two checkouts (or two users) with sandboxes under the same label: up() in one and down()
    in the other leave each other's hosts running; so does a host with the label alone."""
    label = TEST_LABEL + "-mine"
    mine, theirs = tmp_path / "mine" / ".sandbox", tmp_path / "theirs" / ".sandbox"
    other = []
    try:
        their_hosts = instance.up(1, theirs, tmp_path / "theirs.toml", str(tmp_path), label=label)
        pub = (theirs / "id_ed25519.pub").read_text()
        other = their_hosts + sandbox_mod.start_hosts(1, pub, label=label, prefix="bare")
        my_hosts = instance.up(1, mine, tmp_path / "mine.toml", str(tmp_path), label=label)
        my_hosts = instance.up(1, mine, tmp_path / "mine.toml", str(tmp_path), label=label)  # replaces mine
        assert [h.container_id for h in instance.running(mine, label)] == [my_hosts[0].container_id]
        assert [h.container_id for h in instance.running(theirs, label)] == [their_hosts[0].container_id]
        assert instance.down(mine, label) == 1
        assert all(sandbox_mod.container(h).status == "running" for h in other)
        assert instance.running(mine, label) == []
    finally:
        instance.down(mine, label)
        sandbox_mod.stop_hosts(other)
