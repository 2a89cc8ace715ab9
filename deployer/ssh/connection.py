"""A direct SSH connection to one host, reused for every step. Knows nothing about releases.

The session is opened by connect.login; commands run on raw exec channels (runloop) so stdin
can stream a large artifact with bounded memory, and liveness tells a slow command from a dead
link while one runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import fabric
import paramiko  # type: ignore[import-untyped, unused-ignore]

from deployer.config.settings import Host
from deployer.ssh import liveness, runloop
from deployer.ssh.connect import login
from deployer.ssh.types import Result, Stdin, TransportError


class Connection:
    """An open SSH connection to one host, counting the commands it runs (a Transport).

    The session channel of the next command is opened while the current one runs (a spare), so
    a command costs one round trip instead of two. Opening a channel runs nothing on the host, so
    the quickest open seen since login is the link's round trip (`rtt()`)."""

    def __init__(self, host: Host):
        self.host = host
        self.commands_run = 0
        self._conn: fabric.Connection | None = None
        self._spare: _Spare | None = None
        self._spare_lock = threading.Lock()
        self._rtt: float | None = None

    def open(self) -> Connection:
        """Connect (connect.login); the first spare channel starts opening at once."""
        conn = login(self.host)
        self._conn = conn
        # not timed: a server still setting up the session just after login answers it late
        self._spare = _Spare(conn.transport, self.host.ssh.connect_timeout, None)
        return self

    def rtt(self) -> float | None:
        """Seconds of one round trip to the host: the quickest channel open since login, waiting
        for the one under way if none has been timed yet; None if none could be."""
        spare = self._spare
        if self._rtt is None and spare is not None:
            spare.wait(self.host.ssh.connect_timeout)
        return self._rtt

    def _timed(self, seconds: float) -> None:
        self._rtt = seconds if self._rtt is None else min(self._rtt, seconds)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception:  # closing a dead link must not hide why it died
                pass

    @property
    def alive(self) -> bool:
        return self._conn is not None and self._conn.transport is not None and bool(self._conn.transport.is_active())

    def ping(self, timeout: float | None = None) -> bool:
        """One round trip that runs nothing on the host: True when the server answers in time
        (default connect_timeout). A connection that does not answer is closed."""
        if not self.alive:
            return False
        answered = self.probe()
        if answered.wait(timeout or self.host.ssh.connect_timeout) and self.alive:
            return True
        self.close()
        return False

    def run(
        self,
        script: str,
        *,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        on_output: Callable[[bytes], None] | None = None,
        max_output: int | None = None,
    ) -> Result:
        """Run one remote command; stream `stdin` to it in chunks. Never raises on a non-zero exit.

        Raises TransportError when the host stops answering or `timeout` passes (the remote process
        group is killed first), Cancelled when `cancel` is set (same). Output is read while stdin is
        sent, so a command flooding stdout/stderr cannot deadlock it; only the tails are kept (all
        of stdout up to `max_output` bytes when given, see types.Transport.run), and `on_output`
        gets stdout as it arrives.
        """
        if not self.alive:
            raise TransportError("connection lost")
        ssh = self.host.ssh
        try:
            chan = self._channel(ssh.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open a session: {exc or type(exc).__name__}") from None
        self.commands_run += 1
        return runloop.run(
            self,
            chan,
            ssh,
            script,
            stdin=stdin,
            timeout=timeout or ssh.command_timeout,
            progress=progress,
            cancel=cancel,
            on_output=on_output,
            max_output=max_output,
        )

    def interactive(self, command: str, term: str, width: int, height: int) -> Any:
        """A session with a pseudo-terminal running `command` (a shell for a person at a
        keyboard): no marker line, no timeout; the caller relays it (a paramiko Channel) and
        closes it."""
        if not self.alive:
            raise TransportError("connection lost")
        try:
            chan = self.open_channel(self.host.ssh.connect_timeout)
            chan.get_pty(term=term, width=width, height=height)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open a terminal session: {exc or type(exc).__name__}") from None
        self.commands_run += 1
        return chan

    # -- what the run loop uses (runloop.Link) ----------------------------------------------------

    def open_channel(self, timeout: float) -> Any:
        """A new session channel (paramiko's Channel)."""
        return self._transport().open_session(timeout=timeout)

    def probe(self) -> threading.Event:
        """Ask the server for a reply (liveness.probe); the event is set when it arrives."""
        return liveness.probe(self._transport())

    # -- helpers --------------------------------------------------------------------------------

    def _transport(self) -> Any:
        if self._conn is None or self._conn.transport is None:
            raise TransportError("connection lost")
        return self._conn.transport

    def _channel(self, timeout: float) -> Any:
        """The spare channel if it opened, else a new one; then the next spare starts opening
        (after this one, so that it is timed on a server done setting up the login)."""
        transport = self._transport()
        with self._spare_lock:
            spare, self._spare = self._spare, None
        chan = spare.take(timeout) if spare is not None else None
        chan = chan if chan is not None else transport.open_session(timeout=timeout)
        with self._spare_lock:
            if self._spare is None:
                self._spare = _Spare(transport, timeout, self._timed)
        return chan


class _Spare:
    """A session channel being opened in the background for the next command."""

    def __init__(self, transport: Any, timeout: float, timed: Callable[[float], None] | None):
        self._opened = threading.Event()
        self._chan: Any = None
        threading.Thread(target=self._open, args=(transport, timeout, timed), daemon=True, name="ssh-spare").start()

    def _open(self, transport: Any, timeout: float, timed: Callable[[float], None] | None) -> None:
        started = time.monotonic()
        try:
            self._chan = transport.open_session(timeout=timeout)
            if timed is not None:
                timed(time.monotonic() - started)
        except Exception:
            pass  # the command that wanted it opens its own and reports why
        finally:
            self._opened.set()

    def wait(self, timeout: float) -> bool:
        """True once the open has ended, whichever way."""
        return self._opened.wait(timeout)

    def take(self, timeout: float) -> Any:
        """The open channel, or None when opening it failed, timed out or the server closed it."""
        chan = self._chan if self.wait(timeout) else None
        return chan if chan is not None and chan.active and not chan.closed else None
