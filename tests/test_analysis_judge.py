"""The canary judge without any host: readings in, verdicts out. Written to break it: NaN and
infinity, zero requests, a missing or broken baseline, values exactly at a bound, the
inconclusive modes and the failure limit."""

import math

import pytest

from deployer.config.analysis import AnalysisSettings, Metric
from deployer.plan.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Check,
    MetricVerdict,
    Reading,
    Tally,
    judge_check,
    judge_metric,
)

RATE = Metric("success rate", min=99.0, max_vs_baseline=1.0)
P99 = Metric("p99", measure="p99_ms", max=500.0, max_ratio_vs_baseline=1.5)
PROM = Metric("errors", provider="prometheus", url="http://p", query="q", max=0.05, max_vs_baseline=0.01)
UP = Metric("up", provider="prometheus", url="http://p", query="up", min=1.0, max_ratio_vs_baseline=2.0)


def judge(metric, readings, canary=("c",), baseline=("b",), min_requests=50):
    return judge_metric(metric, readings, list(canary), list(baseline), min_requests)


def r(value, requests=100, error=""):
    return Reading(value, requests, error)


def test_healthy_canary_passes_and_shows_both_values():
    v = judge(RATE, {"c": r(99.5), "b": r(99.8)})
    assert (v.verdict, v.canary, v.baseline) == (PASS, 99.5, 99.8)
    assert v.shown() == "success rate 99.5 % (baseline 99.8 %)"


@pytest.mark.parametrize(
    "metric, canary, baseline, verdict",
    [
        (RATE, 99.0, 99.0, PASS),  # exactly at min: passes
        (RATE, 98.99, 99.0, FAIL),
        (RATE, 99.0, 100.0, PASS),  # exactly 1.0 point worse: passes
        (RATE, 99.0, 100.001, FAIL),
        (P99, 500.0, 400.0, PASS),  # at max; 1.25 x
        (P99, 500.1, 400.0, FAIL),
        (P99, 300.0, 200.0, PASS),  # exactly 1.5 x
        (P99, 300.1, 200.0, FAIL),
        (P99, 0.0, 0.0, PASS),  # both zero: no ratio to exceed
        (P99, 3.0, 0.0, INCONCLUSIVE),  # no ratio against a zero baseline, never a silent pass
        (P99, 1.0, 900.0, PASS),  # better than a slow baseline
        (PROM, 0.05, 0.04, PASS),  # lower is better, exactly at max and 0.01 worse
        (PROM, 0.04, 0.02, FAIL),
        (UP, 1.0, 2.0, PASS),  # min only: higher is better, 2 x worse allowed
        (UP, 1.0, 2.5, FAIL),
        (UP, 0.0, 0.0, FAIL),  # below min
    ],
)
def test_bounds_and_ties(metric, canary, baseline, verdict):
    assert judge(metric, {"c": r(canary), "b": r(baseline)}).verdict == verdict


def test_a_shared_background_error_rate_is_not_the_canarys_fault():
    both_bad = Metric("success rate", max_vs_baseline=1.0)
    assert judge(both_bad, {"c": r(97.9), "b": r(98.0)}).verdict == PASS
    assert judge(both_bad, {"c": r(96.5), "b": r(98.0)}).verdict == FAIL


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_not_finite_values_fail_on_either_side(bad):
    v = judge(RATE, {"c": r(bad), "b": r(99.0)})
    assert v.verdict == FAIL and "on c" in v.reason
    v = judge(RATE, {"c": r(99.5), "b": r(bad)})
    assert v.verdict == FAIL and "baseline" in v.reason


def test_zero_and_too_few_requests_are_inconclusive_not_passed():
    assert judge(RATE, {"c": Reading(None, 0), "b": r(99.0)}).verdict == INCONCLUSIVE
    v = judge(RATE, {"c": r(100.0, requests=49), "b": r(99.0)})
    assert v.verdict == INCONCLUSIVE and "49 requests, fewer than 50" in v.reason
    assert judge(RATE, {"c": r(100.0, requests=50), "b": r(99.0)}).verdict == PASS  # at min_requests
    # min_requests 0 still needs one request to have a rate at all
    assert judge(RATE, {"c": Reading(None, 0)}, baseline=(), min_requests=0).verdict == INCONCLUSIVE
    # a failure outranks too few requests elsewhere
    v = judge(RATE, {"c": r(90.0), "c2": r(100.0, requests=3)}, canary=("c", "c2"), baseline=())
    assert v.verdict == FAIL


def test_a_quiet_baseline_makes_the_comparison_inconclusive():
    v = judge(RATE, {"c": r(99.5), "b": r(99.0, requests=10)})
    assert v.verdict == INCONCLUSIVE and "baseline" in v.reason
    absolute_only = Metric("rate", min=99.0)
    assert judge(absolute_only, {"c": r(99.5), "b": r(99.0, requests=10)}).verdict == PASS


def test_without_baseline_hosts_only_absolute_bounds_apply():
    relative_only = Metric("rate", max_vs_baseline=0.1)
    assert judge(relative_only, {"c": r(50.0)}, baseline=()).verdict == PASS
    v = judge(RATE, {"c": r(98.0)}, baseline=())
    assert v.verdict == FAIL and v.baseline is None and v.shown() == "success rate 98.0 %"


def test_an_unreachable_source_fails_naming_metric_and_host():
    v = judge(RATE, {"c": r(None, None, "connection refused"), "b": r(99.0)})
    assert v.verdict == FAIL and v.reason == "success rate on c: connection refused"
    v = judge(RATE, {"c": r(99.5), "b": r(None, None, "timed out")})
    assert v.verdict == FAIL and v.reason == "success rate on baseline b: timed out"
    v = judge(RATE, {"b": r(99.0)})  # no reading at all for the canary
    assert v.verdict == FAIL and "no reading" in v.reason


def test_absolute_bounds_hold_on_every_canary_host_and_baselines_aggregate_by_requests():
    v = judge(RATE, {"c1": r(100.0, 900), "c2": r(98.0, 100), "b": r(99.9)}, canary=("c1", "c2"))
    assert v.verdict == FAIL and "on c2: 98.0 % below min 99.0 %" in v.reason
    assert v.canary == pytest.approx(99.8)
    v = judge(RATE, {"c": r(99.5), "b1": r(100.0, 100), "b2": r(90.0, 0)}, baseline=("b1", "b2"))
    assert v.baseline == 100.0  # a host without requests weighs nothing
    same = Metric("p50", provider="command", command="x", max=10.0)
    assert judge(same, {"c": r(4.0, None), "c2": r(8.0, None)}, canary=("c", "c2"), baseline=()).canary == 6.0


def test_a_check_is_its_worst_metric_and_its_line():
    settings = AnalysisSettings(metrics=(RATE, P99), checks=6)
    readings = {"success rate": {"c": r(99.4), "b": r(99.6)}, "p99": {"c": r(212.0), "b": r(198.0)}}
    check = judge_check(settings, readings, ["c"], ["b"], 3, 6)
    assert check.line() == "check 3/6: success rate 99.4 % (baseline 99.6 %), p99 212 ms (baseline 198 ms): pass"
    readings["p99"]["c"] = r(400.0)
    check = judge_check(settings, readings, ["c"], ["b"], 4, 6)
    assert check.verdict == FAIL and check.failing is not None and check.failing.metric == "p99"
    assert check.line().endswith(": fail (p99: 400 ms vs baseline 198 ms, more than 1.5 x worse)")
    assert check.record()["metrics"][1] == {  # type: ignore[index]
        "metric": "p99",
        "verdict": FAIL,
        "canary": 400.0,
        "baseline": 198.0,
        "reason": "p99: 400 ms vs baseline 198 ms, more than 1.5 x worse",
    }


def check_of(verdict):
    return Check(1, 1, verdict, (MetricVerdict("m", verdict, 1.0, None, "" if verdict == PASS else "why"),))


def run(settings, verdicts):
    """Feed verdicts until the tally decides; (decision, checks used)."""
    tally = Tally(settings)
    for i, v in enumerate(verdicts, 1):
        if (decided := tally.add(check_of(v))) is not None:
            return decided, i
    return None, len(verdicts)


def settings(**kw):
    return AnalysisSettings(metrics=(RATE,), **kw)


def test_tally_passes_after_checks_and_fails_at_the_limit():
    assert run(settings(checks=3), [PASS] * 5) == (PASS, 3)
    assert run(settings(checks=3), [PASS, FAIL]) == (FAIL, 2)
    # failure_limit 2: one failure is made up by one more check
    assert run(settings(checks=3, failure_limit=2), [PASS, FAIL, PASS, PASS, PASS]) == (PASS, 4)
    assert run(settings(checks=3, failure_limit=2), [FAIL, PASS, FAIL]) == (FAIL, 3)


def test_tally_inconclusive_modes():
    assert run(settings(checks=2, inconclusive="fail"), [INCONCLUSIVE]) == (FAIL, 1)
    assert run(settings(checks=2, inconclusive="pass"), [INCONCLUSIVE, PASS]) == (PASS, 2)
    # extend: one more check each, at most `checks` more; then inconclusive counts as failed
    assert run(settings(checks=2, inconclusive="extend"), [INCONCLUSIVE, PASS, PASS]) == (PASS, 3)
    assert run(settings(checks=2, inconclusive="extend"), [INCONCLUSIVE] * 10) == (FAIL, 3)
    tally = Tally(settings(checks=2, inconclusive="extend"))
    tally.add(check_of(INCONCLUSIVE))
    assert tally.planned == 3 and tally.next_number == 2


def test_tally_is_bounded_whatever_comes():
    for mode in ("fail", "extend", "pass"):
        for limit in (1, 3):
            s = settings(checks=4, failure_limit=limit, inconclusive=mode)
            for pattern in ([FAIL, INCONCLUSIVE, PASS], [INCONCLUSIVE], [PASS, FAIL]):
                decided, used = run(s, pattern * 20)
                assert decided in (PASS, FAIL) and used <= 4 + (limit - 1) + 4


def test_failing_names_the_metric_that_ended_it():
    tally = Tally(settings(checks=3))
    tally.add(check_of(PASS))
    tally.add(check_of(FAIL))
    assert tally.verdict == FAIL and tally.failing is not None and tally.failing.reason == "why"
