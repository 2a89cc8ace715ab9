"""Named failures and the exit codes they map to (documented in the README)."""

OK = 0
FAILED = 1
BAD_INPUT = 2
LOCKED = 3
GATE_REFUSED = 4
PARTIAL = 5
INTERRUPTED = 130


class DeployerError(Exception):
    """A failure a person can act on: one line, no traceback, a distinct exit code."""

    exit_code = FAILED


class ConfigError(DeployerError):
    exit_code = BAD_INPUT


class UsageError(DeployerError):
    exit_code = BAD_INPUT


class LockHeld(DeployerError):
    exit_code = LOCKED


class Interrupted(DeployerError):
    exit_code = INTERRUPTED


class HostError(DeployerError):
    """A failure on one host during one step."""

    def __init__(self, host: str, step: str, message: str):
        super().__init__(f"{host}: {step}: {message}")
        self.host = host
        self.step = step
        self.message = message
