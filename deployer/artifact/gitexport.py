"""Export the files of one git commit (or of a dirty work tree) into a fresh directory.

A clean tree exports the tracked files of ``HEAD`` under the source directory with
``git archive <sha>:<subdir>``, so untracked or ignored junk never gets in. A dirty tree (when
allowed) copies the working tree files instead: tracked plus untracked-but-not-ignored, per
``git ls-files --cached --others --exclude-standard``. Git runs with the variables that would
point it at another repository removed.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from deployer.artifact.fsutil import CHUNK, one_line
from deployer.artifact.members import Unsafe, shown, split_name
from deployer.errors import ArtifactError

Log = Callable[[str], object]

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


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in _GIT_LOCATION_VARS:
        env.pop(var, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git(cwd: Path, *args: str) -> bytes:
    cmd = ["git", "-c", "core.quotepath=off", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
    except FileNotFoundError:
        raise ArtifactError("git executable not found (needed to build artifacts)") from None
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = err[-1] if err else f"exit code {exc.returncode}"
        raise ArtifactError(f"git {args[0]} failed in {cwd}: {one_line(detail)}") from None
    return proc.stdout


def _git_text(cwd: Path, *args: str) -> str:
    return _git(cwd, *args).decode("utf-8", "surrogateescape").strip()


def locate_repo(source: Path) -> tuple[Path, str]:
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


def head_commit(top: Path) -> tuple[str, int]:
    """(sha, commit timestamp) of HEAD; a repository without commits is refused."""
    try:
        sha = _git_text(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except ArtifactError:
        sha = ""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise ArtifactError(f"git repository {top} has no commits yet; commit something first")
    ts = int(_git_text(top, "show", "-s", "--format=%ct", sha))
    return sha, ts


def dirty_entries(source: Path) -> list[str]:
    """`git status --porcelain` lines for changes under source (untracked files listed one by one)."""
    out = _git(source, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return [ln for ln in out.decode("utf-8", "surrogateescape").splitlines() if ln.strip()]


def dirty_summary(lines: list[str], shown: int = 3) -> str:
    """'hosts.toml (untracked), app.py (modified) and 2 more' from `git status --porcelain` lines."""

    def one(line: str) -> str:
        code, path = line[:2], line[3:]
        what = "untracked" if code == "??" else "deleted" if "D" in code else "added" if "A" in code else "modified"
        return f"{path} ({what})"

    names = ", ".join(one(ln) for ln in lines[:shown])
    return names + (f" and {len(lines) - shown} more" if len(lines) > shown else "")


def _safe_join(root: Path, rel: str) -> Path:
    try:
        parts = split_name(rel)
    except Unsafe as exc:
        raise ArtifactError(f"refusing to export '{shown(rel)}': {exc}") from None
    return root.joinpath(*parts) if parts else root


def export_head(top: Path, prefix: str, sha: str, dest: Path) -> None:
    """Stream `git archive` of the commit's subtree into dest (regular files, dirs, symlinks)."""
    treeish = f"{sha}:{prefix}" if prefix else sha
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(
                ["git", "-c", "core.quotepath=off", "archive", "--format=tar", treeish],
                cwd=top,
                env=_git_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errf,
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
                while proc.stdout is not None and proc.stdout.read(65536):
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
            raise ArtifactError(f"git archive failed in {top}: {one_line(detail)}")
        if read_error is not None:
            raise ArtifactError(f"cannot read git archive output: {one_line(str(read_error))}")


def _extract_one(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: Path, symlinks: set[str]) -> None:
    try:
        parts = split_name(m.name) if m.name else []
    except Unsafe as exc:
        raise ArtifactError(f"refusing to export '{shown(m.name)}': {exc}") from None
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
            shutil.copyfileobj(src, out, CHUNK)
        os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
    else:
        raise ArtifactError(f"refusing to export '{m.name}': unsupported entry type {m.type!r}")


def export_worktree(source: Path, dest: Path, log: Log) -> None:
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


def set_mtimes(root: Path, ts: int) -> None:
    """Every entry under root (and root itself) gets mtime ts, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            try:
                os.utime(os.path.join(dirpath, n), (ts, ts), follow_symlinks=False)
            except (NotImplementedError, OSError):
                pass
    os.utime(root, (ts, ts))


def relative_files(root: Path) -> set[str]:
    """Relative paths of all non-directory entries under root."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(n if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), n))
    return found
