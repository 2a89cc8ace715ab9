"""A Transport without SSH, for testing the flows in-process (tests/test_flows_local.py): each
host is a directory on this machine, and every script runs in a real `sh` there, as sshd would
run it, with the same stdin streaming, cancel, timeout, process-group kill and output tails.

A host's address is `local:NAME`, registered here by `serving` for the duration of a test (an
address nobody serves is a host that cannot be reached). The stage has one deploy_to for every
host, so each host keeps it under its own root: the transport maps the deploy_to the scripts name
to ROOT/deploy_to on the way in and back on the way out, as a chroot would.

Faults are planned per host (`Fault`): the connection lost before a command or after it ran (its
answer lost), the host gone for good, a signal to this process, or any call, at the command whose
script contains a given text (a line of the script file a step sends).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deployer.config.settings import Host
from deployer.ssh.runloop import EOF_GRACE, KILL_GRACE, Tail, Whole
from deployer.ssh.types import CHUNK, SLICE, Cancelled, Result, Stdin, TransportError

SCHEME = "local:"
LOST, GONE, SIGNAL = "lost", "gone", "signal"


@dataclass
class Fault:
    """What happens at the `times` next commands whose script contains `match`: before the
    command runs (`after=False`) or once it ran on the host. `then`: "lost" (the connection drops:
    TransportError; a new connection works), "gone" (the same, and the host never answers again),
    "signal" (SIGINT to this process, the command carries on), or a call (then the command
    carries on)."""

    match: str
    then: str | Callable[[], object]
    after: bool = True
    times: int = 1


class LocalHost:
    """One host: a directory standing for its `/` (only deploy_to is mapped into it), its planned
    faults, and every script it was sent (to count round trips)."""

    def __init__(self, name: str, root: Path, deploy_to: str, faults: Iterable[Fault] = ()):
        root = Path(root).resolve()
        if shlex.quote(str(root)) != str(root):
            raise ValueError(f"a local host's root must need no shell quoting, got {str(root)!r}")
        self.name, self.root, self.deploy_to = name, root, deploy_to.rstrip("/") or "/"
        self.faults = list(faults)
        self.gone = False
        self.scripts: list[str] = []
        self._lock = threading.Lock()
        self._in = re.compile(re.escape(self.deploy_to) + r"(?![\w.-])")
        self._out = re.compile(re.escape(str(self.deploy_dir)) + r"(?![\w.-])")

    @property
    def address(self) -> str:
        return SCHEME + self.name

    @property
    def deploy_dir(self) -> Path:
        """Where deploy_to is on this machine."""
        return self.root / self.deploy_to.lstrip("/")

    def inward(self, script: str) -> str:
        return self._in.sub(lambda _: str(self.deploy_dir), script)

    def outward(self, text: str) -> str:
        return self._out.sub(lambda _: self.deploy_to, text)

    def strike(self, script: str, after: bool) -> Fault | None:
        """The fault planned for this command at this point, used up once."""
        with self._lock:
            for fault in self.faults:
                if fault.after == after and fault.times > 0 and fault.match in script:
                    fault.times -= 1
                    return fault
        return None


_served: dict[str, LocalHost] = {}


@contextmanager
def serving(hosts: Iterable[LocalHost]) -> Iterator[list[LocalHost]]:
    """Make the hosts reachable at their `local:NAME` addresses until the block ends."""
    hosts = list(hosts)
    for host in hosts:
        host.deploy_dir.mkdir(parents=True, exist_ok=True)
        (host.root / "tmp").mkdir(exist_ok=True)
        _served[host.address] = host
    try:
        yield hosts
    finally:
        for host in hosts:
            _served.pop(host.address, None)


class LocalTransport:
    """One host's connection (a Transport): `sh -c SCRIPT` in a process group of its own."""

    def __init__(self, host: Host):
        self.host = host
        self.commands_run = 0
        self._open = False

    def _served(self) -> LocalHost:
        served = _served.get(self.host.address)
        if served is None or served.gone:
            self._open = False
            raise TransportError(f"no local host answers at {self.host.address}")
        return served

    @property
    def alive(self) -> bool:
        served = _served.get(self.host.address)
        return self._open and served is not None and not served.gone

    def open(self) -> LocalTransport:
        self._served()
        self._open = True
        return self

    def close(self) -> None:
        self._open = False

    def ping(self, timeout: float | None = None) -> bool:
        return self.alive

    def rtt(self) -> float | None:
        return 0.0

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
        """As types.Transport.run; a planned fault strikes before or after the command."""
        if not self._open:
            raise TransportError("connection lost")
        served = self._served()
        self.commands_run += 1
        served.scripts.append(script)
        self._strike(served, served.strike(script, after=False))
        result = _execute(served, script, stdin, timeout or self.host.ssh.command_timeout, progress, cancel, max_output)
        self._strike(served, served.strike(script, after=True))
        return result

    def _strike(self, served: LocalHost, fault: Fault | None) -> None:
        if fault is None:
            return
        if fault.then in (LOST, GONE):
            self._open = False
            served.gone = served.gone or fault.then == GONE
            raise TransportError(f"connection lost (planned fault: {fault.then})")
        if fault.then == SIGNAL:
            os.kill(os.getpid(), signal.SIGINT)
        elif callable(fault.then):
            fault.then()
        else:
            raise ValueError(f"unknown fault {fault.then!r}")


def _execute(
    served: LocalHost,
    script: str,
    stdin: Stdin | None,
    timeout: float,
    progress: Callable[[int], None] | None,
    cancel: threading.Event | None,
    max_output: int | None,
) -> Result:
    deadline = time.monotonic() + timeout
    out: Tail = Whole(max_output) if max_output is not None else Tail()
    err = Tail()
    proc = subprocess.Popen(
        ["sh", "-c", served.inward(script)],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=served.root,
        env={**os.environ, "TMPDIR": str(served.root / "tmp")},
        start_new_session=True,  # its own process group, as sshd starts each command
    )
    assert proc.stdout is not None and proc.stderr is not None
    readers = [_thread(_read, proc.stdout, out), _thread(_read, proc.stderr, err)]
    if stdin is not None:
        assert proc.stdin is not None
        _thread(_write, proc.stdin, stdin, progress)
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                _kill(proc)
                raise Cancelled("cancelled")
            if time.monotonic() > deadline:
                _kill(proc)
                raise TransportError(f"command timed out after {timeout:g}s (processes killed)")
            if out.over:
                _kill(proc)
                raise TransportError(f"{out.over} (processes killed)")
            try:
                proc.wait(SLICE)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        _kill(proc)
        raise
    for reader in readers:  # a daemon the command started may hold its output open: not forever
        reader.join(EOF_GRACE)
    if out.over:
        raise TransportError(out.over)
    code = proc.returncode
    if code < 0:  # as over SSH: a command killed by a signal has no exit status
        code = -1
        err.add(b"\n(no exit status: the command was killed by a signal or the host refused it)\n")
    return Result(code, served.outward(out.text()), served.outward(err.text()), out.cut, err.cut)


def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True, name="local-io")
    thread.start()
    return thread


def _read(stream: IO[bytes], tail: Tail) -> None:
    try:
        while data := os.read(stream.fileno(), 65536):
            tail.add(data)
    except OSError:
        pass
    finally:
        stream.close()


def _write(stream: IO[bytes], stdin: Stdin, progress: Callable[[int], None] | None) -> None:
    """Stream stdin in chunks; stop early when the command stops reading (its exit says why)."""
    sent = 0
    try:
        while chunk := stdin.read(CHUNK):
            stream.write(chunk)
            stream.flush()
            sent += len(chunk)
            if progress:
                progress(sent)
    except (BrokenPipeError, ValueError, OSError):
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """TERM the command's process group (its traps clean up), KILL what is left after a grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(KILL_GRACE)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(KILL_GRACE)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        pass
