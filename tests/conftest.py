"""Shared fixtures.

Sections:
- sandbox hosts: real sshd containers (see deployer/sandbox/hosts.py)
- sample repositories: small git repos to deploy
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox.hosts import SandboxHost

# Test containers carry their own label, so `inv sandbox.down` and the tests never remove each other's hosts.
TEST_LABEL = "deployer-sandbox-test"


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


@dataclass
class Sandbox:
    """Running sandbox hosts plus the files a deployer run needs to reach them."""

    hosts: list[SandboxHost]
    config_path: Path
    known_hosts_path: Path
    key_path: Path
    source: Path
    docker: Any = field(repr=False)  # docker SDK client

    def host(self, which: int | str | SandboxHost) -> SandboxHost:
        """A host by index, by name ("host-2") or as is."""
        if isinstance(which, SandboxHost):
            return which
        if isinstance(which, int):
            return self.hosts[which]
        return next(h for h in self.hosts if h.name == which)

    def container(self, which: int | str | SandboxHost):
        """The docker SDK Container (kill, pause, unpause, restart, logs...)."""
        return self.docker.containers.get(self.host(which).container_id)

    @property
    def containers(self) -> list:
        return [self.container(h) for h in self.hosts]

    def exec(self, which: int | str | SandboxHost, cmd: str) -> tuple[int, str]:
        """Run a shell command as root in the container; (exit code, stdout+stderr)."""
        return sandbox_mod.exec_root(self.host(which), cmd)

    def logs(self, which: int | str | SandboxHost) -> str:
        return sandbox_mod.logs(self.host(which))

    def command_count(self, which: int | str | SandboxHost) -> int:
        """How many exec sessions (remote commands) the host's sshd has started so far."""
        return self.logs(which).count("Starting session: command ")


@pytest.fixture
def sandbox(sandbox_image, client_key, app_repo, tmp_path) -> Callable[..., Sandbox]:
    """Factory: ``sandbox(n=3, *, source=None, docker_kwargs=None, **extra_config) -> Sandbox``.

    Starts n fresh hosts, writes known_hosts and a hosts.toml (extra_config deep-merged
    into it) under tmp_path. ``source`` defaults to the app_repo fixture. Every host
    started is removed at teardown.
    """
    import docker

    client = docker.from_env()
    started: list[SandboxHost] = []
    count = 0

    def make(n: int = 3, *, source: Path | str | None = None, docker_kwargs: dict | None = None,
             **extra_config: Any) -> Sandbox:
        nonlocal count
        count += 1
        directory = tmp_path / f"sandbox-{count}"
        hosts = sandbox_mod.start_hosts(n, client_key.with_suffix(".pub").read_text(), label=TEST_LABEL,
                                        **(docker_kwargs or {}))
        started.extend(hosts)
        known_hosts = sandbox_mod.write_known_hosts(directory / "known_hosts", hosts)
        source = Path(source or app_repo)
        config = sandbox_mod.write_config(directory / "hosts.toml", hosts, client_key, known_hosts,
                                          source=str(source), extra=extra_config)
        return Sandbox(hosts=hosts, config_path=config, known_hosts_path=known_hosts, key_path=client_key,
                       source=source, docker=client)

    yield make
    sandbox_mod.stop_hosts(started)
    client.close()


# --- sample repositories -----------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Sample Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "Sample Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str) -> str:
    """Run git in repo with fixed identity and dates (deterministic commits); return stdout."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def app_repo(tmp_path) -> Path:
    """A git work tree with one commit: app.py, README, bin/run (executable), .gitignore; log/ is untracked."""
    repo = tmp_path / "app_repo"
    (repo / "bin").mkdir(parents=True)
    (repo / "app.py").write_text('def app(environ, start_response):\n'
                                 '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
                                 '    return [b"hello from sample\\n"]\n')
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


@pytest.fixture(scope="session")
def s3_store(sandbox_image, tmp_path_factory):
    """A real S3 store (SeaweedFS, see tests/store_fixtures.py) for the whole run; removed at the end.
    Each test uses a prefix of its own in the bucket."""
    import store_fixtures

    server = store_fixtures.start(sandbox_image, tmp_path_factory.mktemp("s3-store"))
    yield server
    store_fixtures.stop(server)
