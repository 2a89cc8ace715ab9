"""Live progress lines and final tables. The only module that prints."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime

from deployer.redact import redact, redact_data

# What a terminal would act on rather than show: C0 controls (ESC starts every escape sequence),
# DEL, C1 controls (0x9b is a one-byte CSI), the line and paragraph separators, and the bidi
# overrides and isolates that reorder what is shown
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEPING_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text, keep_newlines: bool = False):
    """Text as it may reach a terminal: every control character shown escaped (\\x1b, \\n,
    \\u202e), never acted on. Versions, metadata and whatever a host reports pass through it;
    with keep_newlines, multi-line text keeps its line breaks and tabs."""
    if not isinstance(text, str):
        return text
    pattern = _UNSAFE_KEEPING_LINES if keep_newlines else _UNSAFE
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe(text, keep_newlines: bool = False):
    """redact, then printable: what every printed line goes through."""
    return printable(redact(text), keep_newlines)


LOG_EVERY = 5.0  # seconds between two progress lines of one host's upload in a log
LIVE_EVERY = 0.25  # ... and on a terminal, where the host's line is rewritten in place
_GREEN, _RED, _YELLOW = "32", "31", "33"
_GROUP: dict = {}  # the CI log group this process has open: {"stream": ..., "end": text}


def _on_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _group_markers(title: str) -> tuple[str, str] | None:
    """(start, end) of a collapsible section in GitHub Actions' or GitLab CI's log, else None."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return f"::group::{title}", "::endgroup::"
    if os.environ.get("GITLAB_CI"):
        now = int(time.time())
        return (
            f"\x1b[0Ksection_start:{now}:deployer_progress[collapsed=true]\r\x1b[0K{title}",
            "\x1b[0Ksection_end:{now}:deployer_progress\r\x1b[0K",
        )  # {now}: when it ends
    return None


def _colour(step: str, text: str) -> str | None:
    """ok green, failed red, skipped yellow; None for a line in between."""
    words = f"{step} {text}".lower()
    if "failed" in words or "error" in words or step == "abort":
        return _RED
    if "skipped" in words:
        return _YELLOW
    if text == "ok" or "ready" in words or text.startswith("current ->") or "deployed" in words:
        return _GREEN
    return None


class Output:
    """Progress lines and final text. On a terminal each host has one line, rewritten in place
    (coloured unless NO_COLOR is set); elsewhere (cron, CI) each line is printed once with its
    UTC time, inside a collapsible group when GitHub Actions or GitLab CI runs the job."""

    def __init__(self, quiet: bool = False, stream=None, live: bool | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.live = _on_terminal(self.stream) if live is None else live
        self.colour = self.live and not os.environ.get("NO_COLOR")
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._board: dict[str, str] = {}  # host -> its live line (terminal only)
        self._drawn = 0

    def line(self, host: str, step: str, text: str) -> None:
        if self.quiet:
            return
        if self.live:
            self._update(host, step, text)
            return
        self._open_group()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self._print(safe(f"{stamp}  {host:<16} {step:<9} {text}"))

    def say(self, text: str, multiline: bool = False) -> None:
        """One line (a newline in it is shown escaped: a value cannot forge a line), or with
        multiline, text whose line breaks are its own (dry-run scripts)."""
        if not self.quiet:
            self._print(text if multiline else safe(text), final=True)

    def table(self, rows: list[dict], headers: list[str] | None = None) -> None:
        headers = headers or (list(rows[0]) if rows else [])
        body = [[safe(row.get(h, "")) for h in headers] for row in rows]
        from tabulate import tabulate  # type: ignore[import-untyped, unused-ignore]  # loaded when a table is printed

        self._print(tabulate(body, headers=headers, tablefmt="simple"), final=True)

    def json(self, data) -> None:
        self._print(json.dumps(redact_data(data), indent=2, sort_keys=True, default=str), final=True)

    def _update(self, host: str, step: str, text: str) -> None:
        """Rewrite the block of host lines in place (cursor up, clear, redraw), each cut to the
        terminal's width so that none wraps and the block keeps its height."""
        import shutil

        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        line = safe(f"{host:<16} {step:<9} {text}")[:width]
        colour = self.colour and _colour(step, text)
        with self._lock:
            self._board[host] = f"\x1b[{colour}m{line}\x1b[0m" if colour else line
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            block = "".join(f"\x1b[2K{self._board[h]}\n" for h in sorted(self._board, key=_natural))
            self._drawn = len(self._board)
            self._write(up + block)

    def _open_group(self) -> None:
        if _GROUP:
            return
        markers = _group_markers("deployer progress")
        if markers:
            _GROUP.update(stream=self.stream, end=markers[1])
            self._write(markers[0] + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.stream = discard(self.stream)

    def _print(self, text: str, final: bool = False) -> None:
        """A reader that went away (`| head`, a closed terminal pipe) never stops a run halfway:
        what is printed after that goes nowhere, the work and the exit code stay the same.
        Final text (a table, a summary, JSON) closes the progress: the terminal's block of host
        lines stays as it is above it, a CI log group ends."""
        if final:
            close_group()
            self._board, self._drawn = {}, 0
        with self._lock:
            try:
                print(safe(text, keep_newlines=True), file=self.stream, flush=True)
            except BrokenPipeError:
                self.stream = discard(self.stream)


def _natural(name: str) -> list:
    """host-2 before host-10: hosts keep one place on the board, whichever spoke first."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def close_group() -> None:
    """End the CI log group this process opened, if any (final text, or the exit)."""
    if _GROUP:
        stream, end = _GROUP.pop("stream"), _GROUP.pop("end")
        try:
            stream.write(end.replace("{now}", str(int(time.time()))) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def show(text: str = "", multiline: bool = False) -> None:
    """A line on stdout outside a run's Output: the help, the sandbox's answers."""
    print(safe(text, keep_newlines=multiline), flush=True)


def note(text: str, multiline: bool = False) -> None:
    """A line on stderr beside whatever the run prints: a warning, a tool's progress."""
    print(safe(text, keep_newlines=multiline), file=sys.stderr, flush=True)


def discard(stream):
    """Point a stream whose reader left at /dev/null, file descriptor included (so that whatever
    else writes to it, and the flush at exit, find a sink); returns what to write to now."""
    sink = open(os.devnull, "w")
    try:
        os.dup2(sink.fileno(), stream.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor of its own (a test's StringIO)
        return sink
    return stream


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


class UploadProgress:
    """Bytes, rate and ETA: on a terminal a few times a second (the host's line is rewritten),
    in a log at most once every LOG_EVERY seconds per host; and once at the end."""

    def __init__(self, out: Output, host: str, total: int, clock=time.monotonic):
        self.out, self.host, self.total, self.clock = out, host, total, clock
        self.every = LIVE_EVERY if out.live else LOG_EVERY
        self.started = clock()
        self.last = self.started

    def __call__(self, sent: int) -> None:
        now = self.clock()
        if now - self.last >= self.every and sent < self.total:
            self.last = now
            rate = sent / max(now - self.started, 1e-6)
            eta = f", ETA {int((self.total - sent) / rate) + 1}s" if rate > 0 else ""
            self.out.line(
                self.host, "upload", f"{human_bytes(sent)} / {human_bytes(self.total)} ({human_bytes(rate)}/s{eta})"
            )

    def done(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        return f"uploaded {human_bytes(self.total)} in {elapsed:.2f}s ({human_bytes(self.total / elapsed)}/s)"
