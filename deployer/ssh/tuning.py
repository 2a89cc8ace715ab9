"""Socket and protocol settings that keep small messages from waiting on delayed ACKs.

TCP_NODELAY is on every client (portable); TCP_QUICKACK exists on Linux only, so it is set only
where the socket module offers it, and elsewhere the bastion's socket is a plain one."""

from __future__ import annotations

import socket
from typing import Any

import paramiko  # type: ignore[import-untyped, unused-ignore]
from paramiko.common import cMSG_IGNORE  # type: ignore[import-untyped, unused-ignore]

HAS_QUICKACK = hasattr(socket, "TCP_QUICKACK")


def tcp(host: str, port: int, timeout: float, relay: bool = False) -> socket.socket:
    """The TCP connection to the host, opened here rather than by paramiko so that TCP_NODELAY is
    on from the first byte. With Nagle, a small message waits for the previous one's ACK: in the
    handshake (NEWKEYS, then the auth service request) that is the server's delayed ACK; later, a
    round trip per command (an exec request behind the next spare's open). Hops after the first
    run inside it, as channels; with relay (the first hop is a bastion) the socket also ACKs at
    once where the system can (QuickAckSocket)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if relay and HAS_QUICKACK:
        sock = QuickAckSocket(fileno=sock.detach())
        sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class QuickAckSocket(socket.socket):
    """A bastion's socket that ACKs what it reads at once (Linux). The bastion's sshd relays the
    target's replies with Nagle on (a session without a terminal), so each reply after the first
    waits for our ACK, which Linux delays while we have nothing to send. TCP_QUICKACK does not
    stick, so it is set again after every read."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


class AckingTransport(paramiko.Transport):
    """paramiko's Transport, answering the server's notices so its next reply is not held up.

    Right after login, OpenSSH's sshd sends its host keys (a `hostkeys-00@openssh.com` global
    request, no reply wanted), then its reply to the first channel open. sshd keeps Nagle on for
    sessions without a terminal, so that reply waits for the first message's ACK, and a peer with
    nothing to send delays its ACK, as does every relay on the way (a bastion, a proxy). An
    SSH_MSG_IGNORE in answer carries the ACK at once, on every hop: the first command after
    login starts without that delay."""

    def _parse_global_request(self, m: Any) -> None:
        super()._parse_global_request(m)
        if not self.server_mode:
            ignore = paramiko.Message()
            ignore.add_byte(cMSG_IGNORE)
            ignore.add_string(b"")
            self._send_message(ignore)  # not _send_user_message: this is the reading thread
