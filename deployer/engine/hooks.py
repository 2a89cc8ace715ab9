"""Hooks and health checks: what runs at the deploy's fixed points, and with which environment.

A hook is a remote command (run by sh in the new release dir on every host, or on hosts with
one of its roles, or `once` on the first of them), a local command, or a Python callable
`module:function(ctx)`. A failing hook fails its step with the tail of its output.
"""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.config.settings import Hook, Host, VerifySettings
from deployer.engine.fleet import HostRun
from deployer.errors import DeployerError, HookFailed

if TYPE_CHECKING:  # the session module runs hooks' commands; hooks name it only
    from deployer.engine.session import Session


@dataclass
class HookContext:
    """What a hook knows about the deploy; the same values reach remote commands as DEPLOY_* vars."""

    stage: str
    app: str
    deploy_to: str
    step: str = ""
    release: int | str | None = None  # str: a foreign release (a rollback to another tool's)
    version: str = ""
    git_sha: str = ""
    artifact_sha256: str = ""
    previous: int | str | None = None
    hosts: list[str] = field(default_factory=list)
    session: Session | None = None

    def env(self, host: Host | None = None, previous: int | str | None = None) -> dict[str, str]:
        prev = previous if previous is not None else self.previous
        env = {
            "DEPLOY_STAGE": self.stage,
            "DEPLOY_APP": self.app,
            "DEPLOY_STEP": self.step,
            "DEPLOY_TO": self.deploy_to,
            "DEPLOY_RELEASE": "" if self.release is None else str(self.release),
            "DEPLOY_RELEASE_PATH": "" if self.release is None else f"{self.deploy_to}/releases/{self.release}",
            "DEPLOY_VERSION": self.version,
            "DEPLOY_GIT_SHA": self.git_sha,
            "DEPLOY_ARTIFACT_SHA256": self.artifact_sha256,
            "DEPLOY_PREVIOUS_RELEASE": "" if prev is None else str(prev),
        }
        if host is not None:
            env["DEPLOY_HOST"] = host.name
            env["DEPLOY_ROLES"] = ",".join(host.roles)
        return env


def with_roles(roles: Sequence[str], runs: list[HostRun]) -> list[HostRun]:
    """The runs whose host has one of `roles` (all of them when no roles are given)."""
    return [r for r in runs if not roles or set(roles) & set(r.host.roles)]


def targets(hook: Hook, runs: list[HostRun]) -> list[HostRun]:
    """The runs a remote hook applies to."""
    chosen = with_roles(hook.roles, runs)
    return chosen[:1] if hook.once else chosen


def previous_of(run: HostRun) -> int | str | None:
    """The release this run's host had before (a deploy's or a rollback's record)."""
    if run.deployed is not None:
        return run.deployed.previous
    return run.rolled_back.previous if run.rolled_back is not None else None


def run_point(
    session: Session,
    ctx: HookContext,
    point: str,
    runs: list[HostRun],
    release_of: Callable[[HostRun], int | str | None],
) -> None:
    """Every hook declared at `point`, in order: remote ones on their hosts (in parallel, in
    releases/<release_of(run)>, or deploy_to when that is None), local and python ones here.
    HookFailed on the first failure."""
    for hook in session.stage.pipeline.hooks_at(point):
        ctx.step = point
        if hook.command:
            _run_remote(session, ctx, point, hook.command, targets(hook, runs), release_of)
        else:
            session.locally(
                f"--- local · {point}\n{hook.local or hook.python + '(ctx)'}",
                functools.partial(_run_here, session, ctx, hook, point),
            )


def _run_remote(
    session: Session,
    ctx: HookContext,
    point: str,
    command: str,
    runs: list[HostRun],
    release_of: Callable[[HostRun], int | str | None],
) -> None:
    def remote(run: HostRun) -> None:
        session.in_release(run, point, release_of(run), command, ctx.env(run.host, previous_of(run)))
        session.out.line(run.name, point, "ok")

    failures = session.fleet.each(point, remote, runs)
    if failures:
        raise HookFailed(
            f"hook failed on {', '.join(sorted(failures))}: " + "; ".join(str(e) for e in failures.values())
        )


def _run_here(session: Session, ctx: HookContext, hook: Hook, point: str) -> None:
    """A local or python hook, on this machine."""
    if hook.local:
        run_local(hook, ctx, str(session.config_dir), session.stage.hosts[0].ssh.command_timeout)
        session.out.line("local", point, f"hook ok: {hook.local}")
    else:
        run_python(hook, ctx)
        session.out.line("local", point, f"hook ok: {hook.python}")


def run_local(hook: Hook, ctx: HookContext, cwd: str, timeout: int) -> str:
    env = {**os.environ, **ctx.env()}
    try:
        proc = subprocess.run(
            hook.local,
            shell=True,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise HookFailed(f"local hook {hook.point} timed out after {timeout}s: {hook.local}") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:])
        raise HookFailed(f"local hook {hook.point} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def run_python(hook: Hook, ctx: HookContext) -> object:
    """Call a Python hook. Whatever it raises becomes HookFailed (its own DeployerError is kept),
    a `sys.exit()` and an error while importing its module included: the flow around it then
    puts back and releases the locks as for any failed step."""
    module_name, _, func_name = hook.python.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (Exception, SystemExit) as exc:
        raise HookFailed(f"python hook {hook.point}: cannot load {hook.python}: {_said(exc)}") from None
    try:
        return func(ctx)
    except DeployerError:
        raise
    except SystemExit as exc:
        raise HookFailed(f"python hook {hook.point} ({hook.python}) called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise HookFailed(f"python hook {hook.point} ({hook.python}) failed: {_said(exc)}") from None


def _said(exc: BaseException) -> str:
    """`Type: message` of an exception, even one whose message cannot be made."""
    try:
        text = str(exc)
    except Exception:
        text = "(its message could not be read)"
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, (ImportError, AttributeError)) else text


def check_url_locally(settings: VerifySettings, address: str, sleep: Callable[[float], None] = time.sleep) -> str:
    """The HTTP health check from this machine; `{host}` in the URL becomes the host's address."""
    import urllib.error  # loaded only when a check runs from here: not every run pays the import
    import urllib.request

    url = settings.url.replace("{host}", address)
    last = ""
    for attempt in range(1, settings.retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=settings.timeout) as response:
                code, body = response.status, response.read(65536).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read(65536).decode(errors="replace")
        except Exception as exc:
            code, body = 0, str(exc)
        if code == settings.status and (not settings.body or settings.body in body):
            return f"HTTP {code} after {attempt} attempt(s)"
        last = f"HTTP {code}" + (f" without {settings.body!r}" if code == settings.status else "")
        if attempt < settings.retries:
            sleep(settings.interval)
    raise HookFailed(
        f"health check failed: {url} answered {last} (expected {settings.status}) after {settings.retries} attempt(s)"
    )
