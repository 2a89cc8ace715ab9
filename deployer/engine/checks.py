"""After a batch's switch: the restart in the new release, the health check (`[verify]`), and a
canary's bake (the health check again until its time is up). A failure raises HookFailed: the
pipeline puts every switched host back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from deployer.engine import hooks
from deployer.engine.fleet import HostRun
from deployer.engine.session import names
from deployer.errors import HookFailed, HostError
from deployer.plan.batches import Batch
from deployer.remote import commands

if TYPE_CHECKING:  # the pipeline runs the checks; the checks read the pipeline's run
    from deployer.engine.deploy import Pipeline


def restart(d: Pipeline, runs: list[HostRun]) -> None:
    """The restart command in the new release, on the hosts with its roles."""
    r = d.pipeline.restart
    command = r.command
    if not command:
        return
    failures = d.session.fleet.each(
        "restart", lambda run: d.remote(run, "restart", command), hooks.with_roles(r.roles, runs)
    )
    if failures:
        raise HookFailed(
            f"restart failed on {names(failures)}: " + "; ".join(str(e) for e in failures.values()), "restart"
        )


def verify(d: Pipeline, runs: list[HostRun], quiet: bool = False) -> None:
    """before_verify hooks → the health check on every host (a command, a URL from the host or
    from here) → after_verify hooks."""
    v = d.pipeline.verify
    if not v.enabled:
        return
    d.hooks("before_verify", runs)
    s = d.session

    def check(run: HostRun) -> None:
        if v.command:
            d.remote(run, "verify", v.command)
        if v.url and v.run_from == "local":

            def from_here() -> None:
                try:
                    said = hooks.check_url_locally(v, run.host.address)
                except HookFailed as exc:
                    raise HostError(run.name, "verify", str(exc)) from None
                if not quiet:
                    d.out.line(run.name, "verify", said)

            s.locally(f"--- local · verify {v.url.replace('{host}', run.host.address)}", from_here)
        elif v.url:
            result = s.run(
                run,
                "verify",
                commands.verify_http(
                    v.url, status=v.status, body=v.body, timeout=v.timeout, retries=v.retries, interval=v.interval
                ),
            )
            if not quiet:
                d.out.line(run.name, "verify", result.stdout.strip() or "ok")

    d.ctx.step = "verify"
    failures = s.fleet.each("verify", check, runs)
    if failures:
        raise HookFailed(
            f"health check failed on {names(failures)}: " + "; ".join(str(e) for e in failures.values()), "verify"
        )
    d.hooks("after_verify", runs)


def bake(d: Pipeline, batch: Batch, runs: list[HostRun]) -> None:
    """A canary batch: the health check again, quietly, every verify interval for `bake` seconds."""
    if not batch.bake:
        return
    deadline = time.monotonic() + batch.bake
    d.out.say(f"baking canary for {batch.bake:g}s, re-checking health")
    while time.monotonic() < deadline:
        time.sleep(min(d.pipeline.verify.interval, max(deadline - time.monotonic(), 0)))
        verify(d, runs, quiet=True)
