"""The benchmark harness (benchmarks/) in the suite: round-trip COUNTS, never times, plus the
report produced end to end with tiny parameters. The full benchmark: python -m benchmarks.run."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from helpers import TEST_LABEL

from benchmarks import harness, report
from benchmarks import run as bench_run
from benchmarks.records import ACTIONS, PHASES, ConfigResult, Measurement
from benchmarks.traffic import Traffic
from benchmarks.workload import Spec, generate_tree, git_artifact
from deployer.sandbox import hosts as sandbox_mod

TINY = Spec(target_mb=1, text_files=150, binary_files=4)


@pytest.fixture(scope="module")
def bench(sandbox_image, client_key, tmp_path_factory):
    """Three sandbox hosts behind a harness Bench, and a small generated artifact."""
    work = tmp_path_factory.mktemp("bench")
    artifact = git_artifact(TINY, work / "artifact")
    hosts = harness.start_hosts(3, client_key, label=TEST_LABEL, log=lambda msg: None)
    b = harness.Bench(work / "bench", client_key, hosts, log=lambda msg: None)
    try:
        yield b, artifact
    finally:
        b.close()
        sandbox_mod.stop_hosts(hosts)


def test_workload_is_deterministic_and_mostly_text():
    first = [(f.path, f.mode, f.link, len(f.data)) for f in generate_tree(TINY)]
    again = [(f.path, f.mode, f.link, len(f.data)) for f in generate_tree(TINY)]
    assert first == again
    text = sum(1 for path, *_ in first if not path.endswith((".png", ".woff2", ".so", ".bin")))
    assert text >= 150 and text > 0.9 * len(first)
    assert len({path for path, *_ in first}) == len(first)


@pytest.mark.slow
def test_round_trips_per_host(bench):
    """N=3, one repetition: a plain deploy is 4 remote commands per host, a redeploy of the same
    artifact 4 and uploads nothing, a rollback 2; the floor is exactly one session per host."""
    b, artifact = bench
    result = harness.run_config(b, artifact, 3, 0, 1)

    assert sorted(m.action for m in result.runs) == sorted(ACTIONS)  # one record each
    assert result.cmds("deploy") == [4, 4, 4], result.cmds("deploy")
    assert result.cmds("redeploy") == [4, 4, 4], result.cmds("redeploy")
    assert result.cmds("rollback") == [2, 2, 2], result.cmds("rollback")
    linked = result.cmds("redeploy_linked")
    assert len(linked) == 3 and all(0 < c <= 4 for c in linked)
    assert result.counted("redeploy_linked", "linked") == [3], result.outputs["redeploy_linked"]
    assert len(result.cmds("rollback_warm")) == 3 and all(0 < c <= 2 for c in result.cmds("rollback_warm"))
    assert len(result.seconds("rollback_warm")) == 1
    linked_warm = result.cmds("redeploy_linked_warm")
    assert len(linked_warm) == 3 and all(0 < c <= 4 for c in linked_warm)
    assert result.counted("redeploy_linked_warm", "linked") == [3], result.outputs["redeploy_linked_warm"]
    assert "uploaded " not in result.outputs["redeploy_linked_warm"]
    assert result.cmds("floor") == [1, 1, 1]
    assert result.cmds("floor_rollback") == []  # not counted: timed alone

    assert result.counted("deploy", "uploaded") == [3]
    assert result.counted("redeploy", "uploaded") == [0]
    assert result.counted("redeploy", "cached") == [3]
    assert result.outputs["redeploy"].count("artifact already on host") == 3
    assert "uploaded " not in result.outputs["redeploy"]
    assert set(result.of("deploy")[0].phases) == set(PHASES)
    for m in result.of("deploy", "rollback"):
        assert m.rss_mb is not None and 10 < m.rss_mb < 1000  # measured at all, the process's own (not ours)


@pytest.mark.slow
def test_rollback_puts_every_host_back(bench):
    """The release the harness deploys is complete and correct on every host (checked the way the
    scale run checks it)."""
    b, artifact = bench
    targets = b.targets(3)
    deploy_to = b.deploy_dir("bench", "verify")
    config = b.config(targets, deploy_to)
    b.cli(config, "deploy", "--artifact", str(artifact.path))
    assert harness.verify_hosts(targets, deploy_to, artifact, release=1) == []
    b.cli(config, "deploy", "--artifact", str(artifact.path))
    assert harness.verify_hosts(targets, deploy_to, artifact, release=2) == []
    proc = b.cli(b.config(targets, deploy_to, hardlink=True), "deploy", "--artifact", str(artifact.path))
    assert proc.stdout.count("release 3 linked from release 2") == 3
    assert harness.verify_hosts(targets, deploy_to, artifact, release=3) == []
    b.cli(config, "rollback")
    assert harness.verify_hosts(targets, deploy_to, artifact, release=2) == []
    b.clean(targets)


@pytest.mark.slow
def test_report_end_to_end(sandbox_image, tmp_path, capsys):
    """The documented command with tiny parameters: every section and the expected rows/columns."""
    out = tmp_path / "results.md"
    other = "<!-- delta:begin -->\n## Delta releases\nkept\n\n<!-- delta:end -->\n"
    out.write_text("<!-- run:begin -->\nold run\n<!-- run:end -->\n\n" + other)
    code = bench_run.main(
        [
            "--hosts",
            "2",
            "--reps",
            "1",
            "--latency-ms",
            "0",
            "--artifact-mb",
            "1",
            "--files",
            "150",
            "--big-mb",
            "2",
            "--mem-hosts",
            "2",
            "--scale-hosts",
            "3",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--label",
            TEST_LABEL,
        ]
    )
    assert code == 0
    written = out.read_text()
    assert other in written and "old run" not in written  # only its own section is rewritten
    text = written.split("<!-- run:begin -->\n", 1)[1].split("<!-- run:end -->", 1)[0]
    assert text.strip() in capsys.readouterr().out
    for heading in (
        "# Deployer performance against the floor",
        "## Side by side",
        "## Peak memory by artifact size",
        "## Scale run",
        "## Targets",
    ):
        assert heading in text
    for machine in ("- date: ", "CPUs", "RAM", "Python "):
        assert machine in text

    main = _table(text, "## Side by side")
    assert main[0] == report.MAIN_COLUMNS
    assert len(main) == 2
    row = dict(zip(main[0], main[1], strict=True))
    assert row["hosts"] == "2" and row["added RTT ms"] == "0"
    for column in (
        "floor s",
        "deploy s",
        "redeploy s",
        "redeploy linked warm s",
        "rollback s",
        "deploy/floor",
        "redeploy/deploy",
        "linked warm/deploy",
    ):
        assert float(row[column]) > 0
    assert 0 < int(row["cmds/host deploy"].split("-")[-1]) <= 4
    assert 0 < int(row["cmds/host rollback"].split("-")[-1]) <= 2

    memory = _table(text, "## Peak memory by artifact size")
    assert [r[0] for r in memory[1:]] == ["1 MB", "2 MB"]
    assert "3/3 hosts verified" in text
    # both clients talk to sshd itself, scale hosts included, not through docker-proxy
    assert "every host reached at its container address, port 22" in text

    targets = _table(text, "## Targets")
    assert targets[0] == ["target", "measured", "verdict"]
    verdicts = {r[0]: r[2] for r in targets[1:]}
    assert verdicts["<= 4 remote commands per host per deploy"] == "pass"
    assert verdicts["<= 2 remote commands per host per rollback"] == "pass"
    assert verdicts["deploy/floor <= 1.10 at 20 hosts, loopback"] == "not measured"
    assert all(v in ("pass", "MISS", "not measured") for v in verdicts.values())


def test_phase_times_and_targets_from_synthetic_results():
    stdout = (
        "host    result    step      release    lock s    check s    prepare s    switch s    finish s  error\n"
        "------  --------  ------  ---------  --------  ---------  -----------  ----------  ----------  -------\n"
        "host-1  ok        finish          1      0.2           0         1.5         0.05        0.04\n"
        "host-2  ok        finish          1      0.3           0         1.25        0.07        0.02\n"
    )
    assert harness.phase_times(stdout, ["host-1", "host-2"]) == {
        "lock": 0.3,
        "check": 0.0,
        "prepare": 1.5,
        "switch": 0.07,
        "finish": 0.04,
    }
    r5 = ConfigResult(
        hosts=5,
        latency_ms=0,
        reps=1,
        runs=[
            Measurement("floor", 0, 2.0),
            Measurement("deploy", 0, 2.2, [4] * 5, rss_mb=60.0),
            Measurement("redeploy", 0, 0.5, [4] * 5),
            Measurement("redeploy_linked", 0, 0.4),
            Measurement("rollback", 0, 0.4, [2] * 5, rss_mb=50.0),
            Measurement("rollback_warm", 0, 0.3),
        ],
    )
    r20 = ConfigResult(
        hosts=20,
        latency_ms=0,
        reps=1,
        runs=[
            Measurement("floor", 0, 10.0),
            Measurement("deploy", 0, 12.0, [5] * 20, rss_mb=130.0),
            Measurement("redeploy", 0, 2.0, [4] * 20),
            Measurement("redeploy_linked", 0, 4.0),
            Measurement("redeploy_linked_warm", 0, 3.0),
            Measurement("rollback", 0, 1.5, [2] * 20, rss_mb=50.0),
            Measurement("rollback_warm", 0, 0.9),
        ],
    )
    verdicts = {t.name: t.verdict for t in report.evaluate([r5, r20], [], None)}
    assert verdicts["deploy/floor <= 1.15 at 5 hosts, loopback"] == "pass"  # 1.10
    assert verdicts["deploy/floor <= 1.10 at 20 hosts, loopback"] == "MISS"  # 1.20
    assert verdicts["<= 4 remote commands per host per deploy"] == "MISS"
    assert verdicts["<= 2 remote commands per host per rollback"] == "pass"
    assert verdicts["rollback of 20 hosts <= 1 s, loopback, new connections"] == "MISS"
    assert verdicts["rollback of 20 hosts <= 1 s, loopback, connections kept open (ssh.persist)"] == "pass"
    assert verdicts["redeploy <= 0.3 x first deploy, extracted again (default), every configuration"] == "pass"
    assert verdicts["redeploy <= 0.3 x first deploy, linked (app.hardlink_releases), every configuration"] == "MISS"
    assert (
        verdicts["redeploy <= 0.3 x first deploy, linked, connections kept open (ssh.persist), every configuration"]
        == "pass"
    )  # 0.25, only measured at 20 hosts here
    assert verdicts["peak memory <= 120 MB at 20 hosts"] == "MISS"
    r50 = ConfigResult(
        hosts=5,
        latency_ms=25,
        reps=3,
        runs=[
            *(Measurement("floor", rep, s) for rep, s in enumerate([2.0, 2.0, 2.5])),
            *(Measurement("deploy", rep, s) for rep, s in enumerate([2.2, 2.6, 2.5])),
        ],
    )
    measured = {t.name: t.measured for t in report.evaluate([r50], [], None)}
    assert measured["deploy/floor <= 1.25 with 50 ms RTT, 5 host(s)"] == "1.25 (repetitions 1.00-1.30)"
    table = report.markdown_table(report.MAIN_COLUMNS, report.main_rows([r5, r20]))
    assert table.count("\n") == 3
    assert "| 20 | 0 | 10.00 | 12.00 | 2.00 | 4.00 | 3.00 | 1.50 | 0.90 | 1.20 | 0.17 | 0.33 | 0.25 |" in table


def _table(report: str, heading: str) -> list[list[str]]:
    """The first Markdown table after a heading, as rows of cells (header first, separator dropped)."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if line.startswith("|---"):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# --- the request stream the zero-downtime tests count on ------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    delay = 0.0  # seconds each answer is held back

    def do_GET(self):
        time.sleep(self.delay)
        body = b"sample v1 abcdef0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(delay: float):
    handler = type("Answer", (_Answer,), {"delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_paced_count_of_a_traffic_stream():
    traffic = Traffic({"a": 1}, rate=120, threads=4)  # each of 4 workers: one request per 1/30 s
    assert (traffic.paced(1.0), traffic.paced(0.5), traffic.paced(0.01)) == (120, 60, 0)
    assert Traffic({"a": 1, "b": 2}, rate=150, threads=4).paced(2.0) == 296  # 8 workers x 37


def test_a_stream_counts_every_answer_and_falls_short_of_its_pace_when_answers_stall():
    server = _serve(0.0)
    try:
        with Traffic({"a": server.server_port}, rate=400, threads=2, max_requests=50) as traffic:
            for t in traffic._threads:  # each worker ends once the 50 requests are taken
                t.join(30)
        summary = traffic.summary()
        assert (summary["requests"], summary["ok"], summary["failed"], summary["errors"]) == (50, 50, 0, 0)
        assert summary["versions"] == {"a": {"v1": 50}}
    finally:
        server.shutdown()
    # every answer held 0.5 s: 2 workers send at most 2 + 2 x 1.2 / 0.5 in 1.2 s, a paced run 48
    server = _serve(0.5)
    try:
        with Traffic({"a": server.server_port}, rate=40, threads=2, max_requests=1000) as traffic:
            time.sleep(1.2)
        assert traffic.summary()["errors"] == 0
        assert len(traffic.samples) < traffic.paced(1.2) == 48
    finally:
        server.shutdown()
