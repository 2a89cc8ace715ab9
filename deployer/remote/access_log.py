"""The access_log provider's remote side: one script per host per check that summarises the lines
written since the last check (requests, non-5xx, p50, p99), and the parse of its one-line answer.
The log's lines never cross the wire; only a summary of about 40 bytes does."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.errors import DeployerError
from deployer.remote.render import render

# the log shapes: docs/canary-analysis.md (nginx: recipes.TIMED_LOG_FORMAT)
ROTATED = {"0": "", "1": "rotated (read the rest of {log}.1)", "2": "rotated ({log}.1 not the old file: lines lost)"}


@dataclass(frozen=True)
class Mark:
    """Where a log's next window starts: its inode and size at the end of the last window."""

    inode: str
    offset: int


@dataclass(frozen=True)
class Window:
    mark: Mark  # where the next window starts
    requests: int = 0
    ok: int = 0  # answered below 500
    unparsed: int = 0  # lines not in the combined shape (skipped)
    p50_ms: float | None = None
    p99_ms: float | None = None
    rotated: str = ""  # "" or what happened to the file between two checks

    def measure(self, name: str) -> float | None:
        if name == "requests":
            return float(self.requests)
        if name == "success_rate":
            return 100.0 * self.ok / self.requests if self.requests else None
        return self.p50_ms if name == "p50_ms" else self.p99_ms


def window(log: str, mark: Mark | None, timed: bool) -> str:
    """The script: from `mark` (None: only mark where the first window starts) to the end of log."""
    return render(
        ["access_window.sh"],
        {"LOG": log, "INODE": mark.inode if mark else "", "OFFSET": mark.offset if mark else 0, "TIMED": int(timed)},
    )


def parse(log: str, answer: str) -> Window:
    """The script's one line; DeployerError when it is not that line."""
    fields = answer.split()
    if len(fields) != 8 or not all(f.isdigit() for f in fields[1:5]) or fields[7] not in ROTATED:
        raise DeployerError(f"unexpected answer from the log summary: {answer.strip()[:200]!r}")

    def ms(text: str) -> float | None:
        return None if text == "-" else float(text)

    return Window(
        Mark(fields[0], int(fields[1])),
        requests=int(fields[2]),
        ok=int(fields[3]),
        unparsed=int(fields[4]),
        p50_ms=ms(fields[5]),
        p99_ms=ms(fields[6]),
        rotated=ROTATED[fields[7]].format(log=log),
    )
