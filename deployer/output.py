"""Live progress lines and final tables. The only module that prints."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

_SECRETS: set[str] = set()
MASK = "••••••"
MIN_SECRET = 4      # shorter values cannot be masked without masking unrelated text: envfile refuses them


def add_secret(value: str) -> None:
    """Register a secret value: every string this process sends to a host, a webhook or a
    terminal has it masked (see `redact`). Each line of a multi-line value, and the forms the
    value takes once escaped in a dotenv file or in JSON, are masked too."""
    if len(value) < MIN_SECRET:
        return
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    from .envfile import quote           # the dotenv form: a `cat .env` in a hook's output
    forms.add(quote(value).removeprefix('"').removesuffix('"'))
    for form in list(forms):
        forms.update(line for line in form.splitlines())
    _SECRETS.update(f for f in forms if len(f) >= MIN_SECRET)


def redact(text):
    """`text` with every registered secret masked, where it appears whole and where a line of
    it was cut: a line ending with the first characters of a secret (a tail cut short) or
    starting with its last ones (a tail that starts mid-way), at least MIN_SECRET of them.
    Overlapping or nested secrets are masked as one span; matching is literal."""
    if not isinstance(text, str) or not _SECRETS or not text:
        return text
    spans = []
    for secret in _SECRETS:
        i = text.find(secret)
        while i != -1:
            spans.append((i, i + len(secret)))
            i = text.find(secret, i + 1)
    for start, end in _lines(text):
        for secret in _SECRETS:
            spans += _cut_edges(text, start, end, secret)
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out += [text[pos:start], MASK]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_data(data):
    """Every string inside lists and dicts redacted (before it is serialised: JSON escapes
    would hide a secret that has quotes, backslashes or non-ASCII characters from `redact`)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


def _lines(text: str):
    start = 0
    for match in re.finditer(r"[\r\n]", text):
        yield start, match.start()
        start = match.end()
    yield start, len(text)


def _cut_edges(text: str, start: int, end: int, secret: str) -> list[tuple[int, int]]:
    """The spans of text[start:end] that are a cut piece of secret at its edges."""
    if len(secret) <= MIN_SECRET or end - start < MIN_SECRET:
        return []
    spans = []
    head, i = secret[:MIN_SECRET], text.find(secret[:MIN_SECRET], max(start, end - len(secret) + 1), end)
    while i != -1:              # the line ends with a prefix of the secret
        if secret.startswith(text[i:end]):
            spans.append((i, end))
            break
        i = text.find(head, i + 1, end)
    tail = secret[-MIN_SECRET:]
    limit = min(end, start + len(secret) - 1)
    i = text.rfind(tail, start, limit)
    while i != -1:              # the line starts with a suffix of the secret
        if secret.endswith(text[start:i + MIN_SECRET]):
            spans.append((start, i + MIN_SECRET))
            break
        i = text.rfind(tail, start, i + MIN_SECRET - 1)
    return spans


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
        self._print(safe(f"{stamp:6.2f}s  {host:<16} {step:<9} {text}"))

    def say(self, text: str, multiline: bool = False) -> None:
        """One line (a newline in it is shown escaped: a value cannot forge a line), or with
        multiline, text whose line breaks are its own (dry-run scripts)."""
        if not self.quiet:
            self._print(text if multiline else safe(text))

    def table(self, rows: list[dict], headers: list[str] | None = None) -> None:
        headers = headers or (list(rows[0]) if rows else [])
        body = [[safe(row.get(h, "")) for h in headers] for row in rows]
        from tabulate import tabulate     # loaded when a table is printed (~25 ms)
        self._print(tabulate(body, headers=headers, tablefmt="simple"))

    def json(self, data) -> None:
        self._print(json.dumps(redact_data(data), indent=2, sort_keys=True, default=str))

    def _print(self, text: str) -> None:
        """A reader that went away (`| head`, a closed terminal pipe) never stops a run halfway:
        what is printed after that goes nowhere, the work and the exit code stay the same."""
        with self._lock:
            try:
                print(safe(text, keep_newlines=True), file=self.stream, flush=True)
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
