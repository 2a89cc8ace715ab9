"""Member rules: what may be in an artifact, and the check of an existing tarball.

The same rules apply to the file list before packing and, via ``check_members``, to an existing
tarball before any upload, read as the host's GNU tar will read it (``tarscan``: one gzip member,
nothing after the end marker, no header construction two readers could disagree on): no absolute
paths, no ``..``, no control characters in names (manifests are one name per line), no symlink
resolving outside the tree, no path going through a symlink member, hardlinks only to earlier
regular files in the archive, no devices/fifos, no setuid/setgid, nothing under ``.deployer/``
(reserved for the deployer's own markers on the hosts) except the manifest the builder writes, no
duplicates. ``tarfile.data_filter`` is applied as a second line of defence.

A tarball that passed is recorded per sha256 in the user's cache, so the same bytes are not
scanned again under the same rules.
"""

from __future__ import annotations

import collections
import json
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer.artifact import tarscan
from deployer.artifact.fsutil import atomic_write_bytes, one_line
from deployer.errors import ArtifactError
from deployer.plan.paths import MANIFEST as MANIFEST_MEMBER
from deployer.plan.paths import user_cache

RESERVED_DIR = ".deployer"
REVISION_FILE = "REVISION"  # top-level file holding the full git sha; the builder always writes it
_MAX_SYMLINK_HOPS = 40


class Unsafe(Exception):
    """A member name the rules refuse (the message says why)."""


def shown(name: str) -> str:
    """A name for a one-line message: control characters escaped (a newline as `\\n`)."""
    return "".join(repr(c)[1:-1] if c < " " or c == "\x7f" else c for c in name)


def split_name(name: str) -> list[str]:
    """The path components of a member name, without '' and '.'; Unsafe when absolute, with NUL
    or another control character (a newline), or with '..'."""
    if not name:
        raise Unsafe("empty member name")
    if name.startswith("/"):
        raise Unsafe("absolute path")
    if "\x00" in name:
        raise Unsafe("NUL byte in name")
    control = next((c for c in name if c < " " or c == "\x7f"), None)
    if control is not None:  # a manifest, a listing, a host's shell read one name per line
        raise Unsafe(f"control character {control!r} in name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Unsafe("path contains a '..' component")
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


def find_problem(members: Iterable[tarfile.TarInfo]) -> tuple[str, str] | None:
    """Return (member name, reason) for the first unsafe member, else None."""
    members = list(members)
    split: list[list[str] | None] = []
    for m in members:
        try:
            split.append(split_name(m.name))
        except Unsafe:
            split.append(None)
    symlinks = {"/".join(p): m.linkname for m, p in zip(members, split, strict=True) if p and m.issym()}
    seen: dict[str, tarfile.TarInfo] = {}
    data_filter = getattr(tarfile, "data_filter", None)

    for m, parts in zip(members, split, strict=True):
        name = m.name
        if parts is None:
            try:
                split_name(name)
            except Unsafe as exc:
                return name, str(exc)
        assert parts is not None
        if not parts:
            if m.isdir():
                continue  # "." / "./" root entry
            return name, "member names the archive root"
        key = "/".join(parts)
        if (
            parts[0] == RESERVED_DIR
            and not (key == RESERVED_DIR and m.isdir())
            and not (key == MANIFEST_MEMBER and m.isreg())
        ):
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
                tparts = split_name(m.linkname)
            except Unsafe:
                return name, f"hardlink points outside the tree ('{m.linkname}')"
            target = seen.get("/".join(tparts))
            if target is None or not target.isreg():
                return name, f"hardlink target '{m.linkname}' is not an earlier regular file in the archive"
        seen[key] = m
        if data_filter is not None:
            try:
                data_filter(m, _FILTER_DEST)
            except tarfile.FilterError as exc:
                return name, f"rejected by tarfile data filter: {one_line(str(exc))}"
    return None


def scan_tarball(path: Path, want_revision: bool = False) -> tarscan.Scan:
    """The members as the host's GNU tar will extract them (see tarscan), or ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    try:
        return tarscan.scan(path, keep=(REVISION_FILE,) if want_revision else ())
    except tarscan.Refused as exc:
        raise ArtifactError(f"{path.name} refused: {one_line(str(exc))}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path.name}: {one_line(str(exc))}") from None


# Bump when the member rules change: earlier "checked" records then no longer count.
MEMBER_RULES = "3"


@dataclass(frozen=True)
class Checked:
    """What the member check learnt about an artifact that passed it."""

    unpacked_size: int  # bytes of regular file data: what extraction writes
    symlinks: tuple[str, ...]  # every symlink member's path, normalised
    revision: str | None = None  # the top-level REVISION's first line (the git sha), if any


def checked_record(sha256: str) -> Path:
    """Where this user's deployer records "these exact bytes passed the member check"
    ($XDG_CACHE_HOME/deployer/checked/, default ~/.cache). Only a local run writes it, keyed by a
    digest taken from the file itself, so a tarball shipped with any sidecar is still checked."""
    return user_cache() / "checked" / f"{sha256}.rules-{MEMBER_RULES}"


def record_checked(sha256: str, checked: Checked) -> None:
    record = checked_record(sha256)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            record,
            json.dumps(
                {
                    "unpacked_size": checked.unpacked_size,
                    "symlinks": list(checked.symlinks),
                    "revision": checked.revision,
                }
            ).encode(),
        )
    except OSError:
        pass  # a read-only home only costs the check again next time


def _read_record(sha256: str) -> Checked | None:
    try:
        data = json.loads(checked_record(sha256).read_text(encoding="utf-8"))
        revision = data["revision"]  # a record without it (older) is scanned again
        return Checked(
            int(data["unpacked_size"]),
            tuple(str(s) for s in data["symlinks"]),
            str(revision) if revision is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def revision_of(contents: dict[str, bytes]) -> str | None:
    """The git sha a scan's REVISION member holds (its first line), or None."""
    text = contents.get(REVISION_FILE, b"").decode("ascii", "replace").strip()
    return text.splitlines()[0].strip() if text else None


def checked_from(scanned: tarscan.Scan) -> Checked:
    """The Checked record of a scan whose members passed the rules (read with want_revision)."""
    links = ("/".join(split_name(m.name)) for m in scanned.members if m.issym())
    return Checked(scanned.unpacked_size, tuple(sorted(links)), revision_of(scanned.contents))


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
        scanned = scan_tarball(path, want_revision=True)
        problem = find_problem(scanned.members)
        if problem:
            name, reason = problem
            raise ArtifactError(f"{path.name}: unsafe member '{shown(name)}': {reason}")
        checked = checked_from(scanned)
        if sha256:
            record_checked(sha256, checked)
    problem = _shared_problem(checked.symlinks, shared)
    if problem:
        name, reason = problem
        raise ArtifactError(f"{path.name}: unsafe member '{name}': {reason}")
    return checked
