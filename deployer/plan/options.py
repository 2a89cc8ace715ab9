"""How a deploy runs: the command line's choices, validated once before anything connects."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.config.analysis import AnalysisSettings
from deployer.config.settings import CanarySettings
from deployer.errors import UsageError
from deployer.plan.batches import Strategy


def parallel_hosts(n: int) -> int:
    """--parallel: how many hosts are worked on at once; fewer than 1 is bad input."""
    if n < 1:
        raise UsageError(f"--parallel must be at least 1, got {n}")
    return n


@dataclass(frozen=True)
class Options:
    strategy: Strategy = Strategy()  # which hosts switch together
    max_fail: int = 0  # hosts that may fail before switch and be skipped (exit 5)
    parallel: int = 10
    dry_run: bool = False
    forced: bool = False  # --force: past the promotion gate
    reason: str = ""  # why (required with --force; recorded in the ledger)
    lock_wait: float = 0.0  # seconds to wait for a live lock holder before exit 3
    full: bool = False  # --full: send the whole artifact, never a delta
    shares: CanarySettings | None = None  # --strategy canary with [canary] steps: a share of requests
    analysis: AnalysisSettings | None = None  # [analysis]: judge each switched batch by its traffic

    def __post_init__(self) -> None:
        parallel_hosts(self.parallel)
        if self.forced and not self.reason.strip():
            raise UsageError('--force needs --reason "why" (it is recorded in the ledger)')
        for name in ("max_fail", "lock_wait"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
