"""The artifact store: built artifacts keyed by version and sha256, with their metadata.

A local directory today (the build output, default `artifacts/`). The deploy code only ever
asks a store for an `Artifact` with a local path, so another backend (an object store that
downloads into a local cache) fits behind the same three calls.
"""

from __future__ import annotations

import json
from pathlib import Path

from deployer.artifact.load import Artifact, load_artifact, meta_problem
from deployer.errors import UsageError, command_line


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def list(self) -> list[Artifact]:
        """Every stored artifact by its metadata, newest build first. Nothing is hashed here:
        `get` verifies the one artifact a deploy takes."""
        found = []
        for meta_path in sorted(self.root.glob("*.json")):
            tarball = meta_path.with_name(meta_path.name[: -len(".json")] + ".tar.gz")
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (
                tarball.is_file()
                and isinstance(meta, dict)
                and meta.get("sha256")
                and "size" in meta
                and meta_problem(meta) is None
            ):
                found.append(Artifact(path=tarball, meta=meta))
        return sorted(found, key=lambda a: (a.meta.get("built_at", ""), a.version), reverse=True)

    def get(self, ref: str) -> Artifact:
        """By exact version, or by a prefix (>= 7 chars) of its sha256 or git sha; its sha256 is
        checked against the file (load_artifact)."""
        items = self.list()
        exact = [a for a in items if a.version == ref]
        if exact:
            return load_artifact(exact[0].path)
        matches = [
            a for a in items if len(ref) >= 7 and (a.sha256.startswith(ref) or (a.git_sha or "").startswith(ref))
        ]
        if len({a.sha256 for a in matches}) == 1:
            return load_artifact(matches[0].path)
        if matches:
            raise UsageError(
                f"{ref!r} matches several artifacts in {self.root}: " + ", ".join(sorted({a.version for a in matches}))
            )
        raise UsageError(f"no artifact {ref!r} in {self.root} (see: {command_line('artifacts')})")

    def put(self, artifact: Artifact) -> Artifact:
        """Builds write straight into the store's directory; anything else is refused."""
        if Path(artifact.path).resolve().parent != self.root.resolve():
            raise UsageError(f"{artifact.path} is not in the store {self.root}")
        return artifact
