"""A small TCP proxy on loopback for tests and benchmarks: adds latency, stalls or cuts links.

    proxy = NetProxy(("127.0.0.1", 32771), delay=0.025).start()   # 25 ms each way
    proxy.port          # connect here instead
    proxy.stall()       # stop forwarding (bytes are held, connections stay open)
    proxy.resume()
    proxy.cut()         # close every open connection now
    proxy.hold_at = proxy.bytes_up + 60_000   # stall once 60 KB more went towards the host
    proxy.stop()

Latency is added per chunk with a due time, so throughput is kept while every byte arrives
`delay` seconds later, like a long link rather than a slow one. Loopback only.

    uplink = Uplink(50e6 / 8)                          # 50 Mbit/s, shared by every proxy given it
    NetProxy(target, uplink=uplink)                    # client -> host bytes pass through it
    proxy.bytes_up, uplink.bytes                       # bytes sent towards the host(s)

The uplink is the operator's: one bandwidth cap for the bytes every proxy sends towards its host,
served in the order chunks become due (hosts share it as a FIFO link would).
"""

from __future__ import annotations

import collections
import socket
import threading
import time


class Uplink:
    """A bandwidth cap (bytes per second; 0: none) shared by proxies, and the bytes it carried."""

    def __init__(self, rate: float = 0.0):
        self.rate = rate
        self.bytes = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def send(self, n: int) -> None:
        """Wait until n more bytes fit through the link."""
        with self._lock:
            self.bytes += n
            if not self.rate:
                return
            start = max(time.monotonic(), self._next)
            self._next = start + n / self.rate
            done = self._next
        pause = done - time.monotonic()
        if pause > 0:
            time.sleep(pause)


class NetProxy:
    def __init__(
        self, target: tuple[str, int], delay: float = 0.0, listen_host: str = "127.0.0.1", uplink: Uplink | None = None
    ):
        self.target = target
        self.delay = delay
        self.listen_host = listen_host
        self.uplink = uplink
        self.bytes_forwarded = 0
        self.bytes_up = 0  # client -> host
        self.hold_at: int | None = None  # stall before bytes_up would pass this (a cut at a known point)
        self._stalled = threading.Event()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.port = 0

    def start(self) -> NetProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.listen_host, 0))
        server.listen(128)
        server.settimeout(0.2)
        self._server = server
        self.port = server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="netproxy-accept").start()
        return self

    def stall(self) -> None:
        self._stalled.set()

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def resume(self) -> None:
        self._stalled.clear()

    def cut(self) -> None:
        with self._lock:
            socks, self._sockets = list(self._sockets), set()
        for s in socks:
            _close(s)

    def stop(self) -> None:
        self._stopping.set()
        self.cut()
        if self._server is not None:
            _close(self._server)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                queue: collections.deque = collections.deque()
                ready = threading.Condition()
                threading.Thread(target=self._read, args=(src, dst, queue, ready), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, src, queue, ready, up), daemon=True).start()

    def _read(self, src, dst, queue, ready) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            with ready:
                queue.append((time.monotonic() + self.delay, data))
                ready.notify()
            if not data:
                return

    def _write(self, dst, src, queue, ready, up: bool = False) -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if up and self.hold_at is not None and self.bytes_up + len(data) > self.hold_at:
                self._stalled.set()
            while self._stalled.is_set() and not self._stopping.is_set():
                time.sleep(0.05)
            if not data:
                _shutdown(dst)
                return
            if up and self.uplink is not None:
                self.uplink.send(len(data))
            try:
                dst.sendall(data)
                self.bytes_forwarded += len(data)
                if up:
                    self.bytes_up += len(data)
            except OSError:
                _close(src)
                _close(dst)
                return


def _shutdown(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv; close alone may not
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
