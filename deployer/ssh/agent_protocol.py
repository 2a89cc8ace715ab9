"""What the connection agent and its clients say to each other, and what identifies a connection.

One Unix-socket connection per request. Frames are a type byte, a 4-byte length, a payload.
  client -> agent: Q request (JSON), D stdin bytes, E end of stdin, C cancel
  agent -> client: P bytes of stdin sent (JSON), R result (JSON), X error (JSON), K answer (JSON),
                   O stdout bytes (a run that asked for max_output: its stdout, then R without it)
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
from typing import Any

from deployer.config.settings import Host, SSHSettings

_HEAD = struct.Struct(">cI")
MAX_FRAME = 4 * 1024 * 1024
OUTPUT_FRAME = 1024 * 1024  # stdout bytes per O frame
PER_CONNECTION = ("persist", "command_timeout")  # settings that do not make a connection different


# -- framing ----------------------------------------------------------------------------------------


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def frame_json(kind: bytes, value: dict[str, Any]) -> bytes:
    return frame(kind, json.dumps(value).encode())


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """n bytes, or b"" when the peer closed before sending any; a torn frame raises EOFError."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise EOFError("connection closed mid-frame")
            return b""
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(kind, payload), or None at a clean end of stream."""
    head = recv_exact(sock, _HEAD.size)
    if not head:
        return None
    kind, size = _HEAD.unpack(head)
    assert isinstance(kind, bytes) and isinstance(size, int)
    if size > MAX_FRAME:
        raise EOFError(f"frame of {size} bytes refused")
    payload = recv_exact(sock, size) if size else b""
    if size and len(payload) != size:
        raise EOFError("connection closed mid-frame")
    return kind, payload


# -- what identifies a connection -----------------------------------------------------------------


def host_spec(host: Host) -> dict[str, Any]:
    """What the agent needs to open the same connection: address and SSH settings, nothing else
    (no roles, no env: secrets never travel in a request)."""
    return {"name": host.name, "address": host.address, "ssh": dataclasses.asdict(host.ssh)}


def host_from_spec(spec: dict[str, Any]) -> Host:
    fields = {f.name for f in dataclasses.fields(SSHSettings)}
    ssh = SSHSettings(**{k: v for k, v in spec["ssh"].items() if k in fields})
    return Host(name=str(spec["name"]), address=str(spec["address"]), ssh=ssh)


def connection_key(spec: dict[str, Any]) -> str:
    """Equal for requests that may share one SSH connection."""
    ssh = {k: v for k, v in spec["ssh"].items() if k not in PER_CONNECTION}
    return json.dumps([spec["address"], ssh], sort_keys=True)
