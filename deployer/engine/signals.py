"""SIGTERM and SIGHUP (a cancelled CI job, cron's kill, a closed terminal) take Ctrl-C's path.

While a task runs, either signal raises `Terminated`, a KeyboardInterrupt, in the main thread: the
flows undo their work exactly as for Ctrl-C, and the run exits 128 + the signal's number (143,
129). During that cleanup every one of the three signals is ignored (`no_interrupts`): a CI
runner's second SIGTERM does not cut the cleanup short; only SIGKILL does, and then the lease
runs out (see session.py). A signal a parent set to be ignored (`nohup`) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)
INTERRUPT_EXIT = 128


class Terminated(KeyboardInterrupt):
    """A termination signal, delivered as an interruption."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return INTERRUPT_EXIT + getattr(exc, "signum", signal.SIGINT)


def describe(exc: BaseException | None) -> str:
    """How the run was interrupted, for messages and the ledger: 'Ctrl-C' or 'SIGTERM'..."""
    signum = getattr(exc, "signum", None)
    return signal.Signals(signum).name if signum else "Ctrl-C"


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def terminations() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated for the duration (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in HANDLED:
        current = signal.getsignal(sig)
        if current is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Cleanup must finish: Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile (it is bounded by
    timeouts). Not the main thread: nothing to change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *HANDLED)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
