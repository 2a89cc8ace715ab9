"""Zero downtime, measured: a steady request stream through nginx on 3 hosts (python_wsgi recipe:
gunicorn reloaded gracefully) across a deploy v1→v2, a rollback v2→v1 and a failed deploy of v3
that rolls itself back. Not one request may fail, and once a host's reload has completed, no
request sent to it is answered by the release it left.

Run with -s to see the request counts and the per-host switch (reload completed) timestamps.
"""

from __future__ import annotations

import time

import pytest
from helpers import cli, current, releases
from test_recipes import commit, deploy_ok, get, reload_log, sample_repo, web_hosts

from benchmarks.traffic import Traffic, format_summary

pytestmark = pytest.mark.slow

RATE = 150  # requests/s in total, over 3 hosts x 4 client threads
SETTLE = 2.0  # seconds of traffic between the steps


def phase(samples, host: str, start: float, end: float) -> list[str]:
    """The versions host answered for requests sent in [start, end)."""
    return [s.version for s in samples if s.host == host and start <= s.sent < end]


def reload_at(sb, host, target: str, start: float, end: float) -> float:
    """When the restart that put `target` live on host completed, within [start, end]."""
    stamps = [t for t, tgt, _ in reload_log(sb, host) if tgt == target and start <= t <= end]
    assert len(stamps) == 1, (host.name, target, reload_log(sb, host))
    return stamps[0]


def test_no_request_fails_across_deploy_rollback_and_failed_deploy(sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(sandbox, repo, "python_wsgi", 3, verify={"retries": 3, "interval": 0.5})
    deploy_ok(sb)  # v1; its restart starts gunicorn on each host
    assert all(get(h)[1].startswith("sample v1 ") for h in sb.hosts)
    names = [h.name for h in sb.hosts]
    marks: dict[str, tuple[float, float]] = {}

    def step(name: str, *args: str, expect: int = 0) -> str:
        time.sleep(SETTLE)
        start = time.time()
        proc = cli(sb, *args)
        marks[name] = (start, time.time())
        assert proc.returncode == expect, proc.stdout + proc.stderr
        return proc.stdout

    with Traffic(
        {h.name: h.http_port for h in sb.hosts}, rate=RATE, threads=4, max_seconds=240, max_requests=40000
    ) as traffic:
        commit(repo, "v2", {"VERSION": "v2\n"})
        step("deploy v2", "deploy")
        step("rollback", "rollback")
        commit(repo, "v3: fails its health check", {"VERSION": "v3\n", "UNHEALTHY": "database unreachable\n"})
        out = step("deploy v3 (fails verify)", "deploy", expect=1)
        time.sleep(SETTLE)
    samples = traffic.samples
    summary = traffic.summary(samples)
    t0 = traffic.started

    # when each host's reload completed (written by the recipe's restart on the host)
    deploy, rollback, failed = marks["deploy v2"], marks["rollback"], marks["deploy v3 (fails verify)"]
    switched = {
        h.name: {
            "v2 live": reload_at(sb, h, "releases/2", *deploy),
            "v1 back": reload_at(sb, h, "releases/1", *rollback),
            "v3 live": reload_at(sb, h, "releases/3", *failed),
            "v3 rolled back": reload_at(sb, h, "releases/1", *failed),
        }
        for h in sb.hosts
    }

    print("\n" + format_summary(summary))
    for name, (start, end) in marks.items():
        print(f"{name:<26} {start - t0:7.3f}s .. {end - t0:7.3f}s")
    for host, stamps in switched.items():
        print(f"{host}: " + ", ".join(f"{what} at {t - t0:.3f}s ({t:.6f})" for what, t in stamps.items()))

    # the stream kept its pace (it ran at least through the pauses, so it sent at least what a paced
    # run sends in them), and went on while every step ran, to every host
    assert summary["requests"] >= traffic.paced(SETTLE * (len(marks) + 1)), summary
    for name, (start, end) in marks.items():
        assert all(phase(samples, h, start, end) for h in names), name
    assert max(s.sent for s in samples) > failed[1], "the traffic stopped before the last step ended"
    # not one failure: every request answered 2xx, no refused/reset/timed-out connection
    assert summary["errors"] == 0 and summary["failed"] == 0, summary["first_errors"]
    assert {s.version for s in samples} == {"v1", "v2", "v3"}

    for h in names:
        s = switched[h]
        # before the deploy: v1 only; after this host's reload to v2 completed: v2 only
        assert set(phase(samples, h, t0, deploy[0])) == {"v1"}
        assert set(phase(samples, h, deploy[0], s["v2 live"])) <= {"v1", "v2"}
        assert set(phase(samples, h, s["v2 live"], rollback[0])) == {"v2"}
        # the rollback: v2 until the reload back to v1 completed, then never again
        assert set(phase(samples, h, rollback[0], s["v1 back"])) <= {"v1", "v2"}
        assert set(phase(samples, h, s["v1 back"], failed[0])) == {"v1"}
        # the failed deploy: v3 served only between its switch and the automatic rollback's reload
        assert set(phase(samples, h, failed[0], s["v3 rolled back"])) <= {"v1", "v3"}
        assert "v3" in phase(samples, h, failed[0], s["v3 rolled back"])
        assert set(phase(samples, h, s["v3 rolled back"], float("inf"))) == {"v1"}
        assert s["v2 live"] < s["v1 back"] < s["v3 live"] < s["v3 rolled back"]
    assert "ROLLING BACK" in out
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert {r["host"] for r in releases(sb) if r["release"] == 3 and r["bad"]} == set(names)
