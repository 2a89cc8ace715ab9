"""Telling a slow command from a dead link.

How long until a dead host is noticed (defaults in brackets, `dead_link_window`): after
`keepalive` seconds [10] with no traffic either way, the run loop asks the server for a reply (a
global request every SSH server answers without running anything); no reply within 2 x keepalive
more [20] and the host is declared gone: 3 x keepalive [30 s] after the last byte. The connection
is then closed, and the deploy's abort makes one reconnect attempt bounded by connect_timeout
[10]: a run whose link stalls ends within 40 s of the stall. A slow command or a slow disk is not
a dead host: the server still answers the probe. While idle, paramiko's own keepalive (set at
login) sends the same request every `keepalive` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from deployer.config.settings import SSHSettings

PROBE_WAIT = 2  # keepalive intervals an unanswered probe gets before the link is dead


def probe_interval(ssh: SSHSettings) -> float:
    """Seconds of silence after which the server is asked for a reply."""
    return float(max(ssh.keepalive, 1))


def dead_link_window(ssh: SSHSettings) -> float:
    """Seconds from the last byte heard to "host stopped answering": keepalive of silence, then a
    probe that gets 2 x keepalive to be answered. 30 s with the defaults."""
    return probe_interval(ssh) * (1 + PROBE_WAIT)


def probe(transport: Any) -> threading.Event:
    """Send a global request every server answers (paramiko `transport`, in a thread: the wait
    for the answer blocks); the event is set when the answer arrives on a still active link."""
    answered = threading.Event()

    def ask() -> None:
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:
            return
        if transport.is_active():
            answered.set()

    threading.Thread(target=ask, daemon=True, name="ssh-probe").start()
    return answered


class Watch:
    """One command's view of the link: `traffic()` on every byte, `dead()` polled while waiting.
    `probe` sends a probe and returns the event its answer sets."""

    def __init__(
        self, probe: Callable[[], threading.Event], ssh: SSHSettings, clock: Callable[[], float] = time.monotonic
    ):
        self.send_probe = probe
        self.clock = clock
        self.interval = probe_interval(ssh)
        self.window = dead_link_window(ssh)
        self.last = clock()
        self.probe: tuple[float, threading.Event] | None = None

    def traffic(self) -> None:
        self.last = self.clock()

    def dead(self) -> bool:
        """True once a probe sent after `interval` of silence went unanswered for the rest of
        the window, with nothing heard since it was sent."""
        now = self.clock()
        if self.probe is not None:
            started, answered = self.probe
            if answered.is_set():
                self.probe, self.last = None, now
                return False
            return self.last < started and now - started > self.window - self.interval
        if now - self.last >= self.interval:
            self.probe = (now, self.send_probe())
        return False
