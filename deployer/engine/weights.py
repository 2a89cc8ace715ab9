"""A share of requests for the canary hosts, through nginx on the stage's `lb` hosts.

`Balancer.set_share(canary, percent)` writes the upstream weights on every lb host (one command
each: remote/weights.py); `restore()` puts back what the file held before the first step. A flow
runs its steps inside `undoing()`: any failure, a lost host or a signal (Ctrl-C, SIGTERM,
SIGHUP) restores the weights before the exception goes on to the flow's own undo (put the canary
back). The restore runs with the signals ignored (signals.no_interrupts), as every undo does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

from deployer.config.canary import LB_ROLE, hosts_problem
from deployer.config.settings import CanarySettings
from deployer.engine.fleet import HostRun
from deployer.engine.lease import reasons
from deployer.engine.session import Session, no_interrupts, utc_now
from deployer.errors import DeployerError, UsageError
from deployer.plan import weights as plan
from deployer.plan.batches import Batch
from deployer.remote import weights as remote
from deployer.report.output import Output


class WeightsFailed(DeployerError):
    """Setting the share failed on an lb host (nginx -t refused it, lost host, no reload)."""


class Balancer:
    """The lb hosts of a session's run and the app hosts behind them (every host without the role)."""

    def __init__(self, session: Session, canary: CanarySettings, canary_hosts: int | None = None):
        self.session = session
        self.steps = canary.steps
        self.lbs = [r for r in session.runs if LB_ROLE in r.host.roles]
        self.apps = [
            (r.name, plan.upstream_address(canary.upstream, r.name, r.host.address))
            for r in session.runs
            if LB_ROLE not in r.host.roles
        ]
        problem = hosts_problem([(r.name, r.host.roles) for r in session.runs])
        if problem:
            raise UsageError(f"stage {session.stage.name}: [canary] {problem}")
        if canary_hosts is not None and canary_hosts >= len(self.apps):
            raise UsageError(
                f"--canary {canary_hosts}: a share of requests needs app hosts beside the canary "
                f"({len(self.apps)} app hosts: {', '.join(name for name, _ in self.apps)})"
            )
        self.file = canary.weights_file(session.stage.app.name)
        self.changed = False  # a set went out (maybe only partly): restore() has work to do
        self.percent = 0.0  # the realised share of the last step

    def set_share(self, canary: Sequence[str], percent: int) -> float:
        """Give the canary hosts `percent` % of the requests on every lb host; the realised share."""
        app_names = [name for name, _ in self.apps]
        strangers = [name for name in canary if name not in app_names]
        if strangers or not 0 < len(canary) < len(app_names):
            raise UsageError(
                f"a share needs canary hosts among the app hosts and others beside them: canary "
                f"{', '.join(canary) or 'none'} of {', '.join(app_names)}"
            )
        lines = plan.servers(self.apps, canary, percent)
        realised = plan.realised(lines, canary)
        content = plan.text(lines, f"{percent} % to {', '.join(canary)}")
        script = remote.set_weights(self.file, content)
        s = self.session
        self.changed = True  # before the command goes out: an answer that never comes may hide a change

        def one(run: HostRun) -> None:
            s.run(run, "weights", script, timeout=60)
            s.out.line(run.name, "weights", f"{percent} % of requests to {', '.join(canary)} ({realised:.1f} %)")

        failures = s.fleet.each("weights", one, self.lbs)
        if failures:
            raise WeightsFailed(f"weights not set on {reasons(failures)}")
        self.percent = realised
        return realised

    def restore(self) -> list[str]:
        """Put back the weights from before the first step on every lb host; the hosts where that
        failed (each said in one line). A no-op when no step went out."""
        if not self.changed:
            return []
        s = self.session
        script = remote.restore(self.file)

        def one(run: HostRun) -> None:
            result = s.run(run, "restore", script, timeout=60, leased=False)
            said = "nothing to put back" if "unchanged" in result.stdout else "weights from before the canary are back"
            s.out.line(run.name, "restore", said)

        with no_interrupts():
            s.fleet.cancel.clear()
            failures = s.fleet.each("restore", one, self.lbs)
        for name, exc in failures.items():
            s.out.line(
                name,
                "restore",
                f"weights not put back ({exc}); the earlier file waits at {remote.saved_path(self.file)}: "
                "the next canary run puts it back",
            )
        if not failures:
            self.changed, self.percent = False, 0.0
        return sorted(failures)

    @contextmanager
    def undoing(self) -> Iterator[Balancer]:
        """Steps inside: on any exception (signals too) the weights are restored, then it goes on."""
        try:
            yield self
        except BaseException:
            self.restore()
            raise


# -- what a deploy with --strategy canary calls (engine/deploy.py) ---------------------------------


def undone(balancer: Balancer | None) -> AbstractContextManager[object]:
    """Around the switches: any failure or signal puts the weights back first."""
    return balancer.undoing() if balancer is not None else nullcontext()


def switch_order(balancer: Balancer | None, runs: list[HostRun]) -> list[HostRun]:
    """With a share of requests, the lb hosts switch last: the canary hosts are app hosts."""
    if balancer is None:
        return runs
    return sorted(runs, key=lambda r: LB_ROLE in r.host.roles)


def steps_for(balancer: Balancer | None, batch: Batch) -> tuple[int, ...]:
    """The canary batch's steps, the first one set before its switch (the canary gets that share
    and no more from the moment it runs the new release); () for any other batch."""
    if balancer is None or batch.label != "canary" or not balancer.steps:
        return ()
    step(balancer, list(batch.hosts), balancer.steps[0])
    return balancer.steps


def step(balancer: Balancer | None, runs: list[HostRun], percent: int) -> None:
    if balancer is None:
        return
    number = balancer.steps.index(percent) + 1 if percent in balancer.steps else 0
    balancer.session.out.say(
        f"canary step {number}/{len(balancer.steps)}: {percent} % of requests to {', '.join(r.name for r in runs)}"
    )
    realised = balancer.set_share([r.name for r in runs], percent)
    at = utc_now()
    for run in runs:  # the run's record: --json and the ledger's analysis line name the step
        taken = {"percent": percent, "share": round(realised, 2), "at": at, "analysis": None}
        run.deploy_record.canary_steps.append(taken)


def current_step(run: HostRun) -> dict[str, object] | None:
    """The [canary] step the host is at (its share of the requests), if any."""
    return run.canary_steps[-1] if run.canary_steps else None


def restore_after(balancer: Balancer | None, out: Output) -> None:
    """Every host switched and checked: the weights from before the canary go back (equal
    weights, in the usual setup). A host where that failed is said; the deploy stands."""
    if balancer is None or not balancer.changed:
        return
    out.say("every host switched: the lb weights from before the canary go back")
    failed = balancer.restore()
    if failed:
        out.say(f"warning: the lb weights are not back on {', '.join(failed)} (see above)")
