# Part of prepare (prepare_delta.sh, when the host has python3): steps 2-4 of receive_delta in one
# pass. Each file the new release takes from the base is read once: hashed as it is read and
# written with the artifact's mode and time (never linked: a later write in either release stays
# there). Then one walk of the tree (lstat only; the few files the delta brought are read) gives
# the manifest and the listing, which must hash to the artifact's. Exits 27 with "delta not
# usable: ..." when anything differs; a full disk is said as such (exit 1).
# argv: TMP_RELEASE DELTA_BASE MANIFEST DELTA_CONTROL DELTA_MTIME DELTA_MANIFEST_SUM
# DELTA_LISTING_SUM NUMBER DELTA_NUMBER. Python 3.5 or newer (no f-strings).
import errno
import hashlib
import os
import shutil
import signal
import stat
import sys

signal.signal(signal.SIGINT, signal.SIG_DFL)  # the shell's traps do the cleanup: no traceback
tmp, base, manifest, control, mtime, manifest_sum, listing_sum, number, base_number = sys.argv[1:10]
MTIME = int(mtime)
NS = MTIME * 10**9
BASE = "release " + base_number  # what messages call the base
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def unusable(why):
    sys.stderr.write("delta not usable: " + why + "\n")
    sys.exit(27)


def copy_failed(exc):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        sys.stderr.write("no space left on device: building release " + number + " from " + BASE + " failed\n")
        sys.exit(1)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        unusable(BASE + " holds links the artifact does not")
    unusable("copying from " + BASE + " failed")


def lines(path):
    with open(path, "rb") as fh:
        return fh.read().split(b"\n")[:-1]


class Dirs:
    """A directory fd per relative path, opened one component at a time, never through a link."""

    def __init__(self, root):
        self.fds = {b"": os.open(root, DIR_FLAGS)}

    def fd(self, rel):
        got = self.fds.get(rel)
        if got is None:
            parent, _, name = rel.rpartition(b"/")
            got = self.fds[rel] = os.open(name, DIR_FLAGS, dir_fd=self.fd(parent))
        return got


def safe(rel):
    parts = rel.split(b"/")
    return bool(rel) and all(p not in (b"", b".", b"..") for p in parts)


def copy(src, dst, execs, src_dirs, dst_dirs, hashes):
    """src in the base to dst in the new tree: one read, hashed; the artifact's mode and time."""
    sdir, _, sname = src.rpartition(b"/")
    ddir, _, dname = dst.rpartition(b"/")
    fd = os.open(sname, READ_FLAGS, dir_fd=src_dirs.fd(sdir))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a fifo (opened without waiting), a device, a directory
            unusable(BASE + ": " + src.decode("utf-8", "replace") + " is not a regular file")
        out = os.open(dname, WRITE_FLAGS, 0o755 if dst in execs else 0o644, dir_fd=dst_dirs.fd(ddir))
        try:
            h = hashlib.sha256()
            left = st.st_size  # read no further (what was read is what is hashed and written)
            while True:
                chunk = os.read(fd, left if 0 < left < (1 << 24) else 1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                left -= len(chunk)
                if left == 0:
                    break
            os.utime(out, ns=(NS, NS))
        finally:
            os.close(out)
    finally:
        os.close(fd)
    hashes[dst] = h.hexdigest()


def hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def walk(root, rel, execs, hashes, listing, files):
    """Every entry under root/rel: its listing line, modes and times as a full extraction leaves
    them, the sha256 of each regular file (hashed here unless it was copied)."""
    for e in os.scandir(os.path.join(root, rel) if rel else root):
        path = rel + b"/" + e.name if rel else e.name
        if path == b".deployer":
            continue
        st = e.stat(follow_symlinks=False)
        kind = st.st_mode
        link = b""
        if stat.S_ISDIR(kind):
            walk(root, path, execs, hashes, listing, files)
            y = b"d"
        elif stat.S_ISLNK(kind):
            link, y = os.readlink(e.path), b"l"
        elif stat.S_ISREG(kind):
            want = 0o755 if path in execs else 0o644
            if stat.S_IMODE(kind) != want:
                os.chmod(e.path, want)
                kind = stat.S_IFREG | want
            if path not in hashes:
                hashes[path] = hash_file(e.path)
            files.append(path)
            y = b"f"
        else:
            y = b"?"
        if st.st_mtime_ns != NS:
            os.utime(e.path, ns=(NS, NS), follow_symlinks=False)
        listing.append(b"%s %o %s\t%s\n" % (y, stat.S_IMODE(kind), path, link))


def main():
    os.umask(0)
    root, ctl = os.fsencode(tmp), os.path.join(os.fsencode(tmp), os.fsencode(control))
    try:
        base_files = [line[66:] for line in lines(os.path.join(os.fsencode(base), os.fsencode(manifest)))]
        skip = set(lines(os.path.join(ctl, b"skip")))
        pairs = [line.split(b"\t", 1) for line in lines(os.path.join(ctl, b"pairs"))]
        execs = set(lines(os.path.join(ctl, b"exec")))
    except OSError as exc:
        unusable("reading the delta's lists or " + BASE + "'s manifest failed: " + str(exc.strerror))
    hashes = {}  # type: dict[bytes, str]
    try:
        src_dirs, dst_dirs = Dirs(os.fsencode(base)), Dirs(root)
        for rel in base_files:
            if rel not in skip and safe(rel):
                copy(rel, rel, execs, src_dirs, dst_dirs, hashes)
        for pair in pairs:
            if len(pair) == 2 and safe(pair[0]) and safe(pair[1]):
                copy(pair[0], pair[1], execs, src_dirs, dst_dirs, hashes)
    except OSError as exc:
        copy_failed(exc)
    shutil.rmtree(ctl)
    listing = []  # type: list[bytes]
    files = []  # type: list[bytes]
    try:
        walk(root, b"", execs, hashes, listing, files)
    except OSError as exc:
        unusable("checking the tree built from " + BASE + " failed: " + str(exc.strerror))
    text = b"".join(b"%s  %s\n" % (hashes[p].encode(), p) for p in sorted(files))
    if hashlib.sha256(text).hexdigest() != manifest_sum:
        unusable("files copied from " + BASE + " differ from the artifact (edited there?)")
    own = os.path.join(root, os.fsencode(manifest))
    try:
        fd = os.open(own, WRITE_FLAGS, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
    except OSError as exc:
        copy_failed(exc)
    for rel in (b".deployer", *(b".deployer/" + n for n in os.listdir(os.path.join(root, b".deployer")))):
        st = os.lstat(os.path.join(root, rel))
        y = b"d" if stat.S_ISDIR(st.st_mode) else b"f" if stat.S_ISREG(st.st_mode) else b"?"
        listing.append(b"%s %o %s\t\n" % (y, stat.S_IMODE(st.st_mode), rel))
    if hashlib.sha256(b"".join(sorted(listing))).hexdigest() != listing_sum:
        unusable("the tree built from " + BASE + " differs from the artifact (a file added, a mode?)")


try:
    main()
except Exception as exc:  # anything unforeseen: this host gets the full artifact
    unusable("building release " + number + " from " + BASE + " failed: " + repr(exc))
