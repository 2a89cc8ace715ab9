"""Persistent connections (`ssh.persist = SECONDS`): commands go through a local agent that keeps
each host's SSH connection open between runs, like OpenSSH's ControlMaster + ControlPersist.

This is the client half: `AgentConnection` (a types.Transport, like connection.Connection, so
sessions do not know which one they hold) and starting the agent. The agent (agent_server) runs
the command with connection.Connection.run, so timeouts, remote kills and dead-link detection
behave exactly as without it. Both halves speak agent_protocol.

The socket lives in a 0700 directory under $XDG_CACHE_HOME/deployer/agent/; both halves check
that no other user can reach or replace it and that the other end runs as this user
(agent_socket). Its name carries a digest of the code, so an agent from another version is never
spoken to. Secrets in an env file pass through as stdin bytes, never in argv or environment.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deployer.config.settings import Host
from deployer.ssh import agent_socket
from deployer.ssh.agent_protocol import frame, frame_json, host_spec, read_frame
from deployer.ssh.agent_socket import AgentRefused, private_dir
from deployer.ssh.types import CHUNK, SLICE, WHOLE_OUTPUT_MAX, Cancelled, Result, Stdin, Transport, TransportError

START_TIMEOUT = 10.0  # seconds for a new agent to start listening
ANSWER_MARGIN = 60.0  # beyond the command's own timeout, enforced by the agent itself
# What the agent keeps of the starting run's environment: what SSH and Python need (ssh config
# and keys under HOME, the ssh-agent, a ProxyCommand's PATH, the locale). Nothing else: secrets
# that `env:` sources read, tokens and the like stay out of a process that outlives the run.
AGENT_ENV = (
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "SSH_AUTH_SOCK",
    "PYTHONPATH",
    "PYTHONHOME",
)


class AgentGone(TransportError):
    """The agent could not be reached or stopped mid-request."""


# -- where the agent listens ----------------------------------------------------------------------


@functools.cache
def _code_digest() -> str:
    """Of every module of the package: the agent runs whatever it imports."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def socket_path() -> Path:
    """This code's agent socket, its directory created and checked (agent_socket.socket_path)."""
    return agent_socket.socket_path(f"{_code_digest()}.sock")


Warn = Callable[[str], object]  # says one line to the person running deployer (report/output.note)
_refused: list[str] = []
_refused_lock = threading.Lock()


def refusal(warn: Warn | None = None) -> str | None:
    """Why this run connects directly although ssh.persist asks for the agent (said once, through
    warn), or None: no way to check a socket's peer, a socket directory another user could
    change, a socket path too long."""
    with _refused_lock:
        if not _refused:
            try:
                agent_socket.check_peer_credentials()
                socket_path()
            except AgentRefused as exc:
                _refuse(str(exc), warn)
            else:
                _refused.append("")
        return _refused[0] or None


def _refuse(reason: str, warn: Warn | None) -> None:
    """From now on this run connects directly; the warning is one line, said once."""
    if _refused and _refused[0]:
        return
    _refused[:] = [reason]
    if warn is not None:
        warn(f"warning: ssh.persist: {reason}; connecting directly")


def agent_env(environ: dict[str, str]) -> dict[str, str]:
    """The agent's environment: AGENT_ENV and LC_* of `environ`, this package first on PYTHONPATH."""
    env = {k: v for k, v in environ.items() if k in AGENT_ENV or k.startswith("LC_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


_starting = threading.Lock()


def start_agent(idle: int, path: Path | None = None) -> Path:
    """Make sure an agent listens on the socket; start one (detached) if none does. Threads of
    one run start one agent between them; racing runs settle on one with the agent's own lock."""
    path = path or socket_path()
    with _starting:
        private_dir(path.parent)
        if answers(path):
            return path
        return _spawn(idle, path)


def _spawn(idle: int, path: Path) -> Path:
    env = agent_env(dict(os.environ))
    with open(path.with_suffix(".log"), "ab") as log:
        os.chmod(log.name, 0o600)
        subprocess.Popen(
            [sys.executable, "-m", "deployer.ssh.agent_server", str(path), str(int(idle))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    until = time.monotonic() + START_TIMEOUT
    while time.monotonic() < until:
        if answers(path):
            return path
        time.sleep(0.02)
    raise AgentGone(f"the connection agent did not start within {START_TIMEOUT:g}s (see {path.with_suffix('.log')})")


def stop_agents() -> int:
    """`inv disconnect`: every agent of this user closes its connections and exits; how many
    connections were open."""
    closed = 0
    for path in sorted(p for d in agent_socket.agent_dirs() for p in d.glob("*.sock")):
        try:
            with agent_socket.connect(path, timeout=5) as s:
                s.sendall(frame_json(b"Q", {"op": "stop"}))
                got = read_frame(s)
        except (OSError, EOFError, AgentRefused):
            continue
        if got and got[0] == b"K":
            closed += int(json.loads(got[1]).get("connections", 0))
    return closed


def answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
        return True
    except OSError:
        return False


# -- the client ------------------------------------------------------------------------------------


class AgentConnection:
    """A types.Transport served by the agent's warm connection to the host."""

    def __init__(self, host: Host, path: Path | None = None, warn: Warn | None = None):
        self.host = host
        self.path = path
        self.warn = warn  # how a refusal of the agent is said (refusal)
        self._open = False

    def open(self) -> Transport:
        """The agent opens (or reuses) the connection; no agent yet: _socket starts one. An
        agent that cannot be trusted (agent_socket) is not spoken to: this run says why once and
        gets a direct connection instead."""
        try:
            self.path = self.path or socket_path()
            private_dir(self.path.parent)
            self._ask({"op": "open"})
        except AgentRefused as exc:
            with _refused_lock:
                _refuse(str(exc), self.warn)
            from deployer.ssh.connection import Connection

            return Connection(self.host).open()
        self._open = True
        return self

    def close(self) -> None:
        """The agent keeps the connection for the next run; this one just stops using it."""
        self._open = False

    @property
    def alive(self) -> bool:
        return self._open

    def ping(self, timeout: float | None = None) -> bool:
        try:
            answer = self._ask({"op": "ping", "timeout": timeout or self.host.ssh.connect_timeout})
        except TransportError:
            answer = {"ok": False}
        if not answer.get("ok"):
            self._open = False
        return bool(answer.get("ok"))

    def rtt(self) -> float | None:
        """The round trip the agent's connection measured (connection.Connection.rtt)."""
        try:
            rtt = self._ask({"op": "rtt"}).get("rtt") if self._open else None
            return None if rtt is None else float(rtt)
        except TransportError:
            return None

    def run(
        self,
        script: str,
        *,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        max_output: int | None = None,
    ) -> Result:
        if not self._open:
            raise TransportError("connection lost")
        timeout = timeout or self.host.ssh.command_timeout
        request = {"op": "run", "host": host_spec(self.host), "script": script, "timeout": timeout}
        if max_output is not None:
            request["max_output"] = max_output = min(max(int(max_output), 0), WHOLE_OUTPUT_MAX)
        with self._talking(), self._socket() as s:
            s.sendall(frame_json(b"Q", request))
            replies = _Replies(s, progress, max_output)
            ended = _send_stdin(s, stdin, replies, cancel) if stdin is not None else None
            if ended is None:
                s.sendall(frame(b"E"))
            if isinstance(ended, tuple):
                got = ended
            else:
                got = replies.wait(
                    cancel, deadline=time.monotonic() + timeout + ANSWER_MARGIN, cancel_sent=ended == "cancelled"
                )
        kind, body = self._answer(got)
        if kind != b"R":
            raise AgentGone(f"unexpected answer from the connection agent: {kind!r}")
        if body.get("lost"):
            self._open = False
        stdout = replies.stdout.decode("utf-8", "surrogateescape") + str(body["stdout"])
        cut = body.get("cut") or (0, 0)  # an agent started by an earlier version sends none
        return Result(int(body["code"]), stdout, str(body["stderr"]), int(cut[0]), int(cut[1]))

    # -- helpers --------------------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        """A connection to the agent; one that just exited (idle) is replaced once."""
        for attempt in (1, 2):
            self.path = self.path or socket_path()
            try:
                return agent_socket.connect(self.path)
            except OSError:
                if attempt == 2:
                    raise
                self.path = start_agent(self.host.ssh.persist, self.path)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """A broken conversation with the agent is a lost connection."""
        try:
            yield
        except (OSError, EOFError) as exc:
            self._open = False
            raise AgentGone(f"the connection agent stopped answering: {exc or type(exc).__name__}") from None

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request without stdin (open, ping: safe to repeat); K's answer, or the agent's error
        raised. An agent that dies as the request reaches it is replaced and asked again, once."""
        message = frame_json(b"Q", {**request, "host": host_spec(self.host)})
        try:
            with self._socket() as s:
                s.sendall(message)
                got = read_frame(s)
        except (OSError, EOFError):
            got = None
        if got is None:
            with self._talking():
                self.path = start_agent(self.host.ssh.persist, self.path)
                with self._socket() as s:
                    s.sendall(message)
                    got = read_frame(s)
        kind, body = self._answer(got)
        if kind != b"K":
            raise AgentGone(f"unexpected answer from the connection agent: {kind!r}")
        return body

    def _answer(self, got: tuple[bytes, bytes] | None) -> tuple[bytes, dict[str, Any]]:
        """An answer's kind (R or K) and body; an error (X) raised as the agent reported it."""
        if got is None:
            self._open = False
            raise AgentGone("the connection agent closed the request without an answer")
        kind, payload = got
        body = json.loads(payload or b"{}")
        if not isinstance(body, dict):
            raise AgentGone("unreadable answer from the connection agent")
        if kind in (b"R", b"K"):
            return kind, body
        if kind == b"X":
            if body.get("kind") == "cancelled":
                raise Cancelled(body.get("message") or "cancelled")
            if body.get("lost", True):
                self._open = False
            raise TransportError(body.get("message") or "connection agent error")
        raise AgentGone(f"unexpected answer from the connection agent: {kind!r}")


class _Replies:
    """Reads the agent's frames: progress while stdin is sent, stdout kept whole (O, when the
    run asked for max_output), then the final answer."""

    def __init__(self, sock: socket.socket, progress: Callable[[int], None] | None, max_output: int | None = None):
        self.sock = sock
        self.progress = progress
        self.max_output = max_output or 0
        self.stdout = bytearray()

    def poll(self, wait: float) -> tuple[bytes, bytes] | None:
        """One final frame if it arrived within `wait` (progress frames are handled here)."""
        readable, _, _ = select.select([self.sock], [], [], wait)
        while readable:
            got = read_frame(self.sock)
            if got is None:
                raise EOFError("the agent closed the connection")
            kind, payload = got
            if kind == b"O":
                if len(self.stdout) + len(payload) > self.max_output:
                    raise EOFError("the agent sent more output than asked for")
                self.stdout += payload
            elif kind != b"P":
                return got
            elif self.progress:
                self.progress(int(json.loads(payload)["sent"]))
            readable, _, _ = select.select([self.sock], [], [], 0)
        return None

    def wait(self, cancel: threading.Event | None, deadline: float, cancel_sent: bool = False) -> tuple[bytes, bytes]:
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self.sock.sendall(frame(b"C"))
                cancel_sent = True
            if time.monotonic() > deadline:
                raise EOFError("no answer in time")
            got = self.poll(SLICE)
            if got is not None:
                return got


def _send_stdin(
    sock: socket.socket, stdin: Stdin, replies: _Replies, cancel: threading.Event | None
) -> tuple[bytes, bytes] | str | None:
    """Stream stdin as D frames. None when all was sent, "cancelled" (C sent instead of E), or
    the final answer when the command ended before reading all of its stdin."""
    while chunk := stdin.read(CHUNK):
        view = memoryview(frame(b"D", chunk))
        whole = len(view)
        while view:
            if cancel is not None and cancel.is_set():
                if len(view) < whole:
                    sock.sendall(view)  # a frame half sent is completed before the next
                sock.sendall(frame(b"C"))
                return "cancelled"
            _, writable, _ = select.select([], [sock], [], SLICE)
            if writable:
                view = view[sock.send(view) :]
            early = replies.poll(0)
            if early is not None:
                return early
    return None
