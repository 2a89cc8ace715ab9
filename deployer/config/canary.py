"""[canary]: a share of requests through the load balancer (hosts with role `lb`), step by step.

Checked against the schema, then against each stage's hosts: steps need an `lb` host and two app
hosts (hosts without the role)."""

from __future__ import annotations

from collections.abc import Mapping

from deployer.config import schema
from deployer.config.reader import Reader
from deployer.config.settings import CanarySettings, Stage
from deployer.plan import weights


def read(reader: Reader, data: object) -> CanarySettings:
    given = reader.table(data, "canary", schema.CANARY)
    steps = given.get("steps", [])
    if problem := weights.steps_problem(steps):
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
    with_lb = {name: st for name, st in known.items() if any(weights.LB_ROLE in h.roles for h in st.hosts)}
    if not with_lb and len(known) == len(stages):
        reader.note(
            "canary.steps", f"steps need a host with role {weights.LB_ROLE!r} (nginx in front of the app hosts)"
        )
    for name, st in with_lb.items():
        if problem := weights.hosts_problem([(h.name, h.roles) for h in st.hosts]):
            reader.note(f"stages.{name}.hosts", f"[canary] {problem}")


def stage_problem(canary: CanarySettings, stage: Stage) -> str | None:
    """Why this stage's hosts cannot take the steps (no lb host, fewer than two app hosts), or None."""
    if not canary.steps:
        return None
    problem = weights.hosts_problem([(h.name, h.roles) for h in stage.hosts])
    return f"stage {stage.name}: {problem}" if problem else None
