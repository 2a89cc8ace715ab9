"""Every on-host path, derived in one place. Nobody else joins deploy paths. Also the one local
directory the deployer keeps per user (its cache)."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

MANIFEST = ".deployer/manifest.sha256"  # in every artifact (and so every release): sha256  path


def user_cache() -> Path:
    """$XDG_CACHE_HOME/deployer (default ~/.cache/deployer, on macOS too): member-check records,
    the agent's socket. A relative XDG_CACHE_HOME is ignored, as the XDG spec says."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deployer"


@dataclass(frozen=True)
class Paths:
    deploy_to: str

    @property
    def releases(self) -> str:
        return posixpath.join(self.deploy_to, "releases")

    @property
    def current(self) -> str:
        return posixpath.join(self.deploy_to, "current")

    @property
    def shared(self) -> str:
        return posixpath.join(self.deploy_to, "shared")

    @property
    def state(self) -> str:
        """The deployer's own directory: lock, artifact cache."""
        return posixpath.join(self.deploy_to, ".deployer")

    @property
    def lock(self) -> str:
        return posixpath.join(self.state, "lock")

    @property
    def lock_info(self) -> str:
        """Who holds the lock (JSON, one line)."""
        return posixpath.join(self.lock, "info")

    @property
    def lock_token(self) -> str:
        """The holding run's token: only it releases the lock."""
        return posixpath.join(self.lock, "token")

    @property
    def lock_beat(self) -> str:
        """The holder's heartbeat: its mtime, by the host's clock, is when the lease was last renewed."""
        return posixpath.join(self.lock, "beat")

    @property
    def ledger(self) -> str:
        return posixpath.join(self.state, "ledger.jsonl")

    @property
    def cache(self) -> str:
        return posixpath.join(self.state, "cache")

    def release(self, number: int | str) -> str:
        return posixpath.join(self.releases, str(number))

    def release_target(self, number: int) -> str:
        """What `current` points at: relative, so deploy_to can be moved."""
        return f"releases/{number}"

    def release_state(self, number: int) -> str:
        return posixpath.join(self.release(number), ".deployer")

    def tmp_release(self, number: int, token: str) -> str:
        return posixpath.join(self.releases, f".tmp-{number}-{token}")

    def tmp_current(self, token: str) -> str:
        return posixpath.join(self.deploy_to, f".current-{token}")

    def cached_artifact(self, sha256: str) -> str:
        return posixpath.join(self.cache, f"{sha256}.tar.gz")

    def partial_artifact(self, token: str) -> str:
        return posixpath.join(self.cache, f".part-{token}")

    def shared_path(self, rel: str) -> str:
        return posixpath.join(self.shared, rel)

    def release_env(self, number: int) -> str:
        """Release N's own env file (0600): what its `<env_file>` links to."""
        return posixpath.join(self.release_state(number), "env")

    @staticmethod
    def release_env_link(env_file: str) -> str:
        """What `<release>/<env_file>` points at: the release's own env, relative."""
        return posixpath.relpath(".deployer/env", posixpath.dirname(env_file) or ".")

    def shared_env_link(self, env_file: str) -> str:
        """What `shared/<env_file>` points at: the live release's env, through `current`."""
        return posixpath.relpath(posixpath.join(self.current, env_file), posixpath.dirname(self.shared_path(env_file)))

    def env_upload(self, token: str) -> str:
        """Where prepare receives the env before its release exists: beside the partial upload,
        so a leftover is removed with it."""
        return self.partial_artifact(token) + ".env"

    def env_write(self, number: int, token: str) -> str:
        """Where config.push receives release N's new env before renaming it into place."""
        return f"{self.release_env(number)}.tmp-{token}"
