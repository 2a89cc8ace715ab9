"""The deploy pipeline, read top to bottom as its fixed steps:

    lock → check → prepare → migrate → smoke → [per batch: switch → restart → verify] → finish

with before_*/after_* hooks at each step. Before the first switch, any failure aborts every host
(partial releases removed, locks released). After a switch, a failed switch, hook or health
check puts every switched host back on its previous release, runs the restart again and marks
the new release bad. Ctrl-C, SIGTERM and SIGHUP abort the same way (exit 130, 143, 129).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from deployer.artifact.load import Artifact
from deployer.config import envfile
from deployer.config.settings import Host, Stage
from deployer.engine import checks, faults, finish, hooks, lease, signals, switchback, upload, weights
from deployer.engine.analysis_step import after_batch, before_switch, before_window
from deployer.engine.delta import Deltas
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.pull import Pull
from deployer.engine.records import Deployed
from deployer.engine.session import Session, names, no_interrupts, utc_now
from deployer.errors import FAILED, PARTIAL, DeployerError, HookFailed, HostError, RunFailed
from deployer.plan import releases as planning
from deployer.plan.batches import Batch, batches
from deployer.plan.options import Options
from deployer.remote import commands, user_command
from deployer.report.output import Output
from deployer.ssh.types import Cancelled

Body = Callable[[HostRun], object]
T = TypeVar("T")


def deploying(run: HostRun) -> Deployed:
    """The deploy's record of a host's switch (what the shared put-back reads and clears)."""
    return run.deploy_record


class Pipeline:
    """One deploy of one artifact to a stage; `run()` is the whole flow."""

    def __init__(
        self,
        stage: Stage,
        hosts: tuple[Host, ...],
        artifact: Artifact,
        out: Output,
        options: Options,
        config_dir: Path = Path("."),
        pull: Pull | None = None,
    ):
        self.stage = stage
        self.pull = pull
        self.url = ""  # the presigned URL hosts pull (pull only; never shown)
        self.pipeline = stage.pipeline
        self.artifact = artifact
        self.out = out
        self.options = options
        self.session = Session(
            stage,
            hosts,
            out,
            options.parallel,
            "deploy",
            options.dry_run,
            config_dir,
            artifact=artifact,
            reason=options.reason,
            forced=options.forced,
            lock_wait=options.lock_wait,
        )
        for run in self.session.runs:
            run.deployed = Deployed()
        self.number: int | None = None
        self.live = False  # switched and checked on every host (only the finish is left)
        self.finishing = finish.Finish(self)
        self.stranded: list[str] = []  # hosts a put-back could not reach: maybe on the new release
        app = stage.app
        # [canary] steps: the canary's share of requests through the lb hosts (engine/weights.py)
        self.balancer = (
            weights.Balancer(self.session, options.shares, options.strategy.canary) if options.shares else None
        )
        self.deltas = Deltas(artifact, exclude=(*app.shared_dirs, *app.shared_files, app.env_file))
        self.envs = envfile.resolve(hosts, str(config_dir))  # secrets resolved before any host is touched
        self.ctx = hooks.HookContext(
            stage=stage.name,
            app=stage.app.name,
            deploy_to=stage.app.deploy_to,
            version=artifact.version,
            git_sha=artifact.git_sha or "",
            artifact_sha256=artifact.sha256,
            hosts=[h.name for h in hosts],
            session=self.session,
        )

    @property
    def release(self) -> int:
        """The new release's number (known once every host is checked)."""
        if self.number is None:
            raise RuntimeError("no release number before the check step")
        return self.number

    def env_sha256(self, run: HostRun) -> str | None:
        """The digest of the env file written on this host (None: no env file)."""
        return self.envs[run.name].digest if self.envs else None

    # -- the flow -------------------------------------------------------------------------------

    def run(self) -> list[HostRun]:
        s = self.session
        self.notify("started")
        with s:
            try:
                lease.lock_all(s, self.artifact.sha256, self.options.max_fail)
                with self.until_live(), weights.undone(self.balancer), before_window(self):  # weights first
                    self.ready()
                    self.switch_in_batches()
                self.live = True  # switched and checked on every host: a signal no longer puts back
                self.finishing.everywhere()
            except (KeyboardInterrupt, Cancelled) as exc:
                self.interrupted(exc)
            except RunFailed as exc:
                self.notify("failed", error=str(exc))
                raise
        for run in s.active:
            run.deploy_record.release = self.number
        skipped = [r.name for r in s.runs if r.result == "skipped"]
        if skipped:
            self.notify("failed", error=f"skipped hosts: {', '.join(skipped)}")
            raise RunFailed(
                f"release {self.number} is live on {len(s.active)} host(s) but SKIPPED "
                f"{', '.join(skipped)} (--max-fail)",
                s.runs,
                PARTIAL,
            )
        self.notify("succeeded")
        return s.runs

    def ready(self) -> None:
        """check → release number → prepare → migrate → smoke: every host ready to switch."""
        s = self.session
        self.undo_skipped()
        for run in s.active:
            run.deploy_record.previous = host_state(run).live
        self.each("check", lambda r: upload.check_host(r, self.artifact), tolerate=True)
        self.number = planning.next_release_number({r.name: host_state(r) for r in s.active})
        self.ctx.release = self.number
        self.out.say(
            f"release {self.number}: {self.artifact.version} ({self.artifact.sha256[:12]}) to {len(s.active)} host(s)"
        )
        self.url = self.presign()  # one URL for every host of this run
        try:
            self.step("prepare", lambda run: upload.prepare_for(self, run), tolerate=True)
        finally:
            self.deltas.close()  # needed during prepare only
        self.published()
        self.migrate()
        smoke = self.pipeline.smoke
        if smoke:
            self.step("smoke", lambda r: self.remote(r, "smoke", smoke))

    @contextmanager
    def until_live(self) -> Iterator[None]:
        """Once the lock is held and until the release is switched and checked on every host, every
        failure undoes the run: before the first switch the lock is released and partial releases
        removed; after it, the switched hosts go back to their previous release (restarted there),
        as for a failed health check. A DeployerError (a Python hook's own) keeps its exit code;
        anything unforeseen gets the same undo before its traceback."""
        try:
            yield
        except (RunFailed, Cancelled):  # a Cancelled is a signal's: the caller's interrupted() undoes
            raise
        except DeployerError as exc:
            if self.switched():
                self.roll_back_switched(self.switched_runs(), str(exc), exit_code=exc.exit_code)
            self.fail_before_switch(str(exc), exc.exit_code)
        except Exception as exc:
            if self.switched():
                why = f"unexpected error: {type(exc).__name__}"
                self.put_back(self.switched_runs(), why, mark_bad=False)
                self.notify("rolled back", error=why)
            else:
                self.session.abort(self.number)
            raise

    def switched(self) -> bool:
        return bool(self.switched_runs())

    def switched_runs(self) -> list[HostRun]:
        """Hosts switched to the new release, or maybe (their switch's answer never came)."""
        return switchback.switched(self.session.runs, deploying)

    # -- steps ----------------------------------------------------------------------------------

    def step(self, name: str, body: Body, runs: list[HostRun] | None = None, tolerate: bool = False) -> None:
        """before_<name> hooks → body on every host → after_<name> hooks."""
        faults.pause_before(name)
        self.hooks(f"before_{name}", self.session.active if runs is None else runs)
        self.each(name, body, runs, tolerate)
        # hosts skipped during the step (--max-fail) get no after_ hook: their work was undone
        self.hooks(f"after_{name}", self.session.active if runs is None else runs)

    def each(self, name: str, body: Body, runs: list[HostRun] | None = None, tolerate: bool = False) -> None:
        s = self.session
        self.ctx.step = name
        failures = s.fleet.each(name, body, s.active if runs is None else runs)
        if not failures:
            return
        if tolerate and s.tolerate(failures, self.options.max_fail):
            self.undo_skipped()
            return
        self.fail_before_switch(f"{names(failures)} failed to {name}")

    def fail_before_switch(self, why: str, exit_code: int = FAILED) -> None:
        self.session.abort(self.number)
        lease.raise_if_lost(self.session)
        raise RunFailed(
            f"deploy aborted before any switch: {why}; no host switched, partial releases removed, "
            + self.session.locks_said(),
            self.session.runs,
            exit_code,
        )

    def undo_skipped(self) -> None:
        skipped = [r for r in self.session.runs if r.result == "skipped" and r.locked]
        if skipped:
            self.session.abort(self.number, skipped)

    def presign(self) -> str:
        """The URL hosts pull (pull only), once the tarball is in the store (the publish overlaps
        the lock and check); a failed publish aborts the run before any prepare."""
        if self.pull is None:
            return ""
        return self.from_store(self.pull.presign, "before any prepare", "no host changed")

    def published(self) -> None:
        """With pull, the rest of the publish (the .json that lists the artifact), sent while the
        hosts fetched the tarball; its failure aborts before any switch."""
        if self.pull is not None:
            undone = "no host switched, partial releases removed"
            self.from_store(self.pull.published, "before any switch", undone)

    def from_store(self, wait: Callable[[], T], when: str, undone: str) -> T:
        """What wait() returns; a store failure aborts the run, with the store's exit code."""
        try:
            return wait()
        except DeployerError as exc:
            self.session.abort(self.number)
            undone += ", " + self.session.locks_said()
            raise RunFailed(f"deploy aborted {when}: {exc}; {undone}", self.session.runs, exc.exit_code) from None

    def reachable(self, run: HostRun) -> None:
        """One round trip that runs nothing (an SSH global request), bounded by connect_timeout."""
        if run.conn is not None and not run.conn.ping():
            raise HostError(run.name, "switch", "host stopped answering after prepare (connection lost)")

    def migrate(self) -> None:
        m = self.pipeline.migrate
        if not m.command:
            return
        hosts = [r for r in self.session.active if m.role in r.host.roles]
        if not hosts:
            self.fail_before_switch(f"no host with role {m.role!r} to run migrations on")
        run = hosts[0]

        def body(r: HostRun) -> None:
            env = self.ctx.env(r.host, r.deploy_record.previous)
            result = self.session.run(
                r,
                "migrate",
                user_command.migrate(self.session.paths, self.release, m.command, env, self.stage.app.run_as),
            )
            digest = result.field("migrated") or ""
            self.out.line(r.name, "migrate", f"migrations ran once here (output digest {digest[:12]})")

        self.step("migrate", body, [run])

    def remote(self, run: HostRun, step: str, command: str) -> str:
        env = self.ctx.env(run.host, run.deploy_record.previous)
        result = self.session.in_release(run, step, self.number, command, env)
        self.out.line(run.name, step, "ok")
        return result.stdout

    def hooks(self, point: str, runs: list[HostRun]) -> None:
        try:
            # before_prepare: releases/N does not exist yet, so remote hooks run in deploy_to
            number = None if point == "before_prepare" else self.number
            hooks.run_point(self.session, self.ctx, point, runs, lambda run: number)
        except (RunFailed, Cancelled):
            raise
        except DeployerError as exc:  # a failed hook, or a Python hook's own error (its exit code kept)
            failed = HookFailed(str(exc), point)
            failed.exit_code = exc.exit_code
            raise failed from None

    # -- switching --------------------------------------------------------------------------------

    def switch_in_batches(self) -> None:
        faults.pause_before("switch")
        # every host must still answer before the first switch: a host lost after prepare aborts
        # the deploy with nobody switched, instead of switching the others and putting them back
        # (with one host there are no others: its switch itself tells)
        active = self.session.active
        failures = self.session.fleet.each("switch", self.reachable, active) if len(active) > 1 else {}
        if failures:
            self.fail_before_switch(f"{names(failures)} stopped answering after prepare")
        plan = batches(weights.switch_order(self.balancer, self.session.active), self.options.strategy)
        switched: list[HostRun] = []
        for batch in plan:  # a failed hook or health check: until_live() puts the switched hosts back
            runs: list[HostRun] = list(batch.hosts)
            if len(plan) > 1:
                self.out.say(f"{batch.label}: {', '.join(r.name for r in runs)}")
            self.switch_batch(batch, runs, switched)
            if batch.pause_after:
                self.out.say(f"pausing {batch.pause_after:g}s before the next batch")
                time.sleep(batch.pause_after)
        weights.restore_after(self.balancer, self.out)

    def switch_batch(self, batch: Batch, runs: list[HostRun], switched: list[HostRun]) -> None:
        s = self.session
        steps = before_switch(self, batch, runs)  # the first step's share; the window before the switch
        self.hooks("before_switch", runs)

        finish_too = self.finishing.rides(batch)

        def switch(run: HostRun) -> None:
            script = commands.switch(s.paths, self.release, s.token)
            if finish_too:  # a cleanup may take longer than a switch: the usual command_timeout
                script = commands.switch_then_finish(script, self.finishing.script_for(run))
            record = run.deploy_record
            result = switchback.switch(s, run, record, script, timeout=None if finish_too else 60)
            switched.append(run)
            self.out.line(run.name, "switch", f"current -> releases/{self.number}")
            if finish_too:
                record.finished = result

        self.ctx.step = "switch"
        failures = s.fleet.each("switch", switch, runs)
        if failures:
            doubt = [r for r in runs if r.deploy_record.in_doubt]
            self.roll_back_switched(switched + doubt, f"switch failed on {names(failures)}", mark_bad=False)
        self.hooks("after_switch", runs)
        checks.restart(self, runs)
        checks.verify(self, runs)
        for percent in [0, *steps[1:]]:  # each step: its share (the first one set), the bake, [analysis]
            if percent:
                weights.step(self.balancer, runs, percent)
            checks.bake(self, batch, runs)
            after_batch(self, batch, runs, switched)

    def roll_back_switched(
        self, switched: list[HostRun], why: str, mark_bad: bool = True, exit_code: int = FAILED
    ) -> None:
        """After a switch: every switched host back to its previous release, restart, mark bad, exit 1
        (or `exit_code`)."""
        s = self.session
        self.put_back(switched, why, mark_bad)
        self.notify("rolled back", error=why)
        lease.raise_if_lost(s)
        raise RunFailed(
            f"deploy of release {self.number} rolled back: {why}; "
            + self.put_back_said("every switched host is back on its previous release")
            + ("; release marked bad" if mark_bad else ""),
            s.runs,
            exit_code,
        )

    def put_back(self, switched: list[HostRun], why: str, mark_bad: bool) -> None:
        """The put-back, its restart and the mark (or the new release removed), locks released; a
        signal does not cut them short."""
        s = self.session
        self.out.say(f"ROLLING BACK: {why}")
        with no_interrupts():
            self.restore(list(switched))
            if mark_bad:
                reason = f"{utc_now()} {why}"
                with_state = [r for r in s.active if r.locked]
                s.fleet.each(
                    "mark bad",
                    lambda r: s.run(r, "mark bad", commands.mark_bad(s.paths, self.release, reason)),
                    with_state,
                )
                s.abort(None, result="rolled back", error=why)
            else:
                s.abort(self.number, error=why)

    def restore(self, runs: list[HostRun]) -> None:
        """Put hosts that switched to the new release (or may have: in doubt) back on the release
        they had, and restart them there: any of them (an after_switch hook, not only the restart,
        may have reached its processes). Hosts that cannot be reached are kept in `stranded`."""
        outcome = switchback.put_back(
            self.session, self.ctx, runs, record=deploying, left=lambda run: self.release, restart=lambda run: True
        )
        self.stranded += outcome.stranded

    def put_back_said(self, everyone: str) -> str:
        """What the put-back did, for the run's last line: `everyone` unless a host could not be
        put back (it may still run the new release)."""
        if not self.stranded:
            return everyone
        return (
            f"{', '.join(self.stranded)} could not be put back and may still run release {self.number}; "
            "every other host is on its previous release"
        )

    # -- interruption and notification ------------------------------------------------------------

    def interrupted(self, exc: BaseException) -> None:
        """Ctrl-C, SIGTERM or SIGHUP: put switched hosts back, undo, exit 128 + the signal."""
        s = self.session
        with no_interrupts():
            if self.live or self.finishing.switched_with_it():
                self.finishing.interrupted(exc)
            s.fleet.cancel.set()
            switched = self.switched_runs()
            if switched and self.number is not None:
                faults.pause_before("restore")  # tests: a second signal lands in this cleanup
                self.restore(switched)
            undone = self.put_back_said("no host left switched to the new release")
            failed = s.interrupted(exc, self.number, f"{undone}, partial work removed")
            self.notify("failed", error=f"interrupted ({signals.describe(exc)})")
        raise failed from None

    def notify(self, event: str, error: str = "") -> None:
        art = self.artifact
        switchback.notify(
            self.session, event, release=self.number, error=error, version=art.version, git_sha=art.git_sha
        )


def deploy(
    stage: Stage,
    hosts: tuple[Host, ...],
    artifact: Artifact,
    out: Output,
    options: Options | None = None,
    config_dir: Path = Path("."),
    pull: Pull | None = None,
) -> list[HostRun]:
    """Deploy one artifact to the hosts (with pull: they fetch it from the store); returns every
    host's record, or raises RunFailed."""
    return Pipeline(stage, hosts, artifact, out, options or Options(), config_dir, pull).run()
