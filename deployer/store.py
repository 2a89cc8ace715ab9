"""The artifact store: built artifacts keyed by version and sha256, with their metadata.

A local directory today (the build output, default `artifacts/`). The deploy code only ever
asks a store for an `Artifact` with a local path, so another backend (an object store that
downloads into a local cache) fits behind the same three calls.
"""

from __future__ import annotations

from pathlib import Path

from .artifact import Artifact, ArtifactError, load_artifact
from .errors import UsageError


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def list(self) -> list[Artifact]:
        """Every stored artifact that has its metadata, newest build first."""
        found = []
        for meta_path in sorted(self.root.glob("*.json")):
            tarball = meta_path.with_suffix(".tar.gz")
            if not tarball.is_file():
                continue
            try:
                found.append(load_artifact(tarball))
            except ArtifactError:
                continue
        return sorted(found, key=lambda a: (a.meta.get("built_at", ""), a.version), reverse=True)

    def get(self, ref: str) -> Artifact:
        """By exact version, or by a prefix (>= 7 chars) of its sha256 or git sha."""
        items = self.list()
        exact = [a for a in items if a.version == ref]
        if exact:
            return exact[0]
        matches = [a for a in items if len(ref) >= 7 and (a.sha256.startswith(ref) or a.git_sha.startswith(ref))]
        if len({a.sha256 for a in matches}) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"{ref!r} matches several artifacts in {self.root}: "
                             + ", ".join(sorted({a.version for a in matches})))
        raise UsageError(f"no artifact {ref!r} in {self.root} (see: inv artifacts)")

    def put(self, artifact: Artifact) -> Artifact:
        """Builds write straight into the store's directory; anything else is refused."""
        if Path(artifact.path).resolve().parent != self.root.resolve():
            raise UsageError(f"{artifact.path} is not in the store {self.root}")
        return artifact
