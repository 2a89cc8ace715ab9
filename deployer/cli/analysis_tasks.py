"""`analyze`: the [analysis] metrics against the live release now, read-only (no lock, nothing
changed): exit 0 when it passes, 1 when it fails, 2 for a config without [analysis]. For cron
or a CI job after a deploy; --json carries every check's numbers."""

from __future__ import annotations

from dataclasses import replace

from invoke import Task

from deployer.cli.command import command, parallelism, stage_target, whole_number
from deployer.errors import FAILED, ConfigError, UsageError
from deployer.report.document import Outcome


@command(checks="Checks to pass (default: [analysis] checks); 1 for a single look, e.g. from cron.")
def analyze(c, stage=None, config=None, hosts=None, roles=None, parallel=10, checks=None, json=False):
    """Judge the live release by its traffic ([analysis] metrics), read-only: exit 0 pass, 1 fail."""
    from deployer.engine import analysis

    t = stage_target(config, stage, hosts, roles, json)
    settings = t.cfg.analysis
    if settings is None:
        raise ConfigError(f"{t.cfg.path}: no [analysis] table: nothing to analyze (docs/canary-analysis.md)")
    if checks is not None:
        n = whole_number(checks, "checks")
        if n < 1:
            raise UsageError(f"--checks must be at least 1, got {n}")
        settings = replace(settings, checks=n)
    result = analysis.live(t.stage, t.hosts, t.out, parallelism(parallel), settings)
    t.out.say(f"analysis: {result.verdict}" + (f": {result.reason()}" if result.failed else ""))
    records = [{"host": h.name, "error": None} for h in t.hosts]
    error = f"analysis failed: {result.reason()}" if result.failed else None
    return Outcome(records, FAILED if result.failed else 0, error, t.stage.name, {"analysis": result.record()})


TASKS: tuple[Task, ...] = (analyze,)
