"""The operator's uplink: one bandwidth cap shared by every connection the operator makes (SSH to
each host, HTTP to the store), and a count of the bytes through it.

Each target gets a loopback port; bytes from the operator to the target go through one shared
token bucket (the cap), bytes coming back are only counted (a laptop's downlink is rarely the
narrow part of a deploy).
"""

from __future__ import annotations

import socket
import threading
import time

CHUNK = 16 * 1024


class Bucket:
    """A token bucket of `rate` bytes/s, shared by threads; a burst of at most one chunk per sender."""

    def __init__(self, rate: float):
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()
        self.up = 0
        self.down = 0

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
            self.up += n
        wait = start - now
        if wait > 0:
            time.sleep(wait)

    def received(self, n: int) -> None:
        with self.lock:
            self.down += n

    def reset(self) -> tuple[int, int]:
        with self.lock:
            counts = (self.up, self.down)
            self.up = self.down = 0
            return counts


class Port:
    """127.0.0.1:port relaying to target, the operator's direction through the bucket."""

    def __init__(self, target: tuple[str, int], bucket: Bucket):
        self.target = target
        self.bucket = bucket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(CHUNK):
                if outbound:
                    self.bucket.take(len(data))
                else:
                    self.bucket.received(len(data))
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the end on; the other direction runs on
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()
