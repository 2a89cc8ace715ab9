"""Named failures and the exit codes they map to (documented in the README)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rows a failed run carries: a type only, engine sits far above
    from deployer.engine.fleet import HostRun

OK = 0
FAILED = 1
BAD_INPUT = 2
LOCKED = 3
GATE_REFUSED = 4
PARTIAL = 5
STORE = 6
INTERRUPTED = 130  # 128 + the signal (engine/signals.py): Ctrl-C
TERMINATED = 143  # SIGTERM
HUNG_UP = 129  # SIGHUP

_program = "inv"  # the console script sets "deployer" (see cli.main)


def set_program(name: str) -> None:
    global _program
    _program = name


def command_line(args: str) -> str:
    """A command line to suggest in a message, naming the program the user is running."""
    return f"{_program} {args}"


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' when one of choices is close to word (or starts with it), else ''."""
    choices = [str(c) for c in choices]
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    found = found or [c for c in choices if len(word) >= 2 and c.startswith(word)][:1]
    return f" (did you mean {found[0]}?)" if found else ""


class DeployerError(Exception):
    """A failure a person can act on: one line, no traceback, a distinct exit code."""

    exit_code = FAILED


class ConfigError(DeployerError):
    exit_code = BAD_INPUT


class UsageError(DeployerError):
    exit_code = BAD_INPUT


class ArtifactError(DeployerError):
    """Building, loading or checking an artifact failed (one-line message)."""

    exit_code = BAD_INPUT


class StoreError(DeployerError):
    """The artifact store ([store]) cannot be reached, refused a request, or has no credentials."""

    exit_code = STORE


class LockHeld(DeployerError):
    exit_code = LOCKED


class GateRefused(DeployerError):
    """The promotion gate: the artifact has not passed the stages this one requires."""

    exit_code = GATE_REFUSED


class HostError(DeployerError):
    """A failure on one host during one step."""

    def __init__(self, host: str, step: str, message: str):
        super().__init__(f"{host}: {step}: {message}")
        self.host = host
        self.step = step
        self.message = message


class HookFailed(DeployerError):
    """A hook, restart or health check failed; with step, the message starts with it."""

    def __init__(self, message: str, step: str = ""):
        super().__init__(f"{step}: {message}" if step else message)
        self.step = step


class RunFailed(DeployerError):
    """A multi-host run failed; carries every host's row for the report."""

    def __init__(self, message: str, runs: list[HostRun], exit_code: int = FAILED):
        super().__init__(message)
        self.runs = runs
        self.exit_code = exit_code
