"""The deploy's last step: on each host old releases and cached artifacts removed, the outcome
recorded in the ledger, the lock released (one command, or riding on the switch's); on the
fleet, the finish's hooks, and what a failure or a signal during it leaves (the release live)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.artifact.load import Artifact
from deployer.config.settings import PipelineSettings
from deployer.engine import signals
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.session import Session, names, no_interrupts
from deployer.errors import DeployerError, HookFailed, HostError, RunFailed
from deployer.plan import releases as planning
from deployer.plan.batches import Batch
from deployer.remote import commands, lock
from deployer.remote import state as state_parser
from deployer.ssh.types import Cancelled

if TYPE_CHECKING:  # the pipeline runs the finish; the finish reads the pipeline's run
    from deployer.engine.deploy import Pipeline


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


class Finish:
    """The deploy's finish on every host (cleanup and unlock), the release live by then: a failure
    or a signal here is reported and recorded, never rolled back."""

    def __init__(self, deploy: Pipeline):
        self.deploy = deploy
        self.rode = False  # the finish rode on the switch (one host, nothing between them)

    def everywhere(self) -> None:
        """before_finish hooks → the finish on every host → after_finish hooks; a failure (a hook's,
        a Python hook's own error with its exit code, or anything unforeseen, before its
        traceback) is reported, never rolled back."""
        d, s = self.deploy, self.deploy.session
        try:
            d.hooks("before_finish", s.active)
            failures = s.fleet.each("finish", self.on_host, s.active)
            if failures:
                raise HookFailed(f"cleanup failed on {names(failures)}", "finish")
            d.hooks("after_finish", s.active)
        except (RunFailed, Cancelled):
            raise
        except DeployerError as exc:
            self.apart(str(exc))
            raise RunFailed(
                f"release {d.number} is live everywhere, but {exc}; {s.locks_said()}", s.runs, exc.exit_code
            ) from None
        except Exception as exc:
            self.apart(f"unexpected error: {type(exc).__name__}")
            raise

    def apart(self, why: str) -> None:
        """The finish failed (a hook, a lost link) with the release live on every host, as a failed
        cleanup does: each host whose finish did not complete records the deploy `ok` and a failed
        `cleanup` line, and releases its lock; every host's record names the release."""
        d, s = self.deploy, self.deploy.session

        def record(run: HostRun) -> None:
            if cut_short(s, run, d.release, self.done(run), why, result="failed"):
                if run.result != "failed":
                    run.result, run.error = "ok", f"{why}: cleanup cut short"

        with no_interrupts():
            s.fleet.cancel.clear()
            for run in s.active:
                run.deploy_record.release = d.number
                if run.result == "pending":
                    run.result = "ok"
            s.unreleased += sorted(s.fleet.each("record", record, [r for r in s.active if r.locked]))

    def done(self, run: HostRun) -> str:
        """The deploy's ledger line on a host whose finish did not complete (nothing removed)."""
        d = self.deploy
        return done_line(d.session, run, d.release, d.pipeline, d.env_sha256(run), [])

    def rides(self, batch: Batch) -> bool:
        """One host (so one batch) and nothing to run between its switch and its finish (no hook,
        restart, health check or bake): the finish goes in the switch's command, one round trip
        less. With more hosts the lock is kept until every one switched (a late failure puts the
        others back)."""
        s, p = self.deploy.session, self.deploy.pipeline
        self.rode = (
            len(s.active) == 1
            and not batch.bake
            and s.backend.joins_steps
            and not p.restart.command
            and not p.verify.enabled
            and not any(p.hooks_at(point) for point in ("after_switch", "before_finish"))
        )
        return self.rode

    def script_for(self, run: HostRun) -> str:
        d = self.deploy
        return script(d.session, run, d.release, d.artifact, d.pipeline, d.env_sha256(run))

    def on_host(self, run: HostRun) -> None:
        ride = run.deploy_record.finished is not None
        finish(self.deploy.session, run, self.deploy.release, None if ride else self.script_for(run))

    def switched_with_it(self) -> bool:
        """One host whose switch carried its finish, its answer cut off: there is nothing to check
        between the two, so if it switched (one read of the host tells) the deploy is done there."""
        s = self.deploy.session
        doubt = [r for r in s.active if r.deploy_record.in_doubt]
        if not (self.rode and doubt):
            return False
        run = doubt[0]
        with no_interrupts():
            s.fleet.cancel.clear()
            read = lock.inspect(s.paths, free_space=False)  # unleased: the finish may have unlocked
            try:
                result = s.run(run, "switch", read, timeout=60, leased=False)
            except DeployerError:
                return False  # cannot tell: put back where it switched, as for any host in doubt
        switched = state_parser.parse(result.stdout, s.paths.deploy_to).current_name == str(self.deploy.number)
        if switched:
            run.deploy_record.switched, run.deploy_record.in_doubt = True, False
        return switched

    def interrupted(self, exc: BaseException) -> None:
        """A signal during the finish: the release switched and passed its checks on every host, so
        it stays live (putting only some hosts back would leave a mixed fleet). Hosts whose finish
        did not complete record the deploy and release their lock; exit 128 + the signal."""
        d, s, how = self.deploy, self.deploy.session, f"interrupted ({signals.describe(exc)})"
        cut = [r for r in s.active if r.locked]
        short: list[str] = []

        def record(run: HostRun) -> None:
            run.result = "ok"
            if cut_short(s, run, d.release, self.done(run), how):
                run.error = f"{how}: cleanup cut short"
                short.append(run.name)

        with no_interrupts():
            s.fleet.cancel.clear()
            for run in s.active:
                run.deploy_record.release = d.number
            s.unreleased += sorted(s.fleet.each("finish", record, cut))
            where = f"; cleanup cut short on {', '.join(sorted(short))}" if short else ""
            d.notify("succeeded", error=f"{how} during finish{where}")
        live = f"release {d.number} is live on every host (switched and checked)"
        raise RunFailed(
            f"{how} during finish: {live}{where}; {s.locks_said()}",
            s.runs,
            signals.exit_code(exc),
        ) from None
