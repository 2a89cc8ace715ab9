"""What callers of a remote connection need, without loading SSH: results, errors, and the
choice between a direct connection (transport.py) and one kept open by the agent (mux.py).
Either is imported only when a connection is made."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from deployer.config.settings import Host
from deployer.errors import ConfigError, DeployerError
from deployer.report.output import redact

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
    `ssh.persist` asks to keep it open between runs and the agent can be used safely here
    (else mux.refusal says why, once)."""
    if host.ssh.persist > 0:
        from deployer.ssh.agent_client import AgentConnection, refusal
        if refusal() is None:
            return AgentConnection(host)
    from deployer.ssh.connection import Connection
    return Connection(host)


def check_known_hosts(path: str) -> None:
    """ConfigError (exit 2) naming the file and line when a known_hosts line has a key no SSH
    library can decode (two entries run together on one line, say): read the way paramiko reads
    it, which would otherwise fail every host with a raw InvalidHostKey."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"known_hosts {path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        fields = re.split(" |\t", line.strip())
        if not fields[0] or fields[0].startswith("#") or len(fields) < 3:
            continue
        try:
            base64.decodebytes(fields[2].encode())
        except binascii.Error:
            raise ConfigError(f"known_hosts {path} line {number} is corrupt (not one host, key type and "
                              "key: two entries run together?); fix or remove that line") from None
