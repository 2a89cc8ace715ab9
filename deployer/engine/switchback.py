"""Switching a host and putting it back, shared by deploy and rollback (as Capistrano's rollback
reuses its deploy's symlink step): one switch, one put-back, one restart-back, one notification.

A switch whose answer never came leaves its host in doubt. The put-back is a conditional switch
to the release the host had (or, with none, `current` removed), only where current still points
where this run switched it: an in-doubt host whose switch never happened is left as it is. The
hosts put back that may run the switched-to code are restarted again in the release they are
back on. A signal does not cut any of it short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from deployer.engine import hooks
from deployer.engine.fleet import HostRun
from deployer.engine.session import Session, no_interrupts, who
from deployer.errors import HostError
from deployer.remote import commands
from deployer.remote import lock as remote_lock
from deployer.report import notify as notifications
from deployer.ssh.types import Result

Release = int | str  # str: a foreign release (another tool's directory)


class Switching(Protocol):
    """What a flow records of one host's switch (records.Deployed, records.RolledBack)."""

    previous: Release | None
    switched: bool
    in_doubt: bool


@dataclass
class PutBack:
    """The hosts put back, and those that could not be reached (maybe still switched)."""

    done: list[HostRun] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)


def switch(session: Session, run: HostRun, record: Switching, script: str, timeout: float | None = 60) -> Result:
    """One host's switch: in doubt from the moment it goes out (a signal or a lost link may cut
    the answer off after the rename) until its answer says it switched."""
    record.in_doubt = True
    result = session.run(run, "switch", script, timeout=timeout)
    record.switched, record.in_doubt = True, False
    return result


def switched(runs: list[HostRun], record: Callable[[HostRun], Switching]) -> list[HostRun]:
    """Hosts switched, or maybe (their switch's answer never came)."""
    return [r for r in runs if record(r).switched or record(r).in_doubt]


def put_back(
    session: Session,
    ctx: hooks.HookContext,
    runs: list[HostRun],
    *,
    record: Callable[[HostRun], Switching],
    left: Callable[[HostRun], Release],
    restart: Callable[[HostRun], bool],
    ledger: Callable[[HostRun], str] | None = None,
) -> PutBack:
    """Put `runs` back on the release each had, from `left(run)` (where this run switched it),
    then run the restart again where `restart(run)` says it may run the left release's code.

    `ledger`: the switch released the host's lock (a rollback's does), so the put-back is not
    fenced, records itself with that line and releases the lock if this run still holds it."""
    paths = session.paths
    outcome = PutBack()

    def back(run: HostRun) -> None:
        rec, gone_from = record(run), left(run)
        only_from = paths.release_target(cast(int, gone_from))  # a foreign name makes its path the same way
        if rec.previous is not None:
            line = ledger(run) if ledger else None
            script = commands.switch(
                paths, rec.previous, session.token, only_from=only_from, ledger=line, release_lock=bool(ledger)
            )
        elif ledger is None:
            script = commands.unswitch(paths, cast(int, gone_from))
        else:  # the put-back could neither record itself nor release the lock
            raise HostError(run.name, "restore", f"no release was live here before the {session.action}")
        if ledger is not None:  # the switch may have released the lock already
            result = session.run(run, "restore", remote_lock.unleased(script), timeout=60, leased=False)
        else:
            result = session.run(run, "restore", script, timeout=60)
        doubted, rec.switched, rec.in_doubt = rec.in_doubt, False, False
        if commands.unchanged(result.stdout):  # never switched here: the lock, if held, is for the abort
            if not doubted:
                session.out.line(run.name, "restore", "current had been changed by someone else: left as it is")
            return
        if ledger is not None:
            run.locked = False
        run.result = "restored"
        outcome.done.append(run)
        session.out.line(run.name, "restore", f"current -> {rec.previous or 'none'} again")

    with no_interrupts():
        session.fleet.cancel.clear()
        failures = session.fleet.each("restore", back, runs)
        for name, exc in failures.items():
            session.out.line(name, "restore", f"FAILED to restore: {exc}")
        outcome.stranded = sorted(failures)
        again = [r for r in outcome.done if record(r).previous is not None and restart(r)]
        _restart_back(session, ctx, again, record, left)
    return outcome


def _restart_back(
    session: Session,
    ctx: hooks.HookContext,
    runs: list[HostRun],
    record: Callable[[HostRun], Switching],
    left: Callable[[HostRun], Release],
) -> None:
    """The restart again, in the release each host was put back on (its code and its env); a
    failure is said per host, never raised: the put-back itself is done."""
    r = session.stage.pipeline.restart
    chosen = hooks.with_roles(r.roles, runs)
    if not (r.command and chosen):
        return

    def one(run: HostRun) -> None:
        back = cast(Release, record(run).previous)  # a host put back had one
        env = {
            **ctx.env(run.host, left(run)),
            "DEPLOY_RELEASE": str(back),
            "DEPLOY_RELEASE_PATH": session.paths.release(back),
        }
        session.in_release(run, "restart", back, r.command, env)
        session.out.line(run.name, "restart", f"ok (release {back}, put back)")

    for name, exc in session.fleet.each("restart", one, chosen, undo=True).items():
        session.out.line(name, "restart", f"FAILED after the put-back: {exc}")


def notify(
    session: Session,
    event: str,
    *,
    release: Release | None,
    error: str = "",
    version: str = "",
    git_sha: str | None = None,
) -> None:
    """The run's notification (`[notify]`): the same fields for a deploy and a rollback; a dry
    run says it instead of sending it."""
    settings = session.stage.pipeline.notify
    if not (settings.webhooks or settings.command):
        return
    data = {
        "action": session.action,
        "app": session.stage.app.name,
        "stage": session.stage.name,
        "version": version,
        "git_sha": git_sha,
        "release": release,
        "hosts": [r.name for r in session.runs],
        "by": who(),
        "error": error,
        "failed_hosts": [r.name for r in session.runs if r.result in ("failed", "skipped")],
    }
    session.locally(
        f"--- notify · {event} → {len(settings.webhooks)} webhook(s){' + command' if settings.command else ''}",
        lambda: notifications.send(settings, event, data),
    )
