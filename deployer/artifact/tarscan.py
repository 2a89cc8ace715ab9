"""Read a .tar.gz exactly as GNU `tar -xzf` on a host will, or refuse it.

The member check is only worth something if it sees the members the host's tar extracts. Two
readers of one tarball can disagree (a second gzip member, data after the end marker, a pax
`path` next to a GNU long name, a size field GNU tar and Python parse differently...). So this
reader accepts a small, unambiguous subset and refuses everything else with one line:

* gzip: exactly one member, nothing after it (no second member, no trailing bytes);
* tar: every header's checksum right, POSIX (`ustar\\000`) or GNU (`ustar  \\0`) magic, numeric
  fields plain octal (or positive base-256 for sizes, ids and times), no field GNU tar would read
  differently; types regular ('0', NUL), hard link, symlink, directory (devices and fifos are
  returned for the member rules to name), plus pax extended headers ('x', known keywords only),
  a pax global header carrying only a `comment` (git archive), and GNU long names/links ('L', 'K')
  — at most one of each before a member, never a long name and a pax path for the same member;
* names and link targets valid UTF-8 without control characters; only directories may end in
  `/` or `.`; files alone carry data (a size on anything else is refused);
* the archive ends at its first zero block and everything after it is zero bytes.

Python's own tarfile then reads the same stream; a member list that differs is refused too.
Only the standard library is used; the stream is read once per reader, in chunks.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

BLOCK = 512
_CHUNK = 1024 * 1024
_ZERO = bytes(BLOCK)
_MAX_EXTENDED = 1024 * 1024  # a pax header or GNU long name is read whole: bounded
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_MEMBER_TYPES = {
    b"0": tarfile.REGTYPE,
    b"\x00": tarfile.AREGTYPE,
    b"1": tarfile.LNKTYPE,
    b"2": tarfile.SYMTYPE,
    b"5": tarfile.DIRTYPE,
    b"3": tarfile.CHRTYPE,
    b"4": tarfile.BLKTYPE,
    b"6": tarfile.FIFOTYPE,
}
_PAX_KEYS = {"path", "linkpath", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"}
_PAX_NUMBERS = {
    "size": re.compile(r"[0-9]+"),
    "uid": re.compile(r"[0-9]+"),
    "gid": re.compile(r"[0-9]+"),
    "mtime": re.compile(r"[0-9]+(\.[0-9]+)?"),
    "atime": re.compile(r"[0-9]+(\.[0-9]+)?"),
    "ctime": re.compile(r"[0-9]+(\.[0-9]+)?"),
}
_PAX_RECORD = re.compile(rb"([1-9][0-9]*) ")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """The tarball is one GNU tar might read differently from this reader (one-line reason)."""


@dataclass(frozen=True)
class Scan:
    members: list[tarfile.TarInfo]  # as GNU tar will extract them, in archive order
    unpacked_size: int  # bytes of regular file data
    contents: dict[str, bytes]  # the first 256 bytes of the regular files asked for


class _GzipStream:
    """The decompressed bytes of a single-member gzip file, read in order."""

    def __init__(self, fh: IO[bytes]) -> None:
        head = fh.read(3)
        if head != b"\x1f\x8b\x08":
            raise Refused("not a gzip-compressed tar archive (hosts extract with tar -xz)")
        self._fh, self._z = fh, zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf, self._pos = self._z.decompress(head), 0
        self.offset = 0  # bytes of tar read so far

    def _fill(self) -> bool:
        while not self._z.eof:
            data = self._z.unconsumed_tail or self._fh.read(_CHUNK)
            if not data:
                raise Refused("truncated gzip stream")
            try:
                out = self._z.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise Refused(f"corrupt gzip stream ({exc})") from None
            if out:
                self._buf, self._pos = self._buf[self._pos :] + out, 0
                return True
        if self._z.unused_data or self._fh.read(1):
            raise Refused(
                "more than one gzip member or data after the gzip stream (GNU tar would read it, this check would not)"
            )
        return False

    def read(self, n: int) -> bytes:
        """Up to n bytes; fewer only at the end of the stream."""
        while len(self._buf) - self._pos < n and self._fill():
            pass
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        self.offset += len(out)
        return out

    def exact(self, n: int, what: str) -> bytes:
        out = self.read(n)
        if len(out) != n:
            raise Refused(f"archive ends inside {what}")
        return out

    def skip(self, n: int, what: str) -> None:
        while n:
            n -= len(self.exact(min(n, _CHUNK), what))


def _number(field: bytes, what: str, base256: bool = True) -> int:
    """A numeric header field both GNU tar and Python read the same: octal digits, optional
    leading spaces, then only spaces/NULs; or (sizes, ids, times) positive base-256."""
    if base256 and field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    digits = field.lstrip(b" ").rstrip(b" \x00")
    if not digits or digits.strip(b"01234567"):
        raise Refused(f"header field {what} is not a plain number ({field!r})")
    return int(digits, 8)


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{what} is not valid UTF-8 ({raw[:60]!r})") from None
    if _UNPRINTABLE.search(text):
        raise Refused(f"{what} contains a control character ({text[:60]!r})")
    return text


def _field(block: bytes, start: int, size: int) -> bytes:
    return block[start : start + size].split(b"\x00", 1)[0]


def _pax(data: bytes, where: str, allowed: set[str]) -> dict[str, str]:
    """Records `LEN KEY=VALUE\\n` covering the data exactly; known keywords, each once."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        m = _PAX_RECORD.match(data, pos)
        length = int(m.group(1)) if m else 0
        record = data[pos : pos + length]
        if not m or len(record) != length or not record.endswith(b"\n"):
            raise Refused(f"malformed pax record in {where}")
        key, eq, value = record[m.end() - pos : -1].partition(b"=")
        keyword = _text(key, f"pax keyword in {where}")
        if not eq or keyword not in allowed:
            raise Refused(f"pax keyword {keyword!r} in {where} is not supported")
        if keyword in out:
            raise Refused(f"pax keyword {keyword!r} given twice in {where}")
        text = _text(value, f"pax {keyword} in {where}")
        pattern = _PAX_NUMBERS.get(keyword)
        if pattern and not pattern.fullmatch(text):
            raise Refused(f"pax {keyword} {text!r} in {where} is not a plain number")
        out[keyword] = text
        pos += length
    return out


def _header(block: bytes) -> tuple[bytes, bytes, int, int]:
    """Check one header block; return (typeflag, raw name with its ustar prefix, mode, size)."""
    recorded = _number(block[148:156], "chksum", base256=False)
    if recorded != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise Refused("header checksum error")
    magic = block[257:265]
    if magic not in (_POSIX_MAGIC, _GNU_MAGIC):
        raise Refused(f"header with magic {magic!r} (only POSIX ustar/pax and GNU headers are read)")
    if magic == _GNU_MAGIC and block[345:500].strip(b"\x00"):
        raise Refused("GNU header with data in its prefix/atime area (readers disagree on it)")
    for what, start, size in (("uid", 108, 8), ("gid", 116, 8), ("mtime", 136, 12)):
        _number(block[start : start + size], what)
    mode = _number(block[100:108], "mode", base256=False)
    size = _number(block[124:136], "size")
    typeflag = block[156:157]
    name = _field(block, 0, 100)
    prefix = _field(block, 345, 155) if magic == _POSIX_MAGIC else b""
    return typeflag, (prefix + b"/" + name if prefix else name), mode, size


def scan(path: Path, keep: tuple[str, ...] = ()) -> Scan:
    """The members GNU tar will extract from the .tar.gz at path; raise Refused when unsure."""
    with open(path, "rb") as fh:
        result = _strict(_GzipStream(fh), keep)
    with open(path, "rb") as fh:
        _agree(result.members, _GzipStream(fh))
    return result


def _strict(stream: _GzipStream, keep: tuple[str, ...]) -> Scan:
    members: list[tarfile.TarInfo] = []
    contents: dict[str, bytes] = {}
    unpacked = 0
    pax: dict[str, str] | None = None
    long: dict[bytes, str] = {}
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise Refused("archive has no end-of-archive marker (truncated?)")
        if block == _ZERO:
            break
        where = f"header at byte {stream.offset - BLOCK}"
        typeflag, raw_name, mode, size = _header(block)
        if typeflag in (b"x", b"g", b"L", b"K") and size > _MAX_EXTENDED:
            raise Refused(f"extended header of {size} bytes ({where})")
        if typeflag in (b"x", b"g"):
            if pax is not None or long:
                raise Refused(f"two extended headers before one member ({where})")
            data = stream.exact(size, "a pax header")
            stream.skip(-size % BLOCK, "a pax header")
            if typeflag == b"x":
                pax = _pax(data, where, _PAX_KEYS)
            else:
                _pax(data, where, {"comment"})  # git archive's commit id; nothing else
            continue
        if typeflag in (b"L", b"K"):
            if typeflag in long or pax is not None:
                raise Refused(f"extended headers in an order readers disagree on ({where})")
            data = stream.exact(size, "a GNU long name")
            stream.skip(-size % BLOCK, "a GNU long name")
            long[typeflag] = _text(data.split(b"\x00", 1)[0], f"GNU long name ({where})")
            continue
        if typeflag not in _MEMBER_TYPES:
            raise Refused(f"member type {typeflag.decode('latin-1')!r} is not supported ({where})")
        pax = pax or {}
        if ("path" in pax and b"L" in long) or ("linkpath" in pax and b"K" in long):
            raise Refused(f"both a GNU long name and a pax name for one member ({where})")
        name = _pick(pax.get("path"), long.get(b"L")) or _text(raw_name, f"member name ({where})")
        linkname = _pick(pax.get("linkpath"), long.get(b"K")) or _text(_field(block, 157, 100), f"link name ({where})")
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode = _MEMBER_TYPES[typeflag], linkname, mode & 0o7777
        if not ti.isdir() and name.endswith("/"):
            raise Refused(f"{name!r}: a non-directory member named like a directory (GNU tar may make it one)")
        if ti.isreg():
            ti.size = int(pax["size"]) if "size" in pax else size
        elif size or "size" in pax:
            raise Refused(f"{name!r}: a non-file member with a size ({where})")
        if ti.isdir():
            ti.name = name.rstrip("/") or name
        if ti.name.rstrip("/").split("/")[-1] in (".", "") and not ti.isdir():
            raise Refused(f"{name!r}: a non-directory member named like a directory")
        if ti.isreg():
            data = stream.exact(min(ti.size, 256), "file data")
            key = "/".join(p for p in ti.name.split("/") if p not in ("", "."))
            if key in keep:
                contents[key] = data
            stream.skip(ti.size - len(data) + (-ti.size % BLOCK), "file data")
            unpacked += ti.size
        members.append(ti)
        pax, long = None, {}
    if pax is not None or long:
        raise Refused("extended header with no member after it")
    while True:
        rest = stream.read(_CHUNK)
        if not rest:
            break
        if rest.count(0) != len(rest):
            raise Refused("data after the end-of-archive marker")
    return Scan(members, unpacked, contents)


def _pick(*overrides: str | None) -> str | None:
    """The extended header's name when there is one; an empty one is refused, never skipped."""
    for value in overrides:
        if value is not None:
            if not value:
                raise Refused("extended header with an empty name")
            return value
    return None


def _agree(members: list[tarfile.TarInfo], stream: _GzipStream) -> None:
    """Python's tarfile must list the same members from the same bytes."""

    def view(m: tarfile.TarInfo) -> tuple[str, bytes, str, int, int]:
        name = m.name.rstrip("/") if m.isdir() else m.name
        return name, m.type, m.linkname, m.size if m.isreg() else 0, m.mode & 0o7777

    try:
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|") as tf:
            theirs = [view(m) for m in tf]
    except (tarfile.TarError, Refused) as exc:
        raise Refused(f"Python's tar reader fails on it ({exc})") from None
    ours = [view(m) for m in members]
    if ours != theirs:
        padded = zip(ours + [None] * len(theirs), theirs + [None] * len(ours), strict=True)
        diff = next((a, b) for a, b in padded if a != b)
        raise Refused(f"tar readers disagree on its members ({diff[0]!r} vs {diff[1]!r})")
