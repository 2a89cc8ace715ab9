"""Deploy strategies as pure planning: which hosts switch together, in which order, with what pauses."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.errors import UsageError

STRATEGIES = ("all", "rolling", "canary")


@dataclass(frozen=True)
class Options:
    """How a deploy runs; validated once, from the command line."""

    strategy: str = "all"
    batch: int = 1          # rolling: hosts per batch
    pause: float = 0.0      # rolling: seconds between batches
    canary: int = 1         # canary: hosts switched first
    bake: float = 0.0       # canary: seconds to keep re-checking the canaries' health
    max_fail: int = 0       # hosts that may fail before switch and be skipped (exit 5)
    parallel: int = 10
    dry_run: bool = False
    forced: bool = False    # --force: past the promotion gate
    reason: str = ""        # why (required with --force; recorded in the ledger)
    lock_wait: float = 0.0  # seconds to wait for a live lock holder before exit 3

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("batch", "canary", "parallel"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.forced and not self.reason.strip():
            raise UsageError('--force needs --reason "why" (it is recorded in the ledger)')
        for name in ("pause", "bake", "max_fail", "lock_wait"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class Batch:
    index: int
    hosts: tuple            # HostRun or Host values; planning does not care which
    pause_after: float = 0.0
    bake: float = 0.0
    label: str = ""


def batches(items: list, options: Options) -> list[Batch]:
    """Split the hosts that will switch into ordered batches."""
    items = list(items)
    if not items:
        return []
    if options.strategy == "all":
        return [Batch(1, tuple(items), label="all")]
    if options.strategy == "canary":
        first, rest = items[:options.canary], items[options.canary:]
        out = [Batch(1, tuple(first), bake=options.bake, label="canary")]
        if rest:
            out.append(Batch(2, tuple(rest), label="rest"))
        return out
    size = options.batch
    groups = [items[i:i + size] for i in range(0, len(items), size)]
    return [Batch(i + 1, tuple(g), pause_after=options.pause if i + 1 < len(groups) else 0.0,
                  label=f"batch {i + 1}/{len(groups)}") for i, g in enumerate(groups)]
