"""The analysis' shell text besides the access log's (remote/access_log.py): a host's live
release, a metric's command (on a host, in current; or on this machine), the ledger line."""

from __future__ import annotations

import shlex

from deployer.plan.paths import Paths
from deployer.remote.render import render


def live_release(paths: Paths) -> str:
    """Prints where current points (nothing when there is none)."""
    return render(["analysis_release.sh"], {"CURRENT": paths.current})


def command_text(template: str, values: dict[str, str]) -> str:
    """A metric's command with {host} {stage} {release} replaced by their values, each one shell
    word (no other braces touched)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", shlex.quote(value))
    return template


def metric_command(paths: Paths, command: str) -> str:
    """A metric's command (its placeholders filled: command_text) run in current."""
    return render(["analysis_command.sh"], {"CURRENT": paths.current, "COMMAND": command})


def ledger_line(paths: Paths, line: str) -> str:
    """One O_APPEND write of one line (< PIPE_BUF): never torn, never interleaved."""
    return render(["analysis_ledger.sh"], {"STATE": paths.state, "LEDGER": paths.ledger, "LINE": line})
