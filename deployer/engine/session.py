"""One run against a stage's hosts: connections, the lock token, per-host records, undo.

The flows (deploy, rollback, maintenance) are written against this; it is the only place that
turns a remote failure into a HostError naming host and step. Its backend sends the commands to
the hosts, or in a dry run prints every changing command instead (reads still run for real).
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from deployer.artifact.load import Artifact
from deployer.config.settings import Host, Stage
from deployer.engine import signals
from deployer.engine.backend import Printer, Remote
from deployer.engine.fleet import Fleet, HostRun
from deployer.engine.signals import no_interrupts
from deployer.errors import RunFailed, command_line
from deployer.plan.paths import Paths
from deployer.remote import commands, user_command
from deployer.remote import lock as remote_lock
from deployer.report import ledger
from deployer.report.output import Output
from deployer.ssh.known_hosts import check_known_hosts
from deployer.ssh.types import Result, Stdin

__all__ = ["Session", "no_interrupts", "names", "steps", "utc_now", "who"]


def who() -> str:
    """user@machine, plus the CI job when the usual CI variables say there is one."""
    base = f"{getpass.getuser()}@{socket.gethostname()}"
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true":
        return (
            f"{base} (github {env.get('GITHUB_REPOSITORY', '')} run {env.get('GITHUB_RUN_ID', '')} "
            f"by {env.get('GITHUB_ACTOR', '?')})"
        )
    if env.get("GITLAB_CI"):
        return f"{base} (gitlab job {env.get('CI_JOB_ID', '')} by {env.get('GITLAB_USER_LOGIN', '?')})"
    if env.get("BUILD_URL"):
        return f"{base} (ci {env['BUILD_URL']})"
    return base


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Session:
    """Use as a context manager: leaving it stops the lease renewal and closes every connection."""

    stage: Stage
    hosts: tuple[Host, ...]
    out: Output
    parallel: int = 10
    action: str = "deploy"
    dry_run: bool = False
    config_dir: Path = Path(".")
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    artifact: Artifact | None = None  # what is being deployed, for ledger lines
    reason: str = ""  # --force --reason, recorded in the ledger
    forced: bool = False
    lock_wait: float = 0.0  # --lock-wait: seconds to wait for a live holder before exit 3

    def __post_init__(self) -> None:
        for path in sorted({h.ssh.known_hosts for h in self.hosts}):
            check_known_hosts(path)  # bad input: before any host is contacted
        self.paths = Paths(self.stage.app.deploy_to)
        self.runs = [HostRun(h) for h in self.hosts]
        self.fleet = Fleet(self.runs, self.parallel)
        self.started = time.monotonic()
        self.backend = (Printer if self.dry_run else Remote)(self.paths, self.token, self.fleet.cancel, self.out)
        self.renewing: threading.Event | None = None  # set by lease.lock_all: stops the renewal
        self.unreleased: list[str] = []  # hosts whose abort failed: this run's lock may be left there

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def ledger(
        self,
        run: HostRun,
        result: str,
        *,
        release: int | str | None = None,
        error: str = "",
        action: str | None = None,
        **extra: object,
    ) -> str:
        """This run's ledger line for one host (for this run's action unless told another)."""
        art = self.artifact
        fields: dict[str, Any] = {
            "version": art.version if art else "",  # any JSON value
            "git_sha": (art.git_sha if art else "") or "",
            "artifact_sha256": art.sha256 if art else "",
            **extra,
        }
        return ledger.entry(
            action or self.action,
            self.stage.name,
            result,
            who=who(),
            host=run.name,
            duration=time.monotonic() - self.started,
            release=release,
            reason=self.reason,
            forced=self.forced,
            error=error,
            **fields,
        )

    @property
    def active(self) -> list[HostRun]:
        """Hosts still taking part (not skipped under --max-fail)."""
        return [r for r in self.runs if r.result != "skipped"]

    # -- running commands ---------------------------------------------------------------------

    def connect(self, run: HostRun) -> None:
        self.backend.connect(run)

    def run(
        self,
        run: HostRun,
        step: str,
        script: str,
        *,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        max_output: int | None = None,
        leased: bool = True,
    ) -> Result:
        """Run one script on one host; a non-zero exit becomes HostError(host, step, output tail).
        `max_output`: keep all of stdout, up to that many bytes (types.Transport.run). `leased`:
        see backend.Remote.run."""
        return self.backend.run(
            run, step, script, stdin=stdin, timeout=timeout, progress=progress, max_output=max_output, leased=leased
        )

    def in_release(
        self, run: HostRun, step: str, number: int | str | None, command: str, env: dict[str, str]
    ) -> Result:
        """A user command (hook, restart, smoke, verify) in releases/N (no N: deploy_to), as
        [app] run_as when set."""
        return self.run(run, step, user_command.in_release(self.paths, number, command, env, self.stage.app.run_as))

    def tolerate(self, failures: dict[str, BaseException], max_fail: int) -> bool:
        """Skip failed hosts when --max-fail allows it (their partial work is undone); else False."""
        skipped = [r for r in self.runs if r.result == "skipped"]
        if not failures or len(skipped) + len(failures) > max_fail or len(failures) >= len(self.active):
            return not failures
        for run in self.runs:
            if run.name in failures:
                run.result = "skipped"
                self.out.line(run.name, "SKIPPED", f"{run.error} (allowed by --max-fail {max_fail})")
        return True

    def must(
        self,
        step: str,
        fn: Callable[[HostRun], object],
        runs: list[HostRun] | None = None,
        *,
        failed: str = "",
        undo: bool = False,
    ) -> None:
        """fn on every host; any failure raises RunFailed "<failed> on <hosts>" (after abort, with undo)."""
        failures = self.fleet.each(step, fn, runs)
        if failures:
            if undo:
                self.abort()
            raise RunFailed(f"{failed or step + ' failed'} on {names(failures)}", self.runs)

    def locally(self, what: str, action: Callable[[], object]) -> None:
        """Something done on this machine (a dry run prints `what` instead)."""
        self.backend.local(what, action)

    # -- undoing ------------------------------------------------------------------------------

    def abort(
        self, number: int | None = None, runs: list[HostRun] | None = None, result: str = "failed", error: str = ""
    ) -> None:
        """Remove this run's partial work, record the outcome and release the lock on every host it locked."""

        def undo(run: HostRun) -> None:
            if not (run.locked or run.lock_in_doubt):
                return
            line = self.ledger(
                run,
                run.result if run.result in ("skipped", "interrupted") else result,
                release=number,
                error=run.error or error,
            )
            if run.locked:
                script = commands.abort(self.paths, number, self.token, ledger=line)
            else:  # nothing was made under a lock this run may hold: release it if it does
                script = remote_lock.unlock(self.paths, self.token, ledger=line)
            self.run(run, "abort", script, timeout=60)
            run.locked = run.lock_in_doubt = False

        for run in runs or self.runs:
            if run.result == "pending":
                run.result = "aborted"
        with no_interrupts():
            self.fleet.cancel.clear()
            errors = self.fleet.each("abort", undo, [r for r in (runs or self.runs) if r.locked or r.lock_in_doubt])
        self.unreleased = sorted({*self.unreleased, *errors})
        for name, exc in errors.items():
            self.out.line(
                name,
                "abort",
                f"could not clean up: {exc} (the next run purges leftovers; the lock may need: {self.unlock_hint()})",
            )

    def locks_said(self) -> str:
        """'locks released', or where this run's lock may be left (an abort that could not reach the host)."""
        if not self.unreleased:
            return "locks released"
        return (
            f"locks released except on {', '.join(self.unreleased)} (the next run takes a lock over once "
            f"its lease runs out, lock_ttl {self.stage.app.lock_ttl}s; at once: {self.unlock_hint()})"
        )

    def unlock_hint(self) -> str:
        return command_line("unlock --stage " + self.stage.name + " --yes")

    def interrupted(
        self, exc: BaseException, number: int | None = None, undone: str = "partial work removed"
    ) -> RunFailed:
        """Ctrl-C, SIGTERM or SIGHUP (or a cancel): undo and record; the RunFailed to raise exits
        128 + the signal."""
        how = f"interrupted ({signals.describe(exc)})"
        self.fleet.cancel.set()
        for run in self.runs:
            if run.result in ("pending", "failed"):
                run.result = "interrupted"
                if run.error in ("", "cancelled"):
                    run.error = how
        self.abort(number, result="interrupted", error=how)
        return RunFailed(
            f"{how} during {steps(self.runs)}; {undone}, {self.locks_said()}", self.runs, signals.exit_code(exc)
        )

    def close(self) -> None:
        if self.renewing is not None:
            self.renewing.set()
        for run in self.runs:
            if run.conn is not None:
                run.conn.close()


def names(failures: dict[str, BaseException]) -> str:
    return ", ".join(sorted(failures))


def steps(runs: list[HostRun]) -> str:
    return ", ".join(f"{r.name} ({r.step})" for r in runs)
