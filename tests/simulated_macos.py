"""Make this Python process look like a client that is not Linux (macOS, a BSD), for the
client-platform tests. Imported from a `sitecustomize.py` that a test puts first on PYTHONPATH,
so the CLI and every process it starts (the connection agent keeps PYTHONPATH) run simulated.

    apply(peer="getpeereid")   libc offers getpeereid(3), as macOS and the BSDs do (libbsd's,
                               which is the real function, loaded into the global namespace)
    apply(peer="none")         no way at all to learn a Unix socket's peer

Either way: the Linux-only attributes below are removed, /proc and /dev/shm do not exist,
a Unix socket path is limited to 103 bytes as on macOS, and sys.platform is "darwin".
"""

from __future__ import annotations

import builtins
import ctypes
import ctypes.util
import errno
import fcntl
import io
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import types

LINUX_ONLY = {
    socket: (
        "SO_PEERCRED",
        "SO_PASSCRED",
        "SO_PEERSEC",
        "SO_BINDTODEVICE",
        "SO_MARK",
        "TCP_QUICKACK",
        "TCP_CORK",
        "TCP_DEFER_ACCEPT",
        "TCP_USER_TIMEOUT",
        "TCP_CONGESTION",
        "AF_NETLINK",
        "AF_PACKET",
    ),
    os: (
        "pipe2",
        "memfd_create",
        "eventfd",
        "pidfd_open",
        "splice",
        "copy_file_range",
        "sched_getaffinity",
        "sched_setaffinity",
        "posix_fallocate",
        "posix_fadvise",
        "getrandom",
        "getxattr",
        "setxattr",
        "listxattr",
        "removexattr",
        "O_PATH",
        "O_TMPFILE",
        "O_DIRECT",
        "O_NOATIME",
    ),
    select: ("epoll", "EPOLLIN", "EPOLLOUT"),
    signal: ("SIGRTMIN", "SIGRTMAX", "SIGPWR", "SIGSTKFLT"),
    fcntl: ("F_SETPIPE_SZ", "F_GETPIPE_SZ", "F_OFD_GETLK", "F_OFD_SETLK", "F_OFD_SETLKW", "F_ADD_SEALS"),
    time: ("CLOCK_BOOTTIME", "CLOCK_TAI"),
}
HIDDEN = ("/proc", "/dev/shm")
SUN_PATH_MAX = 103


def _hidden(path) -> bool:
    if isinstance(path, int):
        return False
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return any(text == h or text.startswith(h + "/") for h in HIDDEN)


def _guard(fn):
    def guarded(*args, **kwargs):
        path = args[0] if args else kwargs.get("path", kwargs.get("file"))
        if path is not None and _hidden(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory (simulated macOS)", os.fspath(path))
        return fn(*args, **kwargs)

    return guarded


def _short_unix_path(fn):
    def checked(self, address, *args):
        if self.family == socket.AF_UNIX and isinstance(address, (str, bytes)):
            if len(os.fsencode(address)) > SUN_PATH_MAX:
                raise OSError("AF_UNIX path too long")
        return fn(self, address, *args)

    return checked


def apply(peer: str) -> None:
    if peer == "getpeereid":
        ctypes.CDLL(ctypes.util.find_library("bsd") or "libbsd.so.0", mode=ctypes.RTLD_GLOBAL)
    elif peer != "none":
        raise ValueError(peer)
    for module, names in LINUX_ONLY.items():
        for name in names:
            if hasattr(module, name):
                delattr(module, name)
    # what the standard library decided on import, as it decides on macOS
    tempfile._O_TMPFILE_WORKS = False
    shutil._USE_CP_SENDFILE = False
    builtins.open = io.open = _guard(io.open)
    for name in ("open", "stat", "lstat", "listdir", "scandir", "access", "readlink"):
        setattr(os, name, _guard(getattr(os, name)))
    for name in ("bind", "connect", "connect_ex"):
        setattr(socket.socket, name, _short_unix_path(getattr(socket.socket, name)))
    sys.platform = "darwin"
    # macOS's CPython has _scproxy (system proxy settings), which urllib.request imports there:
    # a Mac with no proxy configured
    scproxy = types.ModuleType("_scproxy")
    scproxy._get_proxy_settings = lambda: {"exclude_simple": False, "exceptions": ()}  # type: ignore[attr-defined]
    scproxy._get_proxies = dict  # type: ignore[attr-defined]
    sys.modules["_scproxy"] = scproxy
