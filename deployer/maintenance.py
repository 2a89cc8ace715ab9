"""Read-only and maintenance flows: inspect (status, releases, check), cleanup, unlock."""

from __future__ import annotations

from . import commands, planning
from . import state as host_state
from .config import Host, Stage
from .fleet import HostRun
from .output import Output
from .session import RunFailed, Session, names


def inspect(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Every host's state, read-only: one remote command per host."""
    session = Session(stage, hosts, out, parallel, action="status")
    try:
        session.fleet.each("inspect", lambda r: session.inspect(r, lock=False))
        for run in session.runs:
            if run.state is not None and run.result == "pending":
                run.result = "ok"
        return session.runs
    finally:
        session.close()


def cleanup(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Remove old, failed and leftover releases under the lock."""
    session = Session(stage, hosts, out, parallel, action="cleanup")
    try:
        session.lock_all()

        def clean(run: HostRun):
            current = run.state.current
            release = run.state.release(current)
            previous = release.meta.get("previous") if release else None
            doomed = planning.cleanup(run.state, stage.app.keep_releases, current,
                                      previous if isinstance(previous, int) else None)
            keep = planning.kept_artifacts(run.state, doomed)
            line = session.ledger(run, "ok", release=current, cleaned=doomed)
            session.run(run, "cleanup", commands.finish(session.paths, session.token, delete=doomed,
                                                        keep_artifacts=keep, ledger=line))
            run.locked, run.result = False, "ok"
            out.line(run.name, "cleanup", f"removed {', '.join(doomed)}" if doomed else "nothing to remove")

        failures = session.fleet.each("cleanup", clean)
        if failures:
            session.abort()
            raise RunFailed(f"cleanup failed on {names(failures)}", session.runs)
        return session.runs
    finally:
        session.close()


def unlock(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Remove the lock by force, printing who held it."""
    session = Session(stage, hosts, out, parallel, action="unlock")

    def force(run: HostRun):
        result = session.run(run, "unlock", commands.unlock(session.paths, ledger=session.ledger(run, "ok")))
        held = [line.split("\t", 1)[1] for line in result.stdout.splitlines() if line.startswith("removed\t")]
        run.result = "ok"
        out.line(run.name, "unlock", f"removed lock held by {host_state.LockInfo.parse(held[0]).describe()}"
                 if held else "no lock")

    try:
        failures = session.fleet.each("unlock", force)
        if failures:
            raise RunFailed(f"unlock failed on {names(failures)}", session.runs)
        return session.runs
    finally:
        session.close()
