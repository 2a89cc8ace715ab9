"""Build one immutable, reproducible release tarball per git commit.

Pipeline (``build_artifact``):

1. ``source`` may be a git work tree or any subdirectory of one. Everything
   below that directory is the release root.
2. Clean tree (the default): the tracked files of ``HEAD`` under ``source``
   are exported with ``git archive HEAD:<subdir>`` into a fresh temporary
   directory - untracked or ignored junk never gets in. A dirty tree
   (``git status --porcelain -- <source>`` not empty) is refused unless
   ``allow_dirty``; then the *working tree* files (tracked + untracked but
   not ignored, per ``git ls-files --cached --others --exclude-standard``)
   are copied instead and the version gets a ``-dirty`` suffix.
   Every exported file gets the commit timestamp as its mtime.
3. If ``command`` is given it runs through the shell inside the export
   directory, with ``SOURCE_DATE_EPOCH`` (commit time), ``DEPLOYER_NAME``,
   ``DEPLOYER_VERSION`` and ``DEPLOYER_GIT_SHA`` in its environment.
   Non-zero exit -> ``ArtifactError`` with the exit code and output tail.
4. What gets packed:
   * ``include`` empty (default): the whole export directory as it is after
     the build command (tracked files + everything the command produced).
   * ``include`` non-empty: the exported (tracked) files that still exist
     after the command, plus each ``include`` path (a file, symlink or a
     directory packed recursively, relative to the release root). Anything
     else the command left behind (caches, virtualenvs...) is dropped.
     Every ``include`` path must exist after the command.
   A top-level ``REVISION`` file (full git sha + newline) is always added,
   replacing any file of that name.
5. Output: ``<out_dir>/<name>-<version>.tar.gz`` and ``<name>-<version>.json``,
   each written to a temp file and renamed into place.

Default version: ``<committer date as UTC yyyymmddHHMMSS>-<7-char sha>``.

Reproducibility: the tarball depends only on the packed file contents and the
commit. Entries are sorted by path (plain string order, parents first),
directories are explicit entries, every mtime is the commit timestamp,
uid/gid 0, uname/gname empty, modes normalised (dirs 0755, files 0755 if any
exec bit else 0644, symlinks 0777 and kept as symlinks), PAX tar format,
gzip level 9 with header mtime 0 and no file name. ``built_at``/``built_by``
only live in the JSON. Output of a build command is reproducible only as far
as the command itself is (it runs in a random temp dir).

Safety: the same member rules are applied to the file list before packing
and by ``check_members`` to an existing tarball (before any upload), read as
the host's GNU tar will read it (``tarscan``: one gzip member, nothing after
the end marker, no header construction two readers could disagree on): no
absolute paths, no ``..``, no symlink resolving outside the tree, no path
going through a symlink member, hardlinks only to earlier regular files in
the archive, no devices/fifos, no setuid/setgid, nothing under ``.deployer/``
(reserved for the deployer's own markers on the hosts), no duplicates.
``tarfile.data_filter`` is applied as a second line of defence.

Only the standard library is used. Packing streams one file at a time, so
memory does not grow with artifact size.
"""

from __future__ import annotations

import collections
import datetime as _dt
import getpass
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from deployer.artifact import tarscan
from deployer.plan.paths import MANIFEST as MANIFEST_MEMBER
from deployer.plan.paths import user_cache

__all__ = [
    "ArtifactError",
    "Artifact",
    "build_artifact",
    "load_artifact",
    "check_members",
    "sha256_file",
    "RESERVED_DIR",
    "REVISION_FILE",
]

RESERVED_DIR = ".deployer"
REVISION_FILE = "REVISION"
# The one reserved path the builder itself writes: "<sha256>  <path>" per regular file, sorted by
# path (sha256sum format). It travels with the release, so drift can be checked on the host.
TAR_FORMAT = tarfile.PAX_FORMAT
GZIP_LEVEL = 9
_CHUNK = 1024 * 1024
_MAX_SYMLINK_HOPS = 40
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_VERSION_IN_NAME = re.compile(r"^(?P<name>.+)-(?P<version>\d{14}-[0-9a-f]{7,40}(?:-dirty)?)$")
# git variables that would redirect git away from the repo containing `source`
_GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
)

Log = Callable[[str], object]


class ArtifactError(Exception):
    """Building, loading or checking an artifact failed (one-line message)."""


@dataclass(frozen=True)
class Artifact:
    path: Path  # the .tar.gz
    meta: dict = field(hash=False)  # metadata (also stored as JSON next to it)

    @property
    def json_path(self) -> Path:
        return _json_path_for(self.path)

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def version(self) -> str:
        return self.meta.get("version", "")

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
    def manifest(self) -> dict:
        return self.meta.get("manifest", {})


# --------------------------------------------------------------------------
# small helpers


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _json_path_for(path: Path) -> Path:
    path = Path(path)
    name = path.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def _manifest_sha256(manifest: dict) -> str:
    """sha256 of the manifest file's bytes (MANIFEST_MEMBER)."""
    return hashlib.sha256(_manifest_text(manifest).encode("utf-8", "surrogateescape")).hexdigest()


def _utc_iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _built_by() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry / no env vars (containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rmtree(path: Path) -> None:
    def onerror(func, p, _exc):
        try:
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


# --------------------------------------------------------------------------
# git


def _git_env() -> dict:
    env = dict(os.environ)
    for var in _GIT_LOCATION_VARS:
        env.pop(var, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git(cwd: Path, *args: str) -> bytes:
    cmd = ["git", "-c", "core.quotepath=off", *args]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
        )
    except FileNotFoundError:
        raise ArtifactError("git executable not found (needed to build artifacts)") from None
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = err[-1] if err else f"exit code {exc.returncode}"
        raise ArtifactError(f"git {args[0]} failed in {cwd}: {_one_line(detail)}") from None
    return proc.stdout


def _git_text(cwd: Path, *args: str) -> str:
    return _git(cwd, *args).decode("utf-8", "surrogateescape").strip()


def _locate_repo(source: Path) -> tuple[Path, str]:
    """Return (toplevel, prefix) where prefix is the subdir relative to the top ('' or 'a/b')."""
    try:
        inside = _git_text(source, "rev-parse", "--is-inside-work-tree")
    except ArtifactError:
        inside = ""
    if inside != "true":
        raise ArtifactError(f"{source} is not inside a git work tree")
    top = Path(_git_text(source, "rev-parse", "--show-toplevel"))
    prefix = _git(source, "rev-parse", "--show-prefix").decode("utf-8", "surrogateescape")
    prefix = prefix.rstrip("\n").strip("/")
    return top, prefix


def _head_commit(top: Path) -> tuple[str, int]:
    try:
        sha = _git_text(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except ArtifactError:
        sha = ""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise ArtifactError(f"git repository {top} has no commits yet; commit something first")
    ts = int(_git_text(top, "show", "-s", "--format=%ct", sha))
    return sha, ts


def _dirty_entries(source: Path) -> list[str]:
    out = _git(source, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return [ln for ln in out.decode("utf-8", "surrogateescape").splitlines() if ln.strip()]


def _dirty_summary(lines: list[str], shown: int = 3) -> str:
    """'hosts.toml (untracked), app.py (modified) and 2 more' from `git status --porcelain` lines."""
    def one(line: str) -> str:
        code, path = line[:2], line[3:]
        what = "untracked" if code == "??" else "deleted" if "D" in code else "added" if "A" in code else "modified"
        return f"{path} ({what})"
    names = ", ".join(one(ln) for ln in lines[:shown])
    return names + (f" and {len(lines) - shown} more" if len(lines) > shown else "")


# --------------------------------------------------------------------------
# member safety rules (shared by build-time check and check_members)


class _Unsafe(Exception):
    pass


def _split_name(name: str) -> list[str]:
    if not name:
        raise _Unsafe("empty member name")
    if name.startswith("/"):
        raise _Unsafe("absolute path")
    if "\x00" in name:
        raise _Unsafe("NUL byte in name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Unsafe("path contains a '..' component")
    return parts


def _symlink_problem(parent: list[str], target: str, symlinks: dict[str, str]) -> str | None:
    """Resolve a symlink target inside a virtual tree of `symlinks`; describe any escape."""
    if not target:
        return "symlink with empty target"
    if target.startswith("/"):
        return f"symlink points outside the tree (absolute target '{target}')"
    stack = list(parent)
    pending = collections.deque(target.split("/"))
    hops = 0
    while pending:
        comp = pending.popleft()
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return f"symlink points outside the tree (target '{target}')"
            stack.pop()
            continue
        stack.append(comp)
        key = "/".join(stack)
        if key in symlinks:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                return f"symlink loop (target '{target}')"
            inner = symlinks[key]
            if inner.startswith("/"):
                return f"symlink points outside the tree (via '{key}' -> '{inner}')"
            stack.pop()
            pending.extendleft(reversed(inner.split("/")))
    return None


_FILTER_DEST = "/nonexistent-deployer-check/root"


def _find_problem(members: Iterable[tarfile.TarInfo]) -> tuple[str, str] | None:
    """Return (member name, reason) for the first unsafe member, else None."""
    members = list(members)
    split: list[list[str] | None] = []
    for m in members:
        try:
            split.append(_split_name(m.name))
        except _Unsafe:
            split.append(None)
    symlinks = {"/".join(p): m.linkname for m, p in zip(members, split) if p and m.issym()}
    seen: dict[str, tarfile.TarInfo] = {}
    data_filter = getattr(tarfile, "data_filter", None)

    for m, parts in zip(members, split):
        name = m.name
        if parts is None:
            try:
                _split_name(name)
            except _Unsafe as exc:
                return name, str(exc)
        assert parts is not None
        if not parts:
            if m.isdir():
                continue  # "." / "./" root entry
            return name, "member names the archive root"
        key = "/".join(parts)
        if parts[0] == RESERVED_DIR and not (key == RESERVED_DIR and m.isdir()) \
                and not (key == MANIFEST_MEMBER and m.isreg()):
            return name, f"'{RESERVED_DIR}/' is reserved for the deployer"
        if m.ischr() or m.isblk():
            return name, "device file"
        if m.isfifo():
            return name, "fifo"
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            return name, f"unsupported member type {m.type!r}"
        if m.mode & (stat.S_ISUID | stat.S_ISGID):
            return name, f"setuid/setgid bit set (mode {m.mode:o})"
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in symlinks:
                return name, f"path goes through symlink '{prefix}'"
        if key in seen:
            return name, "duplicate member"
        if m.issym():
            problem = _symlink_problem(parts[:-1], m.linkname, symlinks)
            if problem:
                return name, problem
        elif m.islnk():
            try:
                tparts = _split_name(m.linkname)
            except _Unsafe:
                return name, f"hardlink points outside the tree ('{m.linkname}')"
            target = seen.get("/".join(tparts))
            if target is None or not target.isreg():
                return name, f"hardlink target '{m.linkname}' is not an earlier regular file in the archive"
        seen[key] = m
        if data_filter is not None:
            try:
                data_filter(m, _FILTER_DEST)
            except tarfile.FilterError as exc:
                return name, f"rejected by tarfile data filter: {_one_line(str(exc))}"
    return None


def _scan_tarball(path: Path, want_revision: bool = False) -> tarscan.Scan:
    """The members as the host's GNU tar will extract them (see tarscan), or ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    try:
        return tarscan.scan(path, keep=(REVISION_FILE,) if want_revision else ())
    except tarscan.Refused as exc:
        raise ArtifactError(f"{path.name} refused: {_one_line(str(exc))}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path.name}: {_one_line(str(exc))}") from None


# Bump when the member rules change: earlier "checked" records then no longer count.
MEMBER_RULES = "2"


@dataclass(frozen=True)
class Checked:
    """What the member check learnt about an artifact that passed it."""
    unpacked_size: int                  # bytes of regular file data: what extraction writes
    symlinks: tuple[str, ...]           # every symlink member's path, normalised


def checked_record(sha256: str) -> Path:
    """Where this user's deployer records "these exact bytes passed the member check"
    ($XDG_CACHE_HOME/deployer/checked/, default ~/.cache). Only a local run writes it, keyed by a
    digest taken from the file itself, so a tarball shipped with any sidecar is still checked."""
    return user_cache() / "checked" / f"{sha256}.rules-{MEMBER_RULES}"


def _record_checked(sha256: str, checked: Checked) -> None:
    record = checked_record(sha256)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(record, json.dumps({"unpacked_size": checked.unpacked_size,
                                                "symlinks": list(checked.symlinks)}).encode())
    except OSError:
        pass            # a read-only home only costs the check again next time


def _read_record(sha256: str) -> Checked | None:
    try:
        data = json.loads(checked_record(sha256).read_text(encoding="utf-8"))
        return Checked(int(data["unpacked_size"]), tuple(str(s) for s in data["symlinks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checked(members: Sequence[tarfile.TarInfo], unpacked_size: int) -> Checked:
    links = ("/".join(_split_name(m.name)) for m in members if m.issym())
    return Checked(unpacked_size, tuple(sorted(links)))


def _shared_problem(symlinks: Iterable[str], shared: Iterable[str]) -> tuple[str, str] | None:
    """A symlink member at or above a shared path: linking it would follow the artifact's link
    (`rm -rf` of the shared path then removes whatever the link points at)."""
    links = set(symlinks)
    for rel in shared:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            at = "/".join(parts[:i])
            if at in links:
                return at, f"a symlink at or above shared path '{rel}' (shared paths are linked by the deployer)"
    return None


def check_members(path: Path, sha256: str | None = None, shared: Sequence[str] = ()) -> Checked:
    """Raise ArtifactError naming the first unsafe member of an existing tarball, or a symlink
    member at or above one of the `shared` paths; else return what the check learnt.

    With `sha256` (computed from the file by the caller, e.g. load_artifact), a tarball with
    those exact bytes that already passed under the current rules is not scanned again."""
    path = Path(path)
    checked = _read_record(sha256) if sha256 else None
    if checked is None:
        scanned = _scan_tarball(path)
        problem = _find_problem(scanned.members)
        if problem:
            name, reason = problem
            raise ArtifactError(f"{path.name}: unsafe member '{name}': {reason}")
        checked = _checked(scanned.members, scanned.unpacked_size)
        if sha256:
            _record_checked(sha256, checked)
    problem = _shared_problem(checked.symlinks, shared)
    if problem:
        name, reason = problem
        raise ArtifactError(f"{path.name}: unsafe member '{name}': {reason}")
    return checked


# --------------------------------------------------------------------------
# export


def _safe_join(root: Path, rel: str) -> Path:
    try:
        parts = _split_name(rel)
    except _Unsafe as exc:
        raise ArtifactError(f"refusing to export '{rel}': {exc}") from None
    return root.joinpath(*parts) if parts else root


def _export_head(top: Path, prefix: str, sha: str, dest: Path) -> None:
    """Stream `git archive` of the commit's subtree into dest (regular files, dirs, symlinks)."""
    treeish = f"{sha}:{prefix}" if prefix else sha
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(
                ["git", "-c", "core.quotepath=off", "archive", "--format=tar", treeish],
                cwd=top, env=_git_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errf,
            )
        except FileNotFoundError:
            raise ArtifactError("git executable not found (needed to build artifacts)") from None
        read_error: Exception | None = None
        try:
            symlinks: set[str] = set()
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
                    for m in tf:
                        _extract_one(tf, m, dest, symlinks)
                # git pads the archive past the end marker, possibly in a later write: read it all,
                # or closing the pipe early kills git with SIGPIPE (exit -13) now and then
                while proc.stdout.read(65536):
                    pass
            except (tarfile.TarError, EOFError) as exc:
                read_error = exc  # git's own error (if any) is the better message
        finally:
            if proc.stdout:
                proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace").strip().splitlines()
            detail = err[-1] if err else f"exit code {rc}"
            if prefix and "not a valid object name" in detail.lower():
                detail = f"nothing under '{prefix}' is tracked at HEAD"
            raise ArtifactError(f"git archive failed in {top}: {_one_line(detail)}")
        if read_error is not None:
            raise ArtifactError(f"cannot read git archive output: {_one_line(str(read_error))}")


def _extract_one(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: Path, symlinks: set[str]) -> None:
    parts = _split_name(m.name) if m.name else []
    if not parts:
        return
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in symlinks:
            raise ArtifactError(f"refusing to export '{m.name}': path goes through a symlink")
    target = dest.joinpath(*parts)
    if m.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if m.issym():
        os.symlink(m.linkname, target)
        symlinks.add("/".join(parts))
    elif m.isreg():
        src = tf.extractfile(m)
        assert src is not None
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
    else:
        raise ArtifactError(f"refusing to export '{m.name}': unsupported entry type {m.type!r}")


def _export_worktree(source: Path, dest: Path, log: Log) -> None:
    """Copy tracked + untracked-not-ignored files under source into dest."""
    out = _git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    names = sorted({os.fsdecode(n) for n in out.split(b"\x00") if n})
    for rel in names:
        src = source / rel
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            continue  # tracked but deleted in the work tree
        target = _safe_join(dest, rel)
        if stat.S_ISDIR(st.st_mode):
            log(f"skipping '{rel}' (submodule / directory entry)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, target, follow_symlinks=False)
            os.chmod(target, 0o755 if st.st_mode & 0o111 else 0o644)
        else:
            raise ArtifactError(f"refusing to pack '{rel}': not a regular file, directory or symlink")


def _set_mtimes(root: Path, ts: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            try:
                os.utime(os.path.join(dirpath, n), (ts, ts), follow_symlinks=False)
            except (NotImplementedError, OSError):
                pass
    os.utime(root, (ts, ts))


def _relative_files(root: Path) -> set[str]:
    """Relative paths of all non-directory entries under root."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(n if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), n))
    return found


# --------------------------------------------------------------------------
# build command


def _run_command(command: str, cwd: Path, env: dict, log: Log) -> None:
    log(f"running build command: {command}")
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(
            command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise ArtifactError(f"cannot start build command {command!r}: {exc}") from None
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            log(f"  | {line}")
    rc = proc.wait()
    if rc != 0:
        lines = [ln.strip() for ln in tail if ln.strip()][-5:]
        detail = " | ".join(lines) if lines else "no output"
        raise ArtifactError(f"build command {command!r} failed with exit code {rc}; output tail: {_one_line(detail, 500)}")


# --------------------------------------------------------------------------
# packing


@dataclass
class _Entry:
    rel: str
    kind: str  # "dir" | "file" | "symlink"
    path: Path
    size: int = 0
    mode: int = 0
    target: str = ""


def _collect(root: Path, roots: Sequence[str] | None) -> list[_Entry]:
    """Collect entries under root (all of it, or only `roots`), with parent dirs; sorted."""
    entries: dict[str, _Entry] = {}

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
            entries[rel] = _Entry(rel, "symlink", path, target=os.readlink(path))
        elif stat.S_ISDIR(mode):
            entries[rel] = _Entry(rel, "dir", path)
            with os.scandir(path) as it:
                children = sorted(e.name for e in it)
            for child in children:
                add(f"{rel}/{child}")
        elif stat.S_ISREG(mode):
            exec_bit = mode & 0o111
            entries[rel] = _Entry(rel, "file", path, size=st.st_size, mode=0o755 if exec_bit else 0o644)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            entries[rel] = _Entry(rel, "chr" if stat.S_ISCHR(mode) else "blk", path)
        elif stat.S_ISFIFO(mode):
            entries[rel] = _Entry(rel, "fifo", path)
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
                    entries[parent] = _Entry(parent, "dir", root / parent)
    return [entries[k] for k in sorted(entries)]


def _manifest_text(manifest: dict) -> str:
    return "".join(f"{manifest[p]}  {p}\n" for p in sorted(manifest))


def _with_manifest(root: Path, entries: list[_Entry], manifest: dict) -> list[_Entry]:
    """Write MANIFEST_MEMBER into the export and add it (and its dir) to the sorted entries."""
    path = root / MANIFEST_MEMBER
    path.parent.mkdir(exist_ok=True)
    data = _manifest_text(manifest).encode("utf-8", "surrogateescape")
    path.write_bytes(data)
    extra = [_Entry(RESERVED_DIR, "dir", path.parent), _Entry(MANIFEST_MEMBER, "file", path, size=len(data), mode=0o644)]
    return sorted(entries + extra, key=lambda e: e.rel)


def _tarinfo(e: _Entry, mtime: int) -> tarfile.TarInfo:
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
    def __init__(self, fh):
        self._fh = fh
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.hash.update(data)
        return data


def _pack(entries: list[_Entry], mtime: int, dest_fh) -> tuple[dict, int]:
    """Write the reproducible tar.gz to dest_fh; return (manifest, unpacked_size)."""
    manifest: dict[str, str] = {}
    unpacked = 0
    with gzip.GzipFile(fileobj=dest_fh, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=TAR_FORMAT, encoding="utf-8") as tf:
            for e in entries:
                ti = _tarinfo(e, mtime)
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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# public API


def build_artifact(
    source: Path,
    name: str,
    out_dir: Path,
    *,
    command: str = "",
    include: Sequence[str] = (),
    allow_dirty: bool = False,
    version: str | None = None,
    log: Log = print,
) -> Artifact:
    """Build `<out_dir>/<name>-<version>.tar.gz` (+ `.json`) from the git tree at `source`."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise ArtifactError(f"source {source} is not a directory")
    source = source.resolve()
    if not _SAFE_LABEL.match(name or ""):
        raise ArtifactError(f"invalid artifact name {name!r} (use letters, digits, '.', '_', '+', '-')")
    if isinstance(include, str):
        include = [include]
    include_rel: list[str] = []
    for inc in include:
        try:
            parts = _split_name(str(inc))
        except _Unsafe as exc:
            raise ArtifactError(f"include path {inc!r} must be relative to the release root ({exc})") from None
        include_rel.append("/".join(parts) if parts else ".")

    top, prefix = _locate_repo(source)
    sha, commit_ts = _head_commit(top)

    dirty_lines = _dirty_entries(source)
    dirty = bool(dirty_lines)
    if dirty and not allow_dirty:
        raise ArtifactError(f"work tree {source} is dirty: {_dirty_summary(dirty_lines)}; commit"
                            f"{', or ignore (.gitignore) what is untracked' if any(ln.startswith('??') for ln in dirty_lines) else ''}"
                            ", or pass --allow-dirty")

    if version is None:
        stamp = _dt.datetime.fromtimestamp(commit_ts, _dt.timezone.utc).strftime("%Y%m%d%H%M%S")
        version = f"{stamp}-{sha[:7]}"
    elif not _SAFE_LABEL.match(version):
        raise ArtifactError(f"invalid version {version!r} (use letters, digits, '.', '_', '+', '-')")
    if dirty and not version.endswith("-dirty"):
        version += "-dirty"

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    base = f"{name}-{version}"
    tar_path = out_dir / f"{base}.tar.gz"
    json_path = out_dir / f"{base}.json"

    where = f"{top}" + (f" ({prefix}/)" if prefix else "")
    export = Path(tempfile.mkdtemp(prefix=f"deployer-build-{name}-"))
    tmp_tar: str | None = None
    try:
        if dirty:
            log(f"exporting WORK TREE of {where} at {sha[:7]} (dirty, {len(dirty_lines)} changes)")
            _export_worktree(source, export, log)
        else:
            log(f"exporting {sha[:7]} from {where}")
            _export_head(top, prefix, sha, export)
        _set_mtimes(export, commit_ts)
        exported = _relative_files(export)

        if command:
            env = dict(os.environ)
            env.update(
                SOURCE_DATE_EPOCH=str(commit_ts),
                DEPLOYER_NAME=name,
                DEPLOYER_VERSION=version,
                DEPLOYER_GIT_SHA=sha,
            )
            _run_command(command, export, env, log)

        roots: list[str] | None = None
        if include_rel and "." not in include_rel:
            missing = [inc for inc in include_rel if not os.path.lexists(export / inc)]
            if missing:
                raise ArtifactError(f"include path '{missing[0]}' does not exist after the build command")
            roots = sorted(exported | set(include_rel) | {REVISION_FILE})

        rev = export / REVISION_FILE
        if os.path.lexists(rev):
            if rev.is_dir() and not rev.is_symlink():
                raise ArtifactError(f"'{REVISION_FILE}' in the source is a directory; it is reserved for the git sha")
            log(f"note: replacing existing '{REVISION_FILE}' with the git sha")
            rev.unlink()
        rev.write_text(sha + "\n", encoding="ascii")

        entries = _collect(export, roots)
        problem = _find_problem(_tarinfo(e, commit_ts) for e in entries)
        if problem:
            bad, reason = problem
            raise ArtifactError(f"refusing to pack '{bad}': {reason}")

        manifest = {e.rel: sha256_file(e.path) for e in entries if e.kind == "file"}
        entries = _with_manifest(export, entries, manifest)
        fd, tmp_tar = tempfile.mkstemp(dir=out_dir, prefix=f".{base}.", suffix=".tar.gz.tmp")
        with os.fdopen(fd, "wb") as fh:
            packed, unpacked = _pack(entries, commit_ts, fh)
            fh.flush()
            os.fsync(fh.fileno())
        packed.pop(MANIFEST_MEMBER, None)
        if packed != manifest:
            changed = sorted(p for p in packed if packed[p] != manifest.get(p))
            raise ArtifactError(f"'{changed[0] if changed else '?'}' changed while packing; build again")
        os.chmod(tmp_tar, 0o644)
        digest = sha256_file(Path(tmp_tar))
        size = os.path.getsize(tmp_tar)

        meta = {
            "name": name,
            "version": version,
            "git_sha": sha,
            "sha256": digest,
            "size": size,
            "unpacked_size": unpacked,
            "file_count": len(manifest),
            "commit_time": _utc_iso(commit_ts),
            "built_at": _utc_iso(_dt.datetime.now(_dt.timezone.utc).timestamp()),
            "built_by": _built_by(),
            "dirty": dirty,
            "manifest": dict(sorted(manifest.items())),
            "manifest_sha256": _manifest_sha256(manifest),
        }
        os.replace(tmp_tar, tar_path)
        tmp_tar = None
        _atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    finally:
        if tmp_tar is not None:
            Path(tmp_tar).unlink(missing_ok=True)
        _rmtree(export)

    # its members passed the rules before packing
    _record_checked(digest, Checked(unpacked, tuple(sorted(e.rel for e in entries if e.kind == "symlink"))))
    log(f"built {tar_path.name}: {len(manifest)} files, {size} bytes, sha256 {digest[:12]}")
    return Artifact(path=tar_path, meta=meta)


# The metadata keys the deployer reads, and what each must be. A hand-edited or foreign .json is
# refused (exit 2, naming the key) rather than failing later with a traceback.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "version": (str,), "git_sha": (str, type(None)), "sha256": (str,), "size": (int,),
    "unpacked_size": (int,), "file_count": (int,), "dirty": (bool,), "commit_time": (str,),
    "built_at": (str,), "built_by": (str,), "manifest": (dict,), "manifest_sha256": (str,),
}
_TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", dict: "a table",
               type(None): "null"}


def meta_problem(meta: dict) -> str | None:
    """Why this metadata cannot be used (a known key of the wrong type), or None."""
    for key, types in _META_TYPES.items():
        if key not in meta:
            continue
        value = meta[key]
        wrong = isinstance(value, bool) and bool not in types     # True is an int to Python
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
    json_path = _json_path_for(path)
    digest = sha256_file(path)

    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read metadata {json_path.name}: {_one_line(str(exc))}") from None
        if not isinstance(meta, dict) or not meta.get("sha256"):
            raise ArtifactError(f"metadata {json_path.name} has no sha256")
        problem = meta_problem(meta)
        if problem:
            raise ArtifactError(f"metadata {json_path.name}: {problem}")
        if meta["sha256"] != digest:
            raise ArtifactError(
                f"artifact {path.name} sha256 mismatch: metadata says {str(meta['sha256'])[:12]}..., file is {digest[:12]}..."
            )
        size = path.stat().st_size
        if "size" in meta and int(meta["size"]) != size:
            raise ArtifactError(f"artifact {path.name} size mismatch: metadata says {meta['size']}, file is {size}")
        meta.setdefault("size", size)
        return Artifact(path=path, meta=meta)

    scanned = _scan_tarball(path, want_revision=True)
    members = scanned.members
    problem = _find_problem(members)
    if problem:
        bad, reason = problem
        raise ArtifactError(f"{path.name}: unsafe member '{bad}': {reason}")
    _record_checked(digest, _checked(members, scanned.unpacked_size))
    revision = scanned.contents.get(REVISION_FILE, b"").decode("ascii", "replace").strip() or None
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
