"""Deploy strategies as pure planning: which hosts switch together, in which order, with what pauses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.errors import UsageError

STRATEGIES = ("all", "rolling", "canary")


@dataclass(frozen=True)
class Strategy:
    """How the switch is batched (--strategy and its options); validated once, from the command line."""

    name: str = "all"
    batch: int = 1  # rolling: hosts per batch
    pause: float = 0.0  # rolling: seconds between batches
    canary: int = 1  # canary: hosts switched first
    bake: float = 0.0  # canary: seconds to keep re-checking the canaries' health

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.name!r}")
        for option in ("batch", "canary"):
            if getattr(self, option) < 1:
                raise UsageError(f"--{option} must be at least 1, got {getattr(self, option)}")
        for option in ("pause", "bake"):
            if getattr(self, option) < 0:
                raise UsageError(f"--{option} must not be negative, got {getattr(self, option)}")


@dataclass(frozen=True)
class Batch:
    index: int
    hosts: tuple[Any, ...]  # HostRun or Host values; planning does not care which
    pause_after: float = 0.0
    bake: float = 0.0
    label: str = ""


def batches(items: Sequence[Any], strategy: Strategy) -> list[Batch]:
    """Split the hosts that will switch into ordered batches."""
    if not items:
        return []
    if strategy.name == "all":
        return [Batch(1, tuple(items), label="all")]
    if strategy.name == "canary":
        first, rest = items[: strategy.canary], items[strategy.canary :]
        out = [Batch(1, tuple(first), bake=strategy.bake, label="canary")]
        if rest:
            out.append(Batch(2, tuple(rest), label="rest"))
        return out
    size = strategy.batch
    groups = [items[i : i + size] for i in range(0, len(items), size)]
    return [
        Batch(
            i + 1,
            tuple(g),
            pause_after=strategy.pause if i + 1 < len(groups) else 0.0,
            label=f"batch {i + 1}/{len(groups)}",
        )
        for i, g in enumerate(groups)
    ]
