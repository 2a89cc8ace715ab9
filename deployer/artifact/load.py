"""Loading an existing artifact: its tarball and the metadata JSON next to it, checked.

With the JSON, the tarball's sha256 and size must match it and every known key must have the
right type (a hand-edited or foreign file is refused naming the key). Without it, the members
are checked and minimal metadata is computed from the tarball and its file name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from deployer.artifact.fsutil import one_line, sha256_file
from deployer.artifact.members import checked_from, find_problem, record_checked, scan_tarball
from deployer.errors import ArtifactError
from deployer.plan.paths import MANIFEST as MANIFEST_MEMBER

_VERSION_IN_NAME = re.compile(r"^(?P<name>.+)-(?P<version>\d{14}-[0-9a-f]{7,40}(?:-dirty)?)$")
_BUILT_VERSION = re.compile(r"^\d{14}-(?P<sha>[0-9a-f]{7,40})(?:-dirty)?$")  # the builder's default


@dataclass(frozen=True)
class Artifact:
    """A built tarball and its metadata."""

    path: Path  # the .tar.gz
    meta: dict[str, Any] = field(hash=False)  # metadata (also stored as JSON next to it), types checked on load

    @property
    def json_path(self) -> Path:
        return json_path_for(self.path)

    @property
    def name(self) -> str:
        return cast(str, self.meta.get("name", ""))

    @property
    def sha256(self) -> str:
        return cast(str, self.meta["sha256"])

    @property
    def version(self) -> str:
        return cast(str, self.meta.get("version", ""))

    @property
    def git_sha(self) -> str | None:
        return self.meta.get("git_sha")

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def dirty(self) -> bool:
        return bool(self.meta.get("dirty", False))

    @property
    def manifest(self) -> dict[str, str]:
        return cast(dict[str, str], self.meta.get("manifest", {}))


def json_path_for(path: Path) -> Path:
    """The metadata file next to a tarball: <stem>.json."""
    path = Path(path)
    name = path.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


# The metadata keys the deployer reads, and what each must be. A hand-edited or foreign .json is
# refused (exit 2, naming the key) rather than failing later with a traceback.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "version": (str,),
    "git_sha": (str, type(None)),
    "sha256": (str,),
    "size": (int,),
    "unpacked_size": (int,),
    "file_count": (int,),
    "dirty": (bool,),
    "commit_time": (str,),
    "built_at": (str,),
    "built_by": (str,),
    "manifest": (dict,),
    "manifest_sha256": (str,),
}
_TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", dict: "a table", type(None): "null"}


def meta_problem(meta: dict[str, Any]) -> str | None:
    """Why this metadata cannot be used (a known key of the wrong type), or None."""
    for key, types in _META_TYPES.items():
        if key not in meta:
            continue
        value = meta[key]
        wrong = isinstance(value, bool) and bool not in types  # True is an int to Python
        if wrong or not isinstance(value, types):
            want = " or ".join(_TYPE_NAMES[t] for t in types)
            return f"{key!r} must be {want}, got {json.dumps(value)[:60]}"
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return f"{key!r} must not be negative, got {value}"
    return None


def load_artifact(path: Path) -> Artifact:
    """Load an existing artifact (the .tar.gz; a .json path is mapped to its tarball).

    With the JSON next to it, the tarball's sha256 must match the recorded one.
    Without it, the members are checked and minimal metadata is computed.
    """
    path = Path(path).expanduser()
    if path.name.endswith(".json"):
        path = path.with_name(path.name[: -len(".json")] + ".tar.gz")
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    json_path = json_path_for(path)
    digest = sha256_file(path)

    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read metadata {json_path.name}: {one_line(str(exc))}") from None
        if not isinstance(meta, dict) or not meta.get("sha256"):
            raise ArtifactError(f"metadata {json_path.name} has no sha256")
        problem = meta_problem(meta)
        if problem:
            raise ArtifactError(f"metadata {json_path.name}: {problem}")
        if meta["sha256"] != digest:
            raise ArtifactError(
                f"artifact {path.name} sha256 mismatch: metadata says "
                f"{str(meta['sha256'])[:12]}..., file is {digest[:12]}..."
            )
        size = path.stat().st_size
        if "size" in meta and int(meta["size"]) != size:
            raise ArtifactError(f"artifact {path.name} size mismatch: metadata says {meta['size']}, file is {size}")
        meta.setdefault("size", size)
        return Artifact(path=path, meta=meta)

    scanned = scan_tarball(path, want_revision=True)
    members = scanned.members
    unsafe = find_problem(members)
    if unsafe:
        bad, reason = unsafe
        raise ArtifactError(f"{path.name}: unsafe member '{bad}': {reason}")
    checked = checked_from(scanned)
    record_checked(digest, checked)
    revision = checked.revision
    stem = path.name
    for suffix in (".tar.gz", ".tgz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    m = _VERSION_IN_NAME.match(stem)
    name, version = (m.group("name"), m.group("version")) if m else (stem, stem)
    files = [mb for mb in members if mb.isreg() and mb.name != MANIFEST_MEMBER]
    meta = {
        "name": name,
        "version": version,
        "git_sha": revision,
        "sha256": digest,
        "size": path.stat().st_size,
        "unpacked_size": scanned.unpacked_size,
        "file_count": len(files),
        "dirty": version.endswith("-dirty"),
    }
    return Artifact(path=path, meta=meta)


def revision_problem(meta: dict[str, Any], revision: str | None) -> str | None:
    """Why this metadata does not describe the artifact whose REVISION holds `revision` (its
    git_sha differs, or its version names another commit), or None."""
    claimed = meta.get("git_sha") or None
    if claimed and claimed != revision:
        has = f"git sha {revision}" if revision else "no REVISION"
        return f"names git sha {claimed}, but the artifact holds {has}"
    built = _BUILT_VERSION.match(str(meta.get("version", "")))
    if built and not (revision or "").startswith(built.group("sha")):
        has = f"git sha {revision}" if revision else "no REVISION"
        return f"names version {meta.get('version')}, but the artifact holds {has}"
    return None
