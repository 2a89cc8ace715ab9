"""The host's side of a delta prepare (scripts/prepare_delta.sh): build the new release from a
base release plus the delta, then prove it is the artifact before anything else happens to it.

In prepare's temp dir (a failure anywhere leaves nothing: prepare's trap removes it):

1. the delta arrives whole, its sha256 is checked, `tar` extracts it: every directory and symlink
   of the new tree, the files whose content the base lacks, and the control lists (`CONTROL`);
2. the base's files the new tree still needs are copied (`cp`, never hard links: a later
   in-place write in either release stays there), by the base's own manifest minus `skip`;
   files with content the base holds under another path are copied from there (`pairs`);
3. the symlinks must be exactly the artifact's (before any chmod: chmod follows a link named on
   its command line); modes are set from the artifact (0644, 0755 for `exec`), times to its;
4. every regular file is hashed into a new manifest whose sha256 must be the artifact's
   manifest's, and the listing of every entry (type, mode, path, link target) must hash to the
   artifact's listing. Nothing extra, nothing missing.

With python3 on the host, steps 2-4 are one pass (scripts/delta_build.py): each file copied is
hashed as it is read and written with the artifact's mode and time, then one lstat walk gives the
manifest and the listing; the shell steps are the fallback.

Anything that does not hold (a base edited by hand, a file added or gone, a link made there)
exits UNUSABLE with MARK on stderr: the deployer then sends the full artifact to that host. The
manifest the release keeps is the one just computed and proven equal to the artifact's.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.artifact.delta import CONTROL
from deployer.plan.paths import MANIFEST, Paths
from deployer.remote.render import Value, render, text

UNUSABLE = 27
MARK = "delta not usable"  # what stderr says when the host should get the full artifact


@dataclass(frozen=True)
class Spec:
    base: int  # the release the delta is against
    sha256: str  # of the delta tarball
    manifest_sha256: str  # of the new artifact's manifest
    listing_sha256: str  # of the new tree's listing
    mtime: int  # the artifact's file times


def inputs(paths: Paths, spec: Spec) -> dict[str, Value]:
    """prepare_delta.sh's inputs."""
    return {
        "DELTA_BASE": paths.release(spec.base),
        "DELTA_NUMBER": spec.base,
        "DELTA_SHA256": spec.sha256,
        "DELTA_MANIFEST_SUM": spec.manifest_sha256,
        "DELTA_LISTING_SUM": spec.listing_sha256,
        "DELTA_MTIME": int(spec.mtime),
        "DELTA_CONTROL": CONTROL,
        "DELTA_PY": text("delta_build.py"),
    }


def read_manifest(paths: Paths, number: int) -> str:
    """Print releases/N's manifest (a base the client's artifact store has no .json for)."""
    return render(["read_manifest.sh"], {"RELEASE": paths.release(number), "MANIFEST": MANIFEST})
