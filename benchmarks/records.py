"""What a benchmark run measured: one record per measured run, grouped per configuration.

``run_config`` appends a ``Measurement`` for every timed command; the report (report.py) picks
the records of the actions it shows and reduces them (median seconds, command ranges, peaks).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# The measured actions of one repetition, in the order run_config runs them.
ACTIONS = (
    "floor",
    "floor_rollback",
    "deploy",
    "redeploy",
    "redeploy_linked",
    "rollback",
    "rollback_warm",
    "redeploy_linked_warm",
)
# The deployer's phases, as its result table names them.
PHASES = ("lock", "check", "prepare", "switch", "finish")
# Lines counted in a CLI run's output: what the deployer did on how many hosts.
COUNTED = {
    "uploaded": "uploaded ",  # the artifact went up
    "streamed": "extracted as it arrived",  # ... and was extracted while it arrived
    "cached": "artifact already on host",  # a redeploy found it there
    "linked": "linked from release",  # app.hardlink_releases: links, no extraction
}


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


@dataclass
class Measurement:
    """One measured run of one action in one repetition."""

    action: str  # one of ACTIONS
    rep: int
    seconds: float  # wall clock, spawn to exit
    cmds: list[int] = field(default_factory=list)  # remote commands per host (empty: not counted)
    rss_mb: float | None = None  # peak RSS of the client process
    client_cpu: float | None = None  # CPU seconds of the client process (user + system)
    total_cpu: float | None = None  # the client plus every target container (None: hosts unknown)
    lines: dict[str, int] = field(default_factory=dict)  # COUNTED key -> lines in the output
    phases: dict[str, float] = field(default_factory=dict)  # first deploy: slowest host per phase


@dataclass
class ConfigResult:
    """Every measurement of one configuration (host count, added latency)."""

    hosts: int
    latency_ms: int  # added each way
    reps: int = 0
    runs: list[Measurement] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average before each repetition
    outputs: dict[str, str] = field(default_factory=dict)  # last stdout of each CLI action

    @property
    def rtt_ms(self) -> int:
        return 2 * self.latency_ms

    def of(self, *actions: str) -> list[Measurement]:
        return [m for m in self.runs if m.action in actions]

    def values(self, action: str, metric: Callable[[Measurement], float | None]) -> list[float]:
        """metric of each run of action, where it was measured."""
        return [v for m in self.of(action) if (v := metric(m)) is not None]

    def seconds(self, action: str) -> list[float]:
        return self.values(action, lambda m: m.seconds)

    def med(self, action: str, metric: Callable[[Measurement], float | None] = lambda m: m.seconds) -> float | None:
        return median(self.values(action, metric))

    def ratio(
        self, a: str, b: str, metric: Callable[[Measurement], float | None] = lambda m: m.seconds
    ) -> float | None:
        x, y = self.med(a, metric), self.med(b, metric)
        return x / y if x is not None and y else None

    def rep_ratios(self, a: str, b: str) -> list[float]:
        """a/b within each repetition (the two ran back to back): the spread the machine adds."""
        firsts = {m.rep: m.seconds for m in reversed(self.of(b))}
        return [m.seconds / firsts[m.rep] for m in self.of(a) if firsts.get(m.rep)]

    def cmds(self, *actions: str) -> list[int]:
        """Remote commands per host of every run of these actions, flattened."""
        return [c for m in self.of(*actions) for c in m.cmds]

    def peak_rss(self, *actions: str) -> float | None:
        return max((m.rss_mb for m in self.of(*actions) if m.rss_mb is not None), default=None)

    def counted(self, action: str, what: str) -> list[int]:
        """How often each run of action printed COUNTED[what]."""
        return [m.lines.get(what, 0) for m in self.of(action)]

    def phase_median(self, phase: str) -> float | None:
        return median(m.phases[phase] for m in self.of("deploy") if phase in m.phases)


@dataclass
class MemoryResult:
    label: str
    artifact_mb: float
    files: int
    hosts: int
    seconds: float
    rss_mb: float


@dataclass
class ScaleResult:
    hosts: int
    floor_seconds: float
    deploy_seconds: float
    rss_mb: float
    correct: int
    problems: list[str]
