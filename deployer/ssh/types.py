"""What callers of a remote connection need, without loading SSH: results, errors, and
`Transport`, the interface both kinds of connection offer (direct: connection.Connection;
through the agent: agent_client.AgentConnection). deployer.ssh.transport_for picks one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from deployer.errors import DeployerError
from deployer.redact import redact

CHUNK = 256 * 1024  # stdin is read and sent in pieces of this size
SLICE = 0.25  # how often a waiting command checks cancel, deadline and liveness
WHOLE_OUTPUT_MAX = 64 * 1024 * 1024  # the most stdout a caller may ask to keep whole (max_output)


class TransportError(DeployerError):
    """The host could not be reached or stopped answering."""


class Cancelled(DeployerError):
    pass


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    stdout_cut: int = 0  # bytes left out at the start of stdout (only its tail is kept)
    stderr_cut: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def field(self, key: str) -> str | None:
        """The value of the first `key<TAB>value` line a script emitted, or None."""
        prefix = key + "\t"
        return next((line[len(prefix) :] for line in self.stdout.splitlines() if line.startswith(prefix)), None)

    def tail(self, lines: int = 5) -> str:
        """The last lines of the output, secrets masked line by line (a kept tail may start
        mid-secret), for error messages that go to hosts, notifications and the terminal."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(redact(line) for line in text[-lines:]) or f"exit {self.exit_code}"


class Stdin(Protocol):
    """What a command's stdin is read through: a binary file, or the agent's stream of frames."""

    def read(self, size: int = -1, /) -> bytes: ...


class Transport(Protocol):
    """One host's connection as the engine uses it, whichever kind it is."""

    @property
    def alive(self) -> bool:
        """Open and usable, as far as this side knows."""
        ...

    def open(self) -> Transport:
        """Connect; the connection to use from now on (it may be another kind: an agent that
        cannot be used safely gives a direct connection). TransportError when it cannot."""
        ...

    def close(self) -> None: ...

    def ping(self, timeout: float | None = None) -> bool:
        """One round trip that runs nothing on the host: True when answered in time."""
        ...

    def rtt(self) -> float | None:
        """Seconds of one round trip to the host, None when not measured."""
        ...

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
        """Run one remote command, `stdin` streamed to it. Never raises on a non-zero exit;
        TransportError when the host stops answering or `timeout` passes, Cancelled on `cancel`
        (the remote process group is killed in both cases). Only stdout's last bytes are kept,
        unless `max_output` (at most WHOLE_OUTPUT_MAX): then all of it, decoded with
        surrogateescape (its bytes exact), and more than `max_output` bytes is a TransportError
        (the command killed)."""
        ...
