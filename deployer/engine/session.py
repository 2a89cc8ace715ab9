"""One run against a stage's hosts: connections, the lock token, per-host records, undo.

The flows (deploy, rollback, maintenance) are written against this; it is the only place that
turns a remote failure into a HostError naming host and step. In dry-run mode the same calls
read state for real but print every changing command instead of running it.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deployer.config.settings import Host, Stage
from deployer.engine import signals
from deployer.engine.fleet import Fleet, HostRun
from deployer.engine.signals import no_interrupts  # noqa: F401 (the flows take it from here)
from deployer.errors import DeployerError, HostError, LockHeld, command_line
from deployer.plan.paths import Paths
from deployer.remote import commands
from deployer.remote import state as host_state
from deployer.report import ledger
from deployer.report.output import Output
from deployer.ssh import transport_for
from deployer.ssh.known_hosts import check_known_hosts
from deployer.ssh.types import Cancelled, Result, TransportError


def who() -> str:
    """user@machine, plus the CI job when the usual CI variables say there is one."""
    base = f"{getpass.getuser()}@{socket.gethostname()}"
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true":
        return f"{base} (github {env.get('GITHUB_REPOSITORY', '')} run {env.get('GITHUB_RUN_ID', '')} "\
               f"by {env.get('GITHUB_ACTOR', '?')})"
    if env.get("GITLAB_CI"):
        return f"{base} (gitlab job {env.get('CI_JOB_ID', '')} by {env.get('GITLAB_USER_LOGIN', '?')})"
    if env.get("BUILD_URL"):
        return f"{base} (ci {env['BUILD_URL']})"
    return base


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunFailed(DeployerError):
    """A multi-host run failed; carries every host's row for the report."""

    def __init__(self, message: str, runs: list[HostRun], exit_code: int = 1):
        super().__init__(message)
        self.runs = runs
        self.exit_code = exit_code


READ_ONLY_STEPS = ("inspect",)


@dataclass
class Session:
    stage: Stage
    hosts: tuple[Host, ...]
    out: Output
    parallel: int = 10
    action: str = "deploy"
    dry_run: bool = False
    config_dir: Path = Path(".")
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    artifact: object = None             # what is being deployed, for ledger lines
    reason: str = ""                    # --force --reason, recorded in the ledger
    forced: bool = False
    lock_wait: float = 0.0              # --lock-wait: seconds to wait for a live holder before exit 3

    def __post_init__(self):
        for path in sorted({h.ssh.known_hosts for h in self.hosts}):
            check_known_hosts(path)         # bad input: before any host is contacted
        self.paths = Paths(self.stage.app.deploy_to)
        self.runs = [HostRun(h) for h in self.hosts]
        self.fleet = Fleet(self.runs, self.parallel)
        self.started = time.monotonic()
        self._renewing: threading.Event | None = None

    def ledger(self, run: HostRun, result: str, *, release: int | None = None, error: str = "",
               action: str | None = None, **extra) -> str:
        """This run's ledger line for one host (for this run's action unless told another)."""
        art = self.artifact
        fields = {"version": getattr(art, "version", "") or "", "git_sha": getattr(art, "git_sha", "") or "",
                  "artifact_sha256": getattr(art, "sha256", "") or "", **extra}
        return ledger.entry(action or self.action, self.stage.name, result, who=who(), host=run.name,
                            duration=time.monotonic() - self.started, release=release, reason=self.reason,
                            forced=self.forced, error=error, **fields)

    @property
    def active(self) -> list[HostRun]:
        """Hosts still taking part (not skipped under --max-fail)."""
        return [r for r in self.runs if r.result != "skipped"]

    # -- running commands ---------------------------------------------------------------------

    def connect(self, run: HostRun) -> None:
        try:
            run.conn = transport_for(run.host).open()
        except TransportError as exc:
            raise HostError(run.name, "connect", str(exc)) from None

    def run(self, run: HostRun, step: str, script: str, **kwargs) -> Result:
        """Run one script on one host; a non-zero exit becomes HostError(host, step, output tail)."""
        if self.dry_run and step not in READ_ONLY_STEPS:
            self.out.say(f"--- {run.name} · {step}{' (artifact on stdin)' if kwargs.get('stdin') else ''}\n"
                         f"{script.rstrip()}", multiline=True)
            return Result(0, "", "")
        if run.conn is None or not run.conn.alive:
            self.connect(run)
        if run.locked:                  # every command of the lock's holder checks and renews its lease
            script = commands.lease(self.paths, self.token) + script
            run.renewed = time.monotonic()
        try:
            result = run.conn.run(script, cancel=self.fleet.cancel, **kwargs)
        except Cancelled:
            raise
        except TransportError as exc:
            raise HostError(run.name, step, str(exc)) from None
        if not result.ok:
            if lease_lost(result):
                run.locked = False      # not ours any more: nothing to undo or unlock here
            raise HostError(run.name, step, result.tail())
        return result

    def in_release(self, run: HostRun, step: str, number: int | None, command: str, env: dict[str, str]) -> Result:
        """A user command (hook, restart, smoke, verify) in releases/N (no N: deploy_to), as
        [app] run_as when set."""
        return self.run(run, step, commands.in_release(self.paths, number, command, env, self.stage.app.run_as))

    def inspect(self, run: HostRun, *, lock: bool, artifact_sha: str | None = None) -> None:
        """Read the host's state; with lock, take the lock in the same command."""
        info = json.dumps({"who": who(), "pid": os.getpid(), "stage": self.stage.name, "action": self.action,
                           "started": utc_now()}) if lock else None
        # free space matters to a deploy (it names its artifact) and to `check`, not to a rollback
        space = artifact_sha is not None or not lock
        if self.dry_run and lock:
            self.run(run, "lock", commands.inspect(self.paths, lock_info=info, lock_token=self.token,
                                                   artifact_sha=artifact_sha, free_space=space))
            info = None
        ttl = self.stage.app.lock_ttl
        script = commands.inspect(self.paths, lock_info=info, lock_token=self.token, artifact_sha=artifact_sha,
                                  free_space=space, lock_ttl=ttl if info else None,
                                  takeover_ledger=self.takeover_line(run) if info else None)
        result = self.run(run, "lock" if info else "inspect", script)
        run.state = host_state.parse(result.stdout, self.paths.deploy_to)
        run.locked = run.state.lock_acquired or (self.dry_run and lock)
        if run.locked:
            run.renewed = time.monotonic()
        if run.state.took_over:
            silent, holder = run.state.took_over
            self.out.line(run.name, "lock", f"took over a stale lock: {holder.describe()} had not renewed it "
                                            f"for {silent}s (lock_ttl {ttl}s); its temp files removed")
        if lock and not run.locked:
            holder = run.state.lock.describe() if run.state.lock else "unknown holder"
            silent = run.state.lock_silent
            lease = (f", lease renewed {silent}s ago (taken over after {ttl}s without renewal)"
                     if silent is not None else "")
            raise LockHeld(f"{run.name}: {self.paths.lock} is held by {holder}{lease}; if that run is gone, "
                           f"clear it with: {command_line('unlock --stage ' + self.stage.name + ' --yes')}")
        if lock and run.state.current_problem():
            raise HostError(run.name, "check", run.state.current_problem())

    def takeover_line(self, run: HostRun) -> str:
        """The ledger line a takeover appends; the host puts the stale holder in place of the mark."""
        return ledger.entry("takeover", self.stage.name, "ok", who=who(), host=run.name, run=self.action,
                            lock_ttl=self.stage.app.lock_ttl, stale="@@stale@@")

    def lock_all(self, artifact_sha: str | None = None, max_fail: int = 0) -> None:
        """Take the lock on every host; with lock_wait, a live holder is waited for (said once,
        then the lock is tried again every second), else LockHeld at once. Once held, the lease
        is renewed in the background whenever no command renewed it lately (see _renew_leases)."""
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
        if not self.dry_run:
            self._renewing = threading.Event()
            threading.Thread(target=self._renew_leases, args=(self._renewing,), daemon=True, name="lease").start()

    def _renew_leases(self, stop: threading.Event) -> None:
        """Renew the lease on hosts where no command did for a quarter of lock_ttl (a long smoke
        test, bake, pause, upload or hook): one small command on the open connection. A run whose
        commands follow each other quickly never sends one."""
        every = self.stage.app.lock_ttl / 4
        while not stop.wait(min(every / 2, 5.0)):
            for run in self.runs:
                if not (run.locked and run.conn is not None and run.conn.alive) or stop.is_set():
                    continue
                if time.monotonic() - run.renewed < every:
                    continue
                run.renewed = time.monotonic()
                try:
                    result = run.conn.run(commands.lease(self.paths, self.token), timeout=run.host.ssh.connect_timeout)
                except Exception:       # a dead link is the next command's to report
                    continue
                if lease_lost(result) and run.locked:
                    self.out.line(run.name, "lock", result.tail())

    def _lock_all(self, artifact_sha: str | None = None, max_fail: int = 0) -> None:
        """Lock the first host alone (the tie-breaker between racing runs), then the rest in parallel."""
        def connect(r):
            if r.conn is None and not self.dry_run:
                self.connect(r)

        def lock(r):
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
            raise RunFailed(f"{self.action} failed before any change: {names(failures)}", self.runs)

    def tolerate(self, failures: dict, max_fail: int) -> bool:
        """Skip failed hosts when --max-fail allows it (their partial work is undone); else False."""
        skipped = [r for r in self.runs if r.result == "skipped"]
        if not failures or len(skipped) + len(failures) > max_fail or len(failures) >= len(self.active):
            return not failures
        for run in self.runs:
            if run.name in failures:
                run.result = "skipped"
                self.out.line(run.name, "SKIPPED", f"{run.error} (allowed by --max-fail {max_fail})")
        return True

    def must(self, step: str, fn, runs: list[HostRun] | None = None, *, failed: str = "", undo: bool = False) -> None:
        """fn on every host; any failure raises RunFailed "<failed> on <hosts>" (after abort, with undo)."""
        failures = self.fleet.each(step, fn, runs)
        if failures:
            if undo:
                self.abort()
            raise RunFailed(f"{failed or step + ' failed'} on {names(failures)}", self.runs)

    # -- undoing ------------------------------------------------------------------------------

    def abort(self, number: int | None = None, runs: list[HostRun] | None = None, result: str = "failed",
              error: str = "") -> None:
        """Remove this run's partial work, record the outcome and release the lock on every host it locked."""
        def undo(run: HostRun):
            if not run.locked:
                return
            line = self.ledger(run, run.result if run.result in ("skipped", "interrupted") else result,
                               release=number, error=run.error or error)
            self.run(run, "abort", commands.abort(self.paths, number, self.token, ledger=line), timeout=60)
            run.locked = False
        for run in runs or self.runs:
            if run.result == "pending":
                run.result = "aborted"
        with no_interrupts():
            self.fleet.cancel.clear()
            errors = self.fleet.each("abort", undo, [r for r in (runs or self.runs) if r.locked])
        for name, exc in errors.items():
            self.out.line(name, "abort", f"could not clean up: {exc} (the next run purges leftovers; "
                          f"the lock may need: {command_line('unlock --stage ' + self.stage.name + ' --yes')})")

    def interrupted(self, exc: BaseException, number: int | None = None,
                    undone: str = "partial work removed") -> "RunFailed":
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
        return RunFailed(f"{how} during {steps(self.runs)}; {undone}, locks released", self.runs,
                         signals.exit_code(exc))

    def raise_if_lease_lost(self) -> None:
        """After the undo: a run that lost its lock on some host says so rather than what it undid."""
        lost = [r.name for r in self.runs if LEASE_LOST_TEXT in r.error]
        if lost:
            raise RunFailed(f"this run lost the lock on {', '.join(lost)}: it stopped renewing its lease for "
                            f"lock_ttl ({self.stage.app.lock_ttl}s) and another run took the lock over; this run "
                            "changed nothing there after that", self.runs)

    def restore(self, runs: list[HostRun], number: int) -> list[HostRun]:
        """Put hosts that switched to `number` back on the release they had before."""
        def back(run: HostRun):
            if run.previous is None:
                script = commands.unswitch(self.paths, number)
            else:
                script = commands.switch(self.paths, run.previous, self.token)
            self.run(run, "restore", script, timeout=60)
            run.switched = False
            run.result = "restored"
            self.out.line(run.name, "restore", f"current -> {run.previous or 'none'} again")
        with no_interrupts():
            self.fleet.cancel.clear()
            failures = self.fleet.each("restore", back, runs)
        for name, exc in failures.items():
            self.out.line(name, "restore", f"FAILED to restore: {exc}")
        return [r for r in runs if r.name not in failures]

    def close(self) -> None:
        if self._renewing is not None:
            self._renewing.set()
        for run in self.runs:
            if run.conn is not None:
                run.conn.close()


LEASE_LOST_TEXT = "lost the lock"


def lease_lost(result: Result) -> bool:
    """The command stopped because this run's lock was taken over (commands.lease)."""
    return result.exit_code == commands.LEASE_LOST and LEASE_LOST_TEXT in result.stderr


def names(failures: dict) -> str:
    return ", ".join(sorted(failures))


def steps(runs: list[HostRun]) -> str:
    return ", ".join(f"{r.name} ({r.step})" for r in runs)
