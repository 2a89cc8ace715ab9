"""The canary judge, pure: one check's readings (per metric, per host) → pass, fail or
inconclusive per metric and for the check; and the tally of checks → go on, passed, failed.

Absolute bounds (min, max) hold on every canary host; the baseline bounds compare the canary
hosts together with the baseline hosts together over the same window (a background error rate
both share does not fail the canary). Without baseline hosts only the absolute bounds apply.
A reading that is missing, not a number or not finite fails its check: never a pass."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deployer.config.analysis import AnalysisSettings, Metric

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
_RANK = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}


@dataclass(frozen=True)
class Reading:
    """One metric on one host for one check's window."""

    value: float | None = None  # None with no error: nothing to measure (no request in the window)
    requests: int | None = None  # access_log: requests in the window
    error: str = ""  # why there is no number: unreachable source, not a number, ...


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    verdict: str
    canary: float | None = None
    baseline: float | None = None
    reason: str = ""  # why not a pass: names the host and both values
    unit: str = ""

    def shown(self) -> str:
        text = f"{self.metric} {number(self.canary, self.unit)}"
        return text + (f" (baseline {number(self.baseline, self.unit)})" if self.baseline is not None else "")

    def record(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "verdict": self.verdict,
            "canary": finite(self.canary),
            "baseline": finite(self.baseline),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Check:
    number: int
    of: int
    verdict: str
    metrics: tuple[MetricVerdict, ...]

    def line(self) -> str:
        """`check 3/6: success rate 99.4 % (baseline 99.6 %), p99 212 ms (baseline 198 ms): pass`"""
        why = "; ".join(m.reason for m in self.metrics if m.verdict == self.verdict and m.reason)
        text = f"check {self.number}/{self.of}: " + ", ".join(m.shown() for m in self.metrics) + f": {self.verdict}"
        return text + (f" ({why})" if why and self.verdict != PASS else "")

    @property
    def failing(self) -> MetricVerdict | None:
        """The first metric that decided a check not passed."""
        return next((m for m in self.metrics if m.verdict == self.verdict and self.verdict != PASS), None)

    def record(self) -> dict[str, object]:
        return {"check": self.number, "verdict": self.verdict, "metrics": [m.record() for m in self.metrics]}


def number(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == " ms":
        return f"{value:.0f}{unit}"
    if unit == " %":
        return f"{value:.1f}{unit}"
    return f"{value:.4g}"


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def aggregate(metric: Metric, readings: Sequence[Reading]) -> float | None:
    """The hosts' readings as one value: weighted by requests where each has them (a success
    rate over all requests; a latency percentile approximated by the weighted mean), else the mean."""
    usable = [r for r in readings if r.value is not None and math.isfinite(r.value)]
    if not usable:
        return None
    weights = [r.requests for r in usable]
    if metric.measure != "requests" and all(w is not None for w in weights) and sum(w or 0 for w in weights) > 0:
        return sum(r.value * (r.requests or 0) for r in usable if r.value is not None) / sum(w or 0 for w in weights)
    return sum(r.value for r in usable if r.value is not None) / len(usable)


def judge_metric(
    metric: Metric, readings: Mapping[str, Reading], canary: Sequence[str], baseline: Sequence[str], min_requests: int
) -> MetricVerdict:
    """One metric over one check's window: the worst canary host decides the absolute bounds,
    the canary hosts against the baseline hosts decide the relative ones."""
    counted = metric.provider == "access_log" and metric.measure != "requests"
    unit = metric.unit
    results: list[tuple[str, str]] = []  # (verdict, reason)
    for host in canary:
        r = readings.get(host)
        results.append(_absolute(metric, host, r, counted, min_requests))
    canary_value = aggregate(metric, [readings[h] for h in canary if h in readings])
    baseline_value = None
    base = [readings.get(h) for h in baseline]
    relative = metric.max_vs_baseline is not None or metric.max_ratio_vs_baseline is not None
    if baseline:
        broken = next(((h, r) for h, r in zip(baseline, base, strict=True) if r is None or r.error), None)
        if broken and relative:
            host, r = broken
            results.append((FAIL, f"{metric.name} on baseline {host}: {r.error if r else 'no reading'}"))
        elif not broken:
            known = [r for r in base if r is not None]
            baseline_value = aggregate(metric, known)
            enough = not counted or sum(r.requests or 0 for r in known) >= max(min_requests, 1)
            if any(r.value is not None and not math.isfinite(r.value) for r in known):
                results.append((FAIL, f"{metric.name} on the baseline: not a finite number"))
            elif canary_value is not None and all(v == PASS for v, _ in results):
                results.append(_relative(metric, canary_value, baseline_value, enough))
    worst = max((v for v, _ in results), key=_RANK.__getitem__, default=PASS)
    reason = next((why for v, why in results if v == worst and why), "")
    return MetricVerdict(metric.name, worst, canary_value, baseline_value, reason, unit)


def _absolute(metric: Metric, host: str, r: Reading | None, counted: bool, min_requests: int) -> tuple[str, str]:
    name, unit = metric.name, metric.unit
    if r is None or r.error:
        return FAIL, f"{name} on {host}: {r.error if r else 'no reading'}"
    if r.value is not None and not math.isfinite(r.value):
        return FAIL, f"{name} on {host}: not a finite number ({r.value})"
    if counted and (r.requests or 0) < max(min_requests, 1):
        return INCONCLUSIVE, f"{name} on {host}: {r.requests or 0} requests, fewer than {max(min_requests, 1)}"
    if r.value is None:
        return INCONCLUSIVE, f"{name} on {host}: nothing to measure"
    if metric.min is not None and r.value < metric.min:
        return FAIL, f"{name} on {host}: {number(r.value, unit)} below min {number(metric.min, unit)}"
    if metric.max is not None and r.value > metric.max:
        return FAIL, f"{name} on {host}: {number(r.value, unit)} above max {number(metric.max, unit)}"
    return PASS, ""


def _relative(metric: Metric, canary: float, baseline: float | None, enough: bool) -> tuple[str, str]:
    if metric.max_vs_baseline is None and metric.max_ratio_vs_baseline is None:
        return PASS, ""
    name, unit = metric.name, metric.unit
    if baseline is None or not enough:
        return INCONCLUSIVE, f"{name}: the baseline had too few requests to compare"
    both = f"{number(canary, unit)} vs baseline {number(baseline, unit)}"
    worse = baseline - canary if metric.higher_is_better else canary - baseline
    if metric.max_vs_baseline is not None and _over(worse, metric.max_vs_baseline):
        return FAIL, f"{name}: {both}, worse by more than {metric.max_vs_baseline:g}"
    if metric.max_ratio_vs_baseline is not None:
        better, worst = (canary, baseline) if metric.higher_is_better else (baseline, canary)
        if better <= 0:
            if worst <= 0:
                return PASS, ""  # both zero (or the canary the better): no ratio to exceed
            return INCONCLUSIVE, f"{name}: {both}, no ratio against zero"
        if _over(worst / better, metric.max_ratio_vs_baseline):
            return FAIL, f"{name}: {both}, more than {metric.max_ratio_vs_baseline:g} x worse"
    return PASS, ""


def _over(value: float, bound: float) -> bool:
    """value above bound, a difference's rounding (0.05 - 0.04) not counted: a tie passes."""
    return value > bound + 1e-9 * max(1.0, abs(bound))


def judge_check(
    settings: AnalysisSettings,
    readings: Mapping[str, Mapping[str, Reading]],
    canary: Sequence[str],
    baseline: Sequence[str],
    number: int,
    of: int,
) -> Check:
    """One check: every metric judged; the worst metric is the check's verdict."""
    verdicts = tuple(
        judge_metric(m, readings.get(m.name, {}), canary, baseline, settings.min_requests) for m in settings.metrics
    )
    worst = max((v.verdict for v in verdicts), key=_RANK.__getitem__, default=PASS)
    return Check(number, of, worst, verdicts)


@dataclass
class Tally:
    """The checks so far → go on (None), or the analysis' verdict (PASS or FAIL).

    It passes once `checks` checks passed; it fails once `failure_limit` checks failed. A failed
    check below the limit is made up by one more. An inconclusive check counts as failed
    (inconclusive = "fail"), as passed ("pass"), or ("extend") is followed by one more check, at
    most `checks` more; an inconclusive check after those counts as failed."""

    settings: AnalysisSettings
    passed: int = 0
    failed: int = 0
    extended: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def planned(self) -> int:
        """Checks this analysis runs if nothing more goes wrong."""
        return self.settings.checks + self.failed + self.extended

    @property
    def next_number(self) -> int:
        return len(self.checks) + 1

    def add(self, check: Check) -> str | None:
        self.checks.append(check)
        mode = self.settings.inconclusive
        if check.verdict == PASS or (check.verdict == INCONCLUSIVE and mode == "pass"):
            self.passed += 1
        elif check.verdict == INCONCLUSIVE and mode == "extend" and self.extended < self.settings.checks:
            self.extended += 1
        else:
            self.failed += 1
        return self.verdict

    @property
    def verdict(self) -> str | None:
        if self.failed >= self.settings.failure_limit:
            return FAIL
        if self.passed >= self.settings.checks:
            return PASS
        return None

    @property
    def failing(self) -> MetricVerdict | None:
        """The metric that ended a failed analysis (in its last failed or inconclusive check)."""
        for check in reversed(self.checks):
            if check.failing:
                return check.failing
        return None
