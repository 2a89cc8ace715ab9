"""Where the connection agent listens and who may talk through it, on any client (Linux, macOS,
the BSDs): the socket's directory and every directory above it, the socket path's length, and
the uid of the process at the other end.

The agent's requests carry scripts and env files (secrets) as stdin, so neither half speaks to
a socket that another user could have placed or swapped: every directory of the path is owned
by root or by this user and writable by nobody else (a sticky dir such as /tmp excepted:
others cannot rename what is in it), and the peer's uid is checked on both ends.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from deployer.plan.paths import user_cache
from deployer.ssh.types import TransportError

# A Unix socket path is at most sizeof(sun_path) - 1 bytes: 103 on macOS and the BSDs, 107 on
# Linux. One limit for every client, the smaller one, so a path that works here works on a Mac.
MAX_SOCKET_PATH = 103


class AgentRefused(TransportError):
    """The agent cannot be used safely here; the message says why, in one line."""


# -- who is at the other end -----------------------------------------------------------------------


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket: SO_PEERCRED (Linux),
    else getpeereid(3) (macOS, the BSDs). AgentRefused when the system offers neither."""
    if hasattr(socket, "SO_PEERCRED"):
        ucred = struct.Struct("3i")  # pid, uid, gid
        return int(ucred.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, ucred.size))[1])
    getpeereid = _getpeereid()
    if getpeereid is None:
        raise AgentRefused(
            "this system offers no way to check who is at the other end of a Unix socket "
            "(neither SO_PEERCRED nor getpeereid)"
        )
    import ctypes

    uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
    if getpeereid(sock.fileno(), ctypes.byref(uid), ctypes.byref(gid)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getpeereid: {os.strerror(err)}")
    return uid.value


@functools.cache
def _getpeereid() -> Callable[..., int] | None:
    """libc's getpeereid, or None (glibc has none; Linux has SO_PEERCRED instead)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).getpeereid
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32))
    fn.restype = ctypes.c_int
    return fn


def check_peer_credentials() -> None:
    """AgentRefused unless this process can tell who is at the other end of a Unix socket."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        try:
            uid = peer_uid(a)
        except OSError as exc:
            raise AgentRefused(f"cannot check a Unix socket's peer: {exc}") from None
    if uid != os.getuid():
        raise AgentRefused(f"a Unix socket's peer check gave uid {uid} for this process (uid {os.getuid()})")


def connect(path: Path, timeout: float | None = None) -> socket.socket:
    """A connection to the agent's socket, refused (AgentRefused) unless the agent runs as this user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        uid = peer_uid(sock)
    except BaseException:
        sock.close()
        raise
    if uid != os.getuid():
        sock.close()
        raise AgentRefused(f"{path} is served by uid {uid}, not by this user (uid {os.getuid()}): not using it")
    return sock


# -- where it listens ------------------------------------------------------------------------------


def agent_dirs() -> list[Path]:
    """Where agents of this user may listen: under the user cache, and (for a cache path too
    long for a socket) $TMPDIR/deployer-<uid>/agent."""
    return [user_cache() / "agent", Path(tempfile.gettempdir()) / f"deployer-{os.getuid()}" / "agent"]


def socket_path(name: str) -> Path:
    """The socket called `name` in its private directory (created, checked: private_dir): under
    the user cache, or in the short directory when that path would be longer than a Unix socket
    allows. AgentRefused when both are too long or the directory is not private."""
    for directory in agent_dirs():
        path = Path(os.path.abspath(directory)).resolve() / name
        if len(os.fsencode(str(path))) <= MAX_SOCKET_PATH:
            return private_dir(path.parent) / name
    raise AgentRefused(
        f"the agent's socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket "
        f"allows: set XDG_CACHE_HOME (or TMPDIR) to a shorter directory"
    )


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed and return it resolved. AgentRefused, naming the
    directory, when one from / down to it could be changed by another user (owned by someone
    other than root or this user, or writable by others without the sticky bit), when one is
    not a directory, or when `path` itself is not this user's or others may add to it (a link
    there named like the agent's log would redirect it). Each directory is checked before
    anything is created in it."""
    resolved = Path(os.path.abspath(path)).resolve()  # /tmp -> /private/tmp on macOS
    for directory in (*reversed(resolved.parents), resolved):
        last = directory == resolved
        if not os.path.lexists(directory):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise AgentRefused(f"cannot create {directory} for the agent's socket: {exc.strerror}") from None
        st = os.lstat(directory)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISDIR(st.st_mode):
            problem = "is not a directory"
        elif st.st_uid not in (0, os.getuid()) or (last and st.st_uid != os.getuid()):
            problem = f"belongs to uid {st.st_uid}, not to this user{'' if last else ' or root'}"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (last or not st.st_mode & stat.S_ISVTX):
            problem = f"is writable by other users (mode {mode:04o})"
        else:
            continue
        raise AgentRefused(f"{directory} {problem}: not using it for the agent's socket")
    if mode != 0o700:
        os.chmod(resolved, 0o700)
    return resolved
