"""Run one step on many hosts: order and concurrency only, then collect every outcome.

Like Fabric's GroupResult: each host's value or exception is kept, and the caller decides.
Ctrl-C sets the shared cancel event, waits for the workers to notice, and re-raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from deployer.config.settings import Host
from deployer.engine.records import Deployed, Drift, LedgerEntry, Maintained, RolledBack
from deployer.errors import DeployerError, HostError
from deployer.plan.host_state import HostState
from deployer.plan.options import parallel_hosts
from deployer.ssh.types import Transport

HOUSEKEEPING = ("abort", "restore", "record")  # undo steps: they never hide the step a host failed in


@dataclass
class HostRun:
    """Everything one run knows about one host: its connection, where it got to, how long each
    step took, what the host reported and what the flow recorded there."""

    host: Host
    conn: Transport | None = None
    state: HostState | None = None  # what the host reported when inspected or locked
    step: str = "pending"
    result: str = "pending"
    error: str = ""
    locked: bool = False
    lock_in_doubt: bool = False  # the lock command went out, no answer came: it may hold the lock
    renewed: float = 0.0  # when a command last renewed this run's lease here (monotonic)
    times: dict[str, float] = field(default_factory=dict)
    deployed: Deployed | None = None
    rolled_back: RolledBack | None = None
    maintained: Maintained | None = None
    ledger: list[LedgerEntry] | None = None  # audit, promotion gate: the host's ledger
    drift: Drift | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def release(self) -> int | str | None:
        """The release this run made (or would make) live here: a deploy's or a rollback's."""
        if self.deployed is not None:
            return self.deployed.release
        return self.rolled_back.target if self.rolled_back is not None else None

    @property
    def deploy_record(self) -> Deployed:
        """The deploy's record for this host (a deploy attaches one to every host it locks)."""
        if self.deployed is None:
            self.deployed = Deployed()
        return self.deployed

    @property
    def rollback_record(self) -> RolledBack:
        """The rollback's record for this host (a rollback attaches one to every host it locks)."""
        if self.rolled_back is None:
            self.rolled_back = RolledBack()
        return self.rolled_back

    @property
    def analysis(self) -> dict[str, object] | None:
        """The canary analysis this host was judged in (a deploy with [analysis])."""
        return self.deployed.analysis if self.deployed is not None else None

    @property
    def canary_steps(self) -> list[dict[str, object]]:
        """The [canary] steps this host went through as the canary: percent, share, when, verdict."""
        return self.deployed.canary_steps if self.deployed is not None else []

    def fail(self, step: str, message: str) -> None:
        self.step, self.result, self.error = step, "failed", message


def host_state(run: HostRun) -> HostState:
    """What a host reported when inspected or locked (every host a flow works on was)."""
    if run.state is None:
        raise HostError(run.name, "check", "no state read from this host")
    return run.state


class Fleet:
    def __init__(self, runs: Iterable[HostRun], parallel: int = 10):
        self.runs = list(runs)
        self.parallel = parallel_hosts(parallel)
        self.cancel = threading.Event()

    def each(
        self, step: str, fn: Callable[[HostRun], object], runs: list[HostRun] | None = None, undo: bool = False
    ) -> dict[str, BaseException]:
        """Run fn on every run (bounded concurrency). Returns the failures by host name; records them too.
        `undo`: the step undoes (as the HOUSEKEEPING steps): it never hides the step a host got to."""
        runs = self.runs if runs is None else runs
        housekeeping = undo or step in HOUSEKEEPING
        failures: dict[str, BaseException] = {}
        if not runs:
            return failures

        def timed(run: HostRun) -> object:
            started = time.monotonic()
            if not housekeeping and run.result != "failed":
                run.step = step
            try:
                return fn(run)
            finally:
                run.times[step] = run.times.get(step, 0.0) + time.monotonic() - started

        with ThreadPoolExecutor(max_workers=min(self.parallel, len(runs)), thread_name_prefix=step) as pool:
            futures = {pool.submit(timed, run): run for run in runs}
            pending = set(futures)
            try:
                while pending:
                    _, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            except KeyboardInterrupt:
                self.cancel.set()
                wait(futures)
                raise
        for future, run in futures.items():
            exc = future.exception()
            if exc is not None:
                failures[run.name] = exc
                if housekeeping and run.result == "failed":
                    run.error += f"; {step} failed: {message(exc)}"
                else:
                    run.fail(step, message(exc))
        return failures


def message(exc: BaseException) -> str:
    """One line saying what went wrong on a host."""
    if isinstance(exc, HostError):
        return exc.message
    if isinstance(exc, DeployerError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
