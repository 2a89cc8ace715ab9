"""One SSH connection per host, reused for every step. Knows nothing about releases.

Fabric's Connection opens the session (its defaults are tightened: host keys are checked against
known_hosts, connect timeout and keepalive set, agent forwarding off); commands run on raw exec
channels so stdin can stream a large artifact with bounded memory.

Every command's shell first prints its process id on stderr (a marker line the transport strips).
OpenSSH starts each exec session in a new session and process group led by that shell, so the
pid is the group id: on a timeout or a cancel, a second channel kills the whole group (TERM, then
KILL after a grace period), and no remote process outlives the command that started it.

How long until a dead host is noticed (defaults in brackets, see `dead_link_window`):
after `keepalive` seconds [10] with no traffic either way, the transport asks the server for a
reply (a global request every SSH server answers without running anything); no reply within
2 x keepalive more [20] and the host is declared gone: 3 x keepalive [30 s] after the last byte.
The connection is then closed, and the deploy's abort makes one reconnect attempt bounded by
connect_timeout [10]: a run whose link stalls ends within 40 s of the stall. A slow command or a
slow disk is not a dead host: the server still answers the probe.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

import fabric
import paramiko
from paramiko.common import cMSG_IGNORE
from paramiko.hostkeys import InvalidHostKey

from deployer.config.settings import Host, SSHSettings
from deployer.ssh.types import CHUNK, SLICE, Cancelled, Result, TransportError  # noqa: F401 (re-exported)

PACKET = 32 * 1024              # one channel send at most (the SSH maximum packet size)
OUTPUT_TAIL = 64 * 1024
EOF_GRACE = 2.0                 # seconds to wait for output still in flight after the exit status
KILL_GRACE = 2.0                # seconds between TERM and KILL of a remote process group
_MARK_LINE = re.compile(rb"^deployer-pgid (\d+)\n", re.MULTILINE)
_HEAD_MAX = 4096                # stderr bytes searched for the marker


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def dead_link_window(ssh: SSHSettings) -> float:
    """Seconds from the last byte heard to "host stopped answering": keepalive of silence, then a
    probe that gets 2 x keepalive to be answered. 30 s with the defaults."""
    interval = max(ssh.keepalive, 1)
    return 3.0 * interval


def wrap(script: str) -> str:
    """The command as sent: the marker line first, then the script unchanged."""
    return "printf 'deployer-pgid %s\\n' \"$$\" >&2\n" + script


def kill_script(pgid: int, grace: float = KILL_GRACE) -> str:
    """TERM the process group (the shell's traps clean up), wait up to `grace`, then KILL what is left."""
    steps = max(int(grace / 0.1), 1)
    return (f"p={int(pgid)}\n"
            "kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null || exit 0\n"
            f"i=0; while [ $i -lt {steps} ] && kill -0 -$p 2>/dev/null; do sleep 0.1; i=$((i+1)); done\n"
            "kill -KILL -$p 2>/dev/null; exit 0\n")


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
            with open(self.path, "a+b") as fh:
                # a file whose last line has no newline would glue the two entries into one
                # line that no SSH client can read
                if fh.seek(0, os.SEEK_END) > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n".encode())


def _fabric_config(ssh: SSHSettings) -> fabric.Config:
    """Fabric's config: ~/.ssh/config honoured unless `ssh.config = false`."""
    path = os.path.expanduser(ssh.config_file) if ssh.config_file else None
    if ssh.config and path and os.path.exists(path):
        return fabric.Config(runtime_ssh_path=path)
    return fabric.Config(overrides={"load_ssh_configs": ssh.config})


def _harden(conn: fabric.Connection, ssh: SSHSettings) -> fabric.Connection:
    """Fabric auto-adds unknown host keys: replace that, on this hop and every gateway hop."""
    known_hosts = os.path.expanduser(ssh.known_hosts)
    if os.path.exists(known_hosts):
        conn.client.load_host_keys(known_hosts)
    policy = _AcceptNewPolicy(known_hosts) if ssh.host_key_policy == "accept-new" else _StrictPolicy()
    conn.client.set_missing_host_key_policy(policy)
    if isinstance(conn.gateway, fabric.Connection):
        _harden(conn.gateway, ssh)
        if conn.gateway.connect_timeout is None:
            conn.gateway.connect_timeout = ssh.connect_timeout
    return conn


def _fabric_connection(address: str, user: str | None, port: int | None, ssh: SSHSettings,
                       gateway: fabric.Connection | None = None) -> fabric.Connection:
    connect_kwargs = {"banner_timeout": ssh.connect_timeout, "auth_timeout": ssh.connect_timeout}
    if ssh.key:
        connect_kwargs.update(key_filename=[ssh.key], look_for_keys=False, allow_agent=False)
    kwargs = {"user": user, "port": port, "connect_timeout": ssh.connect_timeout, "forward_agent": ssh.forward_agent,
              "connect_kwargs": connect_kwargs, "config": _fabric_config(ssh)}
    if gateway is not None:
        kwargs["gateway"] = gateway
    return _harden(fabric.Connection(address, **kwargs), ssh)


def _gateway(ssh: SSHSettings) -> fabric.Connection | None:
    """`ssh.gateway = "[user@]host[:port]"`: a jump host, itself host-key checked (ProxyJump in
    ~/.ssh/config works too, through Fabric)."""
    if not ssh.gateway:
        return None
    text, user, port = ssh.gateway, None, None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    if text.count(":") == 1:
        text, port_text = text.split(":")
        port = int(port_text)
    return _fabric_connection(text, user or ssh.user, port, ssh)


class Connection:
    """An open SSH connection to one host, counting the commands it runs.

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

    def open(self) -> "Connection":
        """Connect (through the gateway, if any) with strict host keys, timeouts and keepalive."""
        ssh = self.host.ssh
        try:
            conn = _fabric_connection(self.host.address, ssh.user, ssh.port, ssh, gateway=_gateway(ssh))
        except InvalidHostKey:
            raise TransportError(f"known_hosts {os.path.expanduser(ssh.known_hosts)} has a corrupt line "
                                 "(two entries run together?); fix or remove it") from None
        try:
            _open(conn, ssh)
        except paramiko.BadHostKeyException as exc:
            raise TransportError(
                f"host key CHANGED for {exc.hostname}: expected {fingerprint(exc.expected_key)}, "
                f"got {fingerprint(exc.key)}; refusing (possible man-in-the-middle; check and fix "
                f"{os.path.expanduser(ssh.known_hosts)})"
            ) from None
        except TransportError:
            raise
        except paramiko.AuthenticationException as exc:
            raise TransportError(f"authentication failed as {conn.user}: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise TransportError(f"connect timed out after {ssh.connect_timeout}s") from None
        except ConnectionRefusedError:
            raise TransportError(f"connection refused on port {conn.port}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransportError(f"cannot connect: {exc or type(exc).__name__}") from None
        conn.transport.set_keepalive(ssh.keepalive)
        self._conn = conn
        # not timed: a server still setting up the session just after login answers it late
        self._spare = _Spare(conn.transport, ssh.connect_timeout, None)
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
            except Exception:       # closing a dead link must not hide why it died
                pass

    @property
    def alive(self) -> bool:
        return self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active()

    def ping(self, timeout: float | None = None) -> bool:
        """One round trip that runs nothing on the host: True when the server answers in time
        (default connect_timeout). A connection that does not answer is closed."""
        if not self.alive:
            return False
        answered = self._probe()
        if answered.wait(timeout or self.host.ssh.connect_timeout) and self.alive:
            return True
        self.close()
        return False

    def run(self, script: str, *, stdin: BinaryIO | None = None, timeout: float | None = None,
            progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
            on_output: Callable[[bytes], None] | None = None) -> Result:
        """Run one remote command; stream `stdin` to it in chunks. Never raises on a non-zero exit.

        Raises TransportError when the host stops answering or `timeout` passes (the remote process
        group is killed first), Cancelled when `cancel` is set (same). Output is read while stdin is
        sent, so a command flooding stdout/stderr cannot deadlock it; only the tails are kept.
        """
        if not self.alive:
            raise TransportError("connection lost")
        ssh = self.host.ssh
        timeout = timeout or ssh.command_timeout
        deadline = time.monotonic() + timeout
        try:
            chan = self._channel(ssh.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open a session: {exc or type(exc).__name__}") from None
        self.commands_run += 1
        out, err = (_Tail() if on_output is None else _Echo(on_output)), _Stderr()
        watch = _Watch(self, ssh.keepalive)

        def check() -> None:
            if cancel is not None and cancel.is_set():
                self._kill(chan, out, err)
                raise Cancelled("cancelled")
            if time.monotonic() > deadline:
                self._kill(chan, out, err)
                raise TransportError(f"command timed out after {timeout:g}s (remote processes killed)")
            if not self.alive:
                raise TransportError("connection lost while the command ran")
            if watch.dead():
                self.close()
                raise TransportError(f"host stopped answering (nothing heard for {watch.window:g}s)")

        try:
            chan.settimeout(SLICE)
            _start(chan, wrap(script))
            if stdin is not None:
                _upload(chan, stdin, out, err, watch, check, progress)
            if not chan.closed:
                chan.shutdown_write()
            exited_at = None
            while True:
                check()
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    chan.status_event.wait(SLICE)        # only the exit status is still to come
                else:
                    select.select([chan], [], [], SLICE)   # output or EOF wakes this
                if _drain(chan, out, err):
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
            _drain(chan, out, err)
            code = chan.recv_exit_status()
            if code == -1:          # no exit status: the command was killed by a signal, or refused
                err.add(b"\n(no exit status: the command was killed by a signal or the host refused it)\n")
        except socket.timeout:
            raise TransportError("host stopped answering (timed out)") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            try:
                chan.close()
            except Exception:
                pass
        return Result(code, out.text(), err.text())

    def interactive(self, command: str, term: str, width: int, height: int) -> paramiko.Channel:
        """A session with a pseudo-terminal running `command` (a shell for a person at a
        keyboard): no marker line, no timeout; the caller relays it and closes it."""
        if not self.alive:
            raise TransportError("connection lost")
        try:
            chan = self._conn.transport.open_session(timeout=self.host.ssh.connect_timeout)
            chan.get_pty(term=term, width=width, height=height)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open a terminal session: {exc or type(exc).__name__}") from None
        self.commands_run += 1
        return chan

    # -- helpers --------------------------------------------------------------------------------

    def _channel(self, timeout: float) -> paramiko.Channel:
        """The spare channel if it opened, else a new one; then the next spare starts opening
        (after this one, so that it is timed on a server done setting up the login)."""
        transport = self._conn.transport
        with self._spare_lock:
            spare, self._spare = self._spare, None
        chan = spare.take(timeout) if spare is not None else None
        chan = chan if chan is not None else transport.open_session(timeout=timeout)
        with self._spare_lock:
            if self._spare is None:
                self._spare = _Spare(transport, timeout, self._timed)
        return chan

    def _probe(self) -> threading.Event:
        """Send a global request every server answers; the event is set when the answer arrives."""
        answered = threading.Event()
        conn = self._conn

        def probe():
            try:
                conn.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                return
            if conn.transport is not None and conn.transport.is_active():
                answered.set()

        threading.Thread(target=probe, daemon=True, name="ssh-probe").start()
        return answered

    def _kill(self, chan: paramiko.Channel, out: "_Tail", err: "_Stderr") -> None:
        """Kill the command's remote process group over a second channel. Bounded; never raises."""
        try:
            until = time.monotonic() + KILL_GRACE
            while err.pgid is None and time.monotonic() < until and self.alive and not chan.exit_status_ready():
                select.select([chan], [], [], 0.1)
                _drain(chan, out, err)
            if err.pgid is None or chan.exit_status_ready() or not self.alive:
                return
            killer = self._conn.transport.open_session(timeout=min(self.host.ssh.connect_timeout, 5))
            self.commands_run += 1
            try:
                _start(killer, kill_script(err.pgid))
                killer.shutdown_write()
                until = time.monotonic() + KILL_GRACE + 5
                while not killer.exit_status_ready() and time.monotonic() < until and self.alive:
                    time.sleep(0.05)
            finally:
                killer.close()
        except Exception:
            pass


def _open(conn: fabric.Connection, ssh: SSHSettings) -> None:
    """Log in, every hop on our _Transport, the first over a TCP connection of our own (see _tcp):
    the host itself, or the gateway (ours or ~/.ssh/config's ProxyJump) that the host is reached
    through. A ProxyCommand carries the first hop in a subprocess: Fabric opens that."""
    hops = [conn]
    while isinstance(hops[-1].gateway, fabric.Connection):
        hops.append(hops[-1].gateway)
    for hop in hops:
        hop.connect_kwargs.setdefault("transport_factory", _Transport)
    first = hops[-1]
    if first.gateway or first.is_connected:
        conn.open()
        return
    sock = first.connect_kwargs["sock"] = _tcp(first.host, first.port, ssh.connect_timeout, relay=first is not conn)
    try:
        conn.open()
    except BaseException:
        sock.close()
        raise


def _tcp(host: str, port: int, timeout: float, relay: bool = False) -> socket.socket:
    """The TCP connection to the host, opened here rather than by paramiko so that TCP_NODELAY is
    on from the first byte. With Nagle, a small message waits for the previous one's ACK: in the
    handshake (NEWKEYS, then the auth service request) that is the server's delayed ACK, 40 ms
    on Linux, on every login; later, a round trip per command (an exec request
    behind the next spare's open). Hops after the first run inside it, as channels; with relay
    (the first hop is a bastion) the socket also ACKs at once (_QuickAckSocket)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if relay and hasattr(socket, "TCP_QUICKACK"):
        sock = _QuickAckSocket(fileno=sock.detach())
        sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _QuickAckSocket(socket.socket):
    """A bastion's socket that ACKs what it reads at once. The bastion's sshd relays the target's
    replies with Nagle on (a session without a terminal), so each reply after the first waits for
    our ACK, which Linux delays up to 40 ms while we have nothing to send: every command through a
    bastion would wait that long, where with this it costs about what it costs direct.
    TCP_QUICKACK does not stick, so it is set again after every read (Linux only)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


class _Transport(paramiko.Transport):
    """paramiko's Transport, answering the server's notices so its next reply is not held up.

    Right after login, OpenSSH's sshd sends its host keys (a `hostkeys-00@openssh.com` global
    request, no reply wanted), then its reply to the first channel open. sshd keeps Nagle on for
    sessions without a terminal, so that reply waits for the first message's ACK, and a peer with
    nothing to send delays its ACK (40 ms on Linux, longer elsewhere), as does every relay on the
    way (a bastion, a proxy). An SSH_MSG_IGNORE in answer carries the ACK at once, on every hop:
    the first command after login no longer waits out a delayed ACK."""

    def _parse_global_request(self, m):
        super()._parse_global_request(m)
        if not self.server_mode:
            ignore = paramiko.Message()
            ignore.add_byte(cMSG_IGNORE)
            ignore.add_string(b"")
            self._send_message(ignore)      # not _send_user_message: this is the reading thread


class _Spare:
    """A session channel being opened in the background for the next command."""

    def __init__(self, transport: paramiko.Transport, timeout: float, timed: Callable[[float], None] | None):
        self._opened = threading.Event()
        self._chan: paramiko.Channel | None = None
        threading.Thread(target=self._open, args=(transport, timeout, timed), daemon=True, name="ssh-spare").start()

    def _open(self, transport: paramiko.Transport, timeout: float, timed: Callable[[float], None] | None) -> None:
        started = time.monotonic()
        try:
            self._chan = transport.open_session(timeout=timeout)
            if timed is not None:
                timed(time.monotonic() - started)
        except Exception:
            pass                    # the command that wanted it opens its own and reports why
        finally:
            self._opened.set()

    def wait(self, timeout: float) -> bool:
        """True once the open has ended, whichever way."""
        return self._opened.wait(timeout)

    def take(self, timeout: float) -> paramiko.Channel | None:
        """The open channel, or None when opening it failed, timed out or the server closed it."""
        chan = self._chan if self.wait(timeout) else None
        return chan if chan is not None and chan.active and not chan.closed else None


def _start(chan: paramiko.Channel, command: str) -> None:
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


def _upload(chan, stdin: BinaryIO, out: "_Tail", err: "_Stderr", watch: "_Watch", check, progress) -> None:
    """Send stdin in packets, reading output in between; stop early if the command exits."""
    sent = 0
    while chunk := stdin.read(CHUNK):
        offset = 0
        while offset < len(chunk):
            check()
            if chan.exit_status_ready() or chan.closed:
                return                      # the command stopped reading: its exit status says why
            try:
                n = chan.send(chunk[offset:offset + PACKET])
            except socket.timeout:
                n = 0                       # no window yet: the remote is still consuming
            except OSError:
                if chan.closed or chan.exit_status_ready():
                    return
                raise
            if n:
                offset += n
                sent += n
                watch.traffic()
            if _drain(chan, out, err):
                watch.traffic()
        if progress:
            progress(sent)


class _Watch:
    """Tells a slow command from a dead link (see the module docstring for the timing)."""

    def __init__(self, conn: Connection, keepalive: int, clock: Callable[[], float] = time.monotonic):
        self.conn = conn
        self.clock = clock
        self.interval = max(keepalive, 1)
        self.window = 3.0 * self.interval
        self.last = clock()
        self.probe: tuple[float, threading.Event] | None = None

    def traffic(self) -> None:
        self.last = self.clock()

    def dead(self) -> bool:
        now = self.clock()
        if self.probe is not None:
            started, answered = self.probe
            if answered.is_set():
                self.probe, self.last = None, now
                return False
            return self.last < started and now - started > 2 * self.interval
        if now - self.last >= self.interval:
            self.probe = (now, self.conn._probe())
        return False


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


class _Echo(_Tail):
    """A tail that also hands every chunk of output on as it arrives (`logs --follow`)."""

    def __init__(self, sink: Callable[[bytes], None]):
        super().__init__()
        self.sink = sink

    def add(self, data: bytes) -> None:
        super().add(data)
        self.sink(data)


class _Stderr(_Tail):
    """stderr's tail, minus the marker line that carries the remote process group id."""

    def __init__(self):
        super().__init__()
        self.pgid: int | None = None
        self._head: bytearray | None = bytearray()     # None once the marker was found or given up

    def add(self, data: bytes) -> None:
        if self._head is None:
            return super().add(data)
        self._head += data
        match = _MARK_LINE.search(self._head)
        if match:
            self.pgid = int(match.group(1))
            del self._head[match.start():match.end()]
        elif len(self._head) < _HEAD_MAX:
            return                  # the marker comes first; wait for the rest of its line
        head, self._head = self._head, None
        super().add(bytes(head))

    def text(self) -> str:
        return (self.buf + (self._head or b"")).decode("utf-8", "replace")


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
