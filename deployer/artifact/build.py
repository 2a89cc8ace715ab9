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

Reproducibility: see ``pack`` (the tarball depends only on the packed file contents and
the commit). ``built_at``/``built_by`` only live in the JSON. Output of a build command is
reproducible only as far as the command itself is (it runs in a random temp dir).

Safety: the member rules of ``members`` are applied to the file list before packing.

Only the standard library is used.
"""

from __future__ import annotations

import collections
import datetime as _dt
import getpass
import json
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deployer.artifact.fsutil import atomic_write_bytes, one_line, rmtree, sha256_file
from deployer.artifact.gitexport import (
    Log,
    dirty_entries,
    dirty_summary,
    export_head,
    export_worktree,
    head_commit,
    locate_repo,
    relative_files,
    set_mtimes,
)
from deployer.artifact.load import Artifact
from deployer.artifact.members import (
    REVISION_FILE,
    Checked,
    Unsafe,
    find_problem,
    record_checked,
    shown,
    split_name,
)
from deployer.artifact.pack import collect, manifest_sha256, tarinfo_for, with_manifest, write_tarball
from deployer.errors import ArtifactError
from deployer.plan.paths import MANIFEST as MANIFEST_MEMBER

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _utc_iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _built_by() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry / no env vars (containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _run_command(command: str, cwd: Path, env: dict[str, str], log: Log) -> None:
    log(f"running build command: {command}")
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
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
        raise ArtifactError(
            f"build command {command!r} failed with exit code {rc}; output tail: {one_line(detail, 500)}"
        )


def build_artifact(
    source: Path,
    name: str,
    out_dir: Path,
    *,
    command: str = "",
    include: Sequence[str] = (),
    allow_dirty: bool = False,
    version: str | None = None,
    log: Log = lambda _: None,  # the CLI passes its Output's say
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
            parts = split_name(str(inc))
        except Unsafe as exc:
            raise ArtifactError(f"include path {inc!r} must be relative to the release root ({exc})") from None
        include_rel.append("/".join(parts) if parts else ".")

    top, prefix = locate_repo(source)
    sha, commit_ts = head_commit(top)

    dirty_lines = dirty_entries(source)
    dirty = bool(dirty_lines)
    if dirty and not allow_dirty:
        untracked = any(ln.startswith("??") for ln in dirty_lines)
        raise ArtifactError(
            f"work tree {source} is dirty: {dirty_summary(dirty_lines)}; commit"
            f"{', or ignore (.gitignore) what is untracked' if untracked else ''}"
            ", or pass --allow-dirty"
        )

    if version is None:
        stamp = _dt.datetime.fromtimestamp(commit_ts, _dt.UTC).strftime("%Y%m%d%H%M%S")
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
            export_worktree(source, export, log)
        else:
            log(f"exporting {sha[:7]} from {where}")
            export_head(top, prefix, sha, export)
        set_mtimes(export, commit_ts)
        exported = relative_files(export)

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

        entries = collect(export, roots)
        problem = find_problem(tarinfo_for(e, commit_ts) for e in entries)
        if problem:
            bad, reason = problem
            raise ArtifactError(f"refusing to pack '{shown(bad)}': {reason}")

        manifest = {e.rel: sha256_file(e.path) for e in entries if e.kind == "file"}
        entries = with_manifest(export, entries, manifest)
        fd, tmp_tar = tempfile.mkstemp(dir=out_dir, prefix=f".{base}.", suffix=".tar.gz.tmp")
        with os.fdopen(fd, "wb") as fh:
            packed, unpacked = write_tarball(entries, commit_ts, fh)
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
            "built_at": _utc_iso(_dt.datetime.now(_dt.UTC).timestamp()),
            "built_by": _built_by(),
            "dirty": dirty,
            "manifest": dict(sorted(manifest.items())),
            "manifest_sha256": manifest_sha256(manifest),
        }
        os.replace(tmp_tar, tar_path)
        tmp_tar = None
        atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    finally:
        if tmp_tar is not None:
            Path(tmp_tar).unlink(missing_ok=True)
        rmtree(export)

    # its members passed the rules before packing
    links = tuple(sorted(e.rel for e in entries if e.kind == "symlink"))
    record_checked(digest, Checked(unpacked, links, sha))
    log(f"built {tar_path.name}: {len(manifest)} files, {size} bytes, sha256 {digest[:12]}")
    return Artifact(path=tar_path, meta=meta)
