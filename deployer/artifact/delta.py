"""Delta tarballs: what a host that keeps an earlier release needs to build the new one.

`make` reads an artifact once, every file hashed (nothing is taken from its .json), into its
expected tree — every entry's type, mode, symlink target and content digest, plus two digests the
host checks its result against: the manifest's (`.deployer/manifest.sha256`, sha256 of every
regular file) and the listing's (type, mode, path, link target of every entry). Against a base
release's manifest it plans, in the same pass: files whose path and content are unchanged are
copied on the host, files whose content the base holds under another path are copied from there,
and only the rest is sent. The delta is written as the artifact is read, reproducibly (the
artifact's order and times, uid/gid 0, gzip without timestamp): every directory and symlink of
the new tree, the new content, then the control lists the host script reads (`CONTROL`).

Only artifacts whose entries are plain (files 0644/0755, directories 0755, symlinks, no hard
links, no backslash in a name) and whose manifest matches their content get a delta; any other
gets the full upload, so a delta never has to prove more than a full extraction would give.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import posixpath
import tarfile
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deployer.artifact import members, pack
from deployer.plan.paths import MANIFEST

CONTROL = ".deployer/delta"  # inside the delta: skip, pairs, exec, links (read by the host script)
_CHUNK = 1024 * 1024
_SPOOL = 8 * 1024 * 1024  # a file larger than this is held in a temp file, not in memory


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # "f" file, "d" directory, "l" symlink (as find's %y prints them)
    mode: int
    sha256: str = ""
    link: str = ""
    size: int = 0


@dataclass(frozen=True)
class Tree:
    """The tree a full extraction of the artifact gives, and the digests the host checks."""

    entries: tuple[Entry, ...]
    mtime: int
    manifest_sha256: str  # of the manifest text made from the files' actual content
    listing_sha256: str  # of listing_text(entries)

    @property
    def files(self) -> dict[str, str]:
        return {e.path: e.sha256 for e in self.entries if e.kind == "f" and e.path != MANIFEST}

    def size(self, paths: Collection[str] | None = None) -> int:
        """Bytes of the files named (all of them by default)."""
        return sum(e.size for e in self.entries if e.kind == "f" and (paths is None or e.path in paths))


@dataclass(frozen=True)
class Plan:
    send: frozenset[str]  # files whose content goes in the delta
    skip: tuple[str, ...]  # base paths not copied (changed or gone)
    pairs: tuple[tuple[str, str], ...]  # (base path, new path): same content, another path
    reused: int  # files copied from the base at the same path


class NotEligible(Exception):
    """This artifact gets the full upload (one-line reason)."""


class TooBig(NotEligible):
    """Most of the artifact is new to the host: the full upload is the better one."""


def read_tree(path: Path) -> Tree:
    """The artifact's tree, every file hashed as it is read; NotEligible when a delta could not
    reproduce a full extraction exactly."""
    return make(path, {}, None)[0]


def make(
    path: Path, base: dict[str, str], dest: Path | None, limit: int | None = None, exclude: tuple[str, ...] = ()
) -> tuple[Tree, Plan]:
    """One pass over the artifact: its tree, the plan against `base` (a base release's manifest)
    and, with dest, the delta tarball written as the artifact is read. TooBig once the files to
    send pass `limit` bytes (the full artifact is then the better upload). Paths at or under
    `exclude` (shared paths, the env file: links to elsewhere in a release) are never copied."""
    full_base, base = base, {rel: sha for rel, sha in base.items() if not _under(rel, exclude)}
    by_content: dict[str, str] = {}
    for known in sorted(base):
        by_content.setdefault(base[known], known)
    entries: dict[str, Entry] = {}
    manifest_bytes: bytes | None = None
    pairs: list[tuple[str, str]] = []
    send: set[str] = set()
    sent = mtime = 0
    with contextlib.ExitStack() as stack:
        out = _writer(stack, dest) if dest is not None else None
        kept: list[tarfile.TarInfo] = []
        tf = stack.enter_context(tarfile.open(path, mode="r|gz"))
        for m in tf:
            rel = _rel(m.name)
            if rel is None:
                continue
            if "\\" in rel:
                raise NotEligible(f"'{rel}': a backslash in a name")
            mtime = max(mtime, int(m.mtime))
            data = None
            if m.isdir():
                if m.mode & 0o7777 != 0o755:
                    raise NotEligible(f"'{rel}': directory mode {m.mode:o}")
                entries[rel] = Entry(rel, "d", 0o755)
            elif m.issym():
                entries[rel] = Entry(rel, "l", 0o777, link=m.linkname)
            elif m.isreg():
                mode = m.mode & 0o7777
                if mode not in (0o644, 0o755):
                    raise NotEligible(f"'{rel}': file mode {mode:o}")
                data, sha = _read(stack, tf, m)
                entries[rel] = Entry(rel, "f", mode, sha, size=m.size)
                if rel == MANIFEST:
                    manifest_bytes = data.read()
                    continue
                if base.get(rel) == sha:
                    continue
                if sha in by_content:
                    pairs.append((by_content[sha], rel))
                    continue
                send.add(rel)
                sent += m.size
                if limit is not None and sent > limit:
                    raise TooBig(f"{sent} bytes of new content, more than {limit}")
            else:
                raise NotEligible(f"'{rel}': a {'hard link' if m.islnk() else 'special file'}")
            if out is not None and rel != ".deployer":
                ti = _info(rel, m.type, m.mode & 0o7777, m.mtime, m.size if data else 0, m.linkname)
                out.addfile(ti, data)
                kept.append(ti)
        tree = _tree(entries, mtime, manifest_bytes)
        same = {e.path for e in tree.entries if e.kind == "f" and base.get(e.path) == e.sha256}
        plan = Plan(
            frozenset(send),
            tuple(sorted(rel for rel in full_base if rel not in same)),
            tuple(sorted(pairs, key=lambda p: p[1])),
            len(same),
        )
        if out is not None:
            _control(out, tree, plan)
            problem = members.find_problem(kept)
            if problem:
                raise NotEligible(f"delta member '{problem[0]}': {problem[1]}")
    return tree, plan


def _tree(entries: dict[str, Entry], mtime: int, manifest_bytes: bytes | None) -> Tree:
    for rel in list(entries):  # directories tar makes for members without one
        parent = posixpath.dirname(rel)
        while parent and parent not in entries:
            entries[parent] = Entry(parent, "d", 0o755)
            parent = posixpath.dirname(parent)
    if manifest_bytes is None:
        raise NotEligible(f"no {MANIFEST} in the artifact")
    ordered = tuple(entries[p] for p in sorted(entries))
    files = {e.path: e.sha256 for e in ordered if e.kind == "f" and e.path != MANIFEST}
    text = manifest_text(files)
    if text != manifest_bytes:
        raise NotEligible(f"its {MANIFEST} does not match its files")
    return Tree(ordered, mtime, hashlib.sha256(text).hexdigest(), hashlib.sha256(listing_text(ordered)).hexdigest())


def _read(stack: contextlib.ExitStack, tf: tarfile.TarFile, m: tarfile.TarInfo) -> tuple[IO[bytes], str]:
    """A member's content (in memory up to _SPOOL, then on disk) and its sha256."""
    fh = tf.extractfile(m)
    assert fh is not None
    h = hashlib.sha256()
    if m.size <= _SPOOL:
        data = fh.read()
        h.update(data)
        return io.BytesIO(data), h.hexdigest()
    spool = stack.enter_context(tempfile.TemporaryFile())
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    return spool, h.hexdigest()


def manifest_text(files: dict[str, str]) -> bytes:
    """The manifest as the build writes it (`sha256  path`, sorted by path)."""
    return pack.manifest_text(files).encode("utf-8", "surrogateescape")


def listing_text(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    """What `find . -mindepth 1 -printf '%y %m %P\\t%l\\n' | LC_ALL=C sort` prints for the tree."""
    lines = sorted(f"{e.kind} {e.mode:o} {e.path}\t{e.link}\n".encode() for e in entries)
    return b"".join(lines)


def parse_manifest(text: str) -> dict[str, str]:
    """`sha256  path` lines → {path: sha256}; a line of another shape is skipped."""
    out = {}
    for line in text.splitlines():
        sha, sep, rel = line.partition("  ")
        if sep and len(sha) == 64 and rel:
            out[rel] = sha
    return out


def _writer(stack: contextlib.ExitStack, dest: Path) -> tarfile.TarFile:
    """The delta: reproducible (the artifact's order and times, uid/gid 0, gzip without a time)."""
    raw = stack.enter_context(open(dest, "wb"))
    gz = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=pack.GZIP_LEVEL))
    out = stack.enter_context(tarfile.open(fileobj=gz, mode="w|", format=pack.TAR_FORMAT, encoding="utf-8"))
    out.addfile(_info(".deployer", tarfile.DIRTYPE, 0o755, 0))
    return out


def _control(out: tarfile.TarFile, tree: Tree, p: Plan) -> None:
    """The lists the host script reads, after the tree's members."""
    links = sorted(f"{e.path}\t{e.link}\n".encode() for e in tree.entries if e.kind == "l")
    control = {
        "skip": "".join(f"{rel}\n" for rel in p.skip).encode(),
        "pairs": "".join(f"{src}\t{dst}\n" for src, dst in p.pairs).encode(),
        "exec": "".join(f"{e.path}\n" for e in tree.entries if e.kind == "f" and e.mode == 0o755).encode(),
        "links": b"".join(links),
    }
    out.addfile(_info(CONTROL, tarfile.DIRTYPE, 0o755, tree.mtime))
    for name, data in control.items():
        out.addfile(_info(f"{CONTROL}/{name}", tarfile.REGTYPE, 0o644, tree.mtime, len(data)), io.BytesIO(data))


def _under(rel: str, paths: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)


def _rel(name: str) -> str | None:
    parts = [x for x in name.split("/") if x not in ("", ".")]
    return "/".join(parts) or None


def _info(name: str, kind: bytes, mode: int, mtime: float, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.size, ti.linkname = kind, mode, int(mtime), size, link
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti
