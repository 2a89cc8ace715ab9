"""The canary analysis inside a deploy, on three nginx + gunicorn hosts with traffic running
through nginx the whole time: a v2 that answers /health fine but fails 5 % of other requests is
caught by its access log within failure_limit + 1 checks, the canary goes back, the release is
marked bad and refused as a rollback target, and not one request fails on the other hosts; a
healthy v3 passes and goes everywhere; with --strategy all, a failing watch window rolls every
host back."""

from __future__ import annotations

import json

import jsonschema
import pytest
from helpers import REPO, cli, current, releases
from test_analysis_providers import LOG, configure, serving
from test_recipes import commit

from benchmarks.traffic import Traffic

pytestmark = pytest.mark.slow
SCHEMA = json.loads((REPO / "docs" / "result.schema.json").read_text())
RATE = {"name": "success rate", "min": 99.0, "max_vs_baseline": 1.0}
P99 = {"name": "p99", "measure": "p99_ms", "max": 2000, "max_ratio_vs_baseline": 20}


@pytest.fixture(scope="module")
def three(sandbox_image, client_key, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canary")
    notes = tmp / "notifications.jsonl"
    with serving(client_key, tmp, 3, notify={"command": f"cat >> {notes}; echo >> {notes}"}) as sb:
        sb.notes = notes  # type: ignore[attr-defined]
        yield sb


def notifications(sb) -> list[dict]:
    return [json.loads(line) for line in sb.notes.read_text().splitlines() if line.strip()]


def test_a_canary_failing_5_percent_is_caught_put_back_and_marked_bad(three):
    sb = three
    configure(sb, [RATE, P99], interval=5, checks=3, failure_limit=1, min_requests=20)
    commit(sb.source, "v2: /health fine, 5 % of the rest fail", {"VERSION": "v2\n", "FAILS": "5\n"})
    targets = {h.name: h.http_port for h in sb.hosts}
    with Traffic(targets, rate=50, threads=2, max_seconds=150, max_requests=8000) as traffic:
        proc = cli(sb, "deploy", "--strategy", "canary", "--canary", "1", "--json", timeout=150)
    samples = traffic.samples
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    checks = [line for line in proc.stderr.splitlines() if line.startswith("check ")]
    assert 1 <= len(checks) <= 2, proc.stderr  # failure_limit + 1
    assert checks[-1].startswith(f"check {len(checks)}/") and ": fail (success rate" in checks[-1]
    # the canary is back on release 1, the release is marked bad everywhere it was prepared
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert {r["host"] for r in releases(sb) if r["release"] == 2 and r["bad"]} == {h.name for h in sb.hosts}
    # --json: the canary host's record carries the analysis; the error names the metric and values
    host1 = next(r for r in doc["hosts"] if r["host"] == "host-1")
    assert host1["analysis"]["verdict"] == "fail" and host1["analysis"]["baseline"] == ["host-2", "host-3"]
    failing = host1["analysis"]["failing"]
    assert failing["metric"] == "success rate" and failing["canary"] < 99 and failing["baseline"] > 99
    assert "canary analysis failed: check" in doc["error"] and "success rate on host-1" in doc["error"]
    # the notification carries the failing metric with both values
    rolled = [n for n in notifications(sb) if n["event"] == "rolled back"]
    assert len(rolled) == 1 and "success rate on host-1" in rolled[0]["error"], notifications(sb)
    assert "% below min 99.0 %" in rolled[0]["error"] and ", baseline " in rolled[0]["error"]
    # the ledger holds the analysis: each check's numbers and the verdict
    code, ledger = sb.read(sb.hosts[0], "cat /srv/app/.deployer/ledger.jsonl")
    lines = [json.loads(line) for line in ledger.splitlines() if '"analysis"' in line]
    assert lines and lines[-1]["result"] == "fail" and lines[-1]["checks"][0][2]["success rate"][1] > 99
    # not one request failed on the hosts that were never the canary; the canary's failures were v2's
    others = [s for s in samples if s.host != "host-1"]
    assert len(others) > 100 and all(s.ok for s in others), [s for s in others if not s.ok][:3]
    bad = [s for s in samples if s.host == "host-1" and not s.ok]
    assert bad and all(s.status == 500 and s.body.startswith("internal error (FAILS)") for s in bad)
    # the bad release is refused as a rollback target
    refused = cli(sb, "rollback", "--to", "2")
    assert refused.returncode != 0 and "bad" in (refused.stdout + refused.stderr)


def test_a_healthy_canary_passes_and_the_rest_switch(three):
    sb = three
    configure(sb, [RATE, P99], interval=2, checks=2, failure_limit=1, min_requests=10)
    commit(sb.source, "v3: healthy", {"VERSION": "v3\n", "FAILS": "0\n"})
    with Traffic({h.name: h.http_port for h in sb.hosts}, rate=50, threads=2, max_seconds=120) as traffic:
        proc = cli(sb, "deploy", "--strategy", "canary", "--canary", "1", timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check 2/2: success rate 100.0 % (baseline 100.0 %)" in proc.stdout and "analysis passed" in proc.stdout
    assert all(current(sb, h) == "releases/3" for h in sb.hosts)
    assert all(s.ok for s in traffic.samples)


def test_strategy_all_watch_window_rolls_every_host_back(three):
    sb = three
    configure(sb, [{"name": "success rate", "min": 99.0}], interval=2, checks=2, min_requests=10)
    commit(sb.source, "v4: fails 5 %", {"VERSION": "v4\n", "FAILS": "5\n"})
    with Traffic({h.name: h.http_port for h in sb.hosts}, rate=50, threads=2, max_seconds=120):
        proc = cli(sb, "deploy", timeout=150)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "(no baseline: absolute bounds)" in proc.stdout and "check 1/2: success rate" in proc.stdout
    assert all(current(sb, h) == "releases/3" for h in sb.hosts)
    assert {r["host"] for r in releases(sb) if r["release"] == 4 and r["bad"]} == {h.name for h in sb.hosts}
    code, out = sb.exec(sb.hosts[0], f"test -r {LOG}")
    assert code == 0, out


def test_dry_run_reads_once_and_rolling_judges_each_batch(three):
    sb = three
    configure(sb, [RATE, P99], interval=1, checks=1, min_requests=0, inconclusive="pass")
    commit(sb.source, "v5: healthy", {"VERSION": "v5\n", "FAILS": "0\n"})
    before = [sb.command_count(h) for h in sb.hosts]
    dry = cli(sb, "deploy", "--strategy", "canary", "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    said = [line for line in dry.stdout.splitlines() if line.startswith("would analyse")]
    assert said == [said[0]] and said[0].startswith("would analyse host-1 against host-2, host-3; one reading now: ")
    assert all(current(sb, h) == "releases/3" for h in sb.hosts)  # nothing changed
    assert sb.command_count(sb.hosts[0]) > before[0]
    with Traffic({h.name: h.http_port for h in sb.hosts}, rate=30, threads=1, max_seconds=120):
        proc = cli(sb, "deploy", "--strategy", "rolling", "--batch", "2", timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "analysis of host-1, host-2 against host-3:" in proc.stdout
    assert "analysis of host-3 against the same host(s) before the switch:" in proc.stdout
    assert proc.stdout.count("analysis passed: 1 check(s)") == 2


def test_one_host_is_judged_against_its_own_window_before_the_switch(three):
    """No baseline hosts (one host, --strategy all): the host's window before its switch is the
    baseline; only a baseline bound here, so only that comparison can fail it."""
    sb = three
    host = sb.hosts[0]
    # about 200 requests a check: 5 % failing is over 2 points worse than 0 % (P(no) < 1e-3 a check)
    rate = {"name": "success rate", "max_vs_baseline": 2.0}
    fails = {"name": "fails file", "provider": "command", "command": "cat FAILS", "max_vs_baseline": 1}
    configure(sb, [rate, fails], interval=2, checks=3, min_requests=50)  # a command: read once before
    commit(sb.source, "v6: as good as v5", {"VERSION": "v6\n", "FAILS": "0\n"})
    with Traffic({host.name: host.http_port}, rate=100, threads=2, max_seconds=120):
        good = cli(sb, "deploy", "--hosts", host.name, "--json", timeout=150)
        configure(sb, [rate], interval=2, checks=3, min_requests=50)
        commit(sb.source, "v7: fails 5 %", {"VERSION": "v7\n", "FAILS": "5\n"})
        bad = cli(sb, "deploy", "--hosts", host.name, "--json", timeout=150)
    assert good.returncode == 0, good.stdout + good.stderr
    said = f"analysis of {host.name} against the same host(s) before the switch"
    assert said in good.stderr and "window before the switch: " in good.stderr
    assert "check 3/3: success rate 100.0 % (baseline 100.0 %), fails file 0 (baseline 0): pass" in good.stderr
    analysis = json.loads(good.stdout)["hosts"][0]["analysis"]
    assert analysis["baseline"] == [f"{host.name} (before the switch)"] and analysis["verdict"] == "pass"
    assert bad.returncode == 1, bad.stdout + bad.stderr
    doc = json.loads(bad.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    failing = doc["hosts"][0]["analysis"]["failing"]
    assert failing["metric"] == "success rate" and failing["baseline"] == 100.0 and failing["canary"] < 98
    assert "worse by more than 2" in failing["reason"]
    assert current(sb, host) == "releases/6"  # put back
