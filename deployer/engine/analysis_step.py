"""The canary analysis inside a deploy: after the canary batch (--strategy canary), after each
batch (rolling), or as a watch window after the switch (all), while the lock is held and renewed.
A failure raises AnalysisFailed; the deploy's usual undo (until_live) puts every switched host
back, marks the release bad and sends `rolled back` with the failing metric and both values.
Each analysed host's ledger gets one line with every check's numbers and the verdict.

A batch with no host left on the old release beside it (one host, --strategy all, the last
rolling batch) has no baseline hosts: each host's own window before its switch is its baseline
(access logs marked once the lock is held, read just before the switch, at least one `interval`
later; the other providers read once just before it), so the baseline bounds compare the same
hosts after vs before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from deployer.config.analysis import AnalysisSettings
from deployer.engine import analysis, weights
from deployer.engine.analysis_sources import Context, Sources
from deployer.engine.fleet import HostRun
from deployer.errors import DeployerError
from deployer.plan.analysis import Reading, judge_check
from deployer.plan.batches import Batch
from deployer.remote import analysis as remote_analysis

if TYPE_CHECKING:
    from deployer.engine.deploy import Pipeline


class AnalysisFailed(DeployerError):
    """The canary's traffic failed the analysis (the message names the metric and both values)."""


class BeforeWindow:
    """Each host's window before its switch: marked at the start, read just before the switch."""

    def __init__(self, sources: Sources, interval: float):
        self.sources, self.interval = sources, interval
        self.started = time.monotonic()
        self.readings: dict[str, dict[str, Reading]] = {}  # metric -> "host (before the switch)" -> reading


_BEFORE: WeakKeyDictionary[Pipeline, BeforeWindow] = WeakKeyDictionary()


def before_name(host: str) -> str:
    return f"{host} (before the switch)"


@contextmanager
def before_window(pipeline: Pipeline) -> Iterator[None]:
    """Around prepare and the switches (lock held): each host's access logs marked at the start.
    Only for metrics with a baseline bound (the others do not use a baseline), and not for a canary
    with hosts beside it (they are its baseline: no batch reads a window before its switch)."""
    settings: AnalysisSettings | None = pipeline.options.analysis
    relative = settings is not None and any(
        m.max_vs_baseline is not None or m.max_ratio_vs_baseline is not None for m in settings.metrics
    )
    s = pipeline.session
    strategy = pipeline.options.strategy
    beside_rest = strategy.name == "canary" and strategy.canary < len(s.active)  # the rest is its baseline
    if settings is None or not relative or pipeline.options.dry_run or beside_rest:
        yield
        return
    sources = Sources(settings, analysis.run_on(s), Context(s.stage.name), s.paths, s.parallel)
    window = BeforeWindow(sources, settings.interval)
    window.sources.start(s.active)  # a host not marked: its before reading fails the checks (never a pass)
    _BEFORE[pipeline] = window
    try:
        yield
    finally:
        _BEFORE.pop(pipeline, None)


def before_switch(pipeline: Pipeline, batch: Batch, runs: list[HostRun]) -> tuple[int, ...]:
    """Just before a batch switches: the first [canary] step's share set (engine.weights); and, for
    a batch with no host left on the old release beside it, each host's window before the switch."""
    steps = weights.steps_for(pipeline.balancer, batch)
    window = _BEFORE.get(pipeline)
    batch_names = {r.name for r in runs}
    others = [r for r in pipeline.session.active if r.name not in batch_names and not r.deploy_record.switched]
    if window is None or others or batch.label == "rest":
        return steps
    left = window.interval - (time.monotonic() - window.started)
    if left > 0:  # at least one interval of the old release, as long as a check's window
        pipeline.out.say(f"window before the switch: {left:.1f}s more of the old release's traffic")
        analysis.sleeper(pipeline.session.fleet.cancel)(left)
    window.sources.context = Context(
        pipeline.session.stage.name, {r.name: str(r.deploy_record.previous or "") for r in runs}
    )
    readings = window.sources.read(runs)
    for metric, by_host in readings.items():
        window.readings[metric] = {before_name(h): r for h, r in by_host.items()}
    return steps


def before_readings(pipeline: Pipeline, runs: list[HostRun]) -> dict[str, dict[str, Reading]] | None:
    """The batch's readings from before its switch (metric -> name -> reading), if taken."""
    window = _BEFORE.get(pipeline)
    if window is None or not window.readings:
        return None
    names = {before_name(r.name) for r in runs}
    return {m: {n: r for n, r in got.items() if n in names} for m, got in window.readings.items()}


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
    before = None if baseline else before_readings(pipeline, runs)
    if before:
        against = " against the same host(s) before the switch"
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
    result = analysis.run(settings, sources, runs, baseline, pipeline.out.say, wait, before)
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
