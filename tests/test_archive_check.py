"""The member check against GNU tar on a real host: odd and hostile archives, built byte by byte.

For each construction, either the check refuses it (`deploy --artifact` exits 2 with one line
and no host is contacted) or GNU tar on a sandbox host, run as the deploy runs it
(`tar -xzf F -C DIR --no-same-owner` under umask 022, as the deploy user and as root), extracts
exactly the tree the check listed: names, types, link targets, sizes and modes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import posixpath
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
from helpers import TEST_LABEL, Sandbox, cli

from deployer.artifact import tarscan
from deployer.artifact.members import check_members
from deployer.errors import ArtifactError
from deployer.sandbox import deploy_files
from deployer.sandbox import hosts as sandbox_mod

# --- raw tar building -----------------------------------------------------------------------------

POSIX, GNU = b"ustar\x0000", b"ustar  \x00"
END = bytes(1024)


def _b(value) -> bytes:
    return value.encode() if isinstance(value, str) else value


def header(
    name,
    type=b"0",
    size=0,
    mode=0o644,
    linkname=b"",
    *,
    magic=POSIX,
    prefix=b"",
    size_field=None,
    mode_field=None,
    checksum_delta=0,
) -> bytes:
    b = bytearray(512)
    b[0:100] = _b(name)[:100].ljust(100, b"\0")
    b[100:108] = mode_field or b"%07o\0" % mode
    b[108:116] = b[116:124] = b"0000000\0"
    b[124:136] = size_field or b"%011o\0" % size
    b[136:148] = b"14611744457\0"
    b[156:157] = type
    b[157:257] = _b(linkname)[:100].ljust(100, b"\0")
    b[257:265] = magic
    b[345:500] = _b(prefix).ljust(155, b"\0")
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % (sum(b) + checksum_delta)
    return bytes(b)


def signed_checksum(block: bytes) -> bytes:
    """The same header with the checksum old tars wrote: bytes summed as signed chars."""
    b = bytearray(block)
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(x - 256 if x > 127 else x for x in b)
    return bytes(b)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def file(name, data=b"x\n", mode=0o644, **kw) -> bytes:
    return header(name, b"0", len(data), mode, **kw) + pad(data)


def dir_(name, mode=0o755, **kw) -> bytes:
    return header(name, b"5", 0, mode, **kw)


def sym(name, target, **kw) -> bytes:
    return header(name, b"2", 0, 0o777, target, **kw)


def link(name, target, **kw) -> bytes:
    return header(name, b"1", 0, 0o644, target, **kw)


def record(key: str, value) -> bytes:
    body = b" " + key.encode() + b"=" + _b(value) + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax(*records: bytes, type=b"x") -> bytes:
    data = b"".join(records)
    return header("PaxHeaders/x", type, len(data)) + pad(data)


def gnu_long(type: bytes, value) -> bytes:
    data = _b(value) + b"\0"
    return header("././@LongLink", type, len(data), magic=GNU) + pad(data)


def gz(tar: bytes) -> bytes:
    return gzip.compress(tar, mtime=0)


def gz_with_header_fields(tar: bytes) -> bytes:
    """One gzip member whose header has FEXTRA, FNAME, FCOMMENT and FHCRC set."""
    head = b"\x1f\x8b\x08\x1e" + bytes(4) + b"\x00\x03" + struct.pack("<H", 4) + b"ab\x00\x00" + b"n.tar\0" + b"hi\0"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return head + c.compress(tar) + c.flush() + struct.pack("<II", zlib.crc32(tar), len(tar) & 0xFFFFFFFF)


def tarfile_archive(entries, format=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


REV = file("REVISION", b"0123456789abcdef\n")
GOOD = REV + file("app.py", b"print(1)\n") + END
EVIL = sym("www", "/") + sym("up", "../../../..") + dir_(".deployer") + file(".deployer/migrated", b"{}") + END
HIDDEN = sym("evil", "/") + END  # a header hidden where a reader may take it for data


def odd_modes() -> bytes:
    return (
        REV
        + file("private", mode=0o600)
        + file("open", mode=0o777)
        + file("none", mode=0o000)
        + dir_("sticky", 0o1777)
        + dir_("ro", 0o555)
        + file("ro/f")
        + file("x/implied/parent")
        + END
    )


def NO(data: bytes) -> tuple[bool, bytes]:
    """The check must refuse this .tar.gz."""
    return False, data


def OK(data: bytes) -> tuple[bool, bytes]:
    """The check must accept this .tar.gz, and GNU tar must extract what it lists."""
    return True, data


# name -> (accepted?, the .tar.gz bytes)
CASES = {
    # gzip layer: GNU tar reads every member and whatever follows; the check takes exactly one
    "two-gzip-members-smuggled": NO(gz(REV + file("app.py")) + gz(EVIL)),
    "two-gzip-members-harmless": NO(gz(GOOD) + gz(file("more") + END)),
    "zero-bytes-after-gzip": NO(gz(GOOD) + bytes(1024)),
    "garbage-after-gzip": NO(gz(GOOD) + b"garbage"),
    "truncated-gzip": NO(gz(GOOD)[:-12]),
    "not-compressed": NO(GOOD),
    "bzip2-instead-of-gzip": NO(bz2.compress(GOOD)),
    "gzip-header-with-name-comment-extra-crc": OK(gz_with_header_fields(GOOD)),
    # where the archive ends
    "member-after-end-marker": NO(gz(GOOD + file("late", b"after the end"))),
    "lone-zero-block-then-member": NO(gz(REV + bytes(512) + file("late") + END)),
    "no-end-marker": NO(gz(REV + file("app.py"))),
    "zero-padding-after-end-marker": OK(gz(GOOD + bytes(9216))),
    # pax extended headers
    "pax-path-overrides-name": OK(gz(REV + pax(record("path", "real/name.txt")) + file("decoy") + END)),
    "pax-path-dotdot": NO(gz(REV + pax(record("path", "../escape")) + file("innocent") + END)),
    "pax-linkpath-absolute": NO(gz(REV + pax(record("linkpath", "/etc")) + sym("l", "harmless") + END)),
    "pax-linkpath-overrides": OK(
        gz(REV + file("target.txt") + pax(record("linkpath", "target.txt")) + sym("l", "decoy") + END)
    ),
    "pax-size-larger-hides-header": OK(
        gz(REV + pax(record("size", "1024")) + header("carrier", b"0", 0) + pad(HIDDEN) + END)
    ),
    "pax-size-zero-reveals-header": NO(
        gz(REV + pax(record("size", "0")) + header("carrier", b"0", 1536) + HIDDEN + bytes(512))
    ),
    "pax-unknown-keyword": NO(gz(REV + pax(record("SCHILY.xattr.user.x", "1")) + file("f") + END)),
    "pax-keyword-twice": NO(gz(REV + pax(record("path", "a"), record("path", "b")) + file("f") + END)),
    "pax-bad-record-length": NO(gz(REV + pax(b"99 path=a\n") + file("f") + END)),
    "pax-size-odd-number": NO(gz(REV + pax(record("size", "1_0")) + file("f", b"0123456789") + END)),
    "pax-hdrcharset-binary": NO(gz(REV + pax(record("hdrcharset", "BINARY")) + file("f") + END)),
    "pax-global-path": NO(gz(pax(record("path", "../x"), type=b"g") + GOOD)),
    "pax-global-comment-like-git-archive": OK(gz(pax(record("comment", "0" * 40), type=b"g") + GOOD)),
    "pax-empty-path": NO(gz(REV + pax(record("path", "")) + file("decoy") + END)),
    "gnu-empty-long-name": NO(gz(REV + gnu_long(b"L", "") + file("decoy", magic=GNU) + END)),
    "pax-header-of-a-gigabyte": NO(gz(REV + header("PaxHeaders/x", b"x", 1 << 30) + END)),
    "pax-header-with-no-member": NO(gz(GOOD[:-1024] + pax(record("path", "x")) + END)),
    "two-pax-headers-one-member": NO(gz(REV + pax(record("path", "a")) + pax(record("path", "b")) + file("f") + END)),
    "pax-sparse": NO(
        gz(
            REV
            + pax(
                record("GNU.sparse.major", "1"),
                record("GNU.sparse.minor", "0"),
                record("GNU.sparse.name", "s"),
                record("GNU.sparse.realsize", "4096"),
            )
            + file("GNUSparseFile.0/s", b"\0" * 10)
            + END
        )
    ),
    # GNU long names and links
    "gnu-long-name": OK(gz(REV + gnu_long(b"L", "d/" + "n" * 150) + file("truncated", magic=GNU) + END)),
    "gnu-long-link": OK(
        gz(
            REV
            + gnu_long(b"L", "t" * 120)
            + file("t", magic=GNU)
            + gnu_long(b"K", "t" * 120)
            + sym("l", "short", magic=GNU)
            + END
        )
    ),
    "gnu-long-name-dotdot": NO(gz(REV + gnu_long(b"L", "../../x") + file("f", magic=GNU) + END)),
    "gnu-long-name-then-pax-path": NO(
        gz(REV + gnu_long(b"L", "long-a") + pax(record("path", "pax-b")) + file("f") + END)
    ),
    "pax-path-then-gnu-long-name": NO(
        gz(REV + pax(record("path", "pax-b")) + gnu_long(b"L", "long-a") + file("f") + END)
    ),
    "two-gnu-long-names": NO(gz(REV + gnu_long(b"L", "a") + gnu_long(b"L", "b") + file("f", magic=GNU) + END)),
    "gnu-sparse-member": NO(gz(REV + header("sparse", b"S", 0, magic=GNU) + END)),
    "gnu-magic-with-prefix-bytes": NO(gz(REV + file("f", magic=GNU, prefix="evil") + END)),
    "ustar-prefix-joins-name": OK(gz(REV + dir_("deep") + dir_("deep/dir") + file("f", prefix="deep/dir") + END)),
    "v7-header-without-magic": NO(gz(REV + file("f", magic=bytes(8)) + END)),
    # numeric fields
    "base256-size": OK(
        gz(REV + header("b256", b"0", size_field=b"\x80" + (5).to_bytes(11, "big")) + pad(b"five\n") + END)
    ),
    "base256-negative-size": NO(gz(REV + header("neg", b"0", size_field=b"\xff" * 12) + END)),
    "size-with-leading-nul": NO(gz(REV + header("n", b"0", size_field=b"\x0000000001000") + pad(b"\0" * 512) + HIDDEN)),
    "size-in-old-base64": NO(gz(REV + header("p", b"0", size_field=b"+0000000000B") + END)),
    "mode-with-spaces": OK(gz(REV + header("spaced", b"0", 3, mode_field=b"   750 \0") + pad(b"ok\n") + END)),
    "checksum-as-signed-sum": NO(gz(REV + signed_checksum(header("café", b"0", 0)) + END)),
    "name-fills-its-field": OK(gz(REV + file("n" * 100) + sym("l" * 100, "n" * 100) + END)),
    "prefix-fills-its-field": OK(gz(REV + file("f" * 100, prefix="p" * 155) + END)),
    "hardlink-target-with-dot-slash": OK(gz(REV + file("f") + link("./h", "./f") + END)),
    "checksum-wrong": NO(gz(REV + header("f", b"0", 0, checksum_delta=1) + END)),
    # member types and names
    "hardlink-to-earlier-file": OK(gz(REV + file("f", b"data\n", mode=0o640) + link("h", "f") + END)),
    "hardlink-to-symlink": NO(gz(REV + file("f") + sym("s", "f") + link("h", "s") + END)),
    "hardlink-to-later-name": NO(gz(REV + link("h", "f") + file("f") + END)),
    "hardlink-through-symlink": NO(gz(REV + dir_("d") + file("d/f") + sym("s", "d") + link("h", "s/f") + END)),
    "hardlink-with-data": NO(gz(REV + file("f") + header("h", b"1", 512, linkname="f") + pad(HIDDEN[:512]) + END)),
    "same-name-twice-later-wins": NO(gz(REV + file("a", b"first\n") + file("a", b"second\n") + END)),
    "directory-then-file-same-name": NO(gz(REV + dir_("d") + file("d") + END)),
    "symlink-then-file-under-it": NO(gz(REV + dir_("d") + sym("s", "d") + file("s/x") + END)),
    "symlink-to-root": NO(gz(REV + sym("www", "/") + END)),
    "symlink-with-size": NO(gz(REV + header("s", b"2", 512, 0o777, "f") + pad(HIDDEN[:512]) + END)),
    "directory-with-size": NO(gz(REV + header("d", b"5", 512, 0o755) + pad(HIDDEN[:512]) + END)),
    "unknown-typeflag": NO(gz(REV + header("z", b"Z", 2) + pad(b"z\n") + END)),
    "contiguous-file-type-7": NO(gz(REV + header("c", b"7", 2) + pad(b"c\n") + END)),
    "gnu-dumpdir": NO(gz(REV + header("dd", b"D", 0, 0o755, magic=GNU) + END)),
    "gnu-volume-label": NO(gz(header("label", b"V", 0, magic=GNU) + GOOD)),
    "solaris-extended-header": NO(gz(REV + pax(record("path", "x"), type=b"X") + file("f") + END)),
    "regular-file-with-trailing-slash": NO(gz(REV + file("looks-like-dir/", b"") + END)),
    "old-regular-type-with-trailing-slash": NO(gz(REV + header("old/", b"\0", 0) + END)),
    "symlink-with-trailing-slash": NO(gz(REV + file("f") + sym("s/", "f") + END)),
    "old-regular-type": OK(gz(REV + header("old", b"\0", 3) + pad(b"old") + END)),
    "directory-with-trailing-slashes": OK(gz(REV + dir_("d//") + file("d/x") + END)),
    "root-entry-with-mode": OK(gz(dir_("./", 0o750) + GOOD)),
    "dot-entry-without-slash": OK(gz(dir_(".", 0o700) + GOOD)),
    "file-named-dot-component": NO(gz(REV + dir_("a") + file("a/.") + END)),
    "odd-modes": OK(gz(odd_modes())),
    "setuid-file": NO(gz(REV + file("suid", mode=0o4755) + END)),
    "setgid-directory": NO(gz(REV + dir_("sgid", 0o2755) + END)),
    "block-device": NO(gz(REV + header("disk", b"4", 0, 0o666) + END)),
    "fifo": NO(gz(REV + header("pipe", b"6", 0, 0o644) + END)),
    "non-utf8-name": NO(gz(REV + file(b"caf\xe9") + END)),
    "newline-in-name": NO(gz(REV + file("two\nlines") + END)),
    "reserved-deployer-marker": NO(gz(REV + dir_(".deployer") + file(".deployer/migrated", b"{}") + END)),
    "python-tarfile-gnu-format-long-names": OK(
        gz(tarfile_archive([("REVISION", b"r\n"), ("p/" + "q" * 120, b"long\n")], tarfile.GNU_FORMAT))
    ),
    "python-tarfile-pax-non-ascii": OK(gz(tarfile_archive([("REVISION", b"r\n"), ("naïve/café.txt", b"\xc3\n")]))),
}


# --- what the check lists, as a tree ----------------------------------------------------------


def _key(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", ".")) or "."


def expected_tree(members: list[tarfile.TarInfo], as_root: bool) -> dict[str, tuple]:
    """The tree GNU tar should make from the members the check listed: (type, mode, size, target).
    Missing parents are made 0755; as the deploy user modes lose what umask 022 removes and any
    bit above 0777, as root they are kept; a hard link is its target's file."""

    def mode(m: tarfile.TarInfo) -> int:
        return m.mode & 0o7777 if as_root else m.mode & 0o755

    tree: dict[str, tuple] = {".": ("d", 0o755, None, "")}
    for m in members:
        key = _key(m.name)
        parent = posixpath.dirname(key)
        while parent and parent not in tree:
            tree[parent] = ("d", 0o755, None, "")
            parent = posixpath.dirname(parent)
        if m.isdir():
            tree[key] = ("d", mode(m), None, "")
        elif m.issym():
            tree[key] = ("l", 0o777, None, m.linkname)
        elif m.islnk():
            tree[key] = tree[_key(m.linkname)]
        else:
            tree[key] = ("f", mode(m), m.size, "")
    return tree


def host_tree(entries: list[str]) -> dict[str, tuple]:
    tree = {}
    for entry in entries:
        kind, mode, size, path, target = entry.split("\t", 4)
        tree[path or "."] = (kind, int(mode, 8), int(size) if kind == "f" else None, target)
    return tree


# --- one host for the whole module ----------------------------------------------------------------


@pytest.fixture(scope="module")
def host(sandbox_image, client_key, tmp_path_factory):
    import docker

    directory = tmp_path_factory.mktemp("archive-check")
    hosts = sandbox_mod.start_hosts(1, client_key.with_suffix(".pub").read_text(), label=TEST_LABEL)
    try:
        known_hosts = sandbox_mod.write_known_hosts(directory / "known_hosts", hosts)
        config = deploy_files.write_config(
            directory / "hosts.toml", hosts, client_key, known_hosts, source=str(directory)
        )
        client = docker.from_env()
        yield Sandbox(
            hosts=hosts,
            config_path=config,
            known_hosts_path=known_hosts,
            key_path=client_key,
            source=directory,
            docker=client,
        )
        client.close()
    finally:
        sandbox_mod.stop_hosts(hosts)


def _check(path: Path) -> list[tarfile.TarInfo] | None:
    """The members the check lists, or None when it refuses the archive."""
    try:
        check_members(path)
    except ArtifactError:
        return None
    return tarscan.scan(path).members


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, list | None]]:
    directory = tmp_path_factory.mktemp("cases")
    out = {}
    for name, (_, data) in CASES.items():
        path = directory / f"{name}.tar.gz"
        path.write_bytes(data)
        out[name] = (path, _check(path))
    return out


EXTRACT = r"""
set -e
for who in deploy root; do
  runuser -u $who -- sh -c '
    umask 022
    for f in /tmp/cases/*.tar.gz; do
      n=${f##*/}; n=${n%.tar.gz}; d=/tmp/out-'$who'/$n
      mkdir -p "$d"
      rc=0; tar -xzf "$f" -C "$d" --no-same-owner 2>/dev/null || rc=$?
      printf "=%s\t%s\t%s\0" "$n" '$who' "$rc"
      find "$d" -printf "%y\t%m\t%s\t%P\t%l\0"
    done'
done
"""


@pytest.fixture(scope="module")
def extracted(host, cases) -> dict[tuple[str, str], tuple[int, dict]]:
    """Every accepted case extracted by GNU tar on the host, as the deploy user and as root: one exec."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, members in cases.values():
            if members is not None:
                tf.add(path, arcname=f"cases/{path.name}")
    assert host.container(0).put_archive("/tmp", buf.getvalue())
    code, out = host.exec(0, EXTRACT)
    assert code == 0, out
    result, current = {}, None
    for entry in out.split("\0")[:-1]:
        if entry.startswith("="):
            name, who, rc = entry[1:].split("\t")
            current = result[(name, who)] = (int(rc), [])
        else:
            current[1].append(entry)
    return {k: (rc, host_tree(entries)) for k, (rc, entries) in result.items()}


REFUSED = {name for name, (accepted, _) in CASES.items() if not accepted}


def test_enough_constructions_both_ways():
    assert len(CASES) >= 30
    assert "two-gzip-members-smuggled" in REFUSED
    assert len(CASES) - len(REFUSED) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_check_refuses_or_lists_what_gnu_tar_extracts(name, host, cases, extracted):
    path, members = cases[name]
    if name in REFUSED:
        assert members is None, f"{name}: the check accepted it"
        before = host.command_count(0)
        proc = cli(host, "deploy", "--artifact", str(path))
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and path.name in lines[0] and "Traceback" not in proc.stderr, proc.stderr
        assert host.command_count(0) == before  # no host was contacted
        return
    assert members is not None, f"{name}: the check refused it"
    for who in ("deploy", "root"):
        rc, tree = extracted[(name, who)]
        assert rc == 0, f"GNU tar as {who} failed on {name}"
        assert tree == expected_tree(members, as_root=who == "root"), who


# --- shared paths: the artifact's links are never followed ---------------------------------------

VICTIM = "/home/deploy/victim"


@pytest.fixture
def shared_host(host, tmp_path):
    """The module's host with shared_dirs log and tmp/pids, an empty deploy_to, and a directory of
    the deploy user's outside it that an artifact link `tmp -> victim` would aim at."""
    config = deploy_files.write_config(
        tmp_path / "hosts.toml",
        host.hosts,
        host.key_path,
        host.known_hosts_path,
        source=str(tmp_path),
        extra={"app": {"shared_dirs": ["log", "tmp/pids"]}},
    )
    code, out = host.exec(
        0,
        f"rm -rf /srv/app {VICTIM} && mkdir -p {VICTIM}/pids "
        f"&& echo precious > {VICTIM}/pids/keep && chown -R deploy:deploy {VICTIM}",
    )
    assert code == 0, out
    yield Sandbox(
        hosts=host.hosts,
        config_path=config,
        known_hosts_path=host.known_hosts_path,
        key_path=host.key_path,
        source=tmp_path,
        docker=host.docker,
    )
    host.exec(0, f"rm -rf /srv/app {VICTIM}")


def victim_intact(sb) -> bool:
    return sb.exec(0, f"cat {VICTIM}/pids/keep")[1].strip() == "precious"


def refused_before_any_host(sb, path: Path, why: str) -> None:
    before = sb.command_count(0)
    proc = cli(sb, "deploy", "--artifact", str(path))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], proc.stderr
    assert sb.command_count(0) == before


def test_two_gzip_members_cannot_smuggle_a_link_over_a_shared_path(shared_host, tmp_path):
    """The reported attack: the check saw only the first gzip member, GNU tar extracted the second
    one's `tmp -> victim` and prepare's rm -rf of tmp/pids deleted victim/pids."""
    path = tmp_path / "smuggled.tar.gz"
    path.write_bytes(gz(REV + file("app.py")) + gz(sym("tmp", VICTIM) + END))
    refused_before_any_host(shared_host, path, "more than one gzip member")
    assert victim_intact(shared_host)


def test_artifact_link_at_or_above_a_shared_path_is_refused(shared_host, tmp_path):
    """Even a link resolving inside the release: linking the shared path would go through it."""
    for name, members in (
        ("above", dir_("data") + dir_("data/pids") + sym("tmp", "data")),
        ("at", dir_("tmp") + dir_("data") + sym("tmp/pids", "../data")),
    ):
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(gz(REV + members + END))
        bad = "tmp" if name == "above" else "tmp/pids"
        refused_before_any_host(
            shared_host, path, f"unsafe member '{bad}': a symlink at or above shared path 'tmp/pids'"
        )


UNCHECKED = (
    "import sys, deployer.artifact.members as a; a.check_members = lambda *x, **k: a.Checked(0, ()); "
    "from deployer.cli.main import main; main()"
)


def test_host_refuses_what_got_past_the_check(shared_host, tmp_path):
    """Defence in depth on a real host: with the client's check switched off in the deploying
    process, the host's pass over the extracted tree refuses the release; victim, current and
    releases stay as they were and the lock is released."""
    import hashlib
    import json
    import subprocess
    import sys

    from helpers import cli_env

    path = tmp_path / "evil.tar.gz"
    path.write_bytes(gz(REV + file("app.py") + sym("tmp", VICTIM) + END))
    path.with_suffix("").with_suffix(".json").write_text(
        json.dumps(  # so loading does not scan it either
            {
                "name": "evil",
                "version": "1",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "size": path.stat().st_size,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", UNCHECKED, "deploy", "--artifact", str(path), "--config", str(shared_host.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "unsafe entry in the extracted artifact" in proc.stdout + proc.stderr
    assert victim_intact(shared_host)
    code, out = shared_host.exec(0, "ls -A /srv/app/releases; ls -A /srv/app/.deployer; readlink /srv/app/current")
    assert out.split() == ["cache", "ledger.jsonl"], out  # no release, no temp dir, no lock, no current
