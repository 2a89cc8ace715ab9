"""One command on an open session channel: send it, stream stdin, read output, end it.

Every command's shell first prints its process id on stderr (a marker line this loop strips).
OpenSSH starts each exec session in a new session and process group led by that shell, so the
pid is the group id: on a timeout or a cancel, a second channel kills the whole group (TERM, then
KILL after a grace period), and no remote process outlives the command that started it.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paramiko  # type: ignore[import-untyped, unused-ignore]

from deployer.config.settings import SSHSettings
from deployer.ssh.liveness import Watch
from deployer.ssh.types import CHUNK, SLICE, WHOLE_OUTPUT_MAX, Cancelled, Result, Stdin, TransportError

PACKET = 32 * 1024  # one channel send at most (the SSH maximum packet size)
OUTPUT_TAIL = 64 * 1024
EOF_GRACE = 2.0  # seconds to wait for output still in flight after the exit status
KILL_GRACE = 2.0  # seconds between TERM and KILL of a remote process group
_MARK_LINE = re.compile(rb"^deployer-pgid (\d+)\n", re.MULTILINE)
_HEAD_MAX = 4096  # stderr bytes searched for the marker


class Link(Protocol):
    """What a command needs of the connection it runs on."""

    commands_run: int

    @property
    def alive(self) -> bool: ...

    def close(self) -> None: ...

    def probe(self) -> threading.Event: ...

    def open_channel(self, timeout: float) -> Any: ...


def wrap(script: str) -> str:
    """The command as sent: the marker line first, then the script unchanged."""
    return "printf 'deployer-pgid %s\\n' \"$$\" >&2\n" + script


def kill_script(pgid: int, grace: float = KILL_GRACE) -> str:
    """TERM the process group (the shell's traps clean up), wait up to `grace`, then KILL what is left."""
    steps = max(int(grace / 0.1), 1)
    return (
        f"p={int(pgid)}\n"
        "kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null || exit 0\n"
        f"i=0; while [ $i -lt {steps} ] && kill -0 -$p 2>/dev/null; do sleep 0.1; i=$((i+1)); done\n"
        "kill -KILL -$p 2>/dev/null; exit 0\n"
    )


def run(
    link: Link,
    chan: Any,
    ssh: SSHSettings,
    script: str,
    *,
    stdin: Stdin | None,
    timeout: float,
    progress: Callable[[int], None] | None,
    cancel: threading.Event | None,
    on_output: Callable[[bytes], None] | None,
    max_output: int | None = None,
) -> Result:
    """Run `script` on `chan`, a session channel of `link` just opened (see Connection.run)."""
    deadline = time.monotonic() + timeout
    out: Tail = Whole(max_output) if max_output is not None else Tail() if on_output is None else Echo(on_output)
    err = Stderr()
    watch = Watch(link.probe, ssh)

    def check() -> None:
        if cancel is not None and cancel.is_set():
            _kill(link, chan, ssh, out, err)
            raise Cancelled("cancelled")
        if time.monotonic() > deadline:
            _kill(link, chan, ssh, out, err)
            raise TransportError(f"command timed out after {timeout:g}s (remote processes killed)")
        if out.over:
            _kill(link, chan, ssh, out, err)
            raise TransportError(f"{out.over} (remote processes killed)")
        if not link.alive:
            raise TransportError("connection lost while the command ran")
        if watch.dead():
            link.close()
            raise TransportError(f"host stopped answering (nothing heard for {watch.window:g}s)")

    try:
        chan.settimeout(SLICE)
        send_exec(chan, wrap(script))
        if stdin is not None:
            _upload(chan, stdin, out, err, watch, check, progress)
        if not chan.closed:
            chan.shutdown_write()
        exited_at = None
        while True:
            check()
            if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                chan.status_event.wait(SLICE)  # only the exit status is still to come
            else:
                select.select([chan], [], [], SLICE)  # output or EOF wakes this
            if drain(chan, out, err):
                watch.traffic()
            if not chan.exit_status_ready() or chan.recv_ready() or chan.recv_stderr_ready():
                continue
            # sshd may send the exit status before the last output: wait for EOF too, but not
            # forever (a daemon the command started may hold its stdout open)
            if chan.eof_received or chan.closed:
                break
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > EOF_GRACE:
                break
        drain(chan, out, err)
        if out.over:
            raise TransportError(out.over)
        code = int(chan.recv_exit_status())
        if code == -1:  # no exit status: the command was killed by a signal, or refused
            err.add(b"\n(no exit status: the command was killed by a signal or the host refused it)\n")
    except TimeoutError:
        raise TransportError("host stopped answering (timed out)") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(f"connection lost: {exc or type(exc).__name__}") from None
    finally:
        try:
            chan.close()
        except Exception:
            pass
    return Result(code, out.text(), err.text(), out.cut, err.cut)


def send_exec(chan: Any, command: str) -> None:
    """Send the exec request without waiting for the server's reply, as OpenSSH's own client
    does: stdin can follow at once, which saves a round trip per command. A refused request
    closes the channel (paramiko does that on the failure reply); the read loop then sees a
    closed channel without an exit status."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)
    m.add_string(command)
    chan.transport._send_user_message(m)


def _upload(
    chan: Any,
    stdin: Stdin,
    out: Tail,
    err: Stderr,
    watch: Watch,
    check: Callable[[], None],
    progress: Callable[[int], None] | None,
) -> None:
    """Send stdin in packets, reading output in between; stop early if the command exits."""
    sent = 0
    while chunk := stdin.read(CHUNK):
        offset = 0
        while offset < len(chunk):
            check()
            if chan.exit_status_ready() or chan.closed:
                return  # the command stopped reading: its exit status says why
            try:
                n = chan.send(chunk[offset : offset + PACKET])
            except TimeoutError:
                n = 0  # no window yet: the remote is still consuming
            except OSError:
                if chan.closed or chan.exit_status_ready():
                    return
                raise
            if n:
                offset += n
                sent += n
                watch.traffic()
            if drain(chan, out, err):
                watch.traffic()
        if progress:
            progress(sent)


def _kill(link: Link, chan: Any, ssh: SSHSettings, out: Tail, err: Stderr) -> None:
    """Kill the command's remote process group over a second channel. Bounded; never raises."""
    try:
        until = time.monotonic() + KILL_GRACE
        while err.pgid is None and time.monotonic() < until and link.alive and not chan.exit_status_ready():
            select.select([chan], [], [], 0.1)
            drain(chan, out, err)
        if err.pgid is None or chan.exit_status_ready() or not link.alive:
            return
        killer = link.open_channel(min(ssh.connect_timeout, 5))
        link.commands_run += 1
        try:
            send_exec(killer, kill_script(err.pgid))
            killer.shutdown_write()
            until = time.monotonic() + KILL_GRACE + 5
            while not killer.exit_status_ready() and time.monotonic() < until and link.alive:
                time.sleep(0.05)
        finally:
            killer.close()
    except Exception:
        pass


class Tail:
    """Keeps the last OUTPUT_TAIL bytes of a stream (a flooding command cannot exhaust memory)
    and counts the bytes dropped before them."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.over = ""  # why the output is refused (Whole), else empty
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * OUTPUT_TAIL:
            self.dropped += len(self.buf) - OUTPUT_TAIL
            del self.buf[:-OUTPUT_TAIL]

    def kept(self) -> bytes:
        """The last OUTPUT_TAIL bytes, from the first whole UTF-8 character on."""
        start = max(len(self.buf) - OUTPUT_TAIL, 0)
        if self.dropped or start:
            end = min(start + 3, len(self.buf))
            while start < end and self.buf[start] & 0xC0 == 0x80:  # a continuation byte
                start += 1
        return bytes(self.buf[start:])

    @property
    def cut(self) -> int:
        """How many bytes of the stream `text` leaves out at its start."""
        return self.dropped + len(self.buf) - len(self.kept())

    def text(self) -> str:
        return self.kept().decode("utf-8", "replace")


class Whole(Tail):
    """All of stdout, up to `cap` bytes; beyond that `over` says so and nothing more is kept."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = min(max(int(cap), 0), WHOLE_OUTPUT_MAX)

    def add(self, data: bytes) -> None:
        if self.over:
            return
        if len(self.buf) + len(data) > self.cap:
            self.over = f"output over {self.cap} bytes refused"
            return
        self.buf += data

    @property
    def cut(self) -> int:
        return 0

    def text(self) -> str:
        return self.buf.decode("utf-8", "surrogateescape")


class Echo(Tail):
    """A tail that also hands every chunk of output on as it arrives (`logs --follow`)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self.sink = sink

    def add(self, data: bytes) -> None:
        super().add(data)
        self.sink(data)


class Stderr(Tail):
    """stderr's tail, minus the marker line that carries the remote process group id."""

    def __init__(self) -> None:
        super().__init__()
        self.pgid: int | None = None
        self._head: bytearray | None = bytearray()  # None once the marker was found or given up

    def add(self, data: bytes) -> None:
        if self._head is None:
            return super().add(data)
        self._head += data
        match = _MARK_LINE.search(self._head)
        if match:
            self.pgid = int(match.group(1))
            del self._head[match.start() : match.end()]
        elif len(self._head) < _HEAD_MAX:
            return  # the marker comes first; wait for the rest of its line
        head, self._head = self._head, None
        super().add(bytes(head))

    def text(self) -> str:
        return (self.kept() if self._head is None else bytes(self._head)).decode("utf-8", "replace")


def drain(chan: Any, out: Tail, err: Tail) -> bool:
    """Read what output has arrived; True if there was any."""
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
