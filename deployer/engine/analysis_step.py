"""The canary analysis inside a deploy: after the canary batch (--strategy canary), after each
batch (rolling), or as a watch window after the switch (all), while the lock is held and renewed.
A failure raises AnalysisFailed; the deploy's usual undo (until_live) puts every switched host
back, marks the release bad and sends `rolled back` with the failing metric and both values.
Each analysed host's ledger gets one line with every check's numbers and the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.config.analysis import AnalysisSettings
from deployer.engine import analysis, weights
from deployer.engine.analysis_sources import Context, Sources
from deployer.engine.fleet import HostRun
from deployer.errors import DeployerError
from deployer.plan.analysis import judge_check
from deployer.plan.batches import Batch
from deployer.remote import analysis as remote_analysis

if TYPE_CHECKING:
    from deployer.engine.deploy import Pipeline


class AnalysisFailed(DeployerError):
    """The canary's traffic failed the analysis (the message names the metric and both values)."""


def after_batch(pipeline: Pipeline, batch: Batch, runs: list[HostRun], switched: list[HostRun]) -> None:
    """Judge the batch just switched against the hosts not switched yet (none: absolute bounds only)."""
    settings: AnalysisSettings | None = pipeline.options.analysis
    if settings is None or batch.label == "rest":  # canary: the rest switch once the canary passed
        return
    s = pipeline.session
    done = {r.name for r in [*switched, *runs]}
    baseline = [r for r in s.active if r.name not in done]
    releases = {r.name: str(pipeline.release) for r in runs}
    releases.update({r.name: str(r.deploy_record.previous or "") for r in baseline})
    sources = Sources(settings, analysis.run_on(s), Context(s.stage.name, releases), s.paths, s.parallel)
    names = ", ".join(r.name for r in runs)
    against = f" against {', '.join(r.name for r in baseline)}" if baseline else " (no baseline: absolute bounds)"
    if pipeline.options.dry_run:
        sources.start([*runs, *baseline])
        base = [r.name for r in baseline]
        check = judge_check(settings, sources.read([*runs, *baseline]), [r.name for r in runs], base, 1, 1)
        pipeline.out.say(f"would analyse {names}{against}; one reading now: {check.line()}")
        return
    pipeline.out.say(
        f"analysis of {names}{against}: {len(settings.metrics)} metric(s) every {settings.interval}s, "
        f"{settings.checks} check(s) to pass"
    )
    wait = analysis.sleeper(s.fleet.cancel)  # the lease is renewed in the background, as during --bake
    result = analysis.run(settings, sources, runs, baseline, pipeline.out.say, wait)
    record = result.record()
    for run in runs:
        run.deploy_record.analysis = record
        step = weights.current_step(run)
        if step is not None:
            step["analysis"] = result.verdict
    failures = s.fleet.each("analysis", lambda r: record_in_ledger(pipeline, r, result), runs)
    for name, exc in failures.items():
        pipeline.out.say(f"warning: {name}: the analysis not recorded in the ledger: {exc}")
    if result.failed:
        raise AnalysisFailed(f"canary analysis failed: {result.reason()}")
    pipeline.out.say(f"analysis passed: {len(result.checks)} check(s)")


def record_in_ledger(pipeline: Pipeline, run: HostRun, result: analysis.Analysis) -> None:
    """One line: the verdict and each check's numbers, compact (a ledger line stays < 3.5 KB)."""
    s = pipeline.session
    checks = [[c.number, c.verdict, {m.metric: [m.canary, m.baseline] for m in c.metrics}] for c in result.checks[-12:]]
    step = weights.current_step(run)
    at_step = {"canary_step": step["percent"]} if step is not None else {}
    line = s.ledger(
        run,
        result.verdict,
        action="analysis",
        release=pipeline.release,
        baseline=result.baseline,
        checks=checks,
        error=result.reason() if result.failed else "",
        **at_step,
    )
    s.run(run, "analysis", remote_analysis.ledger_line(s.paths, line))
