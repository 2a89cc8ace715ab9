"""Rollback: switch back to an earlier complete release on every host. No upload, no extraction.

Every host's target is checked before anything switches. Releases between the target and current
that ran migrations make the rollback refuse unless --with-migrations (run the down command with
each such release's code, newest first, on the migrate host) or --ignore-migrations.
"""

from __future__ import annotations

from pathlib import Path

from deployer.config import envfile
from deployer.config.settings import Host, Stage
from deployer.engine import hooks, lease, signals, switchback
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.records import RolledBack
from deployer.engine.session import Session, names, no_interrupts
from deployer.errors import DeployerError, HookFailed, HostError, RunFailed
from deployer.plan import releases as planning
from deployer.remote import commands, user_command
from deployer.report.output import Output
from deployer.ssh.types import Cancelled

LIVE = "after_rollback"  # the step from which the rollback's target stays live


def rolling_back(run: HostRun) -> RolledBack:
    """The rollback's record of a host's switch (what the shared put-back reads and clears)."""
    return run.rollback_record


def _target(run: HostRun) -> int | str:
    target = run.rollback_record.target
    if target is None:
        raise HostError(run.name, "check", "no release to roll back to")
    return target


def _meta(run: HostRun, key: str) -> str:
    """What our release's metadata says (a foreign release has none)."""
    target = _target(run)
    release = host_state(run).release(target) if isinstance(target, int) else None
    return str(release.meta.get(key, "")) if release else ""


def migrated_between(run: HostRun) -> list[int]:
    """Releases above the target up to current that ran migrations, newest first."""
    st, target = host_state(run), _target(run)
    floor = 0 if isinstance(target, str) else target  # a foreign target is below all of ours
    return sorted((r.number for r in st.releases if r.migrated and floor < r.number <= (st.current or 0)), reverse=True)


def rollback(
    stage: Stage,
    hosts: tuple[Host, ...],
    out: Output,
    to: int | str | None = None,
    parallel: int = 10,
    migrations: str = "refuse",
    config_dir: Path = Path("."),
    lock_wait: float = 0.0,
) -> list[HostRun]:
    """migrations: refuse | run | ignore. lock_wait: seconds to wait for a live lock holder."""
    envfile.mask_readable(hosts, str(config_dir))
    with Session(stage, hosts, out, parallel, action="rollback", config_dir=config_dir, lock_wait=lock_wait) as session:
        for run in session.runs:
            run.rolled_back = RolledBack()
        ctx = hooks.HookContext(
            stage=stage.name,
            app=stage.app.name,
            deploy_to=stage.app.deploy_to,
            session=session,
            hosts=[h.name for h in hosts],
        )
        try:
            return _roll_back(session, ctx, to, migrations)
        except (KeyboardInterrupt, Cancelled) as exc:
            if ctx.step == LIVE:
                raise _kept_live(session, exc) from None
            with no_interrupts():
                undone = _restore(session, ctx, undo=False, why=f"interrupted ({signals.describe(exc)})")
                failed = session.interrupted(exc, undone=undone)
            raise failed from None
        except HookFailed as exc:
            session.abort()
            raise RunFailed(f"rollback stopped: {exc}", session.runs) from None


def _roll_back(session: Session, ctx: hooks.HookContext, to: int | str | None, migrations: str) -> list[HostRun]:
    lease.lock_all(session)

    def choose(run: HostRun) -> None:
        record = run.rollback_record
        record.previous = host_state(run).live
        try:
            record.target = planning.rollback_target(host_state(run), to)
        except DeployerError as exc:
            raise HostError(run.name, "check", str(exc)) from None

    failures = session.fleet.each("check", choose)
    if failures:
        session.abort()
        raise RunFailed(f"rollback refused, nothing changed: {names(failures)} cannot roll back", session.runs)

    ran = sorted({n for run in session.runs for n in migrated_between(run)}, reverse=True)
    if ran and migrations == "refuse":
        session.abort()
        raise RunFailed(
            f"rollback refused, nothing changed: release(s) {', '.join(map(str, ran))} ran "
            "migrations; pass --with-migrations to run the down migrations first, or "
            "--ignore-migrations",
            session.runs,
        )
    first = session.runs[0].rollback_record
    ctx.release, ctx.previous = first.target, first.previous
    _hooks(session, ctx, "before_rollback")
    if ran and migrations == "run":
        _down_migrations(session, ctx, ran)

    def switch(run: HostRun) -> None:
        record, target = run.rollback_record, _target(run)
        line = session.ledger(
            run,
            "ok",
            release=target,
            previous=record.previous,
            version=_meta(run, "version"),
            git_sha=_meta(run, "git_sha"),
            artifact_sha256=_meta(run, "artifact_sha256"),
        )
        script = commands.switch(
            session.paths, target, session.token, mark_rolled_back=record.previous, release_lock=True, ledger=line
        )
        switchback.switch(session, run, record, script)
        run.locked, run.result = False, "ok"
        session.out.line(run.name, "switch", f"current -> releases/{target} (was {record.previous})")

    failures = session.fleet.each("switch", switch)
    if failures:
        undone = _restore(session, ctx)
        lease.raise_if_lost(session)
        raise RunFailed(f"rollback switch failed on {names(failures)}; {undone}", session.runs)
    _restart(session, ctx)
    ctx.step = LIVE  # every host switched and restarted: from here a signal keeps the target live
    _hooks(session, ctx, "after_rollback")
    _notify(session, "rolled back", f"manual rollback to release {first.target}")
    return session.runs


def _kept_live(session: Session, exc: BaseException) -> RunFailed:
    """A signal during after_rollback: every host switched to the target (each recorded it and
    released its lock in its switch), so the target stays live everywhere, as after a deploy's
    finish (putting some hosts back would leave a mixed fleet). Exit 128 + the signal."""
    how = f"interrupted ({signals.describe(exc)})"
    target = session.runs[0].rollback_record.target
    with no_interrupts():
        session.fleet.cancel.clear()
        for run in session.runs:
            run.error = f"{how} during {LIVE}"
        _notify(session, "rolled back", f"manual rollback to release {target}; {how} during {LIVE}")
    return RunFailed(
        f"{how} during {LIVE}: the rollback's target (release {target}) is live on every host; "
        f"{LIVE} cut short; {session.locks_said()}",
        session.runs,
        signals.exit_code(exc),
    )


def _hooks(session: Session, ctx: hooks.HookContext, point: str) -> None:
    try:
        hooks.run_point(session, ctx, point, session.runs, lambda run: run.rollback_record.target)
    except HookFailed as exc:
        raise HookFailed(str(exc), point) from None


def _down_migrations(session: Session, ctx: hooks.HookContext, releases: list[int]) -> None:
    m = session.stage.pipeline.migrate
    if not m.rollback_command:
        raise HookFailed("--with-migrations needs [migrate] rollback_command")
    hosts = [r for r in session.runs if m.role in r.host.roles]
    if not hosts:
        raise HookFailed(f"no host with role {m.role!r} to run down migrations on")
    run = hosts[0]
    for number in releases:
        env = {
            **ctx.env(run.host),
            "DEPLOY_RELEASE": str(number),
            "DEPLOY_RELEASE_PATH": session.paths.release(number),
            "DEPLOY_ROLLBACK_TO": str(ctx.release),
        }
        session.run(
            run,
            "migrate",
            user_command.unmigrate(session.paths, number, m.rollback_command, env, session.stage.app.run_as),
        )
        session.out.line(run.name, "migrate", f"down migration of release {number} ran")


def _restart(session: Session, ctx: hooks.HookContext) -> None:
    r = session.stage.pipeline.restart
    command = r.command
    if not command:
        return
    switched = [run for run in session.runs if run.rollback_record.switched]

    def restart(run: HostRun) -> None:
        run.rollback_record.restarting = True
        session.in_release(
            run, "restart", run.rollback_record.target, command, ctx.env(run.host, run.rollback_record.previous)
        )

    failures = session.fleet.each("restart", restart, hooks.with_roles(r.roles, switched))
    for name, exc in failures.items():
        session.out.line(name, "restart", f"FAILED after rollback: {exc}")


def _restore(session: Session, ctx: hooks.HookContext, undo: bool = True, why: str = "") -> str:
    """Put hosts a failed rollback already switched (or may have: in doubt) back where they were,
    restart those whose restart in the target had gone out (nothing else runs between the switch
    and the restart), then abort (with undo). Their switch released their lock, so the put-back
    is not fenced and is recorded in its ledger (`why`: the interruption, recorded as such).
    Returns what it did, for the last line."""

    def line(run: HostRun) -> str:
        record = run.rollback_record
        return session.ledger(
            run,
            "interrupted" if why else "failed",
            release=record.previous,
            previous=record.target,
            error=f"{why}: put back on release {record.previous}"
            if why
            else f"put back on release {record.previous}: the rollback failed",
        )

    outcome = switchback.put_back(
        session,
        ctx,
        switchback.switched(session.runs, rolling_back),
        record=rolling_back,
        left=_target,
        restart=lambda run: run.rollback_record.restarting,
        ledger=line,
    )
    if undo:
        session.abort()
    if outcome.stranded:
        return (
            f"{', '.join(outcome.stranded)} could not be put back and may still be on the rollback's target; "
            "every other host is on the release it had"
        )
    return "switched hosts put back" if outcome.done else "hosts left as they were"


def _notify(session: Session, event: str, error: str = "") -> None:
    switchback.notify(session, event, release=session.runs[0].rollback_record.target, error=error)
