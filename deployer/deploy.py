"""The release flows: deploy, rollback, cleanup, status, unlock.

Deploy reads top to bottom as its fixed steps:
    connect+lock → check → prepare (upload, verify, extract, link) → switch (all or none) → finish
Any failure before the switch aborts every host (partials removed, locks released); a failed
switch puts the switched hosts back. Ctrl-C aborts the same way and exits 130.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import commands, planning
from . import state as host_state
from .config import Host, Stage
from .errors import DeployerError, HostError, Interrupted, LockHeld
from .fleet import Fleet, HostRun
from .output import Output, UploadProgress
from .paths import Paths
from .transport import Cancelled, Connection, TransportError


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunFailed(DeployerError):
    """A multi-host run failed; carries every host's row for the report."""

    def __init__(self, message: str, runs: list[HostRun], exit_code: int = 1):
        super().__init__(message)
        self.runs = runs
        self.exit_code = exit_code


@dataclass
class Session:
    """One run against a stage's hosts: connections, lock token, per-host records."""

    stage: Stage
    hosts: tuple[Host, ...]
    out: Output
    parallel: int = 10
    action: str = "deploy"
    token: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self):
        self.paths = Paths(self.stage.app.deploy_to)
        self.runs = [HostRun(h) for h in self.hosts]
        self.fleet = Fleet(self.runs, self.parallel)

    # -- connecting and locking ---------------------------------------------------------------

    def connect(self, run: HostRun) -> None:
        try:
            run.conn = Connection(run.host).open()
        except TransportError as exc:
            raise HostError(run.name, "connect", str(exc)) from None

    def run(self, run: HostRun, step: str, script: str, **kwargs):
        try:
            result = run.conn.run(script, cancel=self.fleet.cancel, **kwargs)
        except Cancelled:
            raise
        except TransportError as exc:
            raise HostError(run.name, step, str(exc)) from None
        if not result.ok:
            raise HostError(run.name, step, result.tail())
        return result

    def inspect(self, run: HostRun, *, lock: bool, artifact_sha: str | None = None) -> None:
        if run.conn is None:
            self.connect(run)
        info = json.dumps({"who": who(), "pid": os.getpid(), "stage": self.stage.name, "action": self.action,
                           "started": utc_now()}) if lock else None
        script = commands.inspect(self.paths, lock_info=info, lock_token=self.token, artifact_sha=artifact_sha)
        result = self.run(run, "lock" if lock else "inspect", script)
        run.state = host_state.parse(result.stdout)
        run.locked = run.state.lock_acquired
        if lock and not run.locked:
            holder = run.state.lock.describe() if run.state.lock else "unknown holder"
            raise LockHeld(f"{run.name}: {self.paths.lock} is held by {holder}; if that run is gone, "
                           f"clear it with: inv unlock --stage {self.stage.name} --yes")
        if run.state.current_problem() and lock:
            raise HostError(run.name, "check", run.state.current_problem())

    def lock_all(self, artifact_sha: str | None = None) -> None:
        """Lock the first host alone (the tie-breaker between racing runs), then the rest in parallel."""
        first, rest = self.runs[:1], self.runs[1:]
        failures = self.fleet.each("lock", lambda r: self.inspect(r, lock=True, artifact_sha=artifact_sha), first)
        if not failures:
            failures = self.fleet.each("lock", lambda r: self.inspect(r, lock=True, artifact_sha=artifact_sha), rest)
        if failures:
            self.abort()
            held = [e for e in failures.values() if isinstance(e, LockHeld)]
            if held:
                raise LockHeld(str(held[0]))
            raise RunFailed(f"{self.action} failed before any change: {_names(failures)}", self.runs)

    def inspect_all(self) -> dict[str, BaseException]:
        return self.fleet.each("inspect", lambda r: self.inspect(r, lock=False))

    # -- undoing ------------------------------------------------------------------------------

    def abort(self, number: int | None = None) -> None:
        """Remove this run's partial work and release its locks on every host it locked."""
        def undo(run: HostRun):
            if not run.locked:
                return
            if run.conn is None or not run.conn.alive:
                self.connect(run)
            run.conn.run(commands.abort(self.paths, number, self.token), timeout=60)
            run.locked = False
        with _no_interrupts():
            self.fleet.cancel.clear()
            errors = self.fleet.each("abort", undo, [r for r in self.runs if r.locked])
        for name, exc in errors.items():
            self.out.line(name, "abort", f"could not clean up: {exc} (the next run purges leftovers; "
                          f"the lock may need: inv unlock --stage {self.stage.name} --yes)")

    def restore(self, runs: list[HostRun], number: int) -> None:
        """Put hosts that switched to `number` back on the release they had before."""
        def back(run: HostRun):
            if run.conn is None or not run.conn.alive:
                self.connect(run)
            if run.previous is None:
                script = commands.unswitch(self.paths, number)
            else:
                script = commands.switch(self.paths, run.previous, self.token)
            self.run(run, "restore", script, timeout=60)
            run.switched = False
            run.result = "restored"
            self.out.line(run.name, "restore", f"current -> {run.previous or 'none'} again")
        with _no_interrupts():
            self.fleet.cancel.clear()
            failures = self.fleet.each("restore", back, runs)
        for name, exc in failures.items():
            self.out.line(name, "restore", f"FAILED to restore: {exc}")

    def close(self) -> None:
        for run in self.runs:
            if run.conn is not None:
                run.conn.close()


@contextmanager
def _no_interrupts():
    """Cleanup must finish: a second Ctrl-C during it is ignored (it is bounded by timeouts)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:          # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _names(failures: dict) -> str:
    return ", ".join(sorted(failures))


def _release_json(session: Session, run: HostRun, number: int, artifact) -> str:
    meta = {
        "release": number,
        "app": session.stage.app.name,
        "stage": session.stage.name,
        "version": artifact.version,
        "git_sha": artifact.git_sha,
        "artifact_sha256": artifact.sha256,
        "deployed_by": who(),
        "deployed_at": utc_now(),
        "previous": run.previous,
        "deploy_id": session.token,
    }
    return json.dumps(meta, sort_keys=True)


def _check_host(run: HostRun, artifact) -> None:
    state = run.state
    if state.missing_tools:
        raise HostError(run.name, "check", f"missing tools on host: {', '.join(state.missing_tools)}")
    need = int((artifact.meta.get("unpacked_size") or 3 * artifact.size) * 1.1)
    if not state.cached:
        need += artifact.size
    if state.free_kb is not None and state.free_kb * 1024 < need:
        raise HostError(run.name, "check", f"not enough free disk: need {need // 1024} KB, have {state.free_kb} KB")


# -- deploy -------------------------------------------------------------------------------------

def deploy(stage: Stage, hosts: tuple[Host, ...], artifact, out: Output, parallel: int = 10) -> list[HostRun]:
    """Deploy one artifact to the hosts; returns every host's record, or raises RunFailed."""
    session = Session(stage, hosts, out, parallel, action="deploy")
    number = None
    try:
        session.lock_all(artifact.sha256)
        for run in session.runs:
            run.previous = run.state.current
        failures = session.fleet.each("check", lambda r: _check_host(r, artifact))
        if failures:
            session.abort()
            raise RunFailed(f"deploy aborted, nothing changed: {_names(failures)} failed checks", session.runs)
        number = planning.next_release_number({r.name: r.state for r in session.runs})
        out.say(f"release {number}: {artifact.version} ({artifact.sha256[:12]}) to {len(hosts)} host(s)")

        def prepare(run: HostRun):
            upload = not run.state.cached
            script = commands.prepare(session.paths, number, session.token, artifact.sha256, upload=upload,
                                      release_json=_release_json(session, run, number, artifact),
                                      shared_dirs=stage.app.shared_dirs, shared_files=stage.app.shared_files)
            if upload:
                progress = UploadProgress(out, run.name, artifact.size)
                with open(artifact.path, "rb") as fh:
                    session.run(run, "prepare", script, stdin=fh, progress=progress)
                out.line(run.name, "prepare", f"{progress.done()}; release {number} ready")
            else:
                session.run(run, "prepare", script)
                out.line(run.name, "prepare", f"artifact already on host, release {number} ready")

        failures = session.fleet.each("prepare", prepare)
        if failures:
            session.abort(number)
            raise RunFailed(f"deploy aborted before any switch: {_names(failures)} failed to prepare; "
                            "no host switched, partial releases removed", session.runs)

        def switch(run: HostRun):
            session.run(run, "switch", commands.switch(session.paths, number, session.token), timeout=60)
            run.switched = True
            out.line(run.name, "switch", f"current -> releases/{number}")

        failures = session.fleet.each("switch", switch)
        if failures:
            session.restore([r for r in session.runs if r.switched], number)
            session.abort(number)
            raise RunFailed(f"switch failed on {_names(failures)}; switched hosts put back on their previous "
                            "release", session.runs)

        def finish(run: HostRun):
            doomed = planning.cleanup(run.state, stage.app.keep_releases, number, run.previous)
            keep = planning.kept_artifacts(run.state, doomed, artifact.sha256)
            session.run(run, "finish", commands.finish(session.paths, session.token, delete=doomed, keep_artifacts=keep))
            run.locked = False
            run.result = "ok"
            if doomed:
                out.line(run.name, "finish", f"cleaned up {', '.join(doomed)}")

        failures = session.fleet.each("finish", finish)
        if failures:
            session.abort()
            raise RunFailed(f"release {number} is live everywhere, but cleanup failed on {_names(failures)}",
                            session.runs)
        for run in session.runs:
            run.target = number
        return session.runs
    except (KeyboardInterrupt, Cancelled):
        session.fleet.cancel.set()
        switched = [r for r in session.runs if r.switched]
        if switched and number is not None:
            session.restore(switched, number)
        session.abort(number)
        for run in session.runs:
            if run.result == "pending" or run.result == "failed":
                run.result = "interrupted"
        raise RunFailed(f"interrupted during {_steps(session.runs)}; no host left switched to the new "
                        f"release, partial work removed, locks released", session.runs, Interrupted.exit_code) from None
    finally:
        session.close()


def _steps(runs: list[HostRun]) -> str:
    return ", ".join(f"{r.name} ({r.step})" for r in runs)


# -- rollback -----------------------------------------------------------------------------------

def rollback(stage: Stage, hosts: tuple[Host, ...], out: Output, to: int | None = None,
             parallel: int = 10) -> list[HostRun]:
    """Switch back to an earlier complete release on every host: verify all first, then switch."""
    session = Session(stage, hosts, out, parallel, action="rollback")
    try:
        session.lock_all()

        def choose(run: HostRun):
            run.previous = run.state.current
            try:
                run.target = planning.rollback_target(run.state, to)
            except DeployerError as exc:
                raise HostError(run.name, "check", str(exc)) from None

        failures = session.fleet.each("check", choose)
        if failures:
            session.abort()
            raise RunFailed(f"rollback refused, nothing changed: {_names(failures)} cannot roll back", session.runs)

        def switch(run: HostRun):
            script = commands.switch(session.paths, run.target, session.token,
                                     mark_rolled_back=run.previous, release_lock=True)
            session.run(run, "switch", script, timeout=60)
            run.switched, run.locked, run.result = True, False, "ok"
            out.line(run.name, "switch", f"current -> releases/{run.target} (was {run.previous})")

        failures = session.fleet.each("switch", switch)
        if failures:
            _restore_rollback(session)
            raise RunFailed(f"rollback switch failed on {_names(failures)}; switched hosts put back", session.runs)
        return session.runs
    except (KeyboardInterrupt, Cancelled):
        _restore_rollback(session)
        raise RunFailed("rollback interrupted; hosts left as they were", session.runs, Interrupted.exit_code) from None
    finally:
        session.close()


def _restore_rollback(session: Session) -> None:
    switched = [r for r in session.runs if r.switched]
    for run in switched:
        run.locked = True       # the switch released it; abort re-checks the token harmlessly
    if switched:
        with _no_interrupts():
            session.fleet.cancel.clear()
            session.fleet.each("restore", lambda r: session.run(
                r, "restore", commands.switch(session.paths, r.previous, session.token), timeout=60), switched)
    session.abort()


# -- read-only and maintenance ------------------------------------------------------------------

def inspect(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Every host's state, read-only (status, releases, check)."""
    session = Session(stage, hosts, out, parallel, action="status")
    try:
        session.inspect_all()
        for run in session.runs:
            if run.state is not None and run.result == "pending":
                run.result = "ok"
        return session.runs
    finally:
        session.close()


def cleanup(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    session = Session(stage, hosts, out, parallel, action="cleanup")
    try:
        session.lock_all()

        def clean(run: HostRun):
            current = run.state.current
            previous = (run.state.release(current).meta.get("previous") if run.state.release(current) else None)
            doomed = planning.cleanup(run.state, stage.app.keep_releases, current,
                                      previous if isinstance(previous, int) else None)
            keep = planning.kept_artifacts(run.state, doomed)
            session.run(run, "cleanup", commands.finish(session.paths, session.token, delete=doomed, keep_artifacts=keep))
            run.locked, run.result = False, "ok"
            out.line(run.name, "cleanup", f"removed {', '.join(doomed)}" if doomed else "nothing to remove")

        failures = session.fleet.each("cleanup", clean)
        if failures:
            session.abort()
            raise RunFailed(f"cleanup failed on {_names(failures)}", session.runs)
        return session.runs
    finally:
        session.close()


def unlock(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Remove the lock by force, printing who held it."""
    session = Session(stage, hosts, out, parallel, action="unlock")

    def force(run: HostRun):
        session.connect(run)
        result = session.run(run, "unlock", commands.unlock(session.paths))
        held = [line.split("\t", 1)[1] for line in result.stdout.splitlines() if line.startswith("removed\t")]
        run.result = "ok"
        run.error = ""
        out.line(run.name, "unlock", f"removed lock held by {host_state.LockInfo.parse(held[0]).describe()}"
                 if held else "no lock")

    try:
        failures = session.fleet.each("unlock", force)
        if failures:
            raise RunFailed(f"unlock failed on {_names(failures)}", session.runs)
        return session.runs
    finally:
        session.close()
