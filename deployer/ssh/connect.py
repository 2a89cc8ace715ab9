"""Opening one host's SSH session: authentication, host keys, gateway hops and timeouts.

Fabric's Connection opens the session with its defaults tightened: host keys are checked against
known_hosts (unknown ones refused, or recorded under `host_key_policy = "accept-new"`), connect,
banner and auth timeouts set, keepalive on, agent forwarding off unless asked for.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from typing import Any

import fabric
import paramiko  # type: ignore[import-untyped, unused-ignore]
from paramiko.hostkeys import InvalidHostKey  # type: ignore[import-untyped, unused-ignore]

from deployer.config.settings import Host, SSHSettings
from deployer.ssh import tuning
from deployer.ssh.types import TransportError


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def login(host: Host) -> fabric.Connection:
    """The host's session, open (through the gateway, if any) with strict host keys, timeouts
    and keepalive; TransportError saying why when it cannot be."""
    ssh = host.ssh
    try:
        conn = _fabric_connection(host.address, ssh.user, ssh.port, ssh, gateway=_gateway(ssh))
    except InvalidHostKey:
        raise TransportError(
            f"known_hosts {os.path.expanduser(ssh.known_hosts)} has a corrupt line "
            "(two entries run together?); fix or remove it"
        ) from None
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
    except TimeoutError:
        raise TransportError(f"connect timed out after {ssh.connect_timeout}s") from None
    except ConnectionRefusedError:
        raise TransportError(f"connection refused on port {conn.port}") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise TransportError(f"cannot connect: {exc or type(exc).__name__}") from None
    conn.transport.set_keepalive(ssh.keepalive)
    return conn


class _StrictPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise TransportError(
            f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}): "
            'not in known_hosts; verify it and add it, or use host_key_policy = "accept-new"'
        )


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record unknown keys. Changed keys never reach here (paramiko refuses)."""

    _lock = threading.Lock()

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        with self._lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            if os.path.exists(self.path) and paramiko.HostKeys(self.path).check(hostname, key):
                return  # another host's connection through the same bastion recorded it
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


def _fabric_connection(
    address: str, user: str | None, port: int | None, ssh: SSHSettings, gateway: fabric.Connection | None = None
) -> fabric.Connection:
    connect_kwargs: dict[str, object] = {"banner_timeout": ssh.connect_timeout, "auth_timeout": ssh.connect_timeout}
    if ssh.key:
        connect_kwargs.update(key_filename=[ssh.key], look_for_keys=False, allow_agent=False)
    kwargs: dict[str, Any] = {
        "user": user,
        "port": port,
        "connect_timeout": ssh.connect_timeout,
        "forward_agent": ssh.forward_agent,
        "connect_kwargs": connect_kwargs,
        "config": _fabric_config(ssh),
    }
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


def _open(conn: fabric.Connection, ssh: SSHSettings) -> None:
    """Log in, every hop on tuning.AckingTransport, the first over a TCP connection of our own
    (tuning.tcp): the host itself, or the gateway (ours or ~/.ssh/config's ProxyJump) that the
    host is reached through. A ProxyCommand carries the first hop in a subprocess: Fabric opens that."""
    hops = [conn]
    while isinstance(hops[-1].gateway, fabric.Connection):
        hops.append(hops[-1].gateway)
    for hop in hops:
        hop.connect_kwargs.setdefault("transport_factory", tuning.AckingTransport)
    first = hops[-1]
    if first.gateway or first.is_connected:
        _open_naming_the_hop(conn, hops)
        return
    sock = first.connect_kwargs["sock"] = tuning.tcp(
        first.host, first.port, ssh.connect_timeout, relay=first is not conn
    )
    try:
        _open_naming_the_hop(conn, hops)
    except BaseException:
        for hop in hops:  # each transport's thread stopped first: else it logs the closed socket
            hop.client.close()
        sock.close()
        raise


def _open_naming_the_hop(conn: fabric.Connection, hops: list[fabric.Connection]) -> None:
    """conn.open(); a changed host key names its hop as known_hosts does, `[host]:port` off
    port 22 (paramiko's exception drops the port): the first hop, bastion end first, not logged in."""
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        for hop in reversed(hops):
            if hop.transport is None or not hop.transport.is_authenticated():
                exc.hostname = hop.host if hop.port == 22 else f"[{hop.host}]:{hop.port}"
                break
        raise
