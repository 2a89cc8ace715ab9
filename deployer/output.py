"""Live progress lines and final tables. The only module that prints."""

from __future__ import annotations

import json
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
        with self._lock:
            print(redact(f"{stamp:6.2f}s  {host:<16} {step:<9} {text}"), file=self.stream, flush=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                print(redact(text), file=self.stream, flush=True)

    def table(self, rows: list[dict], headers: list[str] | None = None) -> None:
        headers = headers or (list(rows[0]) if rows else [])
        body = [[row.get(h, "") for h in headers] for row in rows]
        with self._lock:
            from tabulate import tabulate     # loaded when a table is printed (~25 ms)
            print(redact(tabulate(body, headers=headers, tablefmt="simple")), file=self.stream, flush=True)

    def json(self, data) -> None:
        with self._lock:
            print(redact(json.dumps(data, indent=2, sort_keys=True, default=str)), file=self.stream, flush=True)


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
