"""The audit ledger: one JSON line per action per host, appended on the host itself.

Lines are built here (pure, every secret value masked) and appended by the remote command that does the action, with one
write(2) of less than PIPE_BUF bytes in O_APPEND mode, so concurrent or interrupted runs never
interleave or tear a line. Reading skips any line that does not parse, just in case.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from deployer.redact import redact_data

MAX_LINE = 3500  # well under PIPE_BUF (4096): one atomic append
ACTIONS = ("deploy", "rollback", "unlock", "takeover", "cleanup", "config")


def entry(
    action: str,
    stage: str,
    result: str,
    *,
    who: str,
    duration: float = 0.0,
    release: int | str | None = None,
    version: str = "",
    git_sha: str = "",
    artifact_sha256: str = "",
    reason: str = "",
    error: str = "",
    forced: bool = False,
    host: str = "",
    **extra,
) -> str:
    data = {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "action": action,
        "stage": stage,
        "result": result,
        "release": release,
        "version": version,
        "git_sha": git_sha,
        "artifact_sha256": artifact_sha256,
        "who": who,
        "duration": round(duration, 2),
        "host": host,
    }
    if reason:
        data["reason"] = reason
    if forced:
        data["forced"] = True
    if error:
        data["error"] = error
    data.update(extra)
    data = redact_data(data)  # before any cut: a line on a host never holds a secret, whole or in part
    line = json.dumps(data, sort_keys=True, ensure_ascii=True)
    if len(line) > MAX_LINE and error:
        error = data["error"]
        data["error"] = error[: max(0, len(error) - (len(line) - MAX_LINE)) - 3] + "..."
        line = json.dumps(data, sort_keys=True, ensure_ascii=True)
    return line[:MAX_LINE] if len(line) > MAX_LINE else line


def parse(text: str, host: str = "") -> list[dict]:
    """Every well-formed line; torn or foreign lines are skipped."""
    out = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "action" in data and "time" in data:
            data.setdefault("host", host)
            data["host"] = data["host"] or host
            out.append(data)
    return out
