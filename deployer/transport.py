"""One SSH connection per host, reused for every step. Knows nothing about releases.

Fabric's Connection opens the session (its defaults are tightened: host keys are checked against
known_hosts, connect timeout and keepalive set, agent forwarding off); commands run on raw exec
channels so stdin can stream a large artifact with bounded memory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import fabric
import paramiko

from .config import Host
from .errors import DeployerError

CHUNK = 256 * 1024
OUTPUT_TAIL = 64 * 1024


class TransportError(DeployerError):
    """The host could not be reached or stopped answering."""


class Cancelled(DeployerError):
    pass


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 5) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:]) or f"exit {self.exit_code}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _StrictPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise TransportError(f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}): "
                             "not in known_hosts; verify it and add it, or use host_key_policy = \"accept-new\"")


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record unknown keys. Changed keys never reach here (paramiko refuses)."""

    _lock = threading.Lock()

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with self._lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class Connection:
    """An open SSH connection to one host, counting the commands it runs."""

    def __init__(self, host: Host):
        self.host = host
        self.commands_run = 0
        self._conn: fabric.Connection | None = None

    def open(self) -> "Connection":
        ssh = self.host.ssh
        connect_kwargs = {"look_for_keys": ssh.key is None, "allow_agent": ssh.key is None,
                          "banner_timeout": ssh.connect_timeout, "auth_timeout": ssh.connect_timeout}
        if ssh.key:
            connect_kwargs["key_filename"] = [ssh.key]
        conn = fabric.Connection(self.host.address, user=ssh.user, port=ssh.port,
                                 connect_timeout=ssh.connect_timeout, connect_kwargs=connect_kwargs,
                                 forward_agent=False)
        known_hosts = os.path.expanduser(ssh.known_hosts)
        if os.path.exists(known_hosts):
            conn.client.load_host_keys(known_hosts)
        policy = _AcceptNewPolicy(known_hosts) if ssh.host_key_policy == "accept-new" else _StrictPolicy()
        conn.client.set_missing_host_key_policy(policy)
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise TransportError(
                f"host key CHANGED for {self.host.address}:{ssh.port}: expected {fingerprint(exc.expected_key)}, "
                f"got {fingerprint(exc.key)}; refusing (possible man-in-the-middle; check and fix {known_hosts})"
            ) from None
        except TransportError:
            raise
        except paramiko.AuthenticationException as exc:
            raise TransportError(f"authentication failed as {ssh.user or 'default user'}: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise TransportError(f"connect timed out after {ssh.connect_timeout}s") from None
        except ConnectionRefusedError:
            raise TransportError(f"connection refused on port {ssh.port}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransportError(f"cannot connect: {exc or type(exc).__name__}") from None
        conn.transport.set_keepalive(ssh.keepalive)
        self._conn = conn
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def alive(self) -> bool:
        return self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active()

    def run(self, script: str, *, stdin: BinaryIO | None = None, timeout: float | None = None,
            progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None) -> Result:
        """Run one remote command; stream `stdin` to it in chunks. Never raises on a non-zero exit."""
        if not self.alive:
            raise TransportError("connection lost")
        timeout = timeout or self.host.ssh.command_timeout
        deadline = time.monotonic() + timeout
        stall = max(self.host.ssh.keepalive * 3, 15)
        try:
            chan = self._conn.transport.open_session(timeout=self.host.ssh.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open a session: {exc}") from None
        self.commands_run += 1
        out, err = _Tail(), _Tail()
        try:
            chan.settimeout(stall)
            chan.exec_command(script)
            if stdin is not None:
                sent = 0
                while chunk := stdin.read(CHUNK):
                    _check(cancel, deadline, timeout)
                    chan.sendall(chunk)
                    sent += len(chunk)
                    _drain(chan, out, err)
                    if progress:
                        progress(sent)
                chan.shutdown_write()
            else:
                chan.shutdown_write()
            last = time.monotonic()
            while True:
                _check(cancel, deadline, timeout)
                readable, _, _ = select.select([chan], [], [], 0.5)
                got = _drain(chan, out, err)
                if got:
                    last = time.monotonic()
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not self.alive:
                    raise TransportError("connection lost while the command ran")
                if not readable and not got and time.monotonic() - last > stall and not self._responsive():
                    raise TransportError(f"host stopped answering (no reply to keepalive for {stall}s)")
            code = chan.recv_exit_status()
        except socket.timeout:
            raise TransportError(f"host stopped answering (stalled for {stall}s)") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            chan.close()
        return Result(code, out.text(), err.text())

    def _responsive(self, wait: float = 10.0) -> bool:
        """A global request the server must answer: tells a slow command from a dead link."""
        answered = threading.Event()

        def probe():
            try:
                self._conn.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                return
            answered.set()

        threading.Thread(target=probe, daemon=True).start()
        return answered.wait(wait) and self.alive


class _Tail:
    """Keeps the last bytes of a stream: a flooding command cannot exhaust memory."""

    def __init__(self):
        self.buf = bytearray()

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * OUTPUT_TAIL:
            del self.buf[:-OUTPUT_TAIL]

    def text(self) -> str:
        return self.buf.decode("utf-8", "replace")


def _drain(chan: paramiko.Channel, out: _Tail, err: _Tail) -> bool:
    got = False
    while chan.recv_ready():
        data = chan.recv(65536)
        if not data:
            break
        out.add(data)
        got = True
    while chan.recv_stderr_ready():
        data = chan.recv_stderr(65536)
        if not data:
            break
        err.add(data)
        got = True
    return got


def _check(cancel: threading.Event | None, deadline: float, timeout: float) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
    if time.monotonic() > deadline:
        raise TransportError(f"command timed out after {int(timeout)}s")
