"""Which hosts get a delta, against which release, and the delta itself (made once per base).

A host's base is its live release when that release is ours and complete. What the base holds
comes from the artifact store beside the new artifact (the base artifact's .json carries its
manifest: no round trip); else `ask` (engine/base_manifest.py: one command) reads it from the
first host on that base, once per base; a base neither gives gets the full artifact. Each
base's delta is made once (one pass over the artifact, `artifact.delta.make`) into a temp dir
this object removes on `close`. Hosts prepare in parallel threads: a lock per base, so a host
slow to answer holds up only the hosts on its base.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deployer.artifact import delta as artifact_delta
from deployer.artifact.fsutil import sha256_file
from deployer.artifact.load import Artifact
from deployer.engine.fleet import HostRun
from deployer.plan.host_state import HostState
from deployer.remote import delta as remote_delta

Ask = Callable[[HostRun, int], dict[str, str] | None]  # (host, base release) -> its manifest
SHA256 = re.compile("[0-9a-f]{64}")  # what the host's release.json says it is (it names a local file)
WORTH = 0.5  # a delta carrying more than this share of the artifact's bytes is not made (TooBig)


@dataclass(frozen=True)
class Delta:
    spec: remote_delta.Spec
    path: Path
    size: int
    sent: int  # files whose content travels
    reused: int  # files copied on the host (same path or another)


class Deltas:
    def __init__(self, artifact: Artifact, exclude: tuple[str, ...] = ()):
        """exclude: paths a release links elsewhere (shared paths, the env file): never copied."""
        self.artifact = artifact
        self.exclude = exclude
        self.lock = threading.Lock()  # the dicts below and the temp dir
        self.bases: dict[str, threading.Lock] = {}  # one per base sha256: its manifest and delta made once
        self.refused: str | None = None
        self.made: dict[str, Delta | None] = {}
        self.dir: Path | None = None

    def base(self, state: HostState | None) -> tuple[int, str] | None:
        """(release number, its artifact sha256) to build from, or None."""
        if state is None:
            return None
        number = state.current
        release = state.release(number)
        if number is None or release is None or not release.complete or release.bad:
            return None
        sha = release.meta.get("artifact_sha256")
        return (number, sha) if isinstance(sha, str) and SHA256.fullmatch(sha) else None

    def for_host(self, run: HostRun, ask: Ask | None = None) -> Delta | None:
        """The delta for this host, or None (full upload). `ask`: the base's manifest from this
        host, when the store has none (asked at most once per base)."""
        found = self.base(run.state)
        if found is None or not self.artifact.meta.get("manifest_sha256"):
            return None
        number, base_sha = found
        with self.lock:
            base = self.bases.setdefault(base_sha, threading.Lock())
        with base:
            if self.refused is not None:  # the artifact itself: ask no host for anything
                return None
            if base_sha not in self.made:
                release = run.state.release(number) if run.state is not None else None
                manifest = self._stored_manifest(base_sha, release.meta.get("version") if release else None)
                if manifest is None and ask is not None:
                    manifest = ask(run, number)
                self.made[base_sha] = self._make(number, base_sha, manifest) if manifest else None
            made = self.made[base_sha]
        if made is None or made.spec.base == number:
            return made
        return dataclasses.replace(made, spec=dataclasses.replace(made.spec, base=number))

    def _stored_manifest(self, sha: str, version: object) -> dict[str, str] | None:
        """The base artifact's manifest from the store's metadata, found by its version (the
        usual file name), else by reading every .json there."""
        store = Path(self.artifact.path).parent
        named = sorted(store.glob(f"*-{version}.json")) if isinstance(version, str) and version else []
        for path in named + sorted(set(store.glob("*.json")) - set(named)):
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("sha256") == sha and isinstance(meta.get("manifest"), dict):
                return {str(k): str(v) for k, v in meta["manifest"].items()}
        return None

    def _make(self, number: int, base_sha: str, manifest: dict[str, str]) -> Delta | None:
        if self.refused is not None:
            return None
        with self.lock:
            if self.dir is None:
                self.dir = Path(tempfile.mkdtemp(prefix="deployer-delta-"))
        dest = self.dir / f"{base_sha}.tar.gz"
        unpacked = self.artifact.meta.get("unpacked_size")
        limit = int(WORTH * unpacked) if isinstance(unpacked, int) and unpacked > 0 else None
        try:
            tree, plan = artifact_delta.make(Path(self.artifact.path), manifest, dest, limit, self.exclude)
        except artifact_delta.NotEligible as exc:
            if not isinstance(exc, artifact_delta.TooBig):
                self.refused = str(exc)  # the artifact itself: no host gets a delta
            return None
        spec = remote_delta.Spec(number, sha256_file(dest), tree.manifest_sha256, tree.listing_sha256, tree.mtime)
        return Delta(spec, dest, dest.stat().st_size, len(plan.send), plan.reused + len(plan.pairs))

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
