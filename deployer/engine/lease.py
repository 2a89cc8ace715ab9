"""The lock protocol: a lease with a fencing token on every host of a run.

The first host is locked alone (the tie-breaker between racing runs), the rest in parallel; the
lock is taken in the same command that reads the host's state. Once held, the lease is renewed in
the background whenever no command renewed it lately (backend.keep_leases), and every command of
the run carries the token: a run whose lock was taken over changes nothing after (fencing).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

from deployer.engine.backend import LEASE_LOST_TEXT
from deployer.engine.fleet import HostRun, message
from deployer.engine.session import Session, utc_now, who
from deployer.errors import HostError, LockHeld, RunFailed, command_line
from deployer.plan import setup as setup_plan
from deployer.remote import lock as remote_lock
from deployer.remote import state as host_state
from deployer.report import ledger
from deployer.report.output import safe

FUTURE_BEAT = ", its heartbeat is in the future (host clock stepped back?)"


def inspect(session: Session, run: HostRun, *, lock: bool, artifact_sha: str | None = None, sudo: bool = False) -> None:
    """Read the host's state; with lock, take the lock in the same command. With sudo, also
    which of the sudo commands a deploy needs (see plan/setup.py) the user may not run. Always,
    the files `deployer setup` wrote that now differ from what it writes (setup_drift): a deploy
    or rollback warns and leaves them; `status` shows them; `check` fails."""
    # free space matters to a deploy (it names its artifact) and to `check`, not to a rollback
    space = artifact_sha is not None or not lock
    tools = artifact_sha is not None or sudo  # what a deploy runs: a deploy and `check` probe it
    ttl = session.stage.app.lock_ttl
    app = session.stage.app
    probe = sudo and setup_plan.has_unit(app.recipe)
    setup_paths = tuple(f.path for f in _setup_files(session, run, "-"))  # drift: every reader shows it
    read = remote_lock.inspect(
        session.paths,
        lock_token=session.token,
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
                "stage": session.stage.name,
                "action": session.action,
                "started": utc_now(),
            }
        )
        script = remote_lock.inspect(
            session.paths,
            lock_info=info,
            lock_token=session.token,
            artifact_sha=artifact_sha,
            free_space=space,
            tools=tools,
            lock_ttl=ttl,
            takeover_ledger=takeover_line(session, run),
            env_file=session.stage.app.env_file,
            setup_paths=setup_paths,
        )
        run.lock_in_doubt = True  # until its answer: a signal or a lost link may cut it off
        result = session.backend.run(run, "lock", script, reads=read)
    else:
        result = session.run(run, "inspect", read)
    state = host_state.parse(result.stdout, session.paths.deploy_to)
    if state.setup_files:
        drift = setup_plan.drift(_setup_files(session, run, state.user), dict(state.setup_files))
        state = replace(state, setup_drift=drift)
        for path in drift if lock else ():
            session.out.line(run.name, "check", f"{setup_plan.drift_note(path)}: left as it is")
    run.state = state
    run.locked, run.lock_in_doubt = state.lock_acquired, False
    if run.locked:
        run.renewed = time.monotonic()
    future = FUTURE_BEAT if state.lock_future else ""
    if state.took_over:
        quiet_for, stale = state.took_over
        session.out.line(
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
            f"{run.name}: {session.paths.lock} is held by {holder}{lease}; if that run is gone, "
            f"clear it with: {command_line('unlock --stage ' + session.stage.name + ' --yes')}"
        )
    problem = state.current_problem() if lock else None
    if problem:
        raise HostError(run.name, "check", problem)


def _setup_files(session: Session, run: HostRun, user: str) -> tuple[setup_plan.File, ...]:
    """The files `deployer setup` writes on this host for this deploy user that a deploy user
    can read back (their paths do not depend on the user)."""
    app = session.stage.app
    host = setup_plan.plan(app.name, app.recipe, app.deploy_to, app.shared_dirs, user, run.host.roles)
    return host.readable


def takeover_line(session: Session, run: HostRun) -> str:
    """The ledger line a takeover appends; the host puts the stale holder in place of the mark."""
    return ledger.entry(
        "takeover",
        session.stage.name,
        "ok",
        who=who(),
        host=run.name,
        run=session.action,
        lock_ttl=session.stage.app.lock_ttl,
        stale="@@stale@@",
    )


def lock_all(session: Session, artifact_sha: str | None = None, max_fail: int = 0) -> None:
    """Take the lock on every host; with lock_wait, a live holder is waited for (said once,
    then the lock is tried again every second), else LockHeld at once. Once held, the lease
    is renewed in the background whenever no command renewed it lately (backend.keep_leases)."""
    deadline = time.monotonic() + session.lock_wait
    waiting = False
    while True:
        try:
            _lock_all(session, artifact_sha, max_fail)
            break
        except LockHeld as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if waiting:
                    raise LockHeld(f"{exc} (still held after waiting {session.lock_wait:g}s)") from None
                raise
            if not waiting:
                session.out.say(f"waiting up to {session.lock_wait:g}s for the lock: {exc}")
                waiting = True
            for run in session.runs:
                run.result, run.step, run.error, run.state = "pending", "pending", "", None
            time.sleep(min(1.0, left))
    session.renewing = session.backend.keep_leases(session.runs, session.stage.app.lock_ttl)


def _lock_all(session: Session, artifact_sha: str | None = None, max_fail: int = 0) -> None:
    """Lock the first host alone (the tie-breaker between racing runs), then the rest in parallel."""

    def connect(r: HostRun) -> None:
        if r.conn is None:
            session.connect(r)

    def lock(r: HostRun) -> None:
        inspect(session, r, lock=True, artifact_sha=artifact_sha)

    # connecting is not locking: all hosts connect at once, only the lock mkdirs are ordered
    failures = session.fleet.each("lock", connect)
    ready = [r for r in session.runs if r.name not in failures]
    first, rest = ready[:1], ready[1:]
    failures.update(session.fleet.each("lock", lock, first))
    if not failures or (len(failures) <= max_fail and first and first[0].locked):
        failures.update(session.fleet.each("lock", lock, rest))
    held = [e for e in failures.values() if isinstance(e, LockHeld)]
    if held or (failures and not session.tolerate(failures, max_fail)):
        session.abort()
        if held:
            raise LockHeld(str(held[0]))
        raise RunFailed(f"{session.action} failed before any change: {reasons(failures)}", session.runs)


def raise_if_lost(session: Session) -> None:
    """After the undo: a run that lost its lock on some host says so rather than what it undid."""
    lost = [r.name for r in session.runs if LEASE_LOST_TEXT in r.error]
    if lost:
        raise RunFailed(
            f"this run lost the lock on {', '.join(lost)}: it stopped renewing its lease for "
            f"lock_ttl ({session.stage.app.lock_ttl}s) and another run took the lock over; this run "
            "changed nothing there after that",
            session.runs,
        )


def reasons(failures: dict[str, BaseException]) -> str:
    """Each failed host with what went wrong there, on one line (masked, escaped)."""
    return "; ".join(f"{name}: {safe(message(exc))}" for name, exc in sorted(failures.items()))
