"""[canary]: a share of requests through the load balancer (hosts with role `lb`), step by step.

Checked against the schema, then against each stage's hosts: steps need an `lb` host and two app
hosts (hosts without the role)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deployer.config import schema
from deployer.config.reader import Reader
from deployer.config.settings import CanarySettings, Stage

LB_ROLE = "lb"  # hosts with this role run nginx in front of the app hosts (every other host)


def read(reader: Reader, data: object) -> CanarySettings:
    given = reader.table(data, "canary", schema.CANARY)
    steps = given.get("steps", [])
    if problem := steps_problem(steps):
        raise reader.fail("canary.steps", problem)
    upstream = given.get("upstream", schema.CANARY["upstream"].default)
    if "{name}" not in upstream and "{address}" not in upstream:
        raise reader.fail("canary.upstream", "expected {name} or {address} in it (each app host's own address)")
    if not given.get("weights_dir", "/").startswith("/"):
        raise reader.fail("canary.weights_dir", f"expected an absolute path, got {given['weights_dir']!r}")
    return CanarySettings(**{**given, "steps": tuple(steps)})


def check_stages(reader: Reader, canary: CanarySettings, stages: Mapping[str, Stage | None]) -> None:
    """At load: steps need an `lb` host in some stage, and a stage with one needs two app hosts.
    A stage without one (staging, say) is refused when a canary deploy names it (`stage_problem`)."""
    if not canary.steps:
        return
    known = {name: st for name, st in stages.items() if st is not None and not st.hosts_command}
    with_lb = {name: st for name, st in known.items() if any(LB_ROLE in h.roles for h in st.hosts)}
    if not with_lb and len(known) == len(stages):
        reader.note("canary.steps", f"steps need a host with role {LB_ROLE!r} (nginx in front of the app hosts)")
    for name, st in with_lb.items():
        if problem := hosts_problem([(h.name, h.roles) for h in st.hosts]):
            reader.note(f"stages.{name}.hosts", f"[canary] {problem}")


def stage_problem(canary: CanarySettings, stage: Stage) -> str | None:
    """Why this stage's hosts cannot take the steps (no lb host, fewer than two app hosts), or None."""
    if not canary.steps:
        return None
    problem = hosts_problem([(h.name, h.roles) for h in stage.hosts])
    return f"stage {stage.name}: {problem}" if problem else None


def steps_problem(steps: Sequence[object]) -> str | None:
    """What is wrong with [canary] steps, or None: whole percents 1..99, strictly increasing."""
    for value in steps:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected whole percents 1-99, got {value!r}"
        if not 1 <= value <= 99:
            return f"each step is a percent of requests 1-99, got {value}"
    for before, after in zip(steps, steps[1:], strict=False):
        if not after > before:  # type: ignore[operator]
            return f"steps must increase strictly, got {before} then {after}"
    return None


def hosts_problem(roles: Sequence[tuple[str, Sequence[str]]]) -> str | None:
    """With steps: at least one `lb` host and two app hosts (roles: each host's name and roles)."""
    if not any(LB_ROLE in r for _, r in roles):
        return f"steps need a host with role {LB_ROLE!r} (nginx in front of the app hosts)"
    apps = [name for name, r in roles if LB_ROLE not in r]
    if len(apps) < 2:
        return f"a share is not possible with {'one app host' if apps else 'no app host'} (hosts without role 'lb')"
    return None
