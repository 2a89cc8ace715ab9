"""The deploy's last step on one host: old releases and cached artifacts removed, the outcome
recorded in the ledger, the lock released (one command, or riding on the switch's)."""

from __future__ import annotations

from deployer.artifact.load import Artifact
from deployer.config.settings import PipelineSettings
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.session import Session
from deployer.errors import HostError
from deployer.plan import releases as planning
from deployer.remote import commands, lock


def doomed(session: Session, run: HostRun, number: int | None) -> list[str]:
    """The releases the finish removes on this host."""
    return planning.cleanup(host_state(run), session.stage.app.keep_releases, number, run.deploy_record.previous)


def script(
    session: Session, run: HostRun, number: int, artifact: Artifact, pipeline: PipelineSettings, env_sha256: str | None
) -> str:
    removed = doomed(session, run, number)
    keep = planning.kept_artifacts(host_state(run), removed, artifact.sha256)
    # the deploy is recorded ok whatever its cleanup does (the release is live and passed its
    # checks: the promotion gate must see it); a failed cleanup gets a line of its own
    done = done_line(session, run, number, pipeline, env_sha256, removed)
    failed = session.ledger(
        run,
        "failed",
        action="cleanup",
        release=number,
        error=f"cleanup after the deploy failed (could not remove {', '.join(removed) or 'cache entries'})",
    )
    return commands.finish(session.paths, session.token, delete=removed, keep_artifacts=keep, done=done, failed=failed)


def done_line(
    session: Session,
    run: HostRun,
    number: int,
    pipeline: PipelineSettings,
    env_sha256: str | None,
    removed: list[str],
) -> str:
    """The deploy's ledger line on this host: ok, with the checks it passed and what it removed."""
    checks = [name for name, on in (("smoke", pipeline.smoke), ("verify", pipeline.verify.enabled)) if on]
    env = {"env_sha256": env_sha256} if env_sha256 is not None else {}
    return session.ledger(
        run, "ok", release=number, previous=run.deploy_record.previous, checks=checks, cleaned=removed, **env
    )


def cut_short(session: Session, run: HostRun, number: int, done: str, why: str, result: str = "interrupted") -> bool:
    """Something stopped the finish here (a signal, a failed hook, a lost link), the release live:
    record the deploy (unless its finish did), a `cleanup` line (`result`) saying why, release the
    lock. Unleased: a finish whose answer was cut off may have released the lock already; then
    there is nothing to add (False)."""
    line = session.ledger(
        run, result, action="cleanup", release=number, error=f"{why}: cleanup cut short, release {number} live"
    )
    script = lock.unleased(commands.finish_cut(session.paths, session.token, done=done, ledger=line))
    finished = session.run(run, "finish", script, timeout=60, leased=False)
    run.locked = False
    return finished.field("finished") is None


def finish(session: Session, run: HostRun, number: int, finish_script: str | None) -> None:
    """Run the finish (unless it rode on the switch) and say what it removed."""
    result = run.deploy_record.finished
    if result is None:
        assert finish_script is not None
        result = session.run(run, "finish", finish_script)
    elif result.field("finished") != "0":
        raise HostError(run.name, "finish", result.tail())
    run.locked = False
    if result.field(commands.CLEANUP_FAILED) is not None:  # recorded and unlocked by the script
        raise HostError(run.name, "finish", f"cleanup failed: {result.tail()}")
    run.result = "ok"
    removed = doomed(session, run, number)
    if removed:
        session.out.line(run.name, "finish", f"cleaned up {', '.join(removed)}")
