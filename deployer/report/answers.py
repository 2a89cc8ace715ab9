"""What each host answered to an ops command (`run`, `logs`, `maintenance`), and how it is shown:
its row in the table, and streamed output as `host | line`, every secret value masked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deployer.redact import redact

LINE_MAX = 64 * 1024  # `logs --follow`: a line is printed in pieces of at most this many bytes


@dataclass
class HostAnswer:
    """One host's answer to an ops command."""

    host: str
    exit_code: int | None = None  # None: the command never ran (unreachable, ...)
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    stdout_cut: int = 0  # bytes left out at the start of stdout, stderr (only their tails are kept)
    stderr_cut: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def row(self) -> dict[str, object]:
        state = "ok" if self.ok else "stopped" if self.error == "stopped" else "failed"
        return {
            "host": self.host,
            "result": state,
            "exit": "" if self.exit_code is None else self.exit_code,
            "error": self.error or ("" if self.ok else _last_line(self.stderr)),
        }


class Prefixed:
    """Complete lines of one host's stream, printed as `host | line` as they arrive: a secret
    split between two reads is masked whole. A line longer than LINE_MAX is printed in pieces
    (a secret cut at a piece's edge is still masked: see `redact`)."""

    def __init__(self, host: str, width: int, write: Callable[[str], None]):
        self.host, self.width, self.write = host, width, write
        self.partial = b""

    def __call__(self, data: bytes) -> None:
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        while len(self.partial) > LINE_MAX:
            cut = LINE_MAX
            while cut > LINE_MAX - 3 and self.partial[cut] & 0xC0 == 0x80:  # not inside a character
                cut -= 1
            done.append(self.partial[:cut])
            self.partial = self.partial[cut:]
        for line in done:
            self.write(prefixed(self.host, self.width, line.decode("utf-8", "replace")))

    def flush(self) -> None:
        if self.partial:
            self.write(prefixed(self.host, self.width, self.partial.decode("utf-8", "replace")))
            self.partial = b""


def prefixed(host: str, width: int, line: str) -> str:
    return f"{host:<{width}} | {redact(line)}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""
