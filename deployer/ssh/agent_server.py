"""The connection agent: `python -m deployer.ssh.agent_server SOCKET IDLE_SECONDS`, started by
agent_client.start_agent.

Keeps one SSH connection per host (connection.Connection, opened and checked exactly as without
the agent) and runs this user's commands on them; exits after IDLE seconds without a request,
closing every connection. A connection found dead is reopened by the next request; one that has
been quiet for longer than its keepalive is pinged first, so a link that died while idle costs a
bounded wait (connect_timeout) instead of a hang. A request whose client goes away (Ctrl-C, kill)
is cancelled: the remote process group is killed as it would be for the client itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deployer.ssh.agent_client import START_TIMEOUT, answers
from deployer.ssh.agent_protocol import OUTPUT_FRAME, connection_key, frame, frame_json, host_from_spec, read_frame
from deployer.ssh.agent_socket import (
    AgentRefused,
    check_peer_credentials,
    peer_uid,
    private_dir,
)
from deployer.ssh.connection import Connection
from deployer.ssh.types import Cancelled, TransportError

ACCEPT_SLICE = 0.5
DRAIN_TIMEOUT = 10.0  # how long a finished request waits for its client to hang up


class _Stdin:
    """The request's stdin as the transport reads it: D frames until E. C, or the client going
    away, sets `cancel` and ends it. After E, a thread keeps listening for C until the client
    hangs up."""

    def __init__(self, sock: socket.socket, cancel: threading.Event):
        self.sock = sock
        self.cancel = cancel
        self.ended = False
        self.listener: threading.Thread | None = None

    def read(self, _size: int = -1) -> bytes:
        while not self.ended:
            got = self._next()
            if got is None:
                return b""
            kind, payload = got
            if kind == b"D":
                if payload:
                    return payload
                continue
            self.ended = True
            if kind == b"E":
                self.listener = threading.Thread(target=self._listen, daemon=True, name="agent-listen")
                self.listener.start()
            else:
                self.cancel.set()
        return b""

    def _next(self) -> tuple[bytes, bytes] | None:
        try:
            got = read_frame(self.sock)
        except (OSError, EOFError):
            got = None
        if got is None:
            self.ended = True
            self.cancel.set()
        return got

    def _listen(self) -> None:
        while (got := self._next()) is not None:
            if got[0] == b"C":
                self.cancel.set()

    def finish(self) -> None:
        """After the answer: wait (bounded) for the client to hang up, reading what it still sends."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        if self.listener is None:
            self.sock.settimeout(DRAIN_TIMEOUT)
            self.ended = True
            self.listener = threading.Thread(target=self._listen, daemon=True, name="agent-drain")
            self.listener.start()
        self.listener.join(DRAIN_TIMEOUT)


class Agent:
    def __init__(self, path: Path, idle: float):
        self.path = path
        self.idle = idle
        self.conns: dict[str, Connection] = {}
        self.used: dict[str, float] = {}
        self.key_locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.stopping = False

    # -- connections ----------------------------------------------------------------------------

    def connection(self, spec: dict[str, Any]) -> Connection:
        """The host's connection, opened again when it was found dead."""
        conn = self._connection(spec, reopen=True)
        assert conn is not None
        return conn

    def live_connection(self, spec: dict[str, Any]) -> Connection | None:
        """The host's connection if it is open (not probed: the caller pings it anyway), else None."""
        return self._connection(spec, reopen=False)

    def _connection(self, spec: dict[str, Any], reopen: bool) -> Connection | None:
        key = connection_key(spec)
        with self.lock:
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            host = host_from_spec(spec)
            conn = self.conns.get(key)
            quiet = time.monotonic() - self.used.get(key, 0.0)
            if reopen and conn is not None and conn.alive and quiet > host.ssh.keepalive:
                conn.ping(timeout=host.ssh.connect_timeout)  # closes it when unanswered
            if conn is None or not conn.alive:
                if not reopen:
                    return None
                conn = self.conns[key] = Connection(host).open()
            self.used[key] = time.monotonic()
            return conn

    # -- requests -------------------------------------------------------------------------------

    def handle(self, sock: socket.socket) -> None:
        with self.lock:
            self.active += 1
        try:
            if peer_uid(sock) != os.getuid():
                return
            got = read_frame(sock)
            if got is None or got[0] != b"Q":
                return
            request = json.loads(got[1])
            op = request.get("op")
            if self.stopping:
                return
            try:
                if op == "open":
                    self.connection(request["host"])
                    sock.sendall(frame_json(b"K", {"ok": True}))
                elif op == "ping":
                    conn = self.live_connection(request["host"])
                    ok = conn is not None and conn.ping(timeout=float(request.get("timeout") or 10))
                    sock.sendall(frame_json(b"K", {"ok": ok}))
                elif op == "rtt":
                    conn = self.live_connection(request["host"])
                    sock.sendall(frame_json(b"K", {"rtt": conn.rtt() if conn is not None else None}))
                elif op == "run":
                    self.run(sock, request)
                elif op == "stop":
                    self.stopping = True
                    sock.sendall(frame_json(b"K", {"connections": sum(c.alive for c in self.conns.values())}))
            except TransportError as exc:
                sock.sendall(frame_json(b"X", {"kind": "transport", "message": str(exc), "lost": True}))
        except (OSError, EOFError, ValueError, KeyError, TypeError, AgentRefused) as exc:
            print(f"agent: request failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            try:
                sock.close()
            finally:
                with self.lock:
                    self.active -= 1
                    self.last = time.monotonic()

    def run(self, sock: socket.socket, request: dict[str, Any]) -> None:
        conn = self.connection(request["host"])
        cancel = threading.Event()
        stdin = _Stdin(sock, cancel)

        def progress(sent: int) -> None:
            sock.sendall(frame_json(b"P", {"sent": sent}))

        max_output = request.get("max_output")
        whole = b""
        try:
            result = conn.run(
                request["script"],
                stdin=stdin,
                timeout=float(request["timeout"]),
                progress=progress,
                cancel=cancel,
                max_output=None if max_output is None else int(max_output),
            )
            stdout = result.stdout
            if max_output is not None:  # any size: in O frames, its bytes exact
                whole, stdout = stdout.encode("utf-8", "surrogateescape"), ""
            answer = frame_json(
                b"R",
                {
                    "code": result.exit_code,
                    "stdout": stdout,
                    "stderr": result.stderr,
                    "cut": [result.stdout_cut, result.stderr_cut],
                    "lost": not conn.alive,
                },
            )
        except Cancelled as exc:
            answer = frame_json(b"X", {"kind": "cancelled", "message": str(exc), "lost": not conn.alive})
        except TransportError as exc:
            answer = frame_json(b"X", {"kind": "transport", "message": str(exc), "lost": not conn.alive})
        try:
            for at in range(0, len(whole), OUTPUT_FRAME):
                sock.sendall(frame(b"O", whole[at : at + OUTPUT_FRAME]))
            sock.sendall(answer)
        except OSError:
            return
        stdin.finish()

    # -- the process ----------------------------------------------------------------------------

    def serve(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old)
        server.listen(128)
        server.settimeout(ACCEPT_SLICE)
        inode = self.path.stat().st_ino
        try:
            while True:
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    with self.lock:
                        if self.stopping or (self.active == 0 and time.monotonic() - self.last > self.idle):
                            self._unlink(inode)  # new clients start a new agent from here on
                            return
                    continue
                sock.settimeout(None)
                with self.lock:
                    self.last = time.monotonic()
                threading.Thread(target=self.handle, args=(sock,), daemon=True, name="agent-request").start()
        finally:
            self._unlink(inode)
            server.close()
            for conn in list(self.conns.values()):
                conn.close()

    def _unlink(self, inode: int) -> None:
        """Remove the socket, unless a newer agent already replaced it."""
        try:
            if self.path.stat().st_ino == inode:
                self.path.unlink()
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m deployer.ssh.agent_server SOCKET IDLE_SECONDS", file=sys.stderr)
        return 2
    path, idle = Path(argv[0]), float(argv[1])
    try:
        check_peer_credentials()  # it serves only its own user, so it must see who asks
        private_dir(path.parent)
    except AgentRefused as exc:
        print(f"agent: not starting: {exc}", file=sys.stderr, flush=True)
        return 2
    with open(path.with_suffix(".lock"), "a") as lock:
        until = time.monotonic() + START_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # another agent holds it: serving (then this one is not needed) or shutting down
                if answers(path) or time.monotonic() > until:
                    return 0
                time.sleep(0.05)
        Agent(path, idle).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
