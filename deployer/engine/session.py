"""One run against a stage's hosts: connections, the lock token, per-host records, undo.

The flows (deploy, rollback, maintenance) are written against this; it is the only place that
turns a remote failure into a HostError naming host and step. Its backend sends the commands to
the hosts, or in a dry run prints every changing command instead (reads still run for real).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from deployer.artifact.load import Artifact
from deployer.config.settings import Host, Stage
from deployer.engine import signals
from deployer.engine.backend import LEASE_LOST_TEXT, Printer, Remote
from deployer.engine.fleet import Fleet, HostRun, message
from deployer.engine.signals import no_interrupts
from deployer.errors import HostError, LockHeld, RunFailed, command_line
from deployer.plan import setup as setup_plan
from deployer.plan.paths import Paths
from deployer.remote import commands
from deployer.remote import lock as remote_lock
from deployer.remote import state as host_state
from deployer.report import ledger
from deployer.report.output import Output, safe
from deployer.ssh.known_hosts import check_known_hosts
from deployer.ssh.types import Result, Stdin

__all__ = ["Session", "no_interrupts", "names", "steps", "utc_now", "who"]


FUTURE_BEAT = ", its heartbeat is in the future (host clock stepped back?)"


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
        self._renewing: threading.Event | None = None
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
        return self.run(run, step, commands.in_release(self.paths, number, command, env, self.stage.app.run_as))

    def inspect(self, run: HostRun, *, lock: bool, artifact_sha: str | None = None, sudo: bool = False) -> None:
        """Read the host's state; with lock, take the lock in the same command. With sudo, also
        which of the sudo commands a deploy needs (see plan/setup.py) the user may not run. With
        either, the files `deployer setup` wrote that now differ from what it writes (setup_drift):
        a deploy or rollback warns and leaves them; `check` fails."""
        # free space matters to a deploy (it names its artifact) and to `check`, not to a rollback
        space = artifact_sha is not None or not lock
        tools = artifact_sha is not None or sudo  # what a deploy runs: a deploy and `check` probe it
        ttl = self.stage.app.lock_ttl
        app = self.stage.app
        probe = sudo and setup_plan.has_unit(app.recipe)
        setup_paths = tuple(f.path for f in self._setup_files(run, "-")) if sudo or lock else ()
        read = remote_lock.inspect(
            self.paths,
            lock_token=self.token,
            artifact_sha=artifact_sha,
            free_space=space,
            tools=tools,
            sudo_unit=setup_plan.unit_path(app.name) if probe else "",
            sudo_commands=setup_plan.sudo_commands(app.name, unit=True, lb=setup_plan.LB_ROLE in run.host.roles)
            if probe
            else (),
            setup_paths=setup_paths,
        )
        if lock:
            info = json.dumps(
                {
                    "who": who(),
                    "pid": os.getpid(),
                    "stage": self.stage.name,
                    "action": self.action,
                    "started": utc_now(),
                }
            )
            script = remote_lock.inspect(
                self.paths,
                lock_info=info,
                lock_token=self.token,
                artifact_sha=artifact_sha,
                free_space=space,
                tools=tools,
                lock_ttl=ttl,
                takeover_ledger=self.takeover_line(run),
                env_file=self.stage.app.env_file,
                setup_paths=setup_paths,
            )
            run.lock_in_doubt = True  # until its answer: a signal or a lost link may cut it off
            result = self.backend.run(run, "lock", script, reads=read)
        else:
            result = self.run(run, "inspect", read)
        state = host_state.parse(result.stdout, self.paths.deploy_to)
        if state.setup_files:
            drift = setup_plan.drift(self._setup_files(run, state.user), dict(state.setup_files))
            state = replace(state, setup_drift=drift)
            for path in drift if lock else ():
                self.out.line(run.name, "check", f"{setup_plan.drift_note(path)}: left as it is")
        run.state = state
        run.locked, run.lock_in_doubt = state.lock_acquired, False
        if run.locked:
            run.renewed = time.monotonic()
        future = FUTURE_BEAT if state.lock_future else ""
        if state.took_over:
            quiet_for, stale = state.took_over
            self.out.line(
                run.name,
                "lock",
                f"took over a stale lock: {stale.describe()} had not renewed it "
                f"for {quiet_for}s{future} (lock_ttl {ttl}s); its temp files removed",
            )
        if lock and not run.locked:
            holder = state.lock.describe() if state.lock else "unknown holder"
            silent = state.lock_silent
            if state.lock_future:
                lease = f"{future}, not renewed since it was first seen {silent}s ago (taken over after {ttl}s)"
            elif silent is not None:
                lease = f", lease renewed {silent}s ago (taken over after {ttl}s without renewal)"
            else:
                lease = ""
            raise LockHeld(
                f"{run.name}: {self.paths.lock} is held by {holder}{lease}; if that run is gone, "
                f"clear it with: {command_line('unlock --stage ' + self.stage.name + ' --yes')}"
            )
        problem = state.current_problem() if lock else None
        if problem:
            raise HostError(run.name, "check", problem)

    def _setup_files(self, run: HostRun, user: str) -> tuple[setup_plan.File, ...]:
        """The files `deployer setup` writes on this host for this deploy user that a deploy user
        can read back (their paths do not depend on the user)."""
        app = self.stage.app
        host = setup_plan.plan(app.name, app.recipe, app.deploy_to, app.shared_dirs, user, run.host.roles)
        return host.readable

    def takeover_line(self, run: HostRun) -> str:
        """The ledger line a takeover appends; the host puts the stale holder in place of the mark."""
        return ledger.entry(
            "takeover",
            self.stage.name,
            "ok",
            who=who(),
            host=run.name,
            run=self.action,
            lock_ttl=self.stage.app.lock_ttl,
            stale="@@stale@@",
        )

    def lock_all(self, artifact_sha: str | None = None, max_fail: int = 0) -> None:
        """Take the lock on every host; with lock_wait, a live holder is waited for (said once,
        then the lock is tried again every second), else LockHeld at once. Once held, the lease
        is renewed in the background whenever no command renewed it lately (backend.keep_leases)."""
        deadline = time.monotonic() + self.lock_wait
        waiting = False
        while True:
            try:
                self._lock_all(artifact_sha, max_fail)
                break
            except LockHeld as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    if waiting:
                        raise LockHeld(f"{exc} (still held after waiting {self.lock_wait:g}s)") from None
                    raise
                if not waiting:
                    self.out.say(f"waiting up to {self.lock_wait:g}s for the lock: {exc}")
                    waiting = True
                for run in self.runs:
                    run.result, run.step, run.error, run.state = "pending", "pending", "", None
                time.sleep(min(1.0, left))
        self._renewing = self.backend.keep_leases(self.runs, self.stage.app.lock_ttl)

    def _lock_all(self, artifact_sha: str | None = None, max_fail: int = 0) -> None:
        """Lock the first host alone (the tie-breaker between racing runs), then the rest in parallel."""

        def connect(r: HostRun) -> None:
            if r.conn is None:
                self.connect(r)

        def lock(r: HostRun) -> None:
            self.inspect(r, lock=True, artifact_sha=artifact_sha)

        # connecting is not locking: all hosts connect at once, only the lock mkdirs are ordered
        failures = self.fleet.each("lock", connect)
        ready = [r for r in self.runs if r.name not in failures]
        first, rest = ready[:1], ready[1:]
        failures.update(self.fleet.each("lock", lock, first))
        if not failures or (len(failures) <= max_fail and first and first[0].locked):
            failures.update(self.fleet.each("lock", lock, rest))
        held = [e for e in failures.values() if isinstance(e, LockHeld)]
        if held or (failures and not self.tolerate(failures, max_fail)):
            self.abort()
            if held:
                raise LockHeld(str(held[0]))
            raise RunFailed(f"{self.action} failed before any change: {reasons(failures)}", self.runs)

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

    def raise_if_lease_lost(self) -> None:
        """After the undo: a run that lost its lock on some host says so rather than what it undid."""
        lost = [r.name for r in self.runs if LEASE_LOST_TEXT in r.error]
        if lost:
            raise RunFailed(
                f"this run lost the lock on {', '.join(lost)}: it stopped renewing its lease for "
                f"lock_ttl ({self.stage.app.lock_ttl}s) and another run took the lock over; this run "
                "changed nothing there after that",
                self.runs,
            )

    def close(self) -> None:
        if self._renewing is not None:
            self._renewing.set()
        for run in self.runs:
            if run.conn is not None:
                run.conn.close()


def names(failures: dict[str, BaseException]) -> str:
    return ", ".join(sorted(failures))


def reasons(failures: dict[str, BaseException]) -> str:
    """Each failed host with what went wrong there, on one line (masked, escaped)."""
    return "; ".join(f"{name}: {safe(message(exc))}" for name, exc in sorted(failures.items()))


def steps(runs: list[HostRun]) -> str:
    return ", ".join(f"{r.name} ({r.step})" for r in runs)
