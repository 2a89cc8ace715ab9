"""What callers of a remote connection need, without loading SSH: results, errors, and the
choice between a direct connection (transport.py) and one kept open by the agent (mux.py).
Either is imported only when a connection is made."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Host
from .errors import DeployerError
from .output import redact

CHUNK = 256 * 1024              # stdin is read and sent in pieces of this size
SLICE = 0.25                    # how often a waiting command checks cancel, deadline and liveness


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

    def field(self, key: str) -> str | None:
        """The value of the first `key<TAB>value` line a script emitted, or None."""
        prefix = key + "\t"
        return next((line[len(prefix):] for line in self.stdout.splitlines() if line.startswith(prefix)), None)

    def tail(self, lines: int = 5) -> str:
        """The last lines of the output, secrets masked line by line (a kept tail may start
        mid-secret), for error messages that go to hosts, notifications and the terminal."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(redact(line) for line in text[-lines:]) or f"exit {self.exit_code}"


def connection(host: Host):
    """A new, unopened connection to the host: direct, or through the connection agent when
    `ssh.persist` asks to keep it open between runs."""
    if host.ssh.persist > 0:
        from .mux import AgentConnection
        return AgentConnection(host)
    from .transport import Connection
    return Connection(host)
