"""Shared fixtures.

Sections:
- sandbox hosts: real sshd containers (see deployer/sandbox/hosts.py)
- sample repositories: small git repos to deploy
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import GIT_ENV, TEST_LABEL, Sandbox, git

from deployer.sandbox import deploy_files
from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox.hosts import SandboxHost
from deployer.sandbox.image import SYSTEMD


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory):
    """The deployer's per-user cache (member-check records) lives in this test run's temp dir,
    for every test and every CLI run the tests start."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))


# --- sandbox hosts -----------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """The sandbox image tag, built if needed. Skips (fails under CI=true) without a Docker engine."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        return sandbox_mod.ensure_image(log=lambda msg: print(msg, flush=True))
    except sandbox_mod.SandboxError as e:
        message = f"sandbox hosts unavailable: {e}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)  # never under CI=true: that fails just above


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    """Path of an ed25519 private key (``.pub`` beside it) the sandbox hosts authorize."""
    return sandbox_mod.ensure_client_key(tmp_path_factory.mktemp("client-key"))


def _sandbox_factory(client_key: Path, app_repo: Path, tmp_path: Path, *, systemd: bool = False):
    """``(make, started)``: make(n, *, source, docker_kwargs, **extra_config) starts hosts into
    started (the fixture removes them) and writes known_hosts and a hosts.toml for them."""
    import docker

    client = docker.from_env()
    started: list[SandboxHost] = []
    count = 0

    def make(
        n: int = 3, *, source: Path | str | None = None, docker_kwargs: dict | None = None, **extra_config: Any
    ) -> Sandbox:
        nonlocal count
        count += 1
        directory = tmp_path / f"{'systemd-' if systemd else ''}sandbox-{count}"
        hosts = sandbox_mod.start_hosts(
            n, client_key.with_suffix(".pub").read_text(), label=TEST_LABEL, systemd=systemd, **(docker_kwargs or {})
        )
        started.extend(hosts)
        known_hosts = sandbox_mod.write_known_hosts(directory / "known_hosts", hosts)
        source = Path(source or app_repo)
        config = deploy_files.write_config(
            directory / "hosts.toml", hosts, client_key, known_hosts, source=str(source), extra=extra_config
        )
        return Sandbox(
            hosts=hosts,
            config_path=config,
            known_hosts_path=known_hosts,
            key_path=client_key,
            source=source,
            docker=client,
        )

    return make, started, client


@pytest.fixture
def sandbox(sandbox_image, client_key, app_repo, tmp_path) -> Callable[..., Sandbox]:
    """Factory: ``sandbox(n=3, *, source=None, docker_kwargs=None, **extra_config) -> Sandbox``.

    Starts n fresh hosts, writes known_hosts and a hosts.toml (extra_config deep-merged
    into it) under tmp_path. ``source`` defaults to the app_repo fixture. Every host
    started is removed at teardown.
    """
    make, started, client = _sandbox_factory(client_key, app_repo, tmp_path)
    yield make
    sandbox_mod.stop_hosts(started)
    client.close()


@pytest.fixture(scope="session")
def systemd_image() -> str:
    """The systemd sandbox image tag, built if needed (as sandbox_image: skips without Docker,
    fails under CI=true)."""
    try:
        return sandbox_mod.ensure_image(log=lambda msg: print(msg, flush=True), flavour=SYSTEMD)
    except sandbox_mod.SandboxError as e:
        message = f"systemd sandbox hosts unavailable: {e}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)  # never under CI=true: that fails just above


@pytest.fixture
def systemd_sandbox(systemd_image, client_key, app_repo, tmp_path) -> Callable[..., Sandbox]:
    """As ``sandbox``, with production-shaped hosts: systemd is PID 1 and runs sshd and nginx, the
    config logs in as ``deploy`` (no sudo rule; /srv/app is its own), root logs in with the same
    key. ``sandbox_mod.restart_host`` reboots one (address and host key kept)."""
    make, started, client = _sandbox_factory(client_key, app_repo, tmp_path, systemd=True)
    yield make
    sandbox_mod.stop_hosts(started)
    client.close()


@pytest.fixture
def hidden_hosts(sandbox_image, client_key):
    """Two hosts on an internal docker network (no published port), known only by name, plus a
    bastion reachable on 127.0.0.1 that is attached to that network."""
    import docker

    client = docker.from_env()
    net = client.networks.create(f"deployer-internal-{uuid.uuid4().hex[:8]}", internal=True, labels={TEST_LABEL: "net"})
    pubkey = client_key.with_suffix(".pub").read_text().strip()
    targets, bastion = [], None
    try:
        for i in (1, 2):
            name = f"hidden-{uuid.uuid4().hex[:6]}-{i}"
            targets.append(
                client.containers.run(
                    sandbox_image,
                    detach=True,
                    name=name,
                    network=net.name,
                    environment={"AUTHORIZED_KEY": pubkey},
                    labels={TEST_LABEL: name},
                )
            )
        bastion = sandbox_mod.start_hosts(1, pubkey, label=TEST_LABEL, prefix="bastion")[0]
        net.connect(bastion.container_id)
        lines = []
        for c in targets:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                code, out = c.exec_run(
                    [
                        "sh",
                        "-c",
                        "cat /etc/ssh/ssh_host_ed25519_key.pub && "
                        "(echo > /dev/tcp/127.0.0.1/22) 2>/dev/null || "
                        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 22), 1)'",
                    ]
                )
                if code == 0 and out.startswith(b"ssh-ed25519"):
                    break
                time.sleep(0.1)
            key = out.decode().split()[:2]
            lines.append(f"{c.name} {key[0]} {key[1]}")
        lines.append(sandbox_mod.host_key_line(bastion))
        yield {"targets": targets, "bastion": bastion, "known_hosts": "\n".join(lines) + "\n", "key": client_key}
    finally:
        for c in targets:
            c.remove(force=True)
        if bastion:
            sandbox_mod.stop_hosts([bastion])
        net.remove()
        client.close()


# --- sample repositories -----------------------------------------------------


@pytest.fixture
def app_repo(tmp_path) -> Path:
    """A git work tree with one commit: app.py, README, bin/run (executable), .gitignore; log/ is untracked."""
    repo = tmp_path / "app_repo"
    (repo / "bin").mkdir(parents=True)
    (repo / "app.py").write_text(
        "def app(environ, start_response):\n"
        '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
        '    return [b"hello from sample\\n"]\n'
    )
    (repo / "README").write_text("Sample app deployed by the tests.\n")
    (repo / "bin" / "run").write_text("#!/bin/sh\necho running sample\n")
    (repo / "bin" / "run").chmod(0o755)
    (repo / ".gitignore").write_text("log/\n")
    (repo / "log").mkdir()
    (repo / "log" / "app.log").write_text("local log, never deployed\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", GIT_ENV["GIT_AUTHOR_NAME"])
    git(repo, "config", "user.email", GIT_ENV["GIT_AUTHOR_EMAIL"])
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Initial commit")
    return repo


# --- the artifact store ------------------------------------------------------


@pytest.fixture
def aws_env(s3_store, monkeypatch):
    """The store's credentials in this process's environment, as boto3 reads them."""
    for name, value in s3_store.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_store.env


@pytest.fixture(scope="session")
def s3_store(sandbox_image, tmp_path_factory):
    """A real S3 store (SeaweedFS, see deployer/sandbox/store.py) for the whole run; removed at the
    end. Each test uses a prefix of its own in the bucket."""
    from deployer.sandbox import store

    server = store.start(sandbox_image, tmp_path_factory.mktemp("s3-store"))
    yield server
    store.stop(server)
