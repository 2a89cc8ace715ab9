"""Reproducible tarball writing: the entries of an export directory, packed byte for byte the same.

The tarball depends only on the packed file contents and the commit. Entries are sorted by path
(plain string order, parents first), directories are explicit entries, every mtime is the commit
timestamp, uid/gid 0, uname/gname empty, modes normalised (dirs 0755, files 0755 if any exec bit
else 0644, symlinks 0777 and kept as symlinks), PAX tar format, gzip level 9 with header mtime 0
and no file name. Packing streams one file at a time, so memory does not grow with artifact size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deployer.artifact.members import RESERVED_DIR
from deployer.errors import ArtifactError
from deployer.plan.paths import MANIFEST as MANIFEST_MEMBER

TAR_FORMAT = tarfile.PAX_FORMAT
GZIP_LEVEL = 9


@dataclass
class Entry:
    """One path to pack, relative to the export root."""

    rel: str
    kind: str  # "dir" | "file" | "symlink" (| "chr" | "blk" | "fifo", which the member rules refuse)
    path: Path
    size: int = 0
    mode: int = 0
    target: str = ""


def collect(root: Path, roots: Sequence[str] | None) -> list[Entry]:
    """Collect entries under root (all of it, or only `roots`), with parent dirs; sorted."""
    entries: dict[str, Entry] = {}

    def add(rel: str) -> None:
        if rel in entries:
            return
        path = root / rel
        st = os.lstat(path)
        mode = st.st_mode
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            raise ArtifactError(f"refusing to pack {rel!r}: file name is not valid UTF-8") from None
        if stat.S_ISLNK(mode):
            entries[rel] = Entry(rel, "symlink", path, target=os.readlink(path))
        elif stat.S_ISDIR(mode):
            entries[rel] = Entry(rel, "dir", path)
            with os.scandir(path) as it:
                children = sorted(e.name for e in it)
            for child in children:
                add(f"{rel}/{child}")
        elif stat.S_ISREG(mode):
            exec_bit = mode & 0o111
            entries[rel] = Entry(rel, "file", path, size=st.st_size, mode=0o755 if exec_bit else 0o644)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            entries[rel] = Entry(rel, "chr" if stat.S_ISCHR(mode) else "blk", path)
        elif stat.S_ISFIFO(mode):
            entries[rel] = Entry(rel, "fifo", path)
        else:
            raise ArtifactError(f"refusing to pack '{rel}': unsupported file type (socket?)")

    if roots is None:
        with os.scandir(root) as it:
            tops = sorted(e.name for e in it)
        for name in tops:
            add(name)
    else:
        for rel in roots:
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if os.path.islink(root.joinpath(*parts[:i])):
                    raise ArtifactError(f"refusing to pack '{rel}': path goes through symlink '{'/'.join(parts[:i])}'")
            if os.path.lexists(root / rel):
                add(rel)
        # parent directories as explicit entries
        for rel in list(entries):
            parts = rel.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in entries:
                    entries[parent] = Entry(parent, "dir", root / parent)
    return [entries[k] for k in sorted(entries)]


def manifest_text(manifest: dict[str, str]) -> str:
    """The manifest file's text: "<sha256>  <path>" per regular file, sorted by path (sha256sum format)."""
    return "".join(f"{manifest[p]}  {p}\n" for p in sorted(manifest))


def manifest_sha256(manifest: dict[str, str]) -> str:
    """sha256 of the manifest file's bytes (MANIFEST_MEMBER)."""
    return hashlib.sha256(manifest_text(manifest).encode("utf-8", "surrogateescape")).hexdigest()


def with_manifest(root: Path, entries: list[Entry], manifest: dict[str, str]) -> list[Entry]:
    """Write MANIFEST_MEMBER into the export and add it (and its dir) to the sorted entries."""
    path = root / MANIFEST_MEMBER
    path.parent.mkdir(exist_ok=True)
    data = manifest_text(manifest).encode("utf-8", "surrogateescape")
    path.write_bytes(data)
    extra = [Entry(RESERVED_DIR, "dir", path.parent), Entry(MANIFEST_MEMBER, "file", path, size=len(data), mode=0o644)]
    return sorted(entries + extra, key=lambda e: e.rel)


def tarinfo_for(e: Entry, mtime: int) -> tarfile.TarInfo:
    """The normalised tar header of an entry."""
    ti = tarfile.TarInfo(e.rel)
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if e.kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    elif e.kind == "symlink":
        ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, e.target
    elif e.kind == "file":
        ti.type, ti.mode, ti.size = tarfile.REGTYPE, e.mode, e.size
    elif e.kind in ("chr", "blk"):
        ti.type, ti.mode = (tarfile.CHRTYPE if e.kind == "chr" else tarfile.BLKTYPE), 0o644
    elif e.kind == "fifo":
        ti.type, ti.mode = tarfile.FIFOTYPE, 0o644
    return ti


class _HashingReader(io.RawIOBase):
    """Hashes what tarfile reads, so each file is read once for both packing and the manifest."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.hash.update(data)
        return data


def write_tarball(entries: list[Entry], mtime: int, dest_fh: IO[bytes]) -> tuple[dict[str, str], int]:
    """Write the reproducible tar.gz to dest_fh; return (manifest, unpacked_size)."""
    manifest: dict[str, str] = {}
    unpacked = 0
    with gzip.GzipFile(fileobj=dest_fh, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=TAR_FORMAT, encoding="utf-8") as tf:
            for e in entries:
                ti = tarinfo_for(e, mtime)
                if e.kind != "file":
                    tf.addfile(ti)
                    continue
                with open(e.path, "rb") as raw:
                    reader = _HashingReader(raw)
                    try:
                        tf.addfile(ti, reader)
                    except OSError as exc:
                        raise ArtifactError(f"'{e.rel}' changed while packing: {exc}") from None
                manifest[e.rel] = reader.hash.hexdigest()
                unpacked += e.size if e.rel != MANIFEST_MEMBER else 0
    return manifest, unpacked
