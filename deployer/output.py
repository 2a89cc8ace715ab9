"""Live progress lines and final tables. The only module that prints."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

_SECRETS: set[str] = set()
MASK = "••••••"


def add_secret(value: str) -> None:
    """Register a secret value: every line this process prints has it masked."""
    if value and len(value) >= 3:
        _SECRETS.add(value)
        for line in value.splitlines():
            if len(line) >= 3:
                _SECRETS.add(line)


def redact(text):
    if not isinstance(text, str) or not _SECRETS:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class Output:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def line(self, host: str, step: str, text: str) -> None:
        if self.quiet:
            return
        stamp = time.monotonic() - self._started
        self._print(f"{stamp:6.2f}s  {host:<16} {step:<9} {text}")

    def say(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def table(self, rows: list[dict], headers: list[str] | None = None) -> None:
        headers = headers or (list(rows[0]) if rows else [])
        body = [[row.get(h, "") for h in headers] for row in rows]
        from tabulate import tabulate     # loaded when a table is printed (~25 ms)
        self._print(tabulate(body, headers=headers, tablefmt="simple"))

    def json(self, data) -> None:
        self._print(json.dumps(data, indent=2, sort_keys=True, default=str))

    def _print(self, text: str) -> None:
        """A reader that went away (`| head`, a closed terminal pipe) never stops a run halfway:
        what is printed after that goes nowhere, the work and the exit code stay the same."""
        with self._lock:
            try:
                print(redact(text), file=self.stream, flush=True)
            except BrokenPipeError:
                self.stream = discard(self.stream)


def discard(stream):
    """Point a stream whose reader left at /dev/null, file descriptor included (so that whatever
    else writes to it, and the flush at exit, find a sink); returns what to write to now."""
    sink = open(os.devnull, "w")
    try:
        os.dup2(sink.fileno(), stream.fileno())
    except (OSError, ValueError, AttributeError):     # no descriptor of its own (a test's StringIO)
        return sink
    return stream


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


class UploadProgress:
    """Prints bytes and rate at most once a second per host, and once at the end."""

    def __init__(self, out: Output, host: str, total: int):
        self.out, self.host, self.total = out, host, total
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self, sent: int) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 and sent < self.total:
            self.last = now
            self.out.line(self.host, "upload", f"{human_bytes(sent)} / {human_bytes(self.total)} "
                          f"({human_bytes(sent / max(now - self.started, 1e-6))}/s)")

    def done(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"uploaded {human_bytes(self.total)} in {elapsed:.2f}s ({human_bytes(self.total / elapsed)}/s)"
