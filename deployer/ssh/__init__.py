"""The SSH transport. `transport_for` is the one place that picks a direct connection or one
kept open by the connection agent; either is imported only when a connection is made. A
`local:NAME` address is a directory standing for a host (local.py, for tests), never SSH."""

from __future__ import annotations

from collections.abc import Callable

from deployer.config.settings import Host
from deployer.ssh.types import Transport


def transport_for(host: Host, warn: Callable[[str], object] | None = None) -> Transport:
    """A new, unopened connection to the host: direct, or through the connection agent when
    `ssh.persist` asks to keep it open between runs and the agent can be used safely here
    (else agent_client.refusal says why, once, through warn: this package prints nothing)."""
    if host.address.startswith("local:"):
        from deployer.ssh.local import LocalTransport

        return LocalTransport(host)
    if host.ssh.persist > 0:
        from deployer.ssh.agent_client import AgentConnection, refusal

        if refusal(warn) is None:
            return AgentConnection(host, warn=warn)
    from deployer.ssh.connection import Connection

    return Connection(host)
